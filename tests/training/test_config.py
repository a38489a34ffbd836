"""TrainConfig (training/config.py): a recipe that cannot train is refused where it is made."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from heritage_cnn.base.checks import SEED_MAX, ConfigError
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


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amp", "no"),
        ("resume", "no"),
        ("compile", "no"),
        ("balanced_loss", "false"),
        ("progress", 1),
        ("teachers", "abc"),
        ("teachers", ["a", 3]),
        ("epochs", True),
        ("batch_size", 8.0),
        ("seed", 1.5),
        ("seed", -1),
        ("seed", SEED_MAX + 1),
        ("eval_batch_size", 0),
        ("threads", 0),
        ("limit_per_class", np.int64(1)),
        ("cache_dir", ""),
        ("cache_dir", "  "),
    ],
)
def test_a_field_of_the_wrong_type_is_refused_naming_it(field: str, value: object, tmp_path: Path) -> None:
    """Not read by truthiness (amp="no" was AMP on) nor by iteration (teachers="abc" was three teachers)."""
    with pytest.raises(ConfigError) as caught:
        TrainConfig(data="x", out=str(tmp_path), **{field: value})
    assert caught.value.fields == (field,) and str(caught.value).startswith(f"{field} must ")


def test_numpy_whole_numbers_are_taken_as_ints(tmp_path: Path) -> None:
    config = TrainConfig(data="x", out=str(tmp_path), batch_size=np.int64(8), epochs=np.int32(2), seed=np.uint8(3))
    assert (config.batch_size, config.epochs, config.seed) == (8, 2, 3)
    assert all(type(v) is int for v in (config.batch_size, config.epochs, config.seed))
    json.dumps(config.to_dict())  # config.json can hold it
    assert TrainConfig(data="x", out=str(tmp_path), teachers=[tmp_path]).teachers == (str(tmp_path),)


def test_a_recorded_empty_cache_dir_reads_as_none(tmp_path: Path) -> None:
    """A runtime field, recorded as given before it was checked: a run that recorded "" still resumes."""
    saved = {**TrainConfig(data="x", out=str(tmp_path)).to_dict(), "cache_dir": ""}
    assert TrainConfig.from_dict(saved).cache_dir is None
