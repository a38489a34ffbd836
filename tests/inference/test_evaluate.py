from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

from heritage_cnn.base.io import read_json
from heritage_cnn.inference.evaluate import (
    bootstrap_resamples,
    calibration,
    compute_metrics,
    metrics_markdown,
    predict_logits,
    resampled_headline,
    write_evaluation,
)
from heritage_cnn.models.views import tta_views

NAMES = ["altar", "apse", "dome (inner)"]


def _predictions(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), y_true] += 1.5  # mostly right, sometimes wrong
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y_true, probabilities


def test_every_figure_equals_scikit_learn() -> None:
    y_true, probabilities = _predictions(300)
    y_pred = probabilities.argmax(1)
    metrics = compute_metrics(y_true, probabilities, NAMES, bootstrap_rounds=100)
    assert metrics["accuracy"]["value"] == accuracy_score(y_true, y_pred)
    assert metrics["macro_f1"]["value"] == f1_score(y_true, y_pred, average="macro")
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred)
    for row, p, r, f, s in zip(metrics["per_class"], precision, recall, f1, support, strict=True):
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == (p, r, f, s)
    matrix = np.array(metrics["confusion_matrix"])
    assert np.array_equal(matrix, confusion_matrix(y_true, y_pred)) and matrix.sum() == 300
    assert 0 < metrics["accuracy"]["value"] < metrics["top3_accuracy"]["value"] == 1.0


def test_bootstrap_interval_contains_estimate_and_narrows_with_n() -> None:
    widths = []
    for n in (100, 2000):
        y_true, probabilities = _predictions(n, seed=n)
        metrics = compute_metrics(y_true, probabilities, NAMES, bootstrap_rounds=300)
        for name in ("accuracy", "balanced_accuracy", "macro_f1"):
            low, high = metrics[name]["ci95"]
            assert low <= metrics[name]["value"] <= high
        widths.append(metrics["accuracy"]["ci95"][1] - metrics["accuracy"]["ci95"][0])
    assert widths[1] < widths[0] / 2


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_resamples_are_scored_as_scikit_learn_scores_them() -> None:
    """The bootstrap scores each resample from its confusion matrix in numpy; on resamples of a small set,
    which miss classes, every figure must still be scikit-learn's."""
    rng = np.random.default_rng(1)
    k, n = 6, 25
    y_true = rng.integers(0, k, n)
    probabilities = rng.dirichlet(np.ones(k), n)
    y_pred = probabilities.argmax(1)
    top3 = np.argsort(probabilities, axis=1, kind="mergesort")[:, ::-1][:, :3]
    hit = (top3 == y_true[:, None]).any(1).astype(float)
    indices = next(bootstrap_resamples(n, 40, seed=3))
    scored = resampled_headline(y_true, y_pred, hit, k, indices)
    labels = np.arange(k)
    for row, idx in enumerate(indices):
        t, p = y_true[idx], y_pred[idx]
        assert scored["accuracy"][row] == pytest.approx(accuracy_score(t, p))
        assert scored["balanced_accuracy"][row] == pytest.approx(balanced_accuracy_score(t, p))
        assert scored["macro_f1"][row] == pytest.approx(f1_score(t, p, average="macro", zero_division=0))
        expected_top3 = top_k_accuracy_score(t, probabilities[idx], k=3, labels=labels)
        assert scored["top3_accuracy"][row] == pytest.approx(expected_top3)
    assert any(len(np.unique(y_true[idx])) < k for idx in indices)  # the case that needs care did occur


def test_bootstrap_blocks_draw_the_same_resamples_as_one_loop() -> None:
    """Blocks bound memory for large sets and change nothing: the rows are one seeded draw of n per resample,
    as the per-figure loop drew them before, so published intervals stay reproducible."""
    whole = np.concatenate(list(bootstrap_resamples(50, 30, seed=7, block_items=50 * 7)))
    assert whole.shape == (30, 50)
    assert np.array_equal(whole, next(bootstrap_resamples(50, 30, seed=7)))
    rng = np.random.default_rng(7)
    assert np.array_equal(whole, np.stack([rng.integers(0, 50, 50) for _ in range(30)]))


