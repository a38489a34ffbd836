"""`heritage sort`: copies that never touch the sources, resume, confinement to --out, hard links that fall
back to counted copies, the output-folder lock, and real concurrent processes and SIGKILLs."""

from __future__ import annotations

import csv
import dataclasses
import errno
import hashlib
import json
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
from PIL import Image

from conftest import draw, make_survey
from heritage_cnn.cli.main import main
from heritage_cnn.inference import sort as sort_module
from heritage_cnn.inference.classifier import Classifier, find_photos
from heritage_cnn.inference.sort import LOCK_NAME, TEMP_PREFIX, SortLocked, SortSummary, output_lock, sort_photos
from heritage_cnn.inference.sort_manifest import MANIFEST_FIELDS
from heritage_cnn.inference.sort_settings import SETTINGS_NAME
from heritage_cnn.models.checkpoint import checkpoint_files

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _many(root: Path, count: int, seed: int, size: int = 64) -> Path:
    """`count` photos with clashing names (photo_000.png ... in every survey made by this function)."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(draw(i % 10, rng, size)).save(root / f"photo_{i:03d}.png")
    return root


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): _digest(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _manifest(out: Path) -> list[dict[str, str]]:
    with open(out / "manifest.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _copies(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.is_file() and p.parent != out]


def _check_complete(sources: list[Path], out: Path) -> None:
    """Every source exactly once in OUT with its own bytes, one manifest row each, no temporary file."""
    rows = _manifest(out)
    assert sorted(r["source"] for r in rows) == sorted(str(s.resolve()) for s in sources)  # no row lost
    assert len({r["destination"] for r in rows}) == len(rows)
    for row in rows:  # each destination holds its own source's bytes: nothing was overwritten
        assert _digest(Path(row["destination"])) == _digest(Path(row["source"]))
    copies = _copies(out)
    assert Counter(_digest(p) for p in copies) == Counter(_digest(s) for s in sources)  # no extra copy
    assert not [p for p in out.rglob("*") if p.name.startswith(TEMP_PREFIX) or p.name.endswith(".tmp")]


def _run_sort(model: Path, survey: Path, out: Path, slow_s: float = 0.0) -> subprocess.Popen:
    """`sort_photos` in its own process (optionally with a slow disk: a pause after each copy)."""
    script = textwrap.dedent(f"""
        import shutil, sys, time
        from heritage_cnn.inference import sort
        from heritage_cnn.inference.classifier import Classifier, find_photos
        copy = shutil.copy2
        def slow_copy(a, b):
            copy(a, b)
            time.sleep({slow_s})
        sort.shutil.copy2 = slow_copy
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

    monkeypatch.setattr(sort_module.os, "link", no_links)
    survey = make_survey(synthetic_root, tmp_path / "survey")
    for mode in ("copy", "link"):
        out = tmp_path / mode
        summary = sort_photos(classifier, survey, out, min_confidence=0.0, mode=mode, progress=False)
        assert summary.copied == 9 and summary.linked == 0
        expected = "copied 9" if mode == "copy" else "linked 0, copied 9 (hard link not permitted)"
        assert summary.how_placed() == expected
        _check_complete([p for p in survey.rglob("*") if p.is_file() and p.name != "broken.jpg"], out)


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


# --------------------------------------------------------------------------------------------
# The confidence threshold
# --------------------------------------------------------------------------------------------


