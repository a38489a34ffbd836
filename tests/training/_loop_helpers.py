"""The recipe the training-loop tests (test_loop.py, test_loop_safety.py, test_train_guards.py) run: the tiny
network, float32."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from conftest import TINY
from heritage_cnn.models.network import ModelConfig
from heritage_cnn.training.config import TrainConfig


def _config(root: Path, out: Path, **overrides) -> TrainConfig:
    base = TrainConfig(
        data=str(root), out=str(out), epochs=3, batch_size=32, model=ModelConfig(**TINY), amp=False, progress=False
    )  # float32 (amp=False): the same numbers on every CPU family; bf16 training has its own test
    return replace(base, **overrides)
