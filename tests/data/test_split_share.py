"""--val-fraction is one fold of a k-fold split, so rounded to 1/k: the share taken is the one said and recorded,
and what is refused agrees with what is rounded (0.45 and 0.5 both give a half)."""

from __future__ import annotations

import numpy as np
import pytest

from heritage_cnn.base.checks import ConfigError
from heritage_cnn.data.split import SplitRecipe, folds, split_train_val


def test_the_share_is_rounded_to_one_over_k_and_a_half_is_taken_as_its_roundings_are() -> None:
    assert [folds(f) for f in (0.2, 0.3, 0.4, 0.45, 0.5, 0.1)] == [5, 3, 2, 2, 2, 10]
    assert SplitRecipe(val_fraction=0.5).folds == 2  # once refused, while 0.4 and 0.45 gave the same half
    for bad in (0.0, 0.51, 1.0, float("nan")):
        with pytest.raises(ConfigError, match=r"val_fraction must be in \(0, 0.5\]"):
            SplitRecipe(val_fraction=bad)
    labels = np.repeat(np.arange(3), 20)
    for fraction in (0.45, 0.5):
        _, val = split_train_val(labels, np.arange(len(labels)), fraction)
        assert len(val) == 30


def test_a_rounded_share_is_said_and_an_exact_one_is_not() -> None:
    assert SplitRecipe(val_fraction=0.2).rounding() is None
    assert SplitRecipe(val_fraction=0.25).rounding() is None
    said = SplitRecipe(val_fraction=0.45).rounding()
    assert said is not None and said.startswith("validation: 1 fold in 2 (50 %)") and "--val-fraction 0.45" in said
    assert "1 fold in 3 (33 %)" in (SplitRecipe(val_fraction=0.3).rounding() or "")
