"""The training curves of a run: loss and accuracy per epoch (curves.png in every run folder)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from heritage_cnn.base.figures import new_figure, save_figure


def plot_training_curves(
    history: Sequence[dict[str, float]], path: str | os.PathLike, precise: dict[str, float] | None = None
) -> None:
    """Loss and accuracy per epoch, training and validation side by side. The best epoch's validation accuracy is
    labelled (best.*'s). `precise`: the saved network's validation after its batch-norm statistics were recomputed
    at the end (`--bn-statistics precise`), drawn as its own point after the last epoch, labelled: the epochs'
    validation used training's running statistics, so the last epoch's point is not the saved network's figure."""
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_acc) = new_figure(1, 2, figsize=(10, 3.8))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="train (augmented)")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], "o-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="Loss")
    ax_acc.plot(epochs, [r["train_accuracy"] for r in history], "o-", label="train (augmented)")
    ax_acc.plot(epochs, [r["val_accuracy"] for r in history], "o-", label="validation")
    best = max(history, key=lambda r: r["val_accuracy"])
    ax_acc.annotate(
        f"{best['val_accuracy']:.3f}" + (" (best epoch)" if precise else ""),
        (best["epoch"], best["val_accuracy"]),
        textcoords="offset points",
        xytext=(0, -14),
        ha="center",
    )
    if precise:
        saved = "saved network (precise batch-norm statistics)"
        ax_loss.plot([epochs[-1]], [precise["val_loss"]], "*", color="black", markersize=12, label=saved)
        ax_acc.plot([epochs[-1]], [precise["val_accuracy"]], "*", color="black", markersize=12, label=saved)
        ax_acc.annotate(
            f"saved: {precise['val_accuracy']:.3f}",
            (epochs[-1], precise["val_accuracy"]),
            textcoords="offset points",
            xytext=(0, 8),
            ha="right",
        )
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    save_figure(fig, path)
