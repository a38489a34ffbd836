"""What `heritage teach` reads: a sorted folder's moves, additions and deletions; refusals in one line."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from heritage_cnn.data.folders import DatasetError
from heritage_cnn.inference.sort import sort_photos
from heritage_cnn.inference.teach_photos import SHARED, read_corrections


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
