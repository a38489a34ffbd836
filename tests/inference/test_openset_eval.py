"""The none-of-these section of `heritage evaluate` and of the HTML report: the scores' histogram, the ROC against
photos of none of the ten, the operating point and what it costs on the ten."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from heritage_cnn.apps.report import build_html_report
from heritage_cnn.base.io import read_json
from heritage_cnn.cli.main import main
from heritage_cnn.inference.classifier import Classifier, find_photos
from heritage_cnn.models.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def negatives(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve pictures of none of the ten in two kinds (flat colours and noise in drawn/, checkerboards and gradients in
    patterns/) and one broken file."""
    root = tmp_path_factory.mktemp("negatives")
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:96, 0:96]
    pictures = [np.full((96, 96, 3), value, np.uint8) for value in (0, 128, 255)]
    pictures += [rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) for _ in range(3)]
    pictures += [np.repeat((((yy // s) + (xx // s)) % 2 * 255).astype(np.uint8)[..., None], 3, 2) for s in (4, 8, 16)]
    pictures += [np.stack([xx * 2, yy * 2, (xx + yy)], -1).astype(np.uint8) // d for d in (1, 2, 3)]
    for kind in ("drawn", "patterns"):
        (root / kind).mkdir()
    for i, picture in enumerate(pictures):
        Image.fromarray(picture).save(root / ("drawn" if i < 6 else "patterns") / f"{i:02d}.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff nothing")
    return root


@pytest.fixture(scope="module")
def evaluated(tiny_run, synthetic_root: Path, negatives: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "eval-val"
    args = ["evaluate", "--model", str(tiny_run.checkpoint), "--data", str(synthetic_root), "--split", "val"]
    assert main([*args, "--negatives", str(negatives), "--out", str(out)]) == 0
    return out


def test_evaluate_reports_the_operating_point_on_the_ten_and_on_negatives(
    tiny_run, evaluated: Path, negatives: Path
) -> None:
    summary = read_json(evaluated / "metrics.json")["open_set"]
    # evaluate and the fit compute in float32 on every CPU; `heritage predict` does too where the CPU has no bf16
    classifier = Classifier.load(tiny_run.checkpoint, bf16=False)
    # the same validation photos through `heritage predict`'s path
    val = list(classifier.predict_files(read_json(tiny_run.out / "split.json")["val_paths"]))
    truth = [Path(p.path).parent.name for p in val]
    assert summary["photos"] == 48 and summary["called_none"] == 1 and summary["called_none_share"] == 1 / 48
    assert summary["called_none"] == sum(p.known is False for p in val)
    kept = [p.label == t for p, t in zip(val, truth, strict=True) if p.known]
    assert summary["accuracy_kept"] == pytest.approx(sum(kept) / len(kept))
    assert summary["threshold"] == classifier.open_set.threshold and summary["threshold_from"] == "the model"
    photos, _ = find_photos([negatives])
    drawn = [p for p in classifier.predict_files(photos) if not isinstance(p, tuple)]
    assert summary["negatives"]["photos"] == len(drawn) == 12 and summary["negatives"]["unreadable"] == 1
    assert summary["negatives"]["filed"] == sum(bool(p.known) for p in drawn)
    filed_as: dict[str, int] = {}
    for p in drawn:
        if p.known:
            filed_as[p.name] = filed_as.get(p.name, 0) + 1
    assert summary["negatives"]["filed_as"] == filed_as  # where predict files them, most first
    assert list(filed_as.values()) == sorted(filed_as.values(), reverse=True)
    for kind in ("drawn", "patterns"):  # each kind of none-photo apart
        mine = [p for p in drawn if Path(p.path).parent.name == kind]
        part = summary["negatives"]["by_folder"][kind]
        assert part["photos"] == len(mine) == 6 and part["filed"] == sum(bool(p.known) for p in mine)
    scores = [p.open_set_score for p in val] + [p.open_set_score for p in drawn]
    truth = [1] * len(val) + [0] * len(drawn)
    assert summary["negatives"]["score_auroc"] == pytest.approx(roc_auc_score(truth, scores), abs=1e-3)
    # the decision's AUROC: a photo the noise check calls noise ranks below every score
    noise = [p.none_reason == "noise" for p in val + drawn]
    assert not any(noise[: len(val)]) and summary["called_noise"] == 0  # the check was fitted to call none of them
    assert summary["negatives"]["called_noise"] == sum(noise) > 0
    decided = [min(scores) - 1 if n else s for s, n in zip(scores, noise, strict=True)]
    assert summary["negatives"]["auroc"] == pytest.approx(roc_auc_score(truth, decided), abs=1e-3)
    assert summary["negatives"]["auroc"] > summary["negatives"]["score_auroc"]  # these negatives: the check helps
    for name in ("open_set_scores.png", "open_set_roc.png"):
        with Image.open(evaluated / name) as image:
            assert image.format == "PNG" and image.width > 300
    table = (evaluated / "open_set.md").read_text()
    assert "| photos of the ten called none | 1 of 48 (2.08 %) |" in table and "AUROC" in table
    patterns = summary["negatives"]["by_folder"]["patterns"]
    assert f"|   filed, of those in patterns/ | {patterns['filed']} of 6 (" in table
    # the tiny run's energy reads no statistics: no ridge beside its name, though the record carries one for teach
    assert summary["score"] == "energy" and summary["ridge"] is None and "| score | energy |" in table


def test_the_report_shows_the_none_of_these_section(tiny_run, evaluated: Path) -> None:
    checkpoint = load_checkpoint(tiny_run.checkpoint)
    page = build_html_report(evaluated.parent, evaluated.parent / "index.html", checkpoint).read_text()
    section = page[page.index("<h3>None of these</h3>") :]
    assert "<td>photos of the ten called none</td><td>1 of 48 (2.08 %)</td>" in section
    assert "<td>AUROC (the ten against the none-photos)</td>" in section
    for alt in ("open set scores, validation split", "open set roc, validation split"):
        assert f"alt='{alt}'" in section


def test_none_threshold_overrides_the_models_on_evaluate(tiny_run, synthetic_root: Path, tmp_path: Path) -> None:
    args = ["evaluate", "--model", str(tiny_run.checkpoint), "--data", str(synthetic_root), "--split", "val"]
    assert main([*args, "--none-threshold", "1e9", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "metrics.json").read_text())["open_set"]
    assert summary["threshold"] == 1e9 and summary["threshold_from"] == "--none-threshold"
    assert summary["called_none"] == summary["photos"] == 48 and summary["accuracy_kept"] is None
    assert summary["negatives"] is None and not (tmp_path / "open_set_roc.png").exists()


def test_negatives_need_a_model_with_a_score(
    old_checkpoint: Path, synthetic_root: Path, negatives: Path, tmp_path: Path, capsys
) -> None:
    args = ["evaluate", "--model", str(old_checkpoint), "--data", str(synthetic_root), "--out", str(tmp_path / "e")]
    assert main([*args, "--negatives", str(negatives)]) == 2
    assert "--negatives" in capsys.readouterr().err
    assert main(args) == 0  # without: the evaluation as before, and a note that it cannot reject
    assert "open_set" not in read_json(tmp_path / "e" / "metrics.json")
    assert "no none-of-these threshold" in capsys.readouterr().out


def test_report_passes_negatives_to_its_evaluations(
    tiny_run, synthetic_root: Path, negatives: Path, tmp_path: Path, monkeypatch
) -> None:
    from heritage_cnn.apps import pipeline

    seen = []
    monkeypatch.setattr(pipeline, "evaluate_split", lambda *args, **kwargs: seen.append(kwargs.get("negatives")))
    monkeypatch.setattr(pipeline, "FIGURE_STEPS", ())
    args = ["report", "--model", str(tiny_run.checkpoint), "--data", str(synthetic_root), "--out", str(tmp_path)]
    assert main([*args, "--negatives", str(negatives)]) == 0
    assert seen == [str(negatives)]  # the validation split (the folder has no test/)


def _unreadable_negatives(root: Path) -> dict[str, str]:
    """Eight valid none-photos and four files that cannot be read, by name: what each one's reason says."""
    from conftest import declared_png

    root.mkdir()
    rng = np.random.default_rng(9)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(root / f"ok{i}.png")
    (root / "empty.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("not a photo\n")

    (root / "huge.png").write_bytes(declared_png(100_000, 100_000))
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(buffer, "JPEG")
    (root / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 3])
    return {"empty.jpg": "empty", "text.jpg": "not a recognised", "huge.png": "too large", "truncated.jpg": "truncated"}


def test_unreadable_files_are_named_on_stderr_and_listed_in_metrics(
    tiny_run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each unreadable none-photo, and each unreadable photo of the data, is named on stderr as every command names
    skipped files and listed with its reason in metrics.json; the run goes on with the rest."""
    from conftest import make_dataset

    bad = _unreadable_negatives(tmp_path / "neg")
    data = make_dataset(tmp_path / "data", per_class=2, seed=3)
    (data / "altar" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    out = tmp_path / "e"
    args = ["evaluate", "--model", str(tiny_run.checkpoint), "--data", str(data), "--split", "all", "--out", str(out)]
    assert main([*args, "--negatives", str(tmp_path / "neg")]) == 0
    captured = capsys.readouterr()
    saved = read_json(out / "metrics.json")
    listed = {Path(entry["path"]).name: entry["reason"] for entry in saved["negatives_skipped"]}
    assert set(listed) == set(bad) and saved["open_set"]["negatives"]["unreadable"] == 4
    for name, reason in bad.items():
        assert reason in listed[name]
        line = f"heritage: skipped {tmp_path / 'neg' / name}: {listed[name]}"
        assert line in captured.err.splitlines(), (line, captured.err)
    assert saved["open_set"]["negatives"]["photos"] == 8 and "skipped" not in saved["open_set"]["negatives"]
    assert "8 in neg (4 unreadable skipped)" in (out / "open_set.md").read_text()
    assert "skipped 4 unreadable file(s) of --negatives" in captured.out
    assert [Path(entry["path"]).name for entry in saved["skipped"]] == ["broken.jpg"] and saved["n_images"] == 20
    assert f"heritage: skipped {data / 'altar' / 'broken.jpg'}: " in captured.err


def test_an_evaluation_leaves_no_figure_of_an_earlier_one(
    tiny_run, old_checkpoint: Path, synthetic_root: Path, evaluated: Path, tmp_path: Path
) -> None:
    """Evaluated with --negatives, then again into the same folder without: the ROC of the first goes, so the folder
    (and the report made of it) describes the second; then a model with no none-of-these score: its figures go too.
    Files of other names are never touched."""
    folder = tmp_path / "eval-val"
    shutil.copytree(evaluated, folder)
    (folder / "notes.txt").write_text("mine")
    (folder / "open_set_roc.png.keep").write_text("mine too")
    assert (folder / "open_set_roc.png").exists() and read_json(folder / "metrics.json")["open_set"]["negatives"]
    args = ["evaluate", "--data", str(synthetic_root), "--split", "val", "--out", str(folder)]
    assert main([*args, "--model", str(tiny_run.checkpoint)]) == 0
    names = {path.name for path in folder.iterdir()}
    assert "open_set_roc.png" not in names and {"open_set_scores.png", "open_set.md", "errors.png"} <= names
    assert {"notes.txt", "open_set_roc.png.keep"} <= names
    assert read_json(folder / "metrics.json")["open_set"]["negatives"] is None
    page = build_html_report(tmp_path, tmp_path / "index.html", load_checkpoint(tiny_run.checkpoint)).read_text()
    assert "alt='open set scores, validation split'" in page and "alt='open set roc, validation split'" not in page
    # a folder an earlier version left a stale figure in: the report shows only what metrics.json says was drawn
    shutil.copy(evaluated / "open_set_roc.png", folder / "open_set_roc.png")
    page = build_html_report(tmp_path, tmp_path / "index.html", load_checkpoint(tiny_run.checkpoint)).read_text()
    assert "alt='open set roc, validation split'" not in page
    assert main([*args, "--model", str(old_checkpoint)]) == 0
    names = {path.name for path in folder.iterdir()}
    assert not names & {"open_set_scores.png", "open_set.md", "open_set_roc.png"}
    assert {"metrics.json", "metrics.md", "confusion_matrix.csv", "notes.txt", "open_set_roc.png.keep"} <= names


def test_evaluation_leaves_the_callers_model_in_its_mode(tiny_run, synthetic_root: Path, tmp_path: Path) -> None:
    """Scored in eval mode (as predict_logits scores), then handed back as it came: a model being trained stays in
    training mode."""
    import torch

    from heritage_cnn.apps.evaluation import evaluate_on
    from heritage_cnn.data.folders import load_images
    from heritage_cnn.inference.openset_eval import scored_logits

    checkpoint = load_checkpoint(tiny_run.checkpoint)
    assert checkpoint.open_set is not None  # the evaluation takes the scored path
    images = load_images(synthetic_root).images[:16]
    expected = scored_logits(checkpoint, checkpoint.open_set, images)
    checkpoint.model.train()
    got = scored_logits(checkpoint, checkpoint.open_set, images)
    assert checkpoint.model.training and all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    evaluate_on(checkpoint, synthetic_root, "val", tmp_path / "eval", log=lambda _: None)
    assert all(module.training for module in checkpoint.model.modules())


def test_fpr_at_95_tpr_takes_the_threshold_where_tpr_reaches_95_percent_with_ties() -> None:
    """20 positives (18 at 5, one at 3, one at 2) and 10 negatives (one at 3, one at 2, eight at 0): the highest
    threshold keeping 95 % of the positives is 3, where one negative of ten passes: FPR 0.1. That point lies on a
    straight run of the curve (a positive and a negative tied at 3, again at 2), which scikit-learn drops by default,
    and the figure was the next point's 0.2. AUROC: (180 + 9.5 + 8.5) / 200 pairs, a tie counting half."""
    from heritage_cnn.inference.openset_eval import _roc

    positives = np.r_[np.full(18, 5.0), 3.0, 2.0]
    negatives = np.r_[3.0, 2.0, np.zeros(8)]
    auroc, fpr95, fpr, tpr = _roc(positives, negatives)
    assert fpr95 == pytest.approx(0.1) and auroc == pytest.approx(0.99)
    assert (0.1, 0.95) in zip(fpr.round(12), tpr.round(12), strict=True)  # the ROC drawn passes through it


def test_a_pipe_in_a_name_stays_in_its_cell_of_open_set_md(
    tiny_run, synthetic_root: Path, negatives: Path, tmp_path: Path
) -> None:
    """A none-photo subfolder `pat|terns` shifted its row of open_set.md: every cell is escaped
    (`base.names.markdown_cell`), so each row keeps its two columns."""
    import re

    shutil.copytree(negatives, tmp_path / "none")
    (tmp_path / "none" / "patterns").rename(tmp_path / "none" / "pat|terns")
    args = ["evaluate", "--model", str(tiny_run.checkpoint), "--data", str(synthetic_root), "--split", "val"]
    assert main([*args, "--negatives", str(tmp_path / "none"), "--out", str(tmp_path / "e")]) == 0
    rows = [line for line in (tmp_path / "e" / "open_set.md").read_text().splitlines() if line.startswith("|")]
    cells = [re.split(r"(?<!\\)\|", row.strip())[1:-1] for row in rows]
    assert {len(row) for row in cells} == {2}, rows
    assert any(row[0].strip() == r"filed, of those in pat\|terns/" for row in cells)


@pytest.mark.parametrize(("count", "known"), [(10, "the ten"), (12, "the 12 classes"), (None, "the model's classes")])
def test_the_texts_name_the_models_classes_by_its_count(count: int | None, known: str) -> None:
    """A taught model has 11 or more classes: "photos of the ten" was wrong for it. The count is the summary's (the
    model's, recorded by `open_set_section`); a summary written before it was recorded says "the model's classes"."""
    from heritage_cnn.inference.openset_eval import report_rows

    summary = {"score": "energy", "threshold": 1.0, "threshold_from": "the model", "called_none": 1, "photos": 4}
    summary |= {"called_none_share": 0.25, "misclassified_among_none": 0, "accuracy_kept": 1.0, "accuracy_all": 0.75}
    negatives = {"folder": "none", "photos": 3, "unreadable": 0, "filed": 1, "filed_share": 1 / 3, "auroc": 0.9}
    summary |= {"negatives": negatives | {"fpr_at_95_tpr": 0.5}} | ({"classes": count} if count else {})
    rows = dict(report_rows(summary))
    assert rows[f"photos of {known} called none"] == "1 of 4 (25.00 %)"
    assert f"AUROC ({known} against the none-photos)" in rows
    assert f"none-photos filed at 95 % of {known} kept (FPR@95%TPR)" in rows
