"""`heritage data check`'s text report: every name shown safely (the JSON keeps them exact), and its --json refused
when empty."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import CLASSES, declared_png, make_dataset
from heritage_cnn.cli.main import main

NEWLINE, ZERO_WIDTH = "a\nb", "zw\u200bc"  # a class folder whose name breaks a line, one whose name hides a character


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Kaggle layout; train/ has the two hostile classes, test/ neither (a class mismatch); a photo in each hostile
    class is byte-identical to an altar photo (conflicting labels), and one hostile class folder in test/ is empty."""
    root = tmp_path_factory.mktemp("hostile")
    make_dataset(root / "train", per_class=3, classes=[CLASSES[0], NEWLINE, ZERO_WIDTH])
    make_dataset(root / "test", per_class=2, seed=1, classes=[CLASSES[0]])
    (root / "test" / f"empty{ZERO_WIDTH}").mkdir()
    altar = root / "train" / CLASSES[0] / "000.png"
    for name in (NEWLINE, ZERO_WIDTH):
        shutil.copy(altar, root / "train" / name / "copy\u200bc.png")
    return root


def test_the_text_report_shows_every_name_escaped_and_the_json_keeps_them_exact(
    hostile: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was: the byte-identical list printed `a` and `b/copy.png` on two lines and the zero-width space raw, while the
    unreadable list beside it escaped both."""
    report_file = tmp_path / "check.json"
    assert main(["data", "check", str(hostile), "--json", str(report_file)]) == 0
    printed = capsys.readouterr().out
    assert "\u200b" not in printed and "a\\nb" in printed and "zw\\u200bc" in printed
    lines = printed.splitlines()
    assert not any(line in ("a", "b", "b/copy\\u200bc.png") or line.startswith("b/") for line in lines), printed
    identical = [line for line in lines if "  ==  " in line]
    assert len(identical) == 1, printed
    assert "a\\nb/copy\\u200bc.png" in identical[0] and "zw\\u200bc/copy\\u200bc.png" in identical[0]
    assert "altar/000.png" in identical[0]
    assert any(line.startswith("zw\\u200bc ") for line in lines)  # the table's row (display names: "a b" there)
    assert any("class folders with no images: emptyzw\\u200bc" in line for line in lines), printed
    mismatch = next(line for line in lines if line.startswith("class mismatch"))
    assert "a\\nb" in mismatch and "zw\\u200bc" in mismatch and "emptyzw\\u200bc" in mismatch
    report = json.loads(report_file.read_text(encoding="utf-8"))  # exact names
    groups = report["identical_files"]["conflicting_labels"]
    assert {entry["class"] for entry in groups[0]} == {CLASSES[0], NEWLINE, ZERO_WIDTH}
    assert set(report["class_mismatch"]["only_in_train"]) == {NEWLINE, ZERO_WIDTH}


def test_an_empty_json_path_is_refused_naming_the_flag(
    hostile: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was: exit 0, no JSON written, nothing said. An empty data folder argument fell back to $HERITAGE_DATA."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HERITAGE_DATA", str(hostile))
    assert main(["data", "check", str(hostile), "--json", ""]) == 2
    assert capsys.readouterr() == ("", "heritage: error: --json: empty; give the output file's name\n")
    assert main(["data", "check", ""]) == 2
    out, err = capsys.readouterr()
    assert (
        out == "" and err == "heritage: error: DIR: empty; give the data folder (or leave it out for $HERITAGE_DATA)\n"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A class-folder root: a copy of an altar photo in a subfolder of vault/, a PNG too large to decode in altar/,
    and beside the class folders a photo, a text file and a hidden file."""
    root = make_dataset(tmp_path_factory.mktemp("plain") / "data", per_class=3, classes=["altar", "vault"])
    (root / "vault" / "altarlink").mkdir()
    shutil.copy(root / "altar" / "000.png", root / "vault" / "altarlink" / "000.png")
    (root / "altar" / "huge.png").write_bytes(declared_png(11000, 11000))
    shutil.copy(root / "altar" / "001.png", root / "stray.png")
    (root / "notes.txt").write_text("field notes")
    (root / ".DS_Store").write_bytes(b"\0")
    return root


def _check(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[list[str], dict]:
    """(the text report's lines, the JSON report) of `heritage data check root`."""
    assert main(["data", "check", str(root), "--json", str(tmp_path / "check.json")]) == 0
    return capsys.readouterr().out.splitlines(), json.loads((tmp_path / "check.json").read_text(encoding="utf-8"))


def test_identical_files_are_shown_by_their_path_below_the_data_folder(
    plain: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was `altar/000.png  ==  vault/000.png`: the class and the file's name, a path that does not exist."""
    lines, report = _check(plain, tmp_path, capsys)
    assert [line for line in lines if "  ==  " in line] == ["  altar/000.png  ==  vault/altarlink/000.png"]
    (group,) = report["identical_files"]["conflicting_labels"]
    assert [entry["path"] for entry in group] == [
        str(plain / "altar" / "000.png"),
        str(plain / "vault" / "altarlink" / "000.png"),
    ]


def test_modes_and_sizes_count_the_images_read(plain: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The PNG refused as too large was counted among the modes and sizes (RGB 8 beside 7 images read)."""
    lines, report = _check(plain, tmp_path, capsys)
    train = report["splits"]["train"]
    assert train["images"] == 7 and [bad["path"] for bad in train["unreadable"]] == [str(plain / "altar" / "huge.png")]
    assert train["modes"] == {"RGB": 7} and train["sizes"] == {"64x64": 7} and train["distinct_sizes"] == 1
    assert "train: modes RGB 7; sizes 64x64 7" in lines


def test_files_beside_the_class_folders_are_said_not_read(
    plain: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A photo at the root of a class-folder root was passed over without a word. One line says how many, with a few
    names; the JSON lists them (hidden files aside, as everywhere)."""
    lines, report = _check(plain, tmp_path, capsys)
    assert report["splits"]["train"]["beside_class_folders"] == [str(plain / "notes.txt"), str(plain / "stray.png")]
    (line,) = [line for line in lines if "beside the class folders" in line]
    assert line == (
        "train: 2 file(s) beside the class folders not read (notes.txt, stray.png): "
        "photos must be inside a class folder"
    )


def test_copies_of_an_unreadable_file_are_not_duplicates_with_conflicting_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two empty files (a failed copy, twice) in two classes were counted as a byte-identical group with conflicting
    labels: they are listed as unreadable, and a duplicate of a photo is still found beside them."""
    root = make_dataset(tmp_path / "data", per_class=2, classes=["altar", "vault"])
    for name in ("altar", "vault"):
        (root / name / "failed_copy.jpg").write_bytes(b"")
    shutil.copy(root / "altar" / "000.png", root / "vault" / "copy.png")
    lines, report = _check(root, tmp_path, capsys)
    (group,) = report["identical_files"]["conflicting_labels"]
    assert [entry["path"] for entry in group] == [str(root / "altar" / "000.png"), str(root / "vault" / "copy.png")]
    unreadable = [bad["path"] for bad in report["splits"]["train"]["unreadable"]]
    assert unreadable == [str(root / name / "failed_copy.jpg") for name in ("altar", "vault")]
    assert "byte-identical files: 2 in 1 groups, 1 group(s) with conflicting labels, 0 across splits" in lines
