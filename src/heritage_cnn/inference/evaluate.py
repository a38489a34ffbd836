"""Judge a trained network on a labelled set: accuracy, per-class precision / recall / F1, confusion matrix.

The figures come from scikit-learn's metrics, not re-derived here. Headline figures carry a 95 %
bootstrap confidence interval, so that a difference of a few images is not read as progress; the thousand
resamples are scored from per-class counts in numpy (`resampled_headline`, tested equal to
scikit-learn), because a thousand scikit-learn calls per figure took seconds (docs/design.md).
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from heritage_cnn.base.io import CheckpointError, atomic_write_json, atomic_write_text
from heritage_cnn.base.names import markdown_cell, shown
from heritage_cnn.data.folders import ImageSet
from heritage_cnn.data.split import set_hashes
from heritage_cnn.models.checkpoint import Checkpoint
from heritage_cnn.models.network import eval_mode
from heritage_cnn.models.views import tta_views

# The names `write_evaluation` gives its files, which the report reads them by
METRICS_FILE, METRICS_TABLE, CONFUSION_TABLE = "metrics.json", "metrics.md", "confusion_matrix.csv"
CONFUSION_FIGURE, CALIBRATION_FIGURE, ERRORS_FIGURE = "confusion_matrix.png", "calibration.png", "errors.png"
EVALUATION_FILES = (METRICS_FILE, METRICS_TABLE, CONFUSION_TABLE, CONFUSION_FIGURE, CALIBRATION_FIGURE, ERRORS_FIGURE)
Skipped = Callable[[str, str], None]  # told each file an evaluation could not read: its path and why
UNDEFINED = "–"  # a per-class figure of a class the evaluated photos hold none of (and, for precision, never predicted)


def hashes_to_hex(hashes: np.ndarray) -> list[str]:
    """64-bit perceptual hashes as 16-digit hex strings (how a checkpoint records its training images)."""
    return [f"{int(h):016x}" for h in hashes]


def hashes_from_hex(texts: Sequence[str]) -> np.ndarray:
    return np.array([int(t, 16) for t in texts], dtype=np.uint64)


def near_any(hashes: np.ndarray, reference: np.ndarray, max_distance: int, chunk: int = 1024) -> np.ndarray:
    """For each hash, whether some reference hash lies within `max_distance` bits (Hamming distance)."""
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    reference = np.ascontiguousarray(reference, dtype=np.uint64)
    found = np.zeros(len(hashes), dtype=bool)
    if len(reference) == 0:
        return found
    for start in range(0, len(hashes), chunk):
        distance = np.bitwise_count(hashes[start : start + chunk, None] ^ reference[None, :])
        found[start : start + chunk] = (distance <= max_distance).any(axis=1)
    return found


def trained_on(checkpoint: Checkpoint) -> tuple[np.ndarray, int] | None:
    """The perceptual hashes of the images that trained a checkpoint and their distance, if it records them."""
    record = checkpoint.info.get("trained_on")
    if record is None:
        return None
    try:
        hashes, distance = hashes_from_hex(record["phash"]), int(record["distance"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{checkpoint.path}: invalid trained_on record ({error})") from None
    return hashes, distance


def trained_on_mask(checkpoint: Checkpoint, images: ImageSet) -> tuple[np.ndarray, str] | None:
    """Which images the model trained on (or near-duplicates of them), and why; None when it does not record it."""
    record = trained_on(checkpoint)
    if record is None:
        return None
    reference, distance = record
    reason = f"trained on, or a near-duplicate of a training image (pHash distance <= {distance})"
    return near_any(set_hashes(images), reference, distance), reason


def remove_stale(out: str | os.PathLike, known: Sequence[str], written: Sequence[str | os.PathLike]) -> list[str]:
    """Remove, from an evaluation's folder `out`, the files of the `known` names (what evaluations write there) that
    this one did not write (`written`), so that the folder describes one evaluation: an earlier one's open-set
    figures must not sit beside new metrics. Nothing else is touched; returns the names removed."""
    kept = {Path(name).name for name in written}
    removed = []
    for name in known:
        path = Path(out) / name
        if name not in kept and path.is_file():
            path.unlink()
            removed.append(name)
    return removed


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module,
    images: torch.Tensor,
    normalise: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int = 64,
    device: torch.device | str | None = None,
    tta: bool | str = False,
    progress: bool = False,
) -> torch.Tensor:
    """Logits for uint8 images (N, 3, H, W), batched, in eval mode.

    `tta` ("flip", "multi"; True means "flip") averages the logits of `tta_views`; `progress` shows a bar.
    """
    mode = ("flip" if tta else "none") if isinstance(tta, bool) else tta
    device = torch.device(device) if device is not None else next(model.parameters()).device
    outputs = []
    starts: Any = range(0, len(images), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="predict", unit="batch", leave=False, dynamic_ncols=True)
    with eval_mode(model):
        for start in starts:
            x = normalise(images[start : start + batch_size].to(device, non_blocking=True))
            views = tta_views(x, mode)
            outputs.append(sum(model(view).float() for view in views) / len(views))
    if not outputs:
        return torch.empty(0, 0)
    return torch.cat(outputs)


def bootstrap_resamples(
    n: int, rounds: int, seed: int = 0, row_items: int | None = None, block_items: int = 4_000_000
) -> Iterator[np.ndarray]:
    """The index sets of a percentile bootstrap's `rounds` resamples of n items, as (rows, n) blocks whose rows
    times `row_items` (what one row costs the caller; default n) stay under `block_items`, so memory is bounded
    however many photos or classes there are. Each resample is one draw of n indices, so every figure of an
    evaluation is scored on the same resamples and a seed gives the same intervals whatever the block size."""
    rng = np.random.default_rng(seed)
    per_block = max(1, block_items // max(n, row_items or 0, 1))
    for start in range(0, rounds, per_block):
        yield np.stack([rng.integers(0, n, n) for _ in range(min(per_block, rounds - start))])


def resampled_headline(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    top3_hit: np.ndarray,
    num_classes: int,
    indices: np.ndarray,
) -> dict[str, np.ndarray]:
    """Accuracy, top-3 accuracy, balanced accuracy and macro F1 of each row of `indices` (a resample), with
    scikit-learn's definitions: balanced accuracy averages recall over the classes among the resample's true labels,
    macro F1 over the classes among its true labels or predictions (`f1_score(average="macro", zero_division=0)`,
    `labels=None`), as the point estimate is: a class the resample lacks altogether is left out, not a zero, else a
    small class would pull the interval below its own estimate. Per-class counts only (rows x classes), never a
    confusion matrix per resample, so many classes cost no more than many photos."""
    k, rows = num_classes, len(indices)
    offsets = (np.arange(rows) * k)[:, None]

    def per_class(labels: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        counts = np.bincount((labels + offsets).ravel(), None if weights is None else weights.ravel(), rows * k)
        return counts.reshape(rows, k).astype(np.float64)

    true, predicted = y_true[indices], y_pred[indices]
    support, guessed = per_class(true), per_class(predicted)
    hits = per_class(true, (true == predicted).astype(np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, hits / support, np.nan)
        f1 = np.where(support + guessed > 0, 2 * hits / (support + guessed), np.nan)
    return {  # a resample is never empty, so every row has a class with photos: nanmean never sees only NaN
        "accuracy": hits.sum(1) / indices.shape[1],
        "top3_accuracy": top3_hit[indices].mean(1),
        "balanced_accuracy": np.nanmean(recall, axis=1),
        "macro_f1": np.nanmean(f1, axis=1),
    }


def compute_metrics(
    y_true: Sequence[int] | np.ndarray,
    probabilities: np.ndarray,
    class_names: Sequence[str],
    bootstrap_rounds: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """All figures of an evaluation, from true labels and predicted class probabilities (N, C).

    Macro averages (macro F1, the macro precision / recall / F1 row) are over the classes that occur among the true
    labels or the predictions, scikit-learn's own `labels=None` convention (`macro_classes`), and each resample's
    macro F1 over those of that resample: a class predicted but never true counts, at zero; one neither true nor
    predicted (a folder of two of the ten classes) is not a zero in the mean. Its per-class figures are None (not
    defined), as are the recall of any class with no photos and the precision of any class never predicted that has
    none."""
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
        top_k_accuracy_score,
    )

    y_true = np.asarray(y_true)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.arange(len(class_names))
    y_pred = probabilities.argmax(1)
    n = len(y_true)
    if n == 0:
        raise ValueError("no images to evaluate")
    present = np.union1d(y_true, y_pred)  # the classes the macro averages are over

    if len(class_names) <= 3:  # every class is in the top 3
        top3_value, top3_hit = 1.0, np.ones(n)
    else:
        top3_value = float(top_k_accuracy_score(y_true, probabilities, k=3, labels=labels))
        top3 = np.argsort(probabilities, axis=1, kind="mergesort")[:, ::-1][:, :3]  # as scikit-learn ranks
        top3_hit = (top3 == y_true[:, None]).any(1).astype(np.float64)
    with warnings.catch_warnings():  # a small set may miss a class that is predicted
        warnings.simplefilter("ignore", UserWarning)
        values = {
            "accuracy": float(accuracy_score(y_true, y_pred)),
            "top3_accuracy": top3_value,
            "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        }
    resampled: dict[str, list[np.ndarray]] = {name: [] for name in values}
    for block in bootstrap_resamples(n, bootstrap_rounds, seed, row_items=len(labels)):
        for name, figures in resampled_headline(y_true, y_pred, top3_hit, len(labels), block).items():
            resampled[name].append(figures)
    result: dict[str, Any] = {"n_images": int(n)}
    for name, value in values.items():
        low, high = (
            (float(np.quantile(np.concatenate(resampled[name]), q)) for q in (0.025, 0.975))
            if bootstrap_rounds
            else (value, value)
        )
        result[name] = {"value": value, "ci95": [low, high]}

    result["per_class"] = _per_class(y_true, y_pred, class_names)
    result["macro_classes"] = [class_names[k] for k in present]
    for average, over in (("macro", present), ("weighted", labels)):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=over, average=average, zero_division=0)
        result[f"{average}_avg"] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    result["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    result["expected_calibration_error"], result["calibration_bins"] = calibration(y_true, probabilities)
    return result


def _per_class(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]) -> list[dict[str, Any]]:
    """scikit-learn's per-class precision, recall and F1, None where not defined: a class with no photos has no
    recall, nor a precision unless predicted, nor an F1 unless predicted (then 0, as the macro average counts it)."""
    from sklearn.metrics import precision_recall_fscore_support

    labels = np.arange(len(class_names))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    guessed = np.bincount(y_pred, minlength=len(class_names))
    rows = []
    for c, p, r, f, s, g in zip(class_names, precision, recall, f1, support, guessed, strict=True):
        defined = s > 0 or g > 0
        rows.append(
            {
                "class": c,
                "precision": float(p) if defined else None,
                "recall": float(r) if s > 0 else None,
                "f1": float(f) if defined else None,
                "support": int(s),
            }
        )
    return rows


def shown_figure(value: float | None) -> str:
    """A per-class figure as the tables show it: three decimals, or a dash where it is not defined."""
    return UNDEFINED if value is None else f"{value:.3f}"


def calibration(
    y_true: np.ndarray, probabilities: np.ndarray, n_bins: int = 15
) -> tuple[float, list[dict[str, float]]]:
    """Expected calibration error over equal-width confidence bins, and the bins themselves."""
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == y_true
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins, ece = [], 0.0
    for low, high in itertools.pairwise(edges):
        inside = (confidence > low) & (confidence <= high)
        if not inside.any():
            continue
        accuracy, mean_conf = float(correct[inside].mean()), float(confidence[inside].mean())
        ece += inside.mean() * abs(accuracy - mean_conf)
        bins.append(
            {
                "low": float(low),
                "high": float(high),
                "count": int(inside.sum()),
                "accuracy": accuracy,
                "confidence": mean_conf,
            }
        )
    return float(ece), bins


def _row(*cells: Any) -> str:
    """One row of a Markdown table, every cell escaped (`markdown_cell`: a class `nave|aisle` stays one cell)."""
    return "| " + " | ".join(markdown_cell(cell) for cell in cells) + " |"


def metrics_markdown(metrics: dict[str, Any], title: str) -> str:
    """A readable table of the figures, with the split they were measured on in the title."""
    lines = [f"# {title}", "", f"{metrics['n_images']} images.", ""]
    lines += [_row("figure", "value", "95 % CI (bootstrap)"), "|---|---|---|"]
    for name in ("accuracy", "top3_accuracy", "balanced_accuracy", "macro_f1"):
        entry = metrics[name]
        interval = f"{entry['ci95'][0]:.4f} – {entry['ci95'][1]:.4f}"
        lines.append(_row(name.replace("_", " "), f"{entry['value']:.4f}", interval))
    lines.append(_row("expected calibration error", f"{metrics['expected_calibration_error']:.4f}", ""))
    lines += ["", _row("class", "precision", "recall", "F1", "support"), "|---|---|---|---|---|"]
    for row in metrics["per_class"]:
        figures = (shown_figure(row[name]) for name in ("precision", "recall", "f1"))
        lines.append(_row(row["class"], *figures, row["support"]))
    for average in ("macro", "weighted"):
        row = metrics[f"{average}_avg"]
        figures = (f"{row[name]:.3f}" for name in ("precision", "recall", "f1"))
        lines.append(_row(f"*{average} avg*", *figures, metrics["n_images"]))
    note = macro_note(metrics)
    return "\n".join(lines) + "\n" + (f"\n{note}\n" if note else "")


def macro_note(metrics: dict[str, Any]) -> str:
    """One sentence when the macro figures average over fewer classes than the model knows (else empty)."""
    averaged = metrics.get("macro_classes")
    if averaged is None or len(averaged) == len(metrics["per_class"]):
        return ""
    absent = len(metrics["per_class"]) - len(averaged)
    return (
        f"Macro figures average over the {len(averaged)} classes among the true labels or the predictions; "
        f"{absent} class(es) neither in the photos nor predicted ({UNDEFINED}) are left out."
    )


def write_evaluation(
    out: str | Path,
    metrics: dict[str, Any],
    class_names: Sequence[str],
    title: str,
    extra: dict[str, Any] | None = None,
    images: torch.Tensor | None = None,
    probabilities: np.ndarray | None = None,
    y_true: np.ndarray | None = None,
    error_count: int = 24,
) -> dict[str, Path]:
    """Write metrics.json/md, confusion_matrix.csv/png, calibration.png and (given the images) errors.png."""
    from heritage_cnn.inference.plots import plot_calibration, plot_confusion_matrix, plot_errors

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics_json": out / METRICS_FILE,
        "metrics_md": out / METRICS_TABLE,
        "confusion_csv": out / CONFUSION_TABLE,
        "confusion_png": out / CONFUSION_FIGURE,
        "calibration_png": out / CALIBRATION_FIGURE,
    }
    atomic_write_json(paths["metrics_json"], {"title": title, **(extra or {}), **metrics})
    atomic_write_text(paths["metrics_md"], metrics_markdown(metrics, title))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["true \\ predicted", *class_names])
    for name, row in zip(class_names, metrics["confusion_matrix"], strict=True):
        writer.writerow([name, *row])
    atomic_write_text(paths["confusion_csv"], buffer.getvalue())
    # the plots save through heritage_cnn.base.figures.save_figure: atomic
    plot_confusion_matrix(np.array(metrics["confusion_matrix"]), list(class_names), paths["confusion_png"], title=title)
    plot_calibration(metrics["calibration_bins"], metrics["expected_calibration_error"], paths["calibration_png"])
    if images is not None and probabilities is not None and y_true is not None:
        paths["errors_png"] = out / ERRORS_FIGURE
        predicted = probabilities.argmax(1)
        wrong = np.flatnonzero(predicted != y_true)
        worst = wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")][:error_count]
        plot_errors(
            images[torch.as_tensor(worst, dtype=torch.long)].permute(0, 2, 3, 1).numpy(),
            [class_names[i] for i in y_true[worst]],
            [class_names[i] for i in predicted[worst]],
            probabilities[worst, predicted[worst]].tolist(),
            paths["errors_png"],
        )
    return paths


def tell_evaluation(
    metrics: dict[str, Any],
    record: dict[str, Any],
    out: Path,
    written: Sequence[str],
    removed: Sequence[str],
    views: str,
    log: Callable[[str], None],
    name_skipped: Skipped | None = None,
) -> None:
    """What an evaluation says when done, through `log`: its headline (`views`: how the test-time views read, or
    ""), the files it could not read (`record`'s `skipped`, `negatives_skipped`: each named to `name_skipped`, by
    default through `log`, then counted), the files of an earlier evaluation it removed and those it wrote."""
    low, high = metrics["accuracy"]["ci95"]
    log(
        f"{record['split']}: accuracy {metrics['accuracy']['value']:.4f} (95% CI {low:.4f}-{high:.4f}), "
        f"macro F1 {metrics['macro_f1']['value']:.4f}, {metrics['n_images']} images{views}"
    )
    name = name_skipped or (lambda path, reason: log(f"skipped {shown(path)}: {reason}"))
    for key, what in (("skipped", "unreadable file(s)"), ("negatives_skipped", "unreadable file(s) of --negatives")):
        for entry in record.get(key) or []:
            name(entry["path"], entry["reason"])
        if record.get(key):
            log(f"skipped {len(record[key])} {what}: listed in {shown(out / METRICS_FILE)} ({key})")
    if removed:
        log(f"removed {', '.join(removed)} from {shown(out)}/: an earlier evaluation's, not this one's")
    log(f"figures: {shown(out)}/ ({', '.join(name for name in written if name != METRICS_FILE)})")
