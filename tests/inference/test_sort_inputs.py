"""`heritage sort` and the photos it reads: one that vanishes between decoding and copying, a symbolic link among them
with --mode link, a hidden one, many of one name and size, and a Ctrl-C the moment a temporary copy is made. The
output folder's own problems are test_sort_rerun.py's."""

from __future__ import annotations

import csv
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from _sort_helpers import _copies, _manifest
from PIL import Image

from conftest import draw, file_digest, make_survey
from heritage_cnn.cli.main import main
from heritage_cnn.inference import sort, sort_files
from heritage_cnn.inference.classifier import Classifier
from heritage_cnn.inference.sort import sort_photos
from heritage_cnn.inference.sort_files import TEMP_PREFIX


@pytest.fixture(scope="module")
def filing(old_checkpoint: Path) -> Classifier:
    """The tiny network without a none-of-these threshold: every photo goes to a class or `_uncertain/`."""
    return Classifier.load(old_checkpoint)


def _vanishing(classifier: Classifier, victim: Path, away: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`victim` moved to `away` right after it was decoded and classified, before sort copies it (as a user or a sync
    tool may, hours into a long run: photos are decoded in chunks, then copied one by one)."""
    predict_files = classifier.predict_files

    def moving(*args, **kwargs):
        for item in predict_files(*args, **kwargs):
            if not isinstance(item, tuple) and Path(str(item.path)) == victim:
                victim.rename(away)
            yield item

    monkeypatch.setattr(classifier, "predict_files", moving)


@pytest.mark.parametrize("mode", ["copy", "link"])
def test_a_photo_that_vanishes_before_its_copy_is_skipped_and_the_run_goes_on(
    filing: Classifier, synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """Was: `heritage: error: ...jpg: No such file or directory`, exit 2, the rest of the survey never sorted."""
    survey = make_survey(synthetic_root, tmp_path / "survey").resolve()
    victim = survey / "day1" / "altar.png"
    _vanishing(filing, victim, tmp_path / "away.png", monkeypatch)
    out = tmp_path / "sorted"
    summary = sort_photos(filing, survey, out, min_confidence=0.0, mode=mode, progress=False)
    assert summary.placed == 8 and summary.linked + summary.copied == 8  # every other photo
    reasons = dict(summary.skipped)
    assert set(reasons) == {str(victim), str(survey / "day2" / "broken.jpg")}
    assert reasons[str(victim)].startswith("could not be copied: No such file or directory (moved, deleted")
    assert "2 unreadable file(s) skipped" in summary.describe(0.0)
    with open(out / "skipped.csv", newline="", encoding="utf-8") as handle:
        assert {row["source"] for row in csv.DictReader(handle)} == set(reasons)
    assert str(victim) not in {row["source"] for row in _manifest(out)} and len(_manifest(out)) == 8
    assert len(_copies(out)) == 8 and not list(out.rglob(f"{TEMP_PREFIX}*"))
    (tmp_path / "away.png").rename(victim)  # back: the next run sorts it
    monkeypatch.undo()
    again = sort_photos(filing, survey, out, min_confidence=0.0, mode=mode, progress=False)
    assert (again.placed, again.already_done) == (1, 8) and len(_copies(out)) == 9


def test_a_photo_filed_twice_that_vanishes_between_its_copies_leaves_none(
    filing: Classifier, synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--multi files a photo in several folders: gone after the first copy, that copy is taken back (a photo is filed
    whole or skipped, never a copy without its manifest row) and the counts with it."""
    survey = make_survey(synthetic_root, tmp_path / "survey").resolve()
    victim = survey / "day1" / "gargoyle.png"
    digest = file_digest(victim)
    folder_names, place = sort._folder_names, sort.place

    def twice(prediction, min_confidence):
        names = folder_names(prediction, min_confidence)
        return ["altar", "apse"] if Path(str(prediction.path)) == victim else names

    def then_gone(source, *args):
        placed = place(source, *args)
        if source == victim:
            victim.unlink()
        return placed

    monkeypatch.setattr(sort, "_folder_names", twice)
    monkeypatch.setattr(sort, "place", then_gone)
    out = tmp_path / "sorted"
    summary = sort_photos(filing, survey, out, min_confidence=0.0, progress=False)
    assert summary.placed == 8 and summary.copied == 8 and str(victim) in dict(summary.skipped)
    assert len(_copies(out)) == 8 and digest not in {file_digest(p) for p in _copies(out)}
    assert sum(summary.per_class.values()) == 8


def test_an_output_error_still_stops_the_run_naming_the_class_folder(
    old_checkpoint: Path, synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A full disk is no photo's fault: the run stops, in one line that names the class folder, not the temporary
    file (`.../altar/.heritage-sort-3eh41k4g.tmp: Permission denied` named a file that no longer exists)."""
    survey = make_survey(synthetic_root, tmp_path / "survey")

    def full(temp, name):
        raise OSError(28, "No space left on device", str(temp))

    monkeypatch.setattr(sort_files, "_publish", full)
    out = tmp_path / "sorted"
    code = main(["sort", str(survey), "--out", str(out), "--model", str(old_checkpoint), "-q"])
    # one line (after the note an old model without a none-of-these threshold gets)
    (err,) = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("heritage: note:")]
    (folder,) = [p for p in out.resolve().iterdir() if p.is_dir()]  # the first photo's: the run stopped there
    assert code == 2 and err == f"heritage: error: {folder}: No space left on device"
    assert not list(out.rglob(f"{TEMP_PREFIX}*"))


def test_link_mode_links_the_real_file_of_a_symbolic_link(
    filing: Classifier, synthetic_root: Path, tmp_path: Path
) -> None:
    """link(2) does not follow a symbolic link: the "hard link" was a second symbolic link, dangling once the photos
    moved. Now the output holds the photo's real file, a hard link to it."""
    survey = make_survey(synthetic_root, tmp_path / "survey")
    real = tmp_path / "elsewhere" / "real.png"
    real.parent.mkdir()
    shutil.copy(synthetic_root / "apse" / "003.png", real)
    (survey / "linked.png").symlink_to(real)
    relative = survey / "day1" / "relative.png"  # a relative link, resolved from its own folder
    relative.symlink_to(os.path.relpath(real, relative.parent))
    out = tmp_path / "sorted"
    summary = sort_photos(filing, survey, out, min_confidence=0.0, mode="link", progress=False)
    assert summary.linked == 11 and summary.copied == 0
    rows = {Path(r["source"]).name: Path(r["destination"]) for r in _manifest(out)}
    for name in ("linked.png", "relative.png"):
        assert not rows[name].is_symlink() and rows[name].is_file(), name
        assert rows[name].stat().st_ino == real.stat().st_ino
    real.rename(tmp_path / "moved.png")  # the originals move: the sorted photo stays
    assert rows["linked.png"].is_file() and rows["linked.png"].read_bytes()[:4] == b"\x89PNG"


def test_a_hidden_photos_copy_is_not_hidden(filing: Classifier, synthetic_root: Path, tmp_path: Path) -> None:
    """`.IMG_1.png` was copied as `.IMG_1.png`, which teach --corrections does not see: a correction made by moving
    it was lost. Its copy is `_.IMG_1.png`; a folder sorted before, whose manifest names the hidden copy, still works:
    an identical photo of that name shares that copy."""
    from heritage_cnn.inference.teach_photos import read_corrections

    survey = make_survey(synthetic_root, tmp_path / "survey")
    shutil.copy(synthetic_root / "vault" / "004.png", survey / "day1" / ".IMG_1.png")
    shutil.copy(synthetic_root / "vault" / "005.png", survey / "day2" / ".IMG_1.png")  # same name, other photo
    out = tmp_path / "sorted"
    summary = sort_photos(filing, survey, out, min_confidence=0.0, progress=False)
    assert summary.placed == 11
    names = [p.name for p in _copies(out) if "IMG_1" in p.name]
    assert len(names) == 2 and all(n.startswith("_.IMG_1") for n in names), names  # `-1` when in one folder
    assert {p.name for p in out.rglob(".*")} == {".heritage-sort.lock"}  # nothing hidden but the lock
    copy = Path(next(r["destination"] for r in _manifest(out) if r["source"] == str(survey / "day1" / ".IMG_1.png")))
    target = next(n for n in ("altar", "apse", "dome(inner)") if n != copy.parent.name)
    (out / target).mkdir(exist_ok=True)
    copy.rename(out / target / copy.name)  # a correction
    assert read_corrections(out).found["moved"] == 1

    # as an earlier version left it: the copy hidden, the manifest naming it
    old = tmp_path / "old"
    sort_photos(filing, survey / "day1", old, min_confidence=0.0, progress=False)
    rows = _manifest(old)
    row = next(r for r in rows if Path(r["source"]).name == ".IMG_1.png")
    new_name = Path(row["destination"])
    hidden = new_name.with_name(".IMG_1.png")
    new_name.rename(hidden)
    row["destination"] = str(hidden)
    with open(old / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (survey / "day1" / "copy").mkdir()
    shutil.copy(survey / "day1" / ".IMG_1.png", survey / "day1" / "copy" / ".IMG_1.png")
    again = sort_photos(filing, survey / "day1", old, min_confidence=0.0, progress=False)
    assert (again.placed, again.identical, again.moved_or_deleted) == (0, 1, 0)
    assert [p.name for p in _copies(old) if "IMG_1" in p.name] == [".IMG_1.png"]


def test_photos_of_one_name_and_size_are_each_hashed_once(
    filing: Classifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was quadratic: each new `scan.bmp` hashed every earlier copy of that name and size again, and itself once for
    each (300 scans of one size: 47 s). Each file is now hashed once per run."""
    survey, rng = tmp_path / "cards", np.random.default_rng(5)
    for i in range(12):  # BMP: one size for one shape, whatever the picture
        (survey / f"card{i:02d}").mkdir(parents=True)
        Image.fromarray(draw(i % 10, rng)).save(survey / f"card{i:02d}" / "scan.bmp")
    assert len({p.stat().st_size for p in survey.rglob("*.bmp")}) == 1
    hashed: Counter[str] = Counter()
    sha256 = sort_files.file_sha256

    def counted(path):
        hashed[str(path)] += 1
        return sha256(path)

    monkeypatch.setattr(sort_files, "file_sha256", counted)
    out = tmp_path / "sorted"
    summary = sort_photos(filing, survey, out, min_confidence=1.0, progress=False)  # all in _uncertain/
    assert summary.placed == 12 and len(list((out / "_uncertain").iterdir())) == 12
    assert hashed and max(hashed.values()) == 1, hashed.most_common(3)


def test_ctrl_c_the_moment_a_temporary_copy_is_made_leaves_no_temporary_file(
    filing: Classifier, synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A KeyboardInterrupt raised inside mkstemp once it had made the file, before sort had its name, escaped the
    clean-up: a hidden 0-byte `<class>/.heritage-sort-XXXX.tmp` after 5 of 10 real Ctrl-Cs. Here the interrupt comes
    right after the temporary file is made, however it is made (os.open, as mkstemp does, or open)."""
    survey = make_survey(synthetic_root, tmp_path / "survey")
    made: list[str] = []

    def interrupting(real):
        def make(path, *args, **kwargs):
            handle = real(path, *args, **kwargs)
            if os.path.basename(os.fsdecode(path)).startswith(TEMP_PREFIX):
                made.append(os.fsdecode(path))
                if isinstance(handle, int):
                    os.close(handle)
                else:
                    handle.close()
                raise KeyboardInterrupt
            return handle

        return make

    monkeypatch.setattr(os, "open", interrupting(os.open))
    monkeypatch.setattr(sort_files, "open", interrupting(open), raising=False)
    out = tmp_path / "sorted"
    with pytest.raises(KeyboardInterrupt):
        sort_photos(filing, survey, out, min_confidence=0.0, progress=False)
    assert len(made) == 1 and not Path(made[0]).exists()
    assert not list(out.rglob(f"{TEMP_PREFIX}*")) and (out / "manifest.csv").is_file()
