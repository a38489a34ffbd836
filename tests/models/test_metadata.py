"""Class names a checkpoint may hold: each refusal says what is wrong with the name."""

from __future__ import annotations

import os

import pytest

from heritage_cnn.models.metadata import class_name_problem


@pytest.mark.parametrize(
    ("name", "why"),
    [
        (os.fsdecode(b"ap\xffse"), "is not valid UTF-8"),  # a folder an old camera or Windows tool named
        ("ap\tse", "contains a control character"),
        (".apse", "starts with '.'"),
        ("a/b", "contains a path separator"),
        ("", "is not a non-empty string"),
    ],
)
def test_a_name_no_checkpoint_may_hold_says_why(name: str, why: str) -> None:
    """A folder name of bytes that are not UTF-8 was refused as "contains a control character"."""
    assert class_name_problem(name).startswith(why)


@pytest.mark.parametrize("name", ["apse", "dome (inner)", "cúpula", "鐘楼", "a" * 255])
def test_names_fit_for_a_folder_pass(name: str) -> None:
    assert class_name_problem(name) is None
