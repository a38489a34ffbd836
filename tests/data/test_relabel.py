"""`heritage train --relabel FILE`: corrections applied to the labels a run trains on, bad files refused."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from heritage_cnn.cli.main import main
from heritage_cnn.data.folders import DatasetError, load_images
from heritage_cnn.data.relabel import apply_relabel, read_relabel
from heritage_cnn.models.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def images(synthetic_root: Path):
    return load_images(synthetic_root)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_relabel_applied(images, synthetic_root: Path, tmp_path: Path) -> None:
    file = _write(
        tmp_path / "relabel.csv",
        "path,new_label\n"
        "altar/000.png,apse\n"  # a folder name
        f"{synthetic_root / 'vault' / '003.png'},dome (inner)\n"  # an absolute path, a display name
        "column/001.png,\n",  # no new label: kept
    )
    relabel = read_relabel(file, images.classes, synthetic_root)
    relabelled, changed = apply_relabel(images, relabel, synthetic_root)
    assert changed == 2 and len(relabel.moves(images.classes)) == 2
    label = dict(zip(images.paths, relabelled.labels.tolist(), strict=True))
    assert label[str(synthetic_root / "altar" / "000.png")] == images.classes.index("apse")
    assert label[str(synthetic_root / "vault" / "003.png")] == images.classes.index("dome(inner)")
    assert label[str(synthetic_root / "column" / "001.png")] == images.classes.index("column")
    assert images.labels[0] == images.classes.index("altar")  # the original set is unchanged


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("path,new_label\naltar/000.png,apse\naltar/001.png,nave\n", r"row 3: unknown class 'nave'"),
        ("path,new_label\naltar/999.png,apse\n", r"row 2: altar/999.png is not a photo of"),
        ("path,new_label\naltar/000.png,apse\naltar/000.png,vault\n", r"row 3: .* listed already \(row 2\)"),
        ("file,class\naltar/000.png,apse\n", r"row 1: expected the header path,new_label"),
        ("path,new_label\n,apse\n", r"row 2: no path"),
        # a row without its comma is not "keep the label", nor is an extra cell ignored
        ("path,new_label\naltar/000.png,apse\naltar/001.png\n", r"row 3: 1 cell, expected 2 \(path,new_label\)"),
        ("path,new_label\naltar/000.png,apse,extra\n", r"row 2: 3 cells, expected 2 \(path,new_label\)"),
        ("path, new_label,note\naltar/000.png,apse\n", r"row 2: 2 cells, expected 3 \(path,new_label,note\)"),
        ("", r"empty; expected the header path,new_label$"),
        ("\n", r'row 1: expected the header path,new_label \(or with ";" or tabs between\), got ""$'),
    ],
)
def test_bad_relabel_refused(images, synthetic_root: Path, tmp_path: Path, text: str, message: str) -> None:
    file = _write(tmp_path / "bad.csv", text)
    with pytest.raises(DatasetError, match=rf"bad\.csv: {message}"):
        apply_relabel(images, read_relabel(file, images.classes, synthetic_root), synthetic_root)


def test_train_records_the_relabel(synthetic_root: Path, tmp_path: Path) -> None:
    file = _write(tmp_path / "relabel.csv", "path,new_label\naltar/000.png,apse\nvault/003.png,gargoyle\n")
    out = tmp_path / "run"
    tiny = ["--widths", "8,16", "--blocks", "1,1", "--optimizer", "adamw", "--no-amp", "--epochs", "1"]
    argv = ["train", "-q", "--data", str(synthetic_root), "--out", str(out), "--relabel", str(file), *tiny]
    assert main(argv) == 0
    info = json.loads((out / "last.json").read_text())
    record = info["relabel"]
    assert record["file"] == str(file) and record["rows"] == 2 and record["labels_changed"] == 2
    assert len(record["sha256"]) == 64
    assert json.loads((out / "config.json").read_text())["relabel"] == str(file)
    assert load_checkpoint(out).info["relabel"] == record  # the checkpoint loads with the record


def test_train_refuses_a_bad_relabel_file(synthetic_root: Path, tmp_path: Path, capsys) -> None:
    file = _write(tmp_path / "edits.csv", "path,new_label\naltar/000.png,apse\naltar/001.png,nave\n")
    argv = ["train", "-q", "--data", str(synthetic_root), "--out", str(tmp_path / "run"), "--relabel", str(file)]
    assert main([*argv, "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"heritage: error: {file}: row 3: unknown class 'nave'") and err.count("\n") == 1
    missing = tmp_path / "missing.csv"
    assert main([*argv[:-1], str(missing), "--epochs", "1"]) == 2
    assert str(missing) in capsys.readouterr().err


def test_a_relative_root_matches_relative_and_absolute_rows(synthetic_root: Path, tmp_path: Path, monkeypatch) -> None:
    """`--data flip` (relative, as typed) and the Kaggle layout's `kag/train`: the folder's photo paths are relative
    to the working folder, the rows to the class-folder root or absolute; all of them match."""
    import shutil

    shutil.copytree(synthetic_root, tmp_path / "kag" / "train")
    monkeypatch.chdir(tmp_path)
    file = _write(
        tmp_path / "relabel.csv",
        "path,new_label\n"
        "altar/000.png,apse\n"
        "./column/001.png,vault\n"
        f"{tmp_path / 'kag' / 'train' / 'vault' / '003.png'},gargoyle\n"
        "apse/002.png,\n",
    )
    for root in (Path("kag/train"), Path("kag/../kag/train"), tmp_path / "kag" / "train"):
        images = load_images(root)
        relabel = read_relabel(file, images.classes, root)
        relabelled, changed = apply_relabel(images, relabel, root)
        assert changed == 3, root
        label = dict(zip(images.paths, relabelled.labels.tolist(), strict=True))
        assert label[str(root / "altar" / "000.png")] == images.classes.index("apse")
        assert label[str(root / "column" / "001.png")] == images.classes.index("vault")
        assert label[str(root / "vault" / "003.png")] == images.classes.index("gargoyle")


def test_a_header_with_spaces_is_read_not_ignored(images, synthetic_root: Path, tmp_path: Path) -> None:
    """`path, new_label` (a space after the comma) names the same columns, and the rows are read, not skipped."""
    file = _write(tmp_path / "spaced.csv", "path, new_label\naltar/000.png, apse\n vault/003.png , gargoyle\n")
    relabel = read_relabel(file, images.classes, synthetic_root)
    assert len(relabel.rows) == 2
    _, changed = apply_relabel(images, relabel, synthetic_root)
    assert changed == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("path,new_label\naltar/000.png,apse\naltar/999.png,\n", r"row 3: altar/999.png is not a photo of"),
        ("path,new_label\naltar/000.png,\naltar/000.png,apse\n", r"row 3: altar/000.png is listed already \(row 2\)"),
    ],
)
def test_a_row_that_keeps_its_label_still_names_a_photo(images, synthetic_root, tmp_path, text, message) -> None:
    """An empty new label keeps the photo's label (docs/review.md), but its path must still be one of the photos."""
    file = _write(tmp_path / "kept.csv", text)
    with pytest.raises(DatasetError, match=rf"kept\.csv: {message}"):
        apply_relabel(images, read_relabel(file, images.classes, synthetic_root), synthetic_root)


