"""The metrics of benchmarks/open_set.py: scikit-learn for the figures, a weighted numpy twin for the bootstrap
(tested equal), and the thresholds of the operating points."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

TPR = 0.95
REJECT_AT_MOST = 0.03  # share of validation photos the operating point may call "none"
FILED_AT_MOST = 0.05  # the target share of negatives filed into a class


def auroc_fpr(positives: np.ndarray, negatives: np.ndarray, tpr: float = TPR) -> tuple[float, float]:
    """AUROC (positives = one of the ten = 1) and the share of negatives at or above the highest threshold that
    keeps `tpr` of the positives, by scikit-learn."""
    labels = np.r_[np.ones(len(positives)), np.zeros(len(negatives))]
    scores = np.r_[positives, negatives]
    # every threshold: the default drops collinear points, among them the one where TPR may reach `tpr`
    fpr, tprs, _ = roc_curve(labels, scores, drop_intermediate=False)
    return float(roc_auc_score(labels, scores)), float(fpr[np.argmax(tprs >= tpr - 1e-12)])


def weighted_auroc_fpr(
    positives: np.ndarray, negatives: np.ndarray, w_pos: np.ndarray, w_neg: np.ndarray, tpr: float = TPR
) -> tuple[np.ndarray, np.ndarray]:
    """`auroc_fpr` for R weightings at once (w_pos (R, P), w_neg (R, N): how often each item was drawn), so a
    bootstrap is a few array operations: the ROC curve is built on the distinct scores, highest first."""
    scores = np.r_[positives, negatives]
    order = np.argsort(-scores, kind="stable")
    ordered = scores[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    is_pos = np.r_[np.ones(len(positives)), np.zeros(len(negatives))][order]
    weights = np.concatenate([w_pos, w_neg], 1)[:, order].astype(np.float64)
    tp = np.cumsum(np.add.reduceat(weights * is_pos, starts, axis=1), 1)
    fp = np.cumsum(np.add.reduceat(weights * (1 - is_pos), starts, axis=1), 1)
    tpr_curve = np.c_[np.zeros(len(tp)), tp / tp[:, -1:]]
    fpr_curve = np.c_[np.zeros(len(fp)), fp / fp[:, -1:]]
    auroc = (np.diff(fpr_curve, axis=1) * (tpr_curve[:, 1:] + tpr_curve[:, :-1]) / 2).sum(1)
    first = np.argmax(tpr_curve >= tpr - 1e-12, axis=1)
    return auroc, fpr_curve[np.arange(len(fpr_curve)), first]


def cluster_weights(clusters: np.ndarray, rounds: int, rng: np.random.Generator) -> np.ndarray:
    """(rounds, n) draw counts of a bootstrap that resamples whole clusters (with replacement) instead of items."""
    _, inverse = np.unique(clusters, return_inverse=True)
    k = int(inverse.max()) + 1
    draws = rng.integers(0, k, size=(rounds, k)) + np.arange(rounds)[:, None] * k
    counts = np.bincount(draws.ravel(), minlength=rounds * k).reshape(rounds, k)
    return counts[:, inverse]


def interval(values: np.ndarray) -> list[float]:
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def reject_threshold(positives: np.ndarray, share: float = REJECT_AT_MOST) -> float:
    """The highest threshold below which at most `share` of the positives fall (they are called "none")."""
    ordered = np.sort(positives)
    return float(ordered[int(np.floor(share * len(ordered)))])


def filed_threshold(negatives: np.ndarray, share: float = FILED_AT_MOST) -> float:
    """The lowest threshold at or above which at most `share` of the negatives stay (are filed into a class)."""
    ordered = np.sort(negatives)[::-1]
    allowed = int(np.floor(share * len(ordered)))
    return float(np.nextafter(ordered[allowed], np.inf)) if allowed < len(ordered) else float(ordered[-1])
