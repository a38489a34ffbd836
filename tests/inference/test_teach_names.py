"""The names `heritage teach` accepts for a new class or a corrections folder: not a known class nor a reserved
folder but for case, spaces or Unicode spelling; UTF-8; no invisible character; refusals in one line."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import pytest
from _teach_photo_helpers import KNOWN, _hand_sorted, _new_folder, _one_line_error

from heritage_cnn.base.names import shown
from heritage_cnn.inference.class_names import new_class_problem
from heritage_cnn.inference.teach_photos import read_corrections, read_new_classes


@pytest.mark.parametrize("name", ["bell tower", "Altar", "Bell_Tower", "dome (inner)", "VAULT", "_None", "_UNCERTAIN"])
def test_a_new_class_named_like_a_known_one_is_refused(synthetic_root: Path, tmp_path: Path, name: str) -> None:
    new = _new_folder(synthetic_root, tmp_path / "new", name)
    message = _one_line_error(read_new_classes, new, KNOWN)
    assert message.startswith(str(new / name) + ": ")
    assert "names the model's class" in message or "is reserved for sort's" in message


def test_two_new_classes_of_one_name_are_refused(synthetic_root: Path, tmp_path: Path) -> None:
    new = _new_folder(synthetic_root, tmp_path / "new", "portal")
    _new_folder(synthetic_root, new, "Portal", source="column")
    message = _one_line_error(read_new_classes, new, KNOWN)
    assert "'Portal' and the folder 'portal' would be two classes of one name" in message


@pytest.mark.parametrize(("name", "known"), [("Altar", None), ("bell tower", None), ("Dome(Inner)", KNOWN)])
def test_a_corrections_folder_named_like_a_known_class_is_refused(
    synthetic_root: Path, tmp_path: Path, name: str, known: list[str] | None
) -> None:
    """A class the manifest names (a row's answer or top classes), or one of `known`, the model's classes."""
    out = _hand_sorted(synthetic_root, tmp_path)
    (out / name).mkdir()
    (out / "altar" / "altar_0.png").rename(out / name / "altar_0.png")
    message = _one_line_error(read_corrections, out, **({"known": known} if known else {}))
    assert message.startswith(str(out / name) + ": ") and "names the model's class" in message


def test_a_folder_name_that_is_not_utf8_is_said_so(synthetic_root: Path, tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9")
    new = _new_folder(synthetic_root, tmp_path / "new", name)
    message = _one_line_error(read_new_classes, new, KNOWN)
    assert message == f"{tmp_path / 'new'}/caf\\xe9: the folder name is not valid UTF-8, so it cannot name a class"
    out = _hand_sorted(synthetic_root, tmp_path)
    (out / name).mkdir()
    (out / "altar" / "altar_0.png").rename(out / name / "altar_0.png")
    assert "the folder name is not valid UTF-8" in _one_line_error(read_corrections, out)


NFD_PORTAL = unicodedata.normalize("NFD", "portál")  # `portál` with a combining accent: prints as the composed one


@pytest.mark.parametrize(
    ("names", "refusal"),
    [
        (["portál", NFD_PORTAL], "would be two classes of one name"),  # composed (NFC) and decomposed (NFD)
        (["ａltar"], "names the model's class 'altar'"),  # fullwidth
        (["bell\xa0tower"], "names the model's class 'bell_tower'"),  # a non-breaking space
    ],
)
def test_names_that_print_alike_are_one_class(synthetic_root: Path, tmp_path: Path, names, refusal: str) -> None:
    """Unicode spellings of one name (NFKC) collide as case and underscores do, among new classes and with known ones,
    in a folder of new classes and in a corrections folder."""
    new = tmp_path / "new"
    for name in names:
        _new_folder(synthetic_root, new, name)
    assert refusal in _one_line_error(read_new_classes, new, KNOWN)
    out = _hand_sorted(synthetic_root, tmp_path)
    for i, name in enumerate(names):
        (out / name).mkdir()
        (out / "altar" / f"altar_{i}.png").rename(out / name / f"altar_{i}.png")
    assert refusal in _one_line_error(read_corrections, out, known=KNOWN)


def test_names_that_print_alike_are_told_apart_by_their_code_points(synthetic_root: Path, tmp_path: Path) -> None:
    new = _new_folder(synthetic_root, tmp_path / "new", "portál")
    _new_folder(synthetic_root, new, NFD_PORTAL, source="column")
    assert "(spelt 'porta\\u0301l' and 'port\\xe1l')" in _one_line_error(read_new_classes, new, KNOWN)


@pytest.mark.parametrize(
    ("name", "escaped", "code"),
    [
        ("vault\u200b", "vault\\u200b", "U+200B (ZERO WIDTH SPACE)"),
        ("x\u202egpj", "x\\u202egpj", "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
        ("nave\u2028aisle", "nave\\u2028aisle", "U+2028 (LINE SEPARATOR)"),
    ],
)
def test_a_name_with_an_invisible_character_is_refused_and_shown_escaped(
    synthetic_root: Path, tmp_path: Path, name: str, escaped: str, code: str
) -> None:
    new = _new_folder(synthetic_root, tmp_path / "new", name)
    message = _one_line_error(read_new_classes, new, KNOWN)
    assert message.startswith(f"{new}/{escaped}: the folder name '{escaped}' holds the invisible character {code}")
    assert message.isprintable()  # nothing in the line hides or reorders what it says
    out = _hand_sorted(synthetic_root, tmp_path)
    (out / name).mkdir()
    (out / "altar" / "altar_0.png").rename(out / name / "altar_0.png")
    assert f"holds the invisible character {code}" in _one_line_error(read_corrections, out)


def test_a_class_name_is_refused_for_exactly_the_characters_that_shown_escapes() -> None:
    """One rule for invisible characters: a non-breaking space, a private-use character and one newer than Python's
    Unicode tables (U+1FAE8, an emoji of Unicode 15) print, so they may name a class; what `shown` escapes may not."""
    for char in ("\u200b", "\u202e", "\u2028", "\u00a0", "\ue000", "\U0001fae8", "\u00e9"):
        name = f"nave{char}aisle"
        refused = "invisible character" in (new_class_problem(name) or "")
        assert refused == (shown(name) != name), ascii(char)
