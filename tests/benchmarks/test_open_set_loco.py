"""What the leave-one-class-out benchmark computes: AUROC and FPR at 95 % TPR on scores worked out by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from open_set_loco import auroc_interval, roc_figures


def test_separated_scores_give_auroc_one_and_no_false_positives() -> None:
    assert roc_figures(np.array([3.0, 4.0, 5.0]), np.array([1.0, 2.0])) == (1.0, 0.0)


def test_auroc_counts_the_ordered_pairs() -> None:
    # positives 1, 3; negatives 2, 4: of the four (positive, negative) pairs one is ordered (3 > 2): AUROC 1/4;
    # keeping 95 % of the positives needs the threshold at 1, where both negatives pass: FPR 1
    auroc, fpr = roc_figures(np.array([1.0, 3.0]), np.array([2.0, 4.0]))
    assert auroc == pytest.approx(0.25)
    assert fpr == 1.0


def test_fpr_at_95_tpr_keeps_the_point_where_tpr_reaches_95_percent_among_ties() -> None:
    # 20 positives (18 at 5, one at 3, one at 2), 10 negatives (one at 3, one at 2, eight at 0): TPR reaches 95 % at
    # threshold 3, where one negative of ten passes; scikit-learn's default curve drops that collinear point (0.2)
    positives, negatives = np.r_[np.full(18, 5.0), 3.0, 2.0], np.r_[3.0, 2.0, np.zeros(8)]
    assert roc_figures(positives, negatives) == pytest.approx((0.99, 0.1))


def test_the_interval_holds_the_estimate_and_is_fixed_by_its_seed() -> None:
    rng = np.random.default_rng(0)
    positives, negatives = rng.normal(1.0, 1.0, 200), rng.normal(0.0, 1.0, 100)
    low, high = auroc_interval(positives, negatives)
    assert low < roc_figures(positives, negatives)[0] < high
    assert (low, high) == auroc_interval(positives, negatives)