def _blends(root: Path) -> Path:
    """Photos of every confidence: each class's picture, and blends of two classes' (ambiguous on purpose)."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(11)
    pictures = [draw(label, rng).astype(np.float64) for label in range(10)]
    for a in range(10):
        Image.fromarray(pictures[a].astype(np.uint8)).save(root / f"class{a}.png")
        for weight in (0.5, 0.65):
            blend = weight * pictures[a] + (1 - weight) * pictures[(a + 3) % 10]
            Image.fromarray(blend.astype(np.uint8)).save(root / f"blend{a}_{weight}.png")
    return root


def _placed(out: Path) -> dict[str, str]:
    """Source file name -> the folder its copy went to."""
    return {Path(r["source"]).name: Path(r["destination"]).parent.name for r in _manifest(out)}


def test_sort_splits_at_the_threshold_and_a_photo_at_it_is_confident(
    tiny_run, classifier: Classifier, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The rule (sort.py): a photo that is none of the ten (`known` false) -> _none/, checked first; else
    probability >= `--min-confidence` -> its class folder; below -> _uncertain/."""
    survey = _blends(tmp_path / "survey")
    photos, _ = find_photos([survey])
    # exact probabilities, as sort computes them (the same files, in the same order, in one batch); the manifest
    # rounds them to 4 decimals, too coarse to put the threshold exactly on one
    predictions = {Path(p.path).name: p for p in classifier.predict_files(photos)}
    probability = {name: p.probability for name, p in predictions.items()}
    none = {name for name, p in predictions.items() if p.known is False}
    model = str(tiny_run.checkpoint)
    assert main(["sort", str(survey), "--out", str(tmp_path / "default"), "--model", model, "-q"]) == 0
    placed = _placed(tmp_path / "default")
    unsure = {name for name, p in probability.items() if p < sort_module.MIN_CONFIDENCE}
    uncertain = unsure - none
    assert 0 < len(uncertain) < len(photos)  # the default threshold (0.6) really splits this survey
    assert none & unsure  # none of the ten and unsure which: _none/ comes first
    assert {name for name, folder in placed.items() if folder == sort_module.UNCERTAIN} == uncertain
    assert {name for name, folder in placed.items() if folder == sort_module.NONE} == none
    rows = {Path(r["source"]).name: r for r in _manifest(tmp_path / "default")}
    for name, folder in placed.items():
        if name not in uncertain | none:
            assert folder == rows[name]["label"]
        assert float(rows[name]["probability"]) == pytest.approx(probability[name], abs=5e-5)  # 4 decimals
        assert rows[name]["known"] == ("false" if name in none else "true")
    out = capsys.readouterr().out
    assert f"({len(none)} none of the ten in _none/, {len(uncertain)} below 0.60 in _uncertain/)" in out
    assert f"  _none {' ' * 15}{len(none)}" in out

    # a photo exactly at the threshold, and the threshold one float above it
    known = ((n, p) for n, p in probability.items() if 0.2 < p < 0.9 and n not in none)
    name, at = min(known, key=lambda item: abs(item[1] - 0.5))
    above = float(np.nextafter(at, 1.0))
    for threshold, expected in ((at, "class"), (above, sort_module.UNCERTAIN)):
        out = tmp_path / f"at-{threshold!r}"
        args = ["sort", str(survey), "--out", str(out), "--model", model, "--min-confidence", repr(threshold), "-q"]
        assert main(args) == 0
        placed = _placed(out)
        label = {Path(r["source"]).name: r["label"] for r in _manifest(out)}[name]
        assert placed[name] == (label if expected == "class" else expected), (threshold, at)
        others = {n: f for n, f in placed.items() if n != name}  # every other photo by the same rule
        assert all(
            (f == sort_module.UNCERTAIN) == (n not in none and probability[n] < threshold) for n, f in others.items()
        )
        assert all((f == sort_module.NONE) == (n in none) for n, f in others.items())


