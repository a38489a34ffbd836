"""Figures (matplotlib, no display needed) and the one-file HTML report that gathers them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def _save(fig: plt.Figure, path: str | os.PathLike) -> None:
    fig.savefig(path, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def plot_training_curves(history: Sequence[dict[str, float]], path: str | os.PathLike) -> None:
    """Loss and accuracy per epoch, training and validation side by side."""
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="train (augmented)")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], "o-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="Loss")
    ax_acc.plot(epochs, [r["train_accuracy"] for r in history], "o-", label="train (augmented)")
    ax_acc.plot(epochs, [r["val_accuracy"] for r in history], "o-", label="validation")
    best = max(history, key=lambda r: r["val_accuracy"])
    ax_acc.annotate(
        f"{best['val_accuracy']:.3f}",
        (best["epoch"], best["val_accuracy"]),
        textcoords="offset points",
        xytext=(0, -14),
        ha="center",
    )
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    _save(fig, path)


def plot_confusion_matrix(
    matrix: np.ndarray, class_names: Sequence[str], path: str | os.PathLike, title: str = ""
) -> None:
    """Counts and row-normalised (recall) confusion matrices side by side, each with a colour bar."""
    matrix = np.asarray(matrix)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = np.nan_to_num(matrix / matrix.sum(axis=1, keepdims=True))
    size = max(5.0, 0.55 * len(class_names) + 2.5)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1.5, size))
    for ax, data, fmt, label in (
        (axes[0], matrix, "d", "images"),
        (axes[1], normalised, ".2f", "fraction of the true class"),
    ):
        image = ax.imshow(data, cmap="Blues", vmin=0)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=label)
        threshold = data.max() / 2 if data.size else 0
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                value = data[i, j]
                if fmt == "d" and value == 0:
                    continue
                ax.text(
                    j,
                    i,
                    format(value, fmt),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if value > threshold else "black",
                )
        ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
        ax.set_yticks(range(len(class_names)), class_names)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
    axes[0].set_title("Counts")
    axes[1].set_title("Row-normalised (recall on the diagonal)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


__all__ = ["plot_confusion_matrix", "plot_training_curves"]


def plot_errors(
    images: np.ndarray,
    true_names: Sequence[str],
    predicted_names: Sequence[str],
    confidences: Sequence[float],
    path: str | os.PathLike,
    columns: int = 6,
) -> None:
    """A gallery of mistakes: each photo with its true class, the prediction and its probability."""
    count = len(images)
    rows = max(1, -(-count // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.9, rows * 2.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, true, predicted, confidence in zip(
        axes.flat, images, true_names, predicted_names, confidences, strict=False
    ):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(f"true: {true}\npred: {predicted} ({confidence:.2f})", fontsize=7.5)
    if count == 0:
        axes[0, 0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    fig.suptitle("Most confident mistakes", fontsize=11)
    fig.tight_layout()
    _save(fig, path)


def plot_calibration(bins: Sequence[dict[str, float]], ece: float, path: str | os.PathLike) -> None:
    """Reliability diagram: accuracy per confidence bin against the diagonal, and how many images fall in each bin."""
    fig, (ax, ax_hist) = plt.subplots(2, 1, figsize=(5, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    centres = [(b["low"] + b["high"]) / 2 for b in bins]
    width = bins[0]["high"] - bins[0]["low"] if bins else 0.1
    ax.bar(centres, [b["accuracy"] for b in bins], width=width * 0.95, color="tab:blue", alpha=0.8, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.plot(centres, [b["confidence"] for b in bins], "o", color="tab:orange", ms=4, label="mean confidence")
    ax.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=f"Calibration (ECE {ece:.3f})")
    ax.legend(loc="upper left", fontsize=8)
    ax_hist.bar(centres, [b["count"] for b in bins], width=width * 0.95, color="grey")
    ax_hist.set(xlabel="confidence of the predicted class", ylabel="images")
    fig.tight_layout()
    _save(fig, path)


# --------------------------------------------------------------------------------------------
# The one-file HTML report
# --------------------------------------------------------------------------------------------

CAPTIONS = {
    "curves.png": "Loss and accuracy per epoch. Training figures are on augmented images; validation on the untouched duplicate-aware split.",
    "confusion_matrix.png": "Left: how many photos of each true class (rows) went to each predicted class (columns). Right: the same per row, so the diagonal is each class's recall.",
    "errors.png": "The mistakes the network was most sure of: worth a look for mislabelled photos and genuinely ambiguous scenes.",
    "calibration.png": "Is a 0.9 probability right 90 % of the time? Bars on the diagonal mean yes; the lower panel shows how many photos fall at each confidence.",
    "feature_maps_layer1.png": "What the first layer responds to in one photo: each tile is one filter's activation map (edges, colours and textures).",
    "kernels.png": "The first layer's learned filters as colour tiles (grey is zero).",
    "class_images.png": "Images synthesised by the network for each class (regularised activation maximisation): what it looks for.",
}


def _embed(path: Path) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _caption(path: Path) -> str:
    if path.name in CAPTIONS:
        return CAPTIONS[path.name]
    name = path.stem.replace("_", " ")
    if "deconv" in path.name:
        return f"Deconvnet ({name}): the strongest activations of a layer projected back to pixels (Zeiler & Fergus), beside the photo patches that caused them."
    if "explain" in path.name or "attribution" in path.name:
        return f"Attribution maps ({name}): which pixels drove the prediction, by several methods."
    if "feature" in path.name:
        return f"Activation maps ({name}) of a conv layer for one photo."
    return name


def _metrics_table(metrics: dict) -> str:
    from html import escape

    rows = "".join(
        f"<tr><td>{escape(name.replace('_', ' '))}</td><td>{metrics[name]['value']:.4f}</td>"
        f"<td>{metrics[name]['ci95'][0]:.4f} – {metrics[name]['ci95'][1]:.4f}</td></tr>"
        for name in ("accuracy", "top3_accuracy", "balanced_accuracy", "macro_f1")
    )
    per_class = "".join(
        f"<tr><td>{escape(r['class'])}</td><td>{r['precision']:.3f}</td><td>{r['recall']:.3f}</td><td>{r['f1']:.3f}</td><td>{r['support']}</td></tr>"
        for r in metrics["per_class"]
    )
    return (
        f"<p>{escape(metrics.get('title', ''))}</p>"
        f"<table><tr><th>figure</th><th>value</th><th>95 % CI (bootstrap)</th></tr>{rows}</table>"
        f"<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>{per_class}</table>"
    )


def build_html_report(
    folder: str | os.PathLike, out_file: str | os.PathLike, title: str = "heritage-cnn report"
) -> Path:
    """One self-contained HTML page (images embedded) from a demo/report folder's figures and metrics."""
    import json
    from html import escape

    from heritage_cnn.io import atomic_write_text

    folder = Path(folder)
    parts = [f"<h1>{escape(title)}</h1>"]
    check = folder / "data_check.json"
    if check.exists():
        report = json.loads(check.read_text())
        splits = report["splits"]
        classes = sorted({c for s in splits.values() for c in s["per_class"]})
        head = "".join(f"<th>{escape(s)}</th>" for s in splits)
        body = "".join(
            f"<tr><td>{escape(c)}</td>"
            + "".join(f"<td>{s['per_class'].get(c, 0)}</td>" for s in splits.values())
            + "</tr>"
            for c in classes
        )
        ident = report["identical_files"]
        parts.append(
            f"<h2>Data</h2><p>{escape(report['root'])} ({escape(report['layout'])} layout). "
            f"{ident['files']} byte-identical files in {ident['groups']} groups, {len(ident['conflicting_labels'])} with conflicting labels; "
            f"{report['near_duplicates']['pairs']} near-duplicate pairs ({escape(report['near_duplicates']['method'])}).</p>"
            f"<table><tr><th>class</th>{head}</tr>{body}</table>"
        )
    sections = [
        ("Training", folder / "train", ["curves.png"]),
        ("Validation split", folder / "eval-val", ["confusion_matrix.png", "calibration.png", "errors.png"]),
        ("Test split", folder / "eval-test", ["confusion_matrix.png", "calibration.png", "errors.png"]),
        ("Inside the network", folder / "inside", None),
        ("Class images", folder / "class_images", None),
    ]
    for heading, sub, names in sections:
        if not sub.is_dir():
            continue
        html = [f"<h2>{escape(heading)}</h2>"]
        metrics_path = sub / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else None
        if isinstance(metrics, dict) and "accuracy" in metrics:  # an evaluation (train/ has a history list)
            html.append(_metrics_table(metrics))
        paths = [sub / n for n in names] if names else sorted(sub.rglob("*.png"))
        for path in paths:
            if path.exists():
                html.append(
                    f"<figure><img src='{_embed(path)}' alt='{escape(path.stem)}'><figcaption>{escape(_caption(path))}</figcaption></figure>"
                )
        if len(html) > 1:
            parts.append("".join(html))
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "img{max-width:100%;border:1px solid #ddd}figure{margin:1.5em 0}figcaption{color:#555;font-size:.9em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
        "td:first-child,th:first-child{text-align:left}"
    )
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title><style>{style}</style></head><body>{''.join(parts)}</body></html>\n"
    out_file = Path(out_file)
    atomic_write_text(out_file, page)
    return out_file
