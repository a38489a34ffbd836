"""`heritage sort`: copies that never touch the sources, resume, confinement to --out, hard links that fall
back to counted copies, the output-folder lock, and real concurrent processes and SIGKILLs; the confidence
threshold is test_sort_threshold.py's, running again into a sorted folder test_sort_rerun.py's."""

from __future__ import annotations

import dataclasses
import errno
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from _sort_helpers import _copies, _manifest, _tree_digest
from PIL import Image

from conftest import draw, file_digest, make_survey
from heritage_cnn.cli.main import main
from heritage_cnn.inference import sort_files
from heritage_cnn.inference.classifier import Classifier
from heritage_cnn.inference.sort import LOCK_NAME, SortLocked, SortSummary, output_lock, sort_photos
from heritage_cnn.inference.sort_files import TEMP_PREFIX
from heritage_cnn.inference.sort_manifest import MANIFEST_FIELDS

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _many(root: Path, count: int, seed: int, size: int = 64) -> Path:
    """`count` photos with clashing names (photo_000.png ... in every survey made by this function)."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(draw(i % 10, rng, size)).save(root / f"photo_{i:03d}.png")
    return root


def _check_complete(sources: list[Path], out: Path) -> None:
    """Every source exactly once in OUT with its own bytes, one manifest row each, no temporary file."""
    rows = _manifest(out)
    assert sorted(r["source"] for r in rows) == sorted(str(s.resolve()) for s in sources)  # no row lost
    assert len({r["destination"] for r in rows}) == len(rows)
    for row in rows:  # each destination holds its own source's bytes: nothing was overwritten
        assert file_digest(Path(row["destination"])) == file_digest(Path(row["source"]))
    copies = _copies(out)
    assert Counter(file_digest(p) for p in copies) == Counter(file_digest(s) for s in sources)  # no extra copy
    assert not [p for p in out.rglob("*") if p.name.startswith(TEMP_PREFIX) or p.name.endswith(".tmp")]


def _run_sort(model: Path, survey: Path, out: Path, slow_s: float = 0.0) -> subprocess.Popen:
    """`sort_photos` in its own process (optionally with a slow disk: a pause after each copy)."""
    script = textwrap.dedent(f"""
        import sys, time
        from heritage_cnn.inference import sort, sort_files
        from heritage_cnn.inference.classifier import Classifier, find_photos
        copy = sort_files._copy
        def slow_copy(*args):
            copy(*args)
            time.sleep({slow_s})
        sort_files._copy = slow_copy
        try:
            sort.sort_photos(Classifier.load({str(model)!r}), {str(survey)!r}, {str(out)!r}, 0.0, progress=False)
        except sort.SortLocked as error:
            print(error, file=sys.stderr)
            sys.exit(2)
    """)
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True)


# --------------------------------------------------------------------------------------------
# In one process
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def filing(old_checkpoint: Path) -> Classifier:
    """The tiny network without a none-of-these threshold: every photo goes to a class or `_uncertain/`, for
    the tests of copying, linking and resuming."""
    return Classifier.load(old_checkpoint)


def test_sort_copies_never_touches_sources_and_resumes(
    filing: Classifier, synthetic_root: Path, tmp_path: Path
) -> None:
    classifier = filing
    survey = make_survey(synthetic_root, tmp_path / "survey")
    before = _tree_digest(survey)
    out = tmp_path / "sorted"
    first = sort_photos(classifier, survey, out, min_confidence=0.0, progress=False)
    assert _tree_digest(survey) == before  # nothing moved, changed or deleted
    assert first.placed == 9 and first.already_done == 0 and [Path(p).name for p, _ in first.skipped] == ["broken.jpg"]
    assert first.copied == 9 and first.how_placed() == "copied 9"
    altars = sorted(p.name for p in (out / "altar").iterdir())
    assert altars == ["altar-1.png", "altar.png", "altar_0.jpg"]  # a name collision gets a suffix
    rows = _manifest(out)
    assert list(rows[0]) == MANIFEST_FIELDS and MANIFEST_FIELDS[-3:] == ["top3_label", "top3_name", "top3_probability"]
    assert len(rows) == 9 and all(Path(r["destination"]).exists() for r in rows)
    assert all(r["label"] == r["top1_label"] and r["probability"] == r["top1_probability"] for r in rows)
    text = first.describe(0.0)
    assert "1 unreadable file(s) skipped, listed in" in text and "copied 9" in text
    second = sort_photos(classifier, survey, out, min_confidence=0.0, progress=False)
    assert second.placed == 0 and second.already_done == 9 and len(second.skipped) == 1  # the bad file: again
    assert "skipped" not in SortSummary(placed=1, copied=1).describe(0.6)  # no "0 unreadable" line
    assert len(_copies(out)) == 9


def test_sort_threshold_link_mode_and_refusals(filing: Classifier, synthetic_root: Path, tmp_path: Path) -> None:
    classifier = filing
    survey = make_survey(synthetic_root, tmp_path / "survey")
    summary = sort_photos(classifier, survey, tmp_path / "unsure", min_confidence=1.0, mode="link", progress=False)
    assert summary.uncertain == 9 and len(list((tmp_path / "unsure" / "_uncertain").iterdir())) == 9
    assert summary.linked == 9 and summary.copied == 0 and summary.how_placed() == "linked 9, copied 0"
    for linked in (tmp_path / "unsure" / "_uncertain").iterdir():  # hard links, never symbolic ones
        assert not linked.is_symlink() and linked.stat().st_nlink == 2
    with pytest.raises(ValueError, match="must not be inside the input folder"):
        sort_photos(classifier, survey, survey / "out", progress=False)
    with pytest.raises(ValueError, match="must not be inside the output folder"):
        sort_photos(classifier, survey / "day1", survey, progress=False)
    with pytest.raises(ValueError, match="min-confidence"):
        sort_photos(classifier, survey, tmp_path / "x", min_confidence=1.5, progress=False)


@pytest.mark.parametrize("bad", ["../escaped", "/tmp/absolute", "..", "a/../../b", ""])
def test_class_names_never_write_outside_out(
    classifier: Classifier, synthetic_root: Path, tmp_path: Path, bad: str
) -> None:
    """A checkpoint whose class names are paths: refused before anything is written."""
    hostile = Classifier.__new__(Classifier)
    hostile.__dict__ |= classifier.__dict__
    hostile.checkpoint = dataclasses.replace(classifier.checkpoint, classes=[bad, *classifier.classes[1:]])
    survey = make_survey(synthetic_root, tmp_path / "survey")
    out = tmp_path / "deep" / "out"
    with pytest.raises(ValueError, match="not a plain folder name"):
        sort_photos(hostile, survey, out, min_confidence=0.0, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["survey"]  # nothing at all was written


def test_class_folder_linked_out_of_out_is_refused(
    classifier: Classifier, synthetic_root: Path, tmp_path: Path
) -> None:
    survey = make_survey(synthetic_root, tmp_path / "survey")
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    for name in classifier.classes:
        (out / name).symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ValueError, match="outside the output folder"):
        sort_photos(classifier, survey, out, min_confidence=0.0, progress=False)
    assert list(elsewhere.iterdir()) == []


def test_link_across_file_systems_copies_and_says_so(
    classifier: Classifier, synthetic_root: Path, tmp_path: Path
) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("/dev/shm is missing or on the same file system as the temporary folder")
    with tempfile.TemporaryDirectory(dir=shm) as other:
        survey = make_survey(synthetic_root, Path(other) / "survey")
        out = tmp_path / "out"
        summary = sort_photos(classifier, survey, out, min_confidence=0.0, mode="link", progress=False)
        assert summary.linked == 0 and summary.copied == 9 and summary.copied_because == {"other file system": 9}
        assert summary.how_placed() == "linked 0, copied 9 (other file system)"
        assert "linked 0, copied 9 (other file system)" in summary.describe(0.0)
        copies = _copies(out)
        assert len(copies) == 9 and not any(p.is_symlink() for p in copies)
        assert all(p.stat().st_nlink == 1 for p in copies)
        _check_complete([p for p in survey.rglob("*") if p.is_file() and p.name != "broken.jpg"], out)
    assert all(p.is_file() for p in copies)  # the originals are gone; real copies stay


def test_file_system_without_hard_links(
    classifier: Classifier, synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FAT or exFAT (no hard links at all): copies in both modes, said so, clashing names still kept apart."""

    def no_links(source: object, target: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(sort_files.os, "link", no_links)
    survey = make_survey(synthetic_root, tmp_path / "survey")
    for mode in ("copy", "link"):
        out = tmp_path / mode
        summary = sort_photos(classifier, survey, out, min_confidence=0.0, mode=mode, progress=False)
        assert summary.copied == 9 and summary.linked == 0
        expected = "copied 9" if mode == "copy" else "linked 0, copied 9 (hard link not permitted)"
        assert summary.how_placed() == expected
        _check_complete([p for p in survey.rglob("*") if p.is_file() and p.name != "broken.jpg"], out)


def test_an_input_or_output_that_cannot_be_a_folder_is_named_with_why(tiny_run, synthetic_root, tmp_path) -> None:
    """`sort nowhere` said "not a folder" and `--out afile` said "File exists" (mkdir's words)."""
    classifier = Classifier.load(tiny_run.checkpoint)
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [
        (tmp_path / "nowhere", tmp_path / "out", "nowhere: no such folder"),
        (afile, tmp_path / "out", "afile: not a folder"),
        (synthetic_root, afile, "afile: is a file; the output folder must be a folder"),
        (synthetic_root, afile / "sub", f"sub: cannot be made: {afile} is a file"),
    ]
    for in_dir, out_dir, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            sort_photos(classifier, in_dir, out_dir)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------
# Other processes: a lock holder, two sorts at once, SIGKILL
# --------------------------------------------------------------------------------------------


def test_a_second_sort_refuses_while_the_folder_is_locked(
    tiny_run, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    survey = make_survey(synthetic_root, tmp_path / "survey")
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from heritage_cnn.inference.sort import output_lock\n"
         f"with output_lock(Path({str(out)!r})):\n    print('locked', flush=True); sys.stdin.read()"],
        env={**os.environ, "PYTHONPATH": SRC}, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        code = main(["sort", str(survey), "--out", str(out), "--model", str(tiny_run.checkpoint)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1
        assert err.endswith(f"{out.resolve()} is being sorted by another process (pid {holder.pid})")
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing written
    finally:
        holder.communicate("", timeout=30)
    with output_lock(out):  # released with the process, even though the file stays
        pass
    with output_lock(out), pytest.raises(SortLocked, match=f"pid {os.getpid()}"), output_lock(out):
        pass


def test_a_lock_file_that_is_no_plain_file_is_refused_and_nothing_written_through_it(
    tiny_run, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The pid is written into the lock file: one that is a link would overwrite the file it leads to, outside the
    folder; a pipe would block the opening. Each is refused in one line, naming it."""
    survey = make_survey(synthetic_root, tmp_path / "survey")
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's notes\n")
    for kind in ("link", "dangling link", "folder", "pipe"):
        out = tmp_path / kind.replace(" ", "_")
        out.mkdir()
        lock = out / LOCK_NAME
        if kind == "folder":
            lock.mkdir()
        elif kind == "pipe":
            os.mkfifo(lock)
        else:
            lock.symlink_to(victim if kind == "link" else tmp_path / "nowhere")
        code = main(["sort", str(survey), "--out", str(out), "--model", str(tiny_run.checkpoint)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and LOCK_NAME in err and err.endswith("remove it"), (kind, err)
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME], kind  # nothing sorted
    assert victim.read_text() == "the user's notes\n" and not (tmp_path / "nowhere").exists()


def test_two_sorts_at_once_lose_no_row_and_overwrite_nothing(tiny_run, tmp_path: Path) -> None:
    """Two real processes into one folder with the same file names: one runs, the other refuses (exit 2) or
    runs after it; re-running the refused one, every photo of both surveys is there once, with its row."""
    first, second = _many(tmp_path / "a", 60, seed=1), _many(tmp_path / "b", 60, seed=2)
    out = tmp_path / "out"
    runs = [_run_sort(tiny_run.checkpoint, survey, out, slow_s=0.01) for survey in (first, second)]
    results = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    for (code, err), survey in zip(results, (first, second), strict=True):
        assert code in (0, 2), err
        if code == 2:
            assert "is being sorted by another process (pid" in err and len(err.strip().splitlines()) == 1
            assert _run_sort(tiny_run.checkpoint, survey, out).wait(timeout=300) == 0
    _check_complete([*first.iterdir(), *second.iterdir()], out)


def test_sigkill_mid_sort_then_rerun(tiny_run, tmp_path: Path) -> None:
    """A real SIGKILL while copies are being written; the re-run leaves everything once and no temp file."""
    survey = _many(tmp_path / "survey", 80, seed=3, size=96)
    out = tmp_path / "out"
    run = _run_sort(tiny_run.checkpoint, survey, out, slow_s=0.02)
    deadline = time.monotonic() + 120

    def placed() -> list[Path]:
        return [p for p in _copies(out) if not p.name.startswith(TEMP_PREFIX)]

    while len(placed()) < 15 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=30)
    assert run.returncode == -signal.SIGKILL and 15 <= len(placed()) < 80  # killed in the middle
    assert _run_sort(tiny_run.checkpoint, survey, out).wait(timeout=300) == 0
    _check_complete(list(survey.iterdir()), out)
