"""Where `heritage sort` files a photo: _none/ first (none of the ten, by score or as noise), then its class
folder at or above --min-confidence, else _uncertain/; the manifest and the summary say which and why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _sort_helpers import _manifest
from PIL import Image

from conftest import draw, make_survey
from heritage_cnn.cli.main import main
from heritage_cnn.inference import sort as sort_module
from heritage_cnn.inference.classifier import Classifier, find_photos


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


def test_the_summary_counts_the_classes_of_a_taught_model() -> None:
    """A taught model has more than the ten: its none-of-these photos are none of its own classes."""
    ten = sort_module.SortSummary(placed=3, none=2, rejects=True).describe(0.6)
    taught = sort_module.SortSummary(placed=3, none=2, rejects=True, classes=12).describe(0.6)
    assert "(2 none of the ten in _none/, 0 below 0.60 in _uncertain/)" in ten
    assert "(2 none of the 12 classes in _none/, 0 below 0.60 in _uncertain/)" in taught


def test_the_summary_shows_the_threshold_as_given() -> None:
    """`--min-confidence 0.555` was said as "below 0.56": a threshold the photos were not sorted at."""
    assert "0 below 0.555 in _uncertain/" in sort_module.SortSummary(placed=1).describe(0.555)
    assert "0 below 0.90 in _uncertain/" in sort_module.SortSummary(placed=1).describe(0.9)
