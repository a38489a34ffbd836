"""The training curves of a run: loss and accuracy per epoch (curves.png in every run folder)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from heritage_cnn.base.figures import new_figure, save_figure


def plot_training_curves(history: Sequence[dict[str, float]], path: str | os.PathLike) -> None:
    """Loss and accuracy per epoch, training and validation side by side."""
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_acc) = new_figure(1, 2, figsize=(10, 3.8))
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
    save_figure(fig, path)
