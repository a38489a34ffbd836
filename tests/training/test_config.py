"""TrainConfig (training/config.py): a recipe that cannot train is refused where it is made."""

from __future__ import annotations

from pathlib import Path

import pytest

from heritage_cnn.models.network import ModelConfig
from heritage_cnn.training.config import TrainConfig


def test_bad_recipes_are_refused(tmp_path: Path) -> None:
    for bad in (
        {"epochs": 0},
        {"epochs": -3},
        {"batch_size": 1},
        {"lr": 0.0},
        {"ema_decay": 1.0},
        {"mixup_alpha": -1},
        {"consistency_weight": -1},
        {"consistency_weight": 1, "cutmix_alpha": 1},
        {"optimizer": "lion"},
        {"bn_statistics": "exact"},
        {"optimizer": "muon", "model": ModelConfig(widths=(8,), blocks=(1,))},
    ):
        with pytest.raises(ValueError):
            TrainConfig(data="x", out=str(tmp_path), **bad)
