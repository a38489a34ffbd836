"""The figures of an evaluation: confusion matrix, the most confident mistakes, the calibration curve."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from heritage_cnn.base.figures import new_figure, save_figure

CELL_FONT_PT = 10  # confusion-matrix cell text: 10 pt at 120 dpi is 16.7 px, at least 14 px on a 1280 px page


def plot_confusion_matrix(
    matrix: np.ndarray, class_names: Sequence[str], path: str | os.PathLike, title: str = ""
) -> None:
    """One matrix: each cell the count and its share of the true class (row %); colour by row %.

    One panel rather than two side by side, so that at a page's width the cell text stays legible."""
    matrix = np.asarray(matrix)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = np.nan_to_num(matrix / matrix.sum(axis=1, keepdims=True))
    side = min(8.5, max(5.0, 0.62 * len(class_names) + 1.8))
    fig, ax = new_figure(figsize=(side + 1.6, side))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03, label="share of the true class (row)")
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            if matrix[i, j] == 0:
                continue
            ax.text(
                j,
                i,
                f"{matrix[i, j]}\n{100 * normalised[i, j]:.0f}%",
                ha="center",
                va="center",
                fontsize=CELL_FONT_PT,
                linespacing=1.1,
                color="white" if normalised[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(len(class_names)), class_names, rotation=40, ha="right", fontsize=CELL_FONT_PT)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=CELL_FONT_PT)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or "Confusion matrix: count and row % (recall on the diagonal)", fontsize=CELL_FONT_PT + 1)
    fig.tight_layout()
    save_figure(fig, path)


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
    fig, axes = new_figure(rows, columns, figsize=(columns * 1.9, rows * 2.3), squeeze=False)
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
    save_figure(fig, path)


def plot_calibration(bins: Sequence[dict[str, float]], ece: float, path: str | os.PathLike) -> None:
    """Reliability diagram: accuracy per confidence bin against the diagonal, and how many images fall in each bin."""
    fig, (ax, ax_hist) = new_figure(2, 1, figsize=(4.6, 5.2), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
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
    save_figure(fig, path)
