"""What `heritage teach` reads: a sorted folder's moves, additions and deletions; refusals in one line. The names
a new class may take are test_teach_names.py's."""

from __future__ import annotations

import csv
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from _teach_photo_helpers import KNOWN, _hand_sorted, _new_folder, _one_line_error, _photo, _rows, _write_manifest

from heritage_cnn.data.folders import DatasetError
from heritage_cnn.inference.sort import sort_photos
from heritage_cnn.inference.sort_manifest import read_manifest
from heritage_cnn.inference.teach_photos import (
    ADDED_OR_RENAMED,
    NOT_FOUND,
    REPEATED,
    SHARED,
    UNREADABLE,
    TeachPhotos,
    read_corrections,
    read_new_classes,
)


@pytest.fixture
def sorted_folder(classifier, synthetic_root: Path, tmp_path: Path) -> Path:
    """Twelve photos of four classes sorted by the tiny model."""
    survey = tmp_path / "survey"
    for name in ("altar", "apse", "column", "gargoyle"):
        (survey / name).mkdir(parents=True)
        for i in range(3):
            (survey / name / f"{name}_{i}.png").write_bytes((synthetic_root / name / f"{i:03d}.png").read_bytes())
    out = tmp_path / "sorted"
    sort_photos(classifier, survey, out, min_confidence=0.0, progress=False)
    return out


def _filed(root: Path) -> dict[str, Path]:
    with open(root / "manifest.csv", newline="") as handle:
        return {Path(r["source"]).name: Path(r["destination"]) for r in csv.DictReader(handle)}


def test_moves_additions_and_deletions_are_read(sorted_folder: Path, synthetic_root: Path) -> None:
    filed = _filed(sorted_folder)
    moved = filed["altar_0.png"]
    target = next(n for n in ("vault", "dome(inner)") if n != moved.parent.name)
    (sorted_folder / target).mkdir(exist_ok=True)
    moved.rename(sorted_folder / target / "renamed.png")  # moved and renamed: found by its content
    filed["apse_0.png"].unlink()  # deleted
    (sorted_folder / "portal").mkdir()  # a new class folder with a photo the user added
    (sorted_folder / "portal" / "p.png").write_bytes((synthetic_root / "vault" / "010.png").read_bytes())
    photos = read_corrections(sorted_folder)
    assert photos.found["moved"] == 1 and photos.found["deleted"] == 1 and photos.found["added"] == 1
    assert (
        photos.found["confirmed"] + photos.found.get("left in _uncertain", 0) + photos.found.get("left in _none", 0)
        == 10
    )
    by_path = dict(zip(photos.paths, zip(photos.labels, photos.kinds, strict=True), strict=True))
    assert by_path[str(sorted_folder / target / "renamed.png")] == (target, "moved")
    assert by_path[str(sorted_folder / "portal" / "p.png")] == ("portal", "added")
    assert len(photos) == photos.found["moved"] + photos.found["added"] + photos.found["confirmed"]


def test_a_photo_moved_into_none_is_not_learned(sorted_folder: Path) -> None:
    filed = _filed(sorted_folder)
    (sorted_folder / "_none").mkdir(exist_ok=True)
    filed["column_1.png"].rename(sorted_folder / "_none" / "column_1.png")
    photos = read_corrections(sorted_folder)
    assert photos.found["moved to _none"] == 1
    assert all(Path(p).parent.name != "_none" for p in photos.paths)


def test_an_edited_manifest_is_refused(sorted_folder: Path) -> None:
    manifest = sorted_folder / "manifest.csv"
    rows = list(csv.DictReader(manifest.open(newline="")))
    rows[0]["top1_label"] = "vault" if rows[0]["top1_label"] != "vault" else "altar"  # a label "corrected" by hand
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(DatasetError, match=r"manifest.csv: line 2: was edited: filed in"):
        read_corrections(sorted_folder)


def test_a_folder_without_sorts_manifest_is_refused(sorted_folder: Path) -> None:
    (sorted_folder / "manifest.csv").unlink()
    with pytest.raises(DatasetError, match=r"manifest\.csv: missing; --corrections reads a folder that heritage sort"):
        read_corrections(sorted_folder)


def test_the_sorted_folder_is_only_read(sorted_folder: Path) -> None:
    before = sorted((p.relative_to(sorted_folder), p.stat().st_mtime_ns) for p in sorted_folder.rglob("*"))
    read_corrections(sorted_folder)
    assert sorted((p.relative_to(sorted_folder), p.stat().st_mtime_ns) for p in sorted_folder.rglob("*")) == before