# names review lists exactly (tests/test_file_names.py's hostile names): not UTF-8; a newline, comma and quotes; a
# line separator (U+2028, a line end to str.splitlines, not to CSV); a class folder named "   " (spaces that
# are part of a name, not around a cell)
HOSTILE = {
    b"apse/000.png": b"altar/caf\xe9 1.png",
    b"altar/000.png": b'apse/new\nline,"q".png',
    b"column/000.png": "column/sep\u2028x.png".encode(),
    b"vault/001.png": b"   /001.png",
}
SPACES = [b"vault/002.png", b"vault/004.png", b"vault/005.png"]  # the rest of the class "   "


@pytest.fixture(scope="module")
def hostile_root(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile") / "data"
    shutil.copytree(synthetic_root, root)
    os.mkdir(os.fsencode(root) + b"/   ")
    for old, new in HOSTILE.items():
        os.rename(os.fsencode(root) + b"/" + old, os.fsencode(root) + b"/" + new)
    for old in SPACES:
        os.rename(os.fsencode(root) + b"/" + old, os.fsencode(root) + b"/   /" + old.split(b"/")[1])
    return root


def _review_relabel(path: Path, rows: list[tuple[str, str]], bom: bool = False) -> Path:
    """A relabel.csv as `heritage review` writes it (its own writer), with a byte-order mark as an editor may save."""
    from heritage_cnn.base.io import atomic_write_csv

    atomic_write_csv(path, ["path", "new_label"], [{"path": p, "new_label": label} for p, label in rows], line_end="\n")
    if bom:
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    return path


@pytest.mark.parametrize("bom", [False, True])
def test_review_names_round_trip(hostile_root: Path, tmp_path: Path, bom: bool) -> None:
    """Every row of review's relabel.csv names its photo exactly, whatever the photo's name."""
    rows = [(os.fsdecode(new), "gargoyle") for new in HOSTILE.values()]
    file = _review_relabel(tmp_path / "relabel.csv", rows, bom)
    assert b"caf\xe9 1.png" in file.read_bytes()  # the bytes on disk, not an escape
    images = load_images(hostile_root)
    relabel = read_relabel(file, images.classes, hostile_root)
    assert set(relabel.rows) == {path for path, _ in rows}
    relabelled, changed = apply_relabel(images, relabel, hostile_root)
    assert changed == len(HOSTILE)
    label = dict(zip(images.paths, relabelled.labels.tolist(), strict=True))
    for path, _ in rows:
        assert label[str(hostile_root / path)] == images.classes.index("gargoyle"), path


def test_train_reads_review_names(hostile_root: Path, tmp_path: Path, capsysbinary) -> None:
    """`heritage train --relabel` end to end, on a relabel file that itself has a name that is not UTF-8."""
    rows = [(os.fsdecode(new), "gargoyle") for new in HOSTILE.values()]
    file = _review_relabel(Path(os.fsdecode(os.fsencode(tmp_path) + b"/rl\xe9.csv")), rows)
    out = tmp_path / "run"
    tiny = ["--widths", "8,16", "--blocks", "1,1", "--optimizer", "adamw", "--no-amp", "--epochs", "1"]
    argv = ["train", "--data", str(hostile_root), "--out", str(out), "--relabel", str(file), *tiny]
    assert main(argv) == 0
    assert json.loads((out / "last.json").read_text())["relabel"]["labels_changed"] == len(HOSTILE)
    assert (
        b"4 photos moved to another class by " + os.fsencode(tmp_path) + b"/rl\\xe9.csv"
        in capsysbinary.readouterr().out
    )
