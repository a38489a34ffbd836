"""Integration tests on the real data, when it is beside the checkout (or in $HERITAGE_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from heritage_cnn.checkpoint import default_checkpoint_path, load_checkpoint
from heritage_cnn.data import find_layout, load_images
from heritage_cnn.evaluate import predict_logits
from heritage_cnn.model import ModelConfig
from heritage_cnn.train import TrainConfig, stratified_limit, train


def _data_root() -> Path | None:
    candidates = [
        os.environ.get("HERITAGE_DATA"),
        Path(__file__).resolve().parents[2] / "shared" / "datasets" / "ahe64",
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "train").is_dir():
            return Path(candidate)
    return None


DATA = _data_root()
pytestmark = pytest.mark.skipif(
    DATA is None, reason="AHE64 data not found: set HERITAGE_DATA or put it in ../shared/datasets/ahe64"
)


def test_one_short_epoch_on_a_stratified_subset(tmp_path: Path) -> None:
    config = TrainConfig(
        data=str(DATA),
        out=str(tmp_path),
        epochs=1,
        limit_per_class=30,
        batch_size=32,
        model=ModelConfig(widths=(8, 16, 32), blocks=(1, 1, 1)),
        progress=False,
    )
    result = train(config, log=lambda _: None)
    assert result.classes[4] == "dome(inner)" and len(result.classes) == 10
    assert result.train_size + result.val_size == 300 and result.val_size == 60
    assert (tmp_path / "last.safetensors").exists() and result.final["val_accuracy"] > 0.1


def test_shipped_model_recognises_the_real_photos() -> None:
    if not default_checkpoint_path().exists():
        pytest.fail("the package ships no default model")
    checkpoint = load_checkpoint()
    images = stratified_limit(load_images(find_layout(DATA).train, classes=checkpoint.classes), 20, seed=1)
    logits = predict_logits(checkpoint.model, images.images, checkpoint.normalise)
    accuracy = float((logits.argmax(1) == images.labels).float().mean())
    assert accuracy > 0.8, accuracy
    assert torch.isfinite(logits).all()