def test_identical_photos_sorted_to_one_file_are_counted_once_and_said(
    classifier, synthetic_root: Path, tmp_path: Path
) -> None:
    """Two sources with one name and one content: sort keeps one file and writes a manifest row for each; teach reads
    the file once and says that the other row shares it, so every row is accounted for."""
    survey = tmp_path / "survey"
    for name in ("a", "b"):
        (survey / name).mkdir(parents=True)
        (survey / name / "dup.png").write_bytes((synthetic_root / "altar" / "000.png").read_bytes())
    out = tmp_path / "sorted"
    sort_photos(classifier, survey, out, min_confidence=0.0, progress=False)
    with open(out / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and rows[0]["destination"] == rows[1]["destination"]
    photos = read_corrections(out)
    assert photos.found[SHARED] == 1 and sum(photos.found.values()) == len(rows)
    assert len(photos) <= 1


def test_a_sorted_folder_moved_elsewhere_reads_where_it_now_lies(sorted_folder: Path, tmp_path: Path) -> None:
    """The manifest names sort's output folder; the folder read is another (copied, then the original renamed away
    so that nothing is read from it): every row is found in the folder read, a move in it included."""
    copied = tmp_path / "elsewhere" / "copied"
    shutil.copytree(sorted_folder, copied)
    sorted_folder.rename(tmp_path / "gone")
    filed = {name: copied / path.parent.name / path.name for name, path in _filed(copied).items()}
    moved = filed["altar_1.png"]
    target = next(n for n in ("vault", "apse") if n != moved.parent.name)
    (copied / target).mkdir(exist_ok=True)
    moved.rename(copied / target / "altar_1.png")
    photos = read_corrections(copied)
    assert photos.found["moved"] == 1 and "deleted" not in photos.found and "added" not in photos.found
    left = sum(n for kind, n in photos.found.items() if kind.startswith("left in"))
    assert photos.found["confirmed"] + left == 11
    assert all(Path(p).is_relative_to(copied) for p in photos.paths)


@pytest.mark.parametrize(
    ("destination", "refusal"),
    [
        ("/home/someone/Pictures/altar_0.png", "filed in 'Pictures' but its answer is 'altar'"),
        ("altar_0.png", "its destination is not a file in a class folder"),
        ("", "its destination is not a file in a class folder"),
    ],
)
def test_a_destination_edited_out_of_a_class_folder_is_refused(
    synthetic_root: Path, tmp_path: Path, destination: str, refusal: str
) -> None:
    out = _hand_sorted(synthetic_root, tmp_path)
    rows = _rows(out)
    rows[0]["destination"] = destination
    _write_manifest(out, rows)
    message = _one_line_error(read_corrections, out)
    assert "manifest.csv: line 2: was edited: " + refusal in message


def test_a_subfolder_of_a_class_folder_is_that_class(synthetic_root: Path, tmp_path: Path) -> None:
    """A user's subfolders inside class folders: their photos are the class folder's, whatever the subfolder's
    name (the same name in two class folders included), and a filed photo moved into one is still confirmed."""
    out = _hand_sorted(synthetic_root, tmp_path)
    for name, source in (("altar", "altar"), ("vault", "vault")):
        (out / name / "2019").mkdir()
        (out / name / "2019" / "extra.png").write_bytes(_photo(synthetic_root, source, 10))
    (out / "altar" / "old").mkdir()
    (out / "altar" / "altar_0.png").rename(out / "altar" / "old" / "renamed.png")
    photos = read_corrections(out)
    assert set(photos.labels) == {"altar", "apse", "vault"}
    by_path = dict(zip(photos.paths, zip(photos.labels, photos.kinds, strict=True), strict=True))
    assert by_path[str(out / "altar" / "2019" / "extra.png")] == ("altar", "added")
    assert by_path[str(out / "vault" / "2019" / "extra.png")] == ("vault", "added")
    assert by_path[str(out / "altar" / "old" / "renamed.png")] == ("altar", "confirmed")
    assert photos.found["confirmed"] == 9 and photos.found["added"] == 2


def test_a_new_class_folder_s_subfolders_are_that_class(synthetic_root: Path, tmp_path: Path) -> None:
    new = _new_folder(synthetic_root, tmp_path / "new", "portal", count=12)
    (new / "portal" / "2019").mkdir()
    for i in range(12, 20):
        (new / "portal" / "2019" / f"{i:03d}.png").write_bytes(_photo(synthetic_root, "gargoyle", i))
    photos = read_new_classes(new, KNOWN)
    assert photos.labels == ["portal"] * 20


def test_one_photo_in_two_class_folders_is_refused_naming_both(synthetic_root: Path, tmp_path: Path) -> None:
    out = _hand_sorted(synthetic_root, tmp_path)
    shutil.copy(out / "altar" / "altar_1.png", out / "vault" / "copy.png")  # copied, not moved
    message = _one_line_error(read_corrections, out)
    assert str(out / "altar" / "altar_1.png") in message and str(out / "vault" / "copy.png") in message
    assert "'altar' and 'vault'" in message


def test_one_photo_twice_in_one_class_is_taught_once_and_said(synthetic_root: Path, tmp_path: Path) -> None:
    out = _hand_sorted(synthetic_root, tmp_path)
    shutil.copy(out / "apse" / "apse_2.png", out / "apse" / "again.png")
    photos = read_corrections(out)
    assert len(photos) == 9 and len(set(photos.digests)) == 9
    assert photos.found[REPEATED] == 1 and photos.found["confirmed"] == 9 and "added" not in photos.found
    assert photos.skipped == [
        (str(out / "apse" / "again.png"), f"the same photo as {out / 'apse' / 'apse_2.png'}: taught once")
    ]


def test_a_folder_of_new_classes_given_twice_is_taught_once(synthetic_root: Path, tmp_path: Path) -> None:
    """`heritage teach NEW NEW`: the command merges what each folder gave into one TeachPhotos."""
    new = _new_folder(synthetic_root, tmp_path / "new", "portal")
    parts = [read_new_classes(new, KNOWN), read_new_classes(new, KNOWN)]
    merged = TeachPhotos(
        torch.cat([p.images for p in parts]),
        *([x for p in parts for x in getattr(p, name)] for name in ("labels", "paths", "digests", "kinds")),
        skipped=[s for p in parts for s in p.skipped],
    )
    assert len(merged) == 20 and merged.images.shape[0] == 20 and merged.found[REPEATED] == 20
    assert len(merged.skipped) == 20 and all(reason == "read twice: taught once" for _, reason in merged.skipped)


def test_a_new_class_needs_its_photos_without_repeats(synthetic_root: Path, tmp_path: Path) -> None:
    new = _new_folder(synthetic_root, tmp_path / "new", "portal", count=19)
    shutil.copy(new / "portal" / "000.png", new / "portal" / "copy.png")  # 20 files, 19 photos
    message = _one_line_error(read_new_classes, new, KNOWN)
    assert "portal: 19 readable photo(s)" in message


def test_without_the_sources_a_renamed_photo_is_not_called_deleted(synthetic_root: Path, tmp_path: Path) -> None:
    """The survey folder that was sorted is gone: a photo renamed in its class folder and one deleted cannot be told
    apart, and neither is said to be deleted; with the survey there, the renamed one is found by its content."""
    out = _hand_sorted(synthetic_root, tmp_path)
    (out / "altar" / "altar_0.png").rename(out / "altar" / "renamed.png")
    (out / "apse" / "apse_0.png").unlink()
    found = read_corrections(out).found
    assert found["confirmed"] == 8 and found["deleted"] == 1 and "added" not in found
    shutil.rmtree(tmp_path / "survey")
    photos = read_corrections(out)
    assert "deleted" not in photos.found and "added" not in photos.found
    assert photos.found[NOT_FOUND] == 2 and photos.found[ADDED_OR_RENAMED] == 1 and photos.found["confirmed"] == 7
    assert dict(zip(photos.paths, photos.labels, strict=True))[str(out / "altar" / "renamed.png")] == "altar"


def test_unreadable_files_are_counted_as_skipped_not_added(synthetic_root: Path, tmp_path: Path) -> None:
    out = _hand_sorted(synthetic_root, tmp_path)
    (out / "vault" / "empty.jpg").write_bytes(b"")
    (out / "vault" / "notes.jpg").write_text("not a photo")
    (out / "vault" / "cut.png").write_bytes(_photo(synthetic_root, "vault", 5)[:200])
    (out / "altar" / "altar_2.png").write_bytes(b"")  # a filed photo spoiled where it lies
    photos = read_corrections(out)
    assert "added" not in photos.found and "confirmed" in photos.found and photos.found[UNREADABLE] == 4
    assert photos.found["confirmed"] == 8 and len(photos) == 8
    assert {Path(p).name for p, _ in photos.skipped} == {"empty.jpg", "notes.jpg", "cut.png", "altar_2.png"}


def test_a_fifo_named_like_a_photo_is_skipped_not_waited_on(synthetic_root: Path, tmp_path: Path) -> None:
    out = _hand_sorted(synthetic_root, tmp_path)
    os.mkfifo(out / "vault" / "pipe.jpg")

    def waited(*_) -> None:
        raise TimeoutError("read_corrections waited on a FIFO")

    before = signal.signal(signal.SIGALRM, waited)
    signal.alarm(20)
    try:
        photos = read_corrections(out)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)
    assert [Path(p).name for p, _ in photos.skipped] == ["pipe.jpg"] and photos.found[UNREADABLE] == 1


