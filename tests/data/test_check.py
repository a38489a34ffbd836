"""`heritage data check`'s text report: every name shown safely (the JSON keeps them exact), and its --json refused
when empty."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import CLASSES, make_dataset
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
