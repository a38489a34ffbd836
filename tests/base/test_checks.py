"""Settings refused where they are made (heritage_cnn.base.checks): every number of every config refuses NaN and
infinity, and the error carries its fields, so that the command line names flags without reading messages."""

from __future__ import annotations

import math
from dataclasses import fields

import pytest

from heritage_cnn.base.checks import ConfigError, config_from_dict, in_range
from heritage_cnn.data.augment import AugmentConfig
from heritage_cnn.data.split import SplitRecipe
from heritage_cnn.models.network import ModelConfig
from heritage_cnn.training.config import TrainConfig


def test_in_range_refuses_what_comparisons_let_through() -> None:
    assert in_range(0, 0) and in_range(1.0, 0, 1) and in_range(5, 0)
    assert not in_range(0, 0, above_low=True) and not in_range(1, 0, 1, below_high=True)
    assert not any(in_range(v, 0) for v in (math.nan, math.inf, -math.inf, -1e-9, "1", None))


def test_error_names_fields_as_asked() -> None:
    error = ConfigError("{0} (8, 16) and {1} (1,) must match", "widths", "blocks").within("model")
    assert error.fields == ("model.widths", "model.blocks")
    assert str(error) == "widths (8, 16) and blocks (1,) must match"  # as the library spells them
    assert error.named(lambda path: "--" + path.split(".")[-1]) == "--widths (8, 16) and --blocks (1,) must match"


def _numbers(config: type) -> list[str]:
    return [f.name for f in fields(config) if f.type in ("float", "float | None")]


@pytest.mark.parametrize(
    ("config", "name"),
    [(c, n) for c in (TrainConfig, ModelConfig, AugmentConfig, SplitRecipe) for n in _numbers(c)],
)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0])
def test_every_number_of_every_config_refuses_nan_inf_and_negatives(config: type, name: str, bad: float) -> None:
    base = {"data": "d", "out": "o"} if config is TrainConfig else {}
    with pytest.raises(ConfigError) as refused:
        config(**base, **{name: bad})
    assert refused.value.fields[0] == name and str(refused.value).startswith(name)


def test_every_config_has_numbers_to_check() -> None:  # the test above would pass on an empty list
    assert {len(_numbers(c)) > 0 for c in (TrainConfig, ModelConfig, AugmentConfig, SplitRecipe)} == {True}
    assert "zoom" in _numbers(AugmentConfig) and "lr" in _numbers(TrainConfig)


def test_sub_config_errors_name_their_path_from_the_top() -> None:
    with pytest.raises(ConfigError) as refused:
        TrainConfig.from_dict({"data": "d", "out": "o", "augment": {"zoom": -2.0}})
    assert refused.value.fields == ("augment.zoom",)
    with pytest.raises(ValueError, match=r"unknown AugmentConfig keys: \['spin'\]"):
        TrainConfig.from_dict({"data": "d", "out": "o", "augment": {"spin": 1}})
    with pytest.raises(ValueError, match="unknown SplitRecipe keys"):
        config_from_dict(SplitRecipe, {"fraction": 0.2})