def test_a_manifest_left_with_its_header_only_is_refused(synthetic_root: Path, tmp_path: Path) -> None:
    """Sort writes no manifest for a folder with nothing to sort: one without rows beside photos was emptied."""
    out = _hand_sorted(synthetic_root, tmp_path)
    _write_manifest(out, [])
    message = _one_line_error(read_corrections, out)
    assert message == f"{out}/manifest.csv: was edited or is not sort's: it lists no photo, but its folders hold 9"


@pytest.mark.parametrize(
    ("cut", "refusal"),
    [
        # the last row cut before its answer (top1_label), as a copy stopped mid-file leaves it
        (lambda text: text[: text.rindex(",vault,")], "line 10: is incomplete, 9 of the header's 18 cells"),
        (lambda text: text.rstrip("\r\n") + ",extra\r\n", "line 10: was edited: 19 cells, the header has 18"),
    ],
)
def test_a_manifest_cut_off_mid_row_says_so(synthetic_root: Path, tmp_path: Path, cut, refusal: str) -> None:
    out = _hand_sorted(synthetic_root, tmp_path)
    manifest = out / "manifest.csv"
    manifest.write_bytes(cut(manifest.read_bytes().decode()).encode())
    message = _one_line_error(read_corrections, out)
    assert f"manifest.csv: {refusal}" in message and "None" not in message


