"""The cost of teaching to the known classes (`teach_fit.answers`, `known_cost`, `offset_for_cost`), on logits
small enough to work out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import TINY
from heritage_cnn.base.checks import ConfigError
from heritage_cnn.models.network import HeritageNet, ModelConfig
from heritage_cnn.training.teach_fit import (
    OFFSET_STEP,
    FitConfig,
    answers,
    fit_hidden_and_last,
    fit_last_layer,
    imprint,
    known_cost,
    offset_for_cost,
)


def test_answers_add_the_offset_to_the_new_classes_only() -> None:
    logits = torch.tensor([[[2.0, 1.0, 0.0], [0.0, 1.0, 0.5], [0.0, 0.2, 1.0]]])  # one network, two known classes
    assert answers(logits, 2).tolist() == [0, 1, 2]
    assert answers(logits, 2, 3.0).tolist() == [2, 2, 2]  # 0 + 3 > 2; 0.5 + 3 > 1; 1 + 3 > 0.2
    assert answers(logits, 2, -2.0).tolist() == [0, 1, 1]  # 1 - 2 < 0.2


def test_answers_combine_networks_by_their_mean_probability() -> None:
    """Member a is sure of class 1 (logits 0, 9, 0: p = 8103.1 / 8105.1 = 0.99975), member b is sure it is not
    (0, -10, 0.2: p = 0.4502, 0.0000, 0.5498). Mean probability: class 1 0.4999, class 2 0.2750, class 0 0.2251, so
    class 1; the mean logits (0, -0.5, 0.1) would say class 2."""
    logits = torch.tensor([[[0.0, 9.0, 0.0]], [[0.0, -10.0, 0.2]]])
    assert answers(logits, 3).tolist() == [1]
    assert logits.mean(0).argmax(-1).tolist() == [2]


PARENT = torch.tensor([[[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0]]])  # right on all four
LABELS = torch.tensor([0, 1, 0, 1])
NEW_COLUMN = torch.tensor([1.0, 1.5, 2.52, 3.03])  # beats the known answer (2) on photos 2 and 3


def _taught(known: torch.Tensor = PARENT) -> torch.Tensor:
    return torch.cat([known, NEW_COLUMN.view(1, 4, 1)], -1)


def test_known_cost_counts_the_photos_a_new_class_took() -> None:
    cost = known_cost(PARENT, _taught(), LABELS)
    assert (cost.photos, cost.parent, cost.taught, cost.new_answers) == (4, 1.0, 0.5, 0.5)
    assert math.isclose(cost.loss_points, 50.0)


@pytest.mark.parametrize(
    ("bound", "offset", "loss"),
    [
        (60.0, 0.0, 50.0),  # the fit's own answers already meet it: unchanged, never raised
        (25.0, -0.55, 25.0),  # 2.52 - 0.55 < 2 gives photo 2 back; -0.50 does not (2.02)
        (0.0, -1.05, 0.0),  # 3.03 - 1.05 < 2 gives photo 3 back too
    ],
)
def test_the_offset_is_the_one_nearest_zero_that_meets_the_bound(bound, offset, loss) -> None:
    cost = offset_for_cost(PARENT, _taught(), LABELS, bound)
    assert math.isclose(cost.offset, offset, abs_tol=OFFSET_STEP / 10) and math.isclose(cost.loss_points, loss)
    assert cost.bound == bound


def test_a_bound_the_known_rows_themselves_break_cannot_be_met() -> None:
    known = PARENT.clone()
    known[0, 0] = torch.tensor([0.0, 2.0])  # a corrections refit moved photo 0 to the other known class
    with pytest.raises(ValueError, match=r"lose 25.00 points on 4 of their photos even when the new classes are never"):
        offset_for_cost(PARENT, _taught(known), LABELS, 10.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("steps", -5),
        ("hidden_steps", -1),
        ("samples_per_class", 0),
        ("taught_per_batch", 0),
        ("steps", True),
        ("lr", 1e9),
        ("lr", math.nan),
        ("lr", 0.0),
        ("hidden_lr", math.inf),
        ("anchor", -1.0),
        ("distill_weight", math.nan),
        ("seed", -1),
    ],
)
def test_a_fit_setting_that_cannot_teach_is_refused_naming_it(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        FitConfig(**{field: value})
    assert caught.value.fields == (field,) and str(caught.value).startswith(f"{field} must ")


def test_a_numpy_whole_number_is_taken_as_an_int() -> None:
    config = FitConfig(steps=np.int64(7))
    assert config.steps == 7 and type(config.steps) is int


def _draws_after(fit) -> torch.Tensor:
    torch.manual_seed(5)
    fit()
    return torch.rand(4)


def test_the_fits_leave_the_callers_random_stream_alone() -> None:
    """The heads they build are overwritten: building them draws nothing from the caller's stream."""
    torch.manual_seed(5)
    expected = torch.rand(4)
    head = HeritageNet(ModelConfig(**TINY, num_classes=3)).head  # pooled features of 16, fc1 to 32
    features, labels = torch.randn(40, 32), torch.arange(40) % 4
    rows = imprint(head.fc2, features[:2], features[2:5])[0][:1], torch.zeros(1)
    config = FitConfig(steps=2, hidden_steps=2)
    assert torch.equal(_draws_after(lambda: fit_last_layer(head.fc2, features, labels, rows, True, config)), expected)
    pooled, known = torch.randn(30, 16), torch.arange(30) % 3
    taught, new = torch.randn(6, 16), torch.full((6,), 3)
    fit = lambda: fit_hidden_and_last(head, pooled, known, taught, new, 1, config)  # noqa: E731
    assert torch.equal(_draws_after(fit), expected)