def test_many_classes_keep_the_bootstrap_small() -> None:
    """Memory is bounded by photos x classes per block, never by a confusion matrix per resample (3,000 classes
    would have needed 72 GB that way)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    k, n = 3000, 60
    y_true = rng.integers(0, k, n)
    probabilities = rng.random((n, k))
    probabilities[np.arange(n), y_true] += 1.0
    tracemalloc.start()
    try:
        metrics = compute_metrics(
            y_true, probabilities / probabilities.sum(1, keepdims=True), [str(c) for c in range(k)]
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert metrics["accuracy"]["value"] == 1.0 and peak < 300 * 2**20
    blocks = list(bootstrap_resamples(10, 1000, row_items=1_000_000, block_items=4_000_000))
    assert {len(block) for block in blocks} == {4} and sum(map(len, blocks)) == 1000


def test_calibration_error_is_zero_for_confident_right_answers() -> None:
    y_true = np.array([0, 1, 2, 1])
    assert calibration(y_true, np.eye(3)[y_true])[0] == 0.0
    ece, bins = calibration(y_true, np.full((4, 3), 1 / 3))  # always unsure, right a quarter of the time
    assert ece == pytest.approx(abs(0.25 - 1 / 3)) and sum(b["count"] for b in bins) == 4


def test_written_files_decode(tmp_path: Path) -> None:
    y_true, probabilities = _predictions(60)
    images = torch.randint(0, 256, (60, 3, 64, 64), dtype=torch.uint8)
    metrics = compute_metrics(y_true, probabilities, NAMES, bootstrap_rounds=50)
    paths = write_evaluation(tmp_path, metrics, NAMES, "synthetic predictions", None, images, probabilities, y_true)
    for name, min_size in (("confusion_png", (600, 250)), ("calibration_png", (300, 300)), ("errors_png", (500, 200))):
        with Image.open(paths[name]) as image:
            image.load()
            assert image.width > min_size[0] and image.height > min_size[1], name
    assert "| dome (inner) |" in paths["metrics_md"].read_text()
    rows = paths["confusion_csv"].read_text().splitlines()
    assert rows[0].endswith("altar,apse,dome (inner)") and len(rows) == 4


def _cells(line: str) -> list[str]:
    """The cells of a Markdown table row, split as GitHub-flavoured Markdown splits them (at every `|` not escaped)."""
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def test_a_pipe_in_a_class_name_stays_in_its_cell_of_metrics_md() -> None:
    """`nave|aisle` shifted every column of its row: each cell of the tables is escaped (`base.names.markdown_cell`)."""
    y_true, probabilities = _predictions(30)
    names = ["altar", "nave|aisle", "dome (inner)"]
    table = metrics_markdown(compute_metrics(y_true, probabilities, names, bootstrap_rounds=20), "a title")
    rows = [line for line in table.splitlines() if line.startswith("|")]
    assert {len(_cells(row)) for row in rows[7:]} == {5}  # the per-class table: five columns in every row
    assert [_cells(row)[0] for row in rows[9:12]] == ["altar", "nave\\|aisle", "dome (inner)"]


def test_predict_logits_averages_the_views() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(5))
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)

    def normalise(batch: torch.Tensor) -> torch.Tensor:
        return batch.float() / 255

    model(normalise(images))  # materialise the lazy layer
    plain = predict_logits(model, images, normalise, batch_size=4)
    with torch.no_grad():
        expected = sum(model(v) for v in tta_views(normalise(images), "multi")) / 7
    multi = predict_logits(model, images, normalise, batch_size=4, tta="multi")
    assert torch.allclose(multi, expected, atol=1e-5) and not torch.allclose(multi, plain, atol=1e-3)
    assert torch.allclose(
        predict_logits(model, images, normalise, tta=True), predict_logits(model, images, normalise, tta="flip")
    )


@pytest.fixture
def evaluate_reached(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """`heritage evaluate` with the model's loading and the evaluation replaced: what reaches the evaluation is
    recorded, so a refusal is seen to come before any photo is read or any output made."""
    from heritage_cnn.apps import evaluation
    from heritage_cnn.cli import evaluate

    reached: list[str] = []
    monkeypatch.setattr(evaluate, "load_model", lambda *args, **kwargs: None)
    monkeypatch.setattr(evaluation, "evaluate_on", lambda model, data, *args, **kwargs: reached.append(data))
    return reached


def _refusal(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    from heritage_cnn.cli.main import main

    assert main(["evaluate", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_evaluate_refuses_an_output_inside_the_data_or_that_is_a_file(
    evaluate_reached: list[str], synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inside = synthetic_root / "altar" / "ev"  # its figures would be altar photos at the next `data check`
    err = _refusal(["--data", str(synthetic_root), "--out", str(inside)], capsys)
    assert f"--out {inside}: inside the --data folder {synthetic_root}" in err and not inside.exists()
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    err = _refusal(["--data", str(synthetic_root), "--out", str(afile)], capsys)
    assert err.endswith(f"--out {afile}: is a file; the output folder must be a folder")
    err = _refusal(["--data", str(synthetic_root), "--out", str(afile / "ev")], capsys)
    assert f"cannot be made: {afile} is a file" in err
    assert evaluate_reached == []


def test_evaluate_refuses_negatives_that_are_missing_or_the_labelled_photos(
    evaluate_reached: list[str], synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--data", str(synthetic_root), "--out", str(tmp_path / "ev"), "--negatives"]
    missing = tmp_path / "nonexist"
    assert _refusal([*common, str(missing)], capsys).endswith(f"--negatives {missing}: no such folder")
    for folder in (synthetic_root, synthetic_root / "apse"):  # the labelled folder itself, a class of it
        assert f"--negatives {folder}: is or overlaps the data folder" in _refusal([*common, str(folder)], capsys)
    around = tmp_path / "around"  # a folder that holds the labelled one
    shutil.copytree(synthetic_root / "apse", around / "data" / "apse")
    err = _refusal(["--data", str(around / "data"), "--out", str(tmp_path / "ev"), "--negatives", str(around)], capsys)
    assert f"--negatives {around}: is or overlaps the data folder" in err
    copies = tmp_path / "copies"  # photos of the data set under other names: the same content
    copies.mkdir()
    for i, name in enumerate(["altar", "apse", "vault"]):
        (copies / f"n{i}.png").write_bytes((synthetic_root / name / "003.png").read_bytes())
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(copies / "grey.png")
    err = _refusal([*common, str(copies)], capsys)
    assert f"--negatives {copies}: 3 of its photos are files of the data folder {synthetic_root}" in err
    assert evaluate_reached == [] and not (tmp_path / "ev").exists()
    for copy in copies.glob("n*.png"):
        copy.unlink()
    from heritage_cnn.cli.main import main

    assert main(["evaluate", *common, str(copies)]) == 0 and evaluate_reached == [str(synthetic_root)]


TEN = [f"class {k}" for k in range(10)]


def test_macro_figures_leave_out_classes_neither_true_nor_predicted(tmp_path: Path) -> None:
    """Photos of two of ten classes, all right: macro F1 is 1, not 0.2 (eight classes of no photos at F1 0); a class
    predicted but never true still counts, at 0, as scikit-learn's labels=None has it; the per-class table keeps every
    class and shows the figures a class of no photos does not have as not defined."""
    y_true = np.array([1] * 6 + [7] * 6)
    metrics = compute_metrics(y_true, np.eye(10)[y_true], TEN, bootstrap_rounds=200)
    assert metrics["accuracy"]["value"] == metrics["balanced_accuracy"]["value"] == 1.0
    assert metrics["macro_f1"] == {"value": 1.0, "ci95": [1.0, 1.0]}
    assert metrics["macro_avg"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert metrics["macro_classes"] == ["class 1", "class 7"] and len(metrics["per_class"]) == 10
    absent = metrics["per_class"][0]
    assert absent == {"class": "class 0", "precision": None, "recall": None, "f1": None, "support": 0}
    table = metrics_markdown(metrics, "two classes")
    assert "| class 0 | – | – | – | 0 |" in table and "| class 7 | 1.000 | 1.000 | 1.000 | 6 |" in table
    assert "| *macro avg* | 1.000 | 1.000 | 1.000 | 12 |" in table and "| 0.000 |" not in table
    assert "average over the 2 classes" in table
    write_evaluation(tmp_path, metrics, TEN, "two classes")
    assert read_json(tmp_path / "metrics.json")["macro_classes"] == ["class 1", "class 7"]

    y_pred = y_true.copy()
    y_pred[0] = 3  # one photo of class 1 called class 3, which has no photos
    metrics = compute_metrics(y_true, np.eye(10)[y_pred], TEN, bootstrap_rounds=200)
    assert metrics["macro_f1"]["value"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    assert metrics["macro_avg"] == pytest.approx({"precision": p, "recall": r, "f1": f})
    assert metrics["macro_classes"] == ["class 1", "class 3", "class 7"]
    assert metrics["per_class"][3] == {"class": "class 3", "precision": 0.0, "recall": None, "f1": 0.0, "support": 0}
    low, high = metrics["macro_f1"]["ci95"]
    assert low <= metrics["macro_f1"]["value"] <= high and high <= 1.0 and low > 0.5
    assert "| class 3 | 0.000 | – | 0.000 | 0 |" in metrics_markdown(metrics, "three classes")


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_resamples_average_macro_f1_over_their_own_classes() -> None:
    """Each resample's macro F1 averages over the classes among its own true labels or predictions, as the point
    estimate does over the whole set's (scikit-learn's labels=None): a class the resample lacks is not a zero."""
    y_true, y_pred = np.array([0, 1, 2]), np.array([0, 1, 1])
    indices = np.array([[0, 0, 0], [1, 2, 2], [0, 1, 2]])
    scored = resampled_headline(y_true, y_pred, np.ones(3), 3, indices)
    # [0,0,0]: only class 0, right: 1 (not 1/3 with two zeros); [1,2,2]: class 1 F1 2*1/(1+3) = 0.5, class 2 F1 0,
    # class 0 left out: 0.25 (not 1/6); the whole set: (1 + 2/3 + 0) / 3
    assert scored["macro_f1"] == pytest.approx([1.0, 0.25, 5 / 9])
    assert scored["balanced_accuracy"] == pytest.approx([1.0, 0.5, 2 / 3])  # over the true classes, likewise
    rng = np.random.default_rng(4)
    k, n = 10, 30
    y_true = rng.choice([2, 5, 8], n)
    probabilities = rng.dirichlet(np.ones(k), n)
    probabilities[np.arange(n), y_true] += 0.3
    y_pred = probabilities.argmax(1)
    indices = next(bootstrap_resamples(n, 30, seed=2))
    scored = resampled_headline(y_true, y_pred, np.ones(n), k, indices)
    for row, idx in enumerate(indices):
        t, p = y_true[idx], y_pred[idx]
        assert scored["macro_f1"][row] == pytest.approx(f1_score(t, p, average="macro", zero_division=0))


def test_macro_f1_interval_holds_its_estimate_with_one_photo_per_class() -> None:
    """One photo per class, all right: macro F1 is 1 and so is every resample's, whatever classes it missed, so the
    interval is [1, 1] (it was 0.5-0.8, excluding its own estimate, when a missed class scored 0)."""
    y_true = np.arange(10)
    metrics = compute_metrics(y_true, np.eye(10), TEN, bootstrap_rounds=200)
    assert metrics["macro_f1"] == {"value": 1.0, "ci95": [1.0, 1.0]}
    assert metrics["balanced_accuracy"] == {"value": 1.0, "ci95": [1.0, 1.0]}


def test_with_every_class_present_the_figures_are_as_before() -> None:
    """The macro set is then every class: the same figures and intervals as scoring over every class (the shipped
    docs' figures)."""
    y_true, probabilities = _predictions(300)
    metrics = compute_metrics(y_true, probabilities, NAMES, bootstrap_rounds=200)
    y_pred = probabilities.argmax(1)
    labels = np.arange(3)
    assert metrics["macro_classes"] == NAMES
    assert metrics["macro_f1"]["value"] == f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    top3 = np.ones(len(y_true))
    resampled = np.concatenate(
        [resampled_headline(y_true, y_pred, top3, 3, b)["macro_f1"] for b in bootstrap_resamples(300, 200)]
    )
    assert metrics["macro_f1"]["ci95"] == [float(np.quantile(resampled, q)) for q in (0.025, 0.975)]
    assert all(row[k] is not None for row in metrics["per_class"] for k in ("precision", "recall", "f1"))