def test_none_of_these_go_to_none_first_with_the_manifests_known_column(
    tiny_run, classifier: Classifier, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --none-threshold at the survey's median score: the photos below it in _none/, the rest (every one
    below --min-confidence 1.0) in _uncertain/; a photo exactly at the threshold is one of the ten."""
    survey = make_survey(synthetic_root, tmp_path / "survey")
    photos, _ = find_photos([survey])
    scores = {str(p.path): p.open_set_score for p in classifier.predict_files(photos) if not isinstance(p, tuple)}
    threshold = float(np.median(list(scores.values())))  # nine photos: the fifth one's score
    out = tmp_path / "sorted"
    args = ["sort", str(survey), "--out", str(out), "--model", str(tiny_run.checkpoint), "-q"]
    assert main([*args, "--none-threshold", repr(threshold), "--min-confidence", "1.0"]) == 0
    rows = _manifest(out)
    none = {source for source, score in scores.items() if score < threshold}
    assert len(rows) == 9 and len(none) == 4
    for row in rows:
        below = row["source"] in none
        assert Path(row["destination"]).parent.name == (sort_module.NONE if below else sort_module.UNCERTAIN)
        assert row["known"] == ("false" if below else "true")
        assert float(row["none_threshold"]) == pytest.approx(threshold, rel=1e-6)
        assert float(row["open_set_score"]) == pytest.approx(scores[row["source"]], rel=1e-6)
    assert "(4 none of the ten in _none/, 5 below 1.00 in _uncertain/)" in capsys.readouterr().out
    assert len(list((out / sort_module.NONE).iterdir())) == 4


def test_noise_goes_to_none_and_the_summary_and_manifest_say_why(
    tiny_run, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    survey = make_survey(synthetic_root, tmp_path / "survey")
    rng = np.random.default_rng(4)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (90, 70, 3), dtype=np.uint8)).save(survey / f"static_{i}.png")
    out = tmp_path / "sorted"
    args = ["sort", str(survey), "--out", str(out), "--model", str(tiny_run.checkpoint), "-q"]
    assert main([*args, "--none-threshold=-1e9"]) == 0  # the score rejects nothing: only the check does
    rows = {Path(row["source"]).name: row for row in _manifest(out)}
    for name in ("static_0.png", "static_1.png"):
        assert Path(rows[name]["destination"]).parent.name == sort_module.NONE
        assert (rows[name]["known"], rows[name]["none_reason"]) == ("false", "noise")
    assert all(row["none_reason"] == "" for name, row in rows.items() if not name.startswith("static"))
    assert "2 none of the ten in _none/ (2 of them noise)" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# Running again: the user's corrections, the settings, identical photos, a link to OUT
# --------------------------------------------------------------------------------------------


def test_a_rerun_never_undoes_the_users_moves_and_deletions(
    filing: Classifier, synthetic_root: Path, tmp_path: Path
) -> None:
    """A photo the manifest lists is done, wherever its copy is now: not copied again when moved or deleted, and its
    file name is never given to a new photo (teach would read that one as the row's photo, confirmed)."""
    from heritage_cnn.inference.teach_photos import read_corrections

    survey = make_survey(synthetic_root, tmp_path / "survey")
    out = tmp_path / "sorted"
    sort_photos(filing, survey, out, min_confidence=0.0, progress=False)
    rows = _manifest(out)
    # deleted: a copy under its source's own name, which a new photo of that name would be given first
    deleted_row = next(r for r in rows if Path(r["destination"]).name == Path(r["source"]).name)
    deleted = Path(deleted_row["destination"])
    moved = Path(next(r["destination"] for r in rows if Path(r["destination"]).parent != deleted.parent))
    target = next(n for n in ("vault", "apse") if n != moved.parent.name)
    (out / target).mkdir(exist_ok=True)
    moved.rename(out / target / moved.name)  # a correction: another class
    deleted.unlink()  # a correction: not one of these
    # a new photo of the deleted copy's name, other bytes, that the model files in the deleted copy's folder
    label = deleted.parent.name
    used = {_digest(p) for p in survey.rglob("*.*")}
    newcomer = next(
        p
        for p in sorted((synthetic_root / label).glob("*.png"))
        if _digest(p) not in used and filing.predict(p)[0].label == label
    )
    (survey / "day3").mkdir()
    (survey / "day3" / deleted.name).write_bytes(newcomer.read_bytes())

    again = sort_photos(filing, survey, out, min_confidence=0.0, progress=False)
    assert (again.placed, again.already_done, again.moved_or_deleted, again.copied) == (1, 9, 2, 1)
    assert (
        "1 photo(s) sorted (0 below 0.00 in _uncertain/), 9 already done earlier (2 of them moved or deleted from "
        "where sort put them: left so, not copied again); copied 1"
    ) in again.describe(0.0)
    assert not moved.exists() and not deleted.exists()  # neither correction undone
    new_row = next(r for r in _manifest(out) if Path(r["source"]).parent.name == "day3")
    assert Path(new_row["destination"]).parent == deleted.parent
    assert new_row["destination"] not in {r["destination"] for r in rows}  # a name no row holds
    assert len(_copies(out)) == 9  # 9 copies, one moved, one deleted, one new
    found = read_corrections(out).found
    assert found["moved"] == 1 and found["deleted"] == 1  # what teach reads: the corrections, as made


def test_a_rerun_with_other_settings_is_refused_in_one_line(
    tiny_run, old_checkpoint: Path, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What decides where a photo goes is recorded beside the manifest; a run with other settings would file the
    new photos one way and leave the old ones the other: refused, exit 2, nothing written. A folder sorted before
    the record existed resumes, saying its settings could not be checked."""
    survey = make_survey(synthetic_root, tmp_path / "survey")
    model = tmp_path / "model"
    for source, suffix in zip(checkpoint_files(tiny_run.checkpoint), (".safetensors", ".json"), strict=True):
        (tmp_path / f"model{suffix}").write_bytes(source.read_bytes())
    out = tmp_path / "sorted"
    base = ["sort", str(survey), "--out", str(out), "-q"]
    assert main([*base, "--model", str(model)]) == 0
    record = out / SETTINGS_NAME
    settings = json.loads(record.read_text(encoding="utf-8"))
    assert (settings["min_confidence"], settings["multi"], settings["tta"]) == (0.6, False, "none")
    assert settings["none_threshold"] == pytest.approx(Classifier.load(model).open_set.threshold)
    capsys.readouterr()
    before = _tree_digest(out)

    def refused(*options: str) -> str:
        assert main([*base, *options]) == 2
        # one line (after the note an old model without a none-of-these threshold gets)
        (err,) = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("heritage: note:")]
        assert err.startswith(f"heritage: error: {out.resolve()} was sorted with ")
        assert err.endswith("sort into a new --out, or run again with the settings it was sorted with")
        assert _tree_digest(out) == before  # nothing written, nothing moved
        return err

    assert "(--min-confidence 0.6 then, 0.95 now)" in refused("--model", str(model), "--min-confidence", "0.95")
    assert "--none-threshold " in refused("--model", str(model), "--none-threshold", "-5")
    assert "(views --one-view then, --tta now)" in refused("--model", str(model), "--tta")
    assert f"--model {model}.safetensors then, {old_checkpoint} now" in refused("--model", str(old_checkpoint))
    # the same path, other files: a model retrained or taught into it
    for source, suffix in zip(checkpoint_files(old_checkpoint), (".safetensors", ".json"), strict=True):
        (tmp_path / f"model{suffix}").write_bytes(source.read_bytes())
    assert f"--model {model}.safetensors: its files changed since" in refused("--model", str(model))
    for source, suffix in zip(checkpoint_files(tiny_run.checkpoint), (".safetensors", ".json"), strict=True):
        (tmp_path / f"model{suffix}").write_bytes(source.read_bytes())
    assert main([*base, "--model", str(tiny_run.checkpoint)]) == 0  # the same model elsewhere: the same settings
    assert "9 already done earlier" in capsys.readouterr().out

    record.write_text("{not json", encoding="utf-8")  # damaged: refused, naming the file
    assert main([*base, "--model", str(model)]) == 2
    assert (
        capsys.readouterr().err.strip().startswith(f"heritage: error: {record.resolve()}: not sort's settings record")
    )
    record.unlink()  # as an earlier version left it: resumed, said so, and no record written after the fact
    assert main([*base, "--model", str(model), "--min-confidence", "0.95"]) == 0
    assert f"settings not checked: {out.resolve()} has no {SETTINGS_NAME}" in capsys.readouterr().out
    assert not record.exists()


def test_identical_photos_share_one_copy_and_are_counted_so(
    filing: Classifier, synthetic_root: Path, tmp_path: Path
) -> None:
    """Two sources of one name and one content in a new folder: one file, a row each, counted as identical (not
    as done earlier), and the per-class counts are the files."""
    survey = tmp_path / "dup"
    picture = (synthetic_root / "apse" / "000.png").read_bytes()
    for folder in ("a", "b"):
        (survey / folder).mkdir(parents=True)
        (survey / folder / "IMG_1.png").write_bytes(picture)
    out = tmp_path / "sorted"
    first = sort_photos(filing, survey, out, min_confidence=0.0, progress=False)
    assert (first.placed, first.identical, first.already_done, first.copied) == (1, 1, 0, 1)
    assert "1 photo(s) sorted (0 below 0.00 in _uncertain/), 1 identical to a photo sorted before it" in (
        first.describe(0.0)
    )
    files = Counter(p.parent.name for p in _copies(out))
    assert first.per_class == dict(files) and sum(files.values()) == 1
    rows = _manifest(out)
    assert len(rows) == 2 and rows[0]["destination"] == rows[1]["destination"]
    (survey / "c").mkdir()  # a third, added later: shares the copy sorted earlier
    (survey / "c" / "IMG_1.png").write_bytes(picture)
    again = sort_photos(filing, survey, out, min_confidence=0.0, progress=False)
    assert (again.placed, again.identical, again.already_done, again.copied, again.per_class) == (0, 1, 2, 0, {})
    assert len(_copies(out)) == 1 and len({r["destination"] for r in _manifest(out)}) == 1


def test_a_link_to_out_inside_in_is_not_sorted_again(filing: Classifier, synthetic_root: Path, tmp_path: Path) -> None:
    """IN holding a symbolic link to OUT: the copies it reaches are left out, counted, on every run."""
    survey = make_survey(synthetic_root, tmp_path / "survey")
    out = tmp_path / "sorted"
    (survey / "shortcut").symlink_to(out, target_is_directory=True)  # dangling until OUT exists
    first = sort_photos(filing, survey, out, min_confidence=0.0, progress=False)
    assert first.placed == 9 and first.inside_out == 0
    second = sort_photos(filing, survey, out, min_confidence=0.0, progress=False)
    assert (second.placed, second.already_done, second.inside_out) == (0, 9, 9)
    assert "9 file(s) left out: their real path is inside the output folder" in second.describe(0.0)
    rows = _manifest(out)
    assert len(rows) == 9 and not any(out.resolve() in Path(os.path.realpath(r["source"])).parents for r in rows)
    assert len(_copies(out)) == 9


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
