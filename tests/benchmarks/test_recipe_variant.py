"""The recipe log's variant scripts (whiten_stem.py, progressive_resize.py) train the recipe their rows were logged
with: AdamW for 56 epochs unless told otherwise, with the run's data, folder, seed and --resume passed through."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import heritage_cnn.training.loop as training
import recipe_variant
from heritage_cnn.training.config import TrainConfig


def trained_config(monkeypatch: pytest.MonkeyPatch, argv: list[str], **recipe: object) -> TrainConfig:
    seen: list[TrainConfig] = []
    monkeypatch.setattr(training, "train", seen.append)
    recipe_variant.train_timed(recipe_variant.variant_parser(None).parse_args(argv), **recipe)
    (config,) = seen
    return config


def test_the_logged_recipe_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    config = trained_config(monkeypatch, ["--data", "d", "--out", "o"])
    assert (config.optimizer, config.epochs, config.seed, config.resume) == ("adamw", 56, 0, False)
    assert (config.data, config.out) == ("d", "o")


def test_flags_and_the_scripts_own_fields_pass_through(monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["--data", "d", "--out", "o", "--epochs", "22", "--seed", "3", "--resume"]
    config = trained_config(monkeypatch, argv, optimizer="muon")
    assert (config.optimizer, config.epochs, config.seed, config.resume) == ("muon", 22, 3, True)
