"""Naming a class (`labels.resolve_class`): by index, and the refusals; names and case are in inside/test_synthesis.py."""

from __future__ import annotations

import pytest

from heritage_cnn.data.labels import resolve_class

CLASSES = ["altar", "bell_tower", "dome(inner)"]


def test_a_class_by_its_index_as_text_or_number() -> None:
    assert resolve_class("2", CLASSES) == 2 and resolve_class(0, CLASSES) == 0 and resolve_class(" 1 ", CLASSES) == 1


@pytest.mark.parametrize("bad", ["3", "pagoda", "-1", ""])
def test_unknown_classes_and_indices_out_of_range_are_one_line_listing_the_choices(bad: str) -> None:
    with pytest.raises(ValueError) as error:
        resolve_class(bad, CLASSES)
    message = str(error.value)
    assert "\n" not in message and repr(bad) in message
    assert "altar, bell_tower, dome(inner)" in message and "0-2" in message
