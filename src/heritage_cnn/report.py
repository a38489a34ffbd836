"""Figures: training curves and the confusion matrix (matplotlib, no display needed)."""

from __future__ import annotations

import os
from collections.abc import Sequence

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