def test_a_manifest_saved_with_a_byte_order_mark_reads_as_sorts_own_reader_reads_it(
    synthetic_root: Path, tmp_path: Path
) -> None:
    """An editor or spreadsheet that saves a BOM before the header: read past it, by teach and by sort alike."""
    out = _hand_sorted(synthetic_root, tmp_path)
    manifest = out / "manifest.csv"
    plain = read_corrections(out)
    manifest.write_bytes(b"\xef\xbb\xbf" + manifest.read_bytes())
    marked = read_corrections(out)
    assert marked.labels == plain.labels and marked.found == plain.found == {"confirmed": 9}
    assert len(read_manifest(manifest, multi=False)) == 9


def test_a_source_that_is_no_path_or_cannot_be_looked_up_counts_as_not_there(
    synthetic_root: Path, tmp_path: Path
) -> None:
    """A moved photo's row is looked up by its source's content. The web page's `upload:<name>` is no path and is never
    looked up: with a 254-byte upload name (valid on ext4), `upload:<name>` is too long for a file name and teach
    stopped with "File name too long", naming neither the manifest nor the row. A source path that cannot be looked at
    (too long, a NUL in it) is not there either. Each photo is then found by the file name sort gave it."""
    out = _hand_sorted(synthetic_root, tmp_path, per_class=1)
    rows = _rows(out)
    rows[0]["source"] = "upload:" + "é" * 125 + ".jpg"
    rows[1]["source"] = str(tmp_path / ("x" * 300 + ".png"))
    rows[2]["source"] = str(tmp_path / "survey" / "nul\0.png")
    _write_manifest(out, rows)
    (out / "column").mkdir()
    for name in ("altar", "apse", "vault"):  # every photo moved by hand: its row's source is looked at
        (out / name / f"{name}_0.png").rename(out / "column" / f"{name}_0.png")
    photos = read_corrections(out, known=KNOWN)
    assert photos.found == {"moved": 3}
    assert sorted(Path(p).name for p in photos.paths) == ["altar_0.png", "apse_0.png", "vault_0.png"]
    assert photos.labels == ["column"] * 3
