"""`heritage_cnn.base.names`' message helpers, with values worked out by hand (file names in every output are
tests/test_file_names.py)."""

from __future__ import annotations

from heritage_cnn.base.names import first_few


def test_first_few_names_three_and_counts_the_rest() -> None:
    assert first_few([]) == ""
    assert first_few(["a", "b", "c"]) == "a, b, c"
    assert first_few(["a", "b", "c", "d", "e"]) == "a, b, c, and 2 more"
    assert first_few(["x: empty", "y: truncated"], "; ", few=1) == "x: empty; and 1 more"
