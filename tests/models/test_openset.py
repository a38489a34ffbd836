"""Open-set scores on tiny tensors with values worked out by hand, the forward hooks, and the benchmark's metrics."""

from __future__ import annotations

import math
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from heritage_cnn.models import openset
from heritage_cnn.models.ensemble import Ensemble
from heritage_cnn.models.network import build_model

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


def tiny_net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(widths=(4, 8), blocks=(1, 1), hidden=6, num_classes=3).eval()


def test_logit_scores_by_hand() -> None:
    logits = torch.tensor([[0.0, math.log(3)], [2.0, 2.0]])
    assert openset.max_softmax(logits).tolist() == pytest.approx([0.75, 0.5])
    assert openset.max_softmax(logits.log_softmax(1)).tolist() == pytest.approx([0.75, 0.5])  # an ensemble's output
    assert openset.max_logit(torch.tensor([[1.0, 3.0, 2.0]])).tolist() == [3.0]
    assert openset.energy(logits, 1.0).tolist() == pytest.approx([math.log(4), 2 + math.log(2)])
    assert openset.energy(logits, 2.0)[0].item() == pytest.approx(2 * math.log(1 + math.sqrt(3)))
    assert openset.energy(logits, 1e-3).tolist() == pytest.approx(openset.max_logit(logits).tolist(), abs=1e-2)
    with pytest.raises(ValueError, match="temperature"):
        openset.energy(logits, 0.0)


def two_clusters() -> tuple[torch.Tensor, torch.Tensor]:
    # class 0 around (0, 0), class 1 around (10, 0); the centred points are (+-1, 0) and (0, +-1): covariance 0.5 I
    features = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [10.0, 1.0], [10.0, -1.0]])
    return features, torch.tensor([0, 0, 1, 1])


def test_mahalanobis_by_hand() -> None:
    stats = openset.mahalanobis_fit(*two_clusters(), ridge=0.0)
    assert stats.means.tolist() == [[0.0, 0.0], [10.0, 0.0]]
    assert stats.precision.flatten().tolist() == pytest.approx([2.0, 0.0, 0.0, 2.0])
    assert stats.whitening.flatten().tolist() == pytest.approx([math.sqrt(2), 0.0, 0.0, math.sqrt(2)])
    points = torch.tensor([[0.0, 0.0], [1.0, 1.0], [10.0, 0.5]])
    assert openset.mahalanobis_distances(points, stats)[1].tolist() == pytest.approx([4.0, 164.0])
    assert openset.mahalanobis(points, stats).tolist() == pytest.approx([0.0, -4.0, -0.5])
    # ridge 1 adds once the mean variance (0.5) to the diagonal: covariance I, precision I
    wide = openset.mahalanobis_fit(*two_clusters(), ridge=1.0)
    assert openset.mahalanobis(points, wide).tolist() == pytest.approx([0.0, -2.0, -0.25])
    again = openset.MahalanobisStats.from_tensors(wide.tensors())
    assert torch.equal(again.means, wide.means) and torch.equal(again.whitening, wide.whitening)


def test_mahalanobis_refuses_a_missing_class_and_a_constant_feature_stays_invertible() -> None:
    features, labels = two_clusters()
    with pytest.raises(ValueError, match="every class"):
        openset.mahalanobis_fit(features, labels, num_classes=3)
    constant = torch.cat([features, torch.zeros(4, 1)], 1)  # a dead ReLU unit: rank-deficient covariance
    score = openset.mahalanobis(torch.tensor([[1.0, 1.0, 0.0]]), openset.mahalanobis_fit(constant, labels))
    assert torch.isfinite(score).all()


@pytest.mark.parametrize("ridge", [0.0, 1e-300])
def test_a_ridge_too_small_to_invert_a_dead_unit_is_a_clear_value_error(ridge: float) -> None:
    """Was linalg's "inv: ... singular" or "cholesky: ... not positive-definite" at ridge 0, and at 1e-300 (which adds
    nothing a float64 diagonal can hold) a whitening matrix of infinities returned as if fitted."""
    features, labels = two_clusters()
    dead = torch.cat([features, torch.zeros(4, 1)], 1)
    with pytest.raises(openset.SingularCovariance, match=r"^ridge .*singular.*such as 1e-4") as info:
        openset.mahalanobis_fit(dead, labels, ridge=ridge)
    assert isinstance(info.value, ValueError) and info.value.ridge == ridge
    few = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))  # fewer photos than features
    with pytest.raises(openset.SingularCovariance):
        openset.mahalanobis_fit(few, torch.tensor([0, 1, 0]), ridge=ridge)
    assert torch.isfinite(openset.mahalanobis_fit(dead, labels, ridge=1e-4).whitening).all()


def test_disagreement_by_hand() -> None:
    opposite = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # two members, one photo, two classes
    assert openset.disagreement(opposite).tolist() == pytest.approx([-math.log(2)])
    same = torch.tensor([[[0.3, 0.7]], [[0.3, 0.7]]])
    assert openset.disagreement(same).tolist() == pytest.approx([0.0], abs=1e-7)
    # members (0.5, 0.5) and (1, 0): mean (0.75, 0.25); KLs ln(2/3)/2 + ln 2 / 2... worked out term by term
    mixed = torch.tensor([[[0.5, 0.5]], [[1.0, 0.0]]])
    kl_first = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    kl_second = math.log(1 / 0.75)
    assert openset.disagreement(mixed).tolist() == pytest.approx([-(kl_first + kl_second) / 2])


def test_combine_z_scores_against_the_reference() -> None:
    parts = [torch.tensor([1.0, 3.0]), torch.tensor([0.0, 10.0])]
    reference = openset.zscore_reference([torch.tensor([1.0, 3.0]), torch.tensor([0.0, 10.0])])
    assert reference[0] == pytest.approx((2.0, math.sqrt(2)))
    combined = openset.combine(parts, [1.0, 0.5], [(1.0, 2.0), (0.0, 5.0)])
    assert combined.tolist() == pytest.approx([0.0, 1.0 + 1.0])


def manual_features(net: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    head = net.head
    pooled = head.flatten(head.gap(net.features(x)))
    return pooled, torch.relu(head.fc1(pooled))


def test_forward_with_features_of_one_network_and_the_hooks_go() -> None:
    net, x = tiny_net(0), torch.randn(5, 3, 16, 16)
    record = openset.forward_with_features(net, x, (openset.PENULTIMATE, openset.POOLED))
    pooled, hidden = manual_features(net, x)
    assert record.member_logits.shape == (1, 5, 3) and torch.allclose(record.logits, net(x))
    assert torch.allclose(record.features[openset.PENULTIMATE][0], hidden, atol=1e-6)
    assert torch.allclose(record.features[openset.POOLED][0], pooled, atol=1e-6)
    assert torch.allclose(net.head.fc2(record.features[openset.PENULTIMATE][0]), record.logits, atol=1e-6)
    hooks = [m for m in net.modules() if m._forward_hooks or m._forward_pre_hooks]
    assert hooks == []
    with pytest.raises(AttributeError):
        openset.forward_with_features(net, x, (openset.PENULTIMATE, "head.nothing"))
    assert [m for m in net.modules() if m._forward_hooks or m._forward_pre_hooks] == []


class Gate(torch.nn.Module):
    """`inner`, then (or, with `first`, after) a wait on `barrier`: holds two threads' forward passes in step."""

    def __init__(self, inner: torch.nn.Module, barrier: threading.Barrier, first: bool) -> None:
        super().__init__()
        self.inner, self.barrier, self.first = inner, barrier, first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.first:
            self.barrier.wait()
        out = self.inner(x)
        if not self.first:
            self.barrier.wait()
        return out


def test_forward_with_features_from_two_threads_records_each_threads_own_pass() -> None:
    """A server shares one model between threads. Two passes are held in step: both threads' hooks are in place
    before either reaches the penultimate layer, and both pass it before either removes them, so a hook that
    recorded every thread's pass would hand one thread the other's features (as `heritage serve` once did)."""
    net, inputs = tiny_net(3), [torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16) + 3]
    expected = [manual_features(net, x)[1] for x in inputs]
    barriers = threading.Barrier(2, timeout=30), threading.Barrier(2, timeout=30)
    net.head.fc1 = Gate(net.head.fc1, barriers[0], first=True)
    net.head.fc2 = Gate(net.head.fc2, barriers[1], first=False)
    with ThreadPoolExecutor(2) as pool:
        records = list(pool.map(lambda x: openset.forward_with_features(net, x), inputs))
    for record, want in zip(records, expected, strict=True):
        assert record.features[openset.PENULTIMATE].shape == (1, 2, 6)
        assert torch.allclose(record.features[openset.PENULTIMATE][0], want, atol=1e-6)
        assert torch.allclose(record.member_logits[0], record.logits) and torch.allclose(
            record.logits, net.head.fc2.inner(want), atol=1e-6
        )
    assert not torch.allclose(expected[0], expected[1], atol=1e-3)  # a swap would show


def test_forward_with_features_of_an_ensemble_and_its_scores() -> None:
    nets, x = [tiny_net(1), tiny_net(2)], torch.randn(4, 3, 16, 16)
    ensemble = Ensemble(nets).eval()
    record = openset.forward_with_features(ensemble, x)
    assert torch.allclose(record.logits, ensemble(x))
    for k, net in enumerate(nets):
        assert torch.allclose(record.member_logits[k], net(x), atol=1e-6)
        assert torch.allclose(record.features[openset.PENULTIMATE][k], manual_features(net, x)[1], atol=1e-6)
    labels = torch.tensor([0, 1, 2, 0])
    stats = [openset.mahalanobis_fit(f, labels, num_classes=3, ridge=0.1) for f in record.features[openset.PENULTIMATE]]
    scores = openset.open_set_scores(record, {openset.PENULTIMATE: stats}, temperature=2.0)
    mean_prob = torch.stack([net(x).softmax(1) for net in nets]).mean(0)
    assert torch.allclose(scores["max_softmax"], mean_prob.amax(1), atol=1e-6)
    assert torch.allclose(scores["max_logit"], (nets[0](x).amax(1) + nets[1](x).amax(1)) / 2, atol=1e-6)
    assert torch.allclose(scores["energy"], sum(openset.energy(n(x), 2.0) for n in nets) / 2, atol=1e-6)
    assert scores["disagreement"].shape == (4,) and (scores["disagreement"] <= 0).all()
    expected = sum(openset.mahalanobis(manual_features(n, x)[1], s) for n, s in zip(nets, stats, strict=True)) / 2
    assert torch.allclose(scores[f"mahalanobis[{openset.PENULTIMATE}]"], expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="stats for 2 members"):
        openset.open_set_scores(record, {openset.PENULTIMATE: stats[:1]})


def test_scores_agree_with_pytorch_ood_when_it_is_installed() -> None:
    """pytorch-ood is not a dependency; with it on the path (pip install --target DIR pytorch-ood), the same
    features give the same ranking. Its Mahalanobis sums the outer products (no division by N), adds 1e-6 to the
    diagonal and returns half the smallest distance as an outlier score: ours is -2N times it, up to that ridge."""
    detector = pytest.importorskip("pytorch_ood.detector")
    generator = torch.Generator().manual_seed(0)
    features, labels = torch.randn(60, 5, generator=generator), torch.arange(60) % 3
    features[labels == 1] += 3.0
    test = torch.randn(20, 5, generator=generator) * 2
    ood = detector.Mahalanobis(None).fit_features(features, labels).predict_features(test)
    ours = openset.mahalanobis(test, openset.mahalanobis_fit(features, labels, ridge=0.0))
    assert torch.allclose(ours, -2 * len(features) * ood, rtol=1e-4)
    logits = torch.randn(20, 4, generator=generator) * 3
    assert torch.allclose(openset.energy(logits, 2.0), -detector.EnergyBased.score(logits, t=2.0))
    assert torch.allclose(openset.max_softmax(logits), -detector.MaxSoftmax.score(logits))
    assert torch.allclose(openset.max_logit(logits), -detector.MaxLogit.score(logits))


def test_the_benchmarks_weighted_metrics_equal_scikit_learn_on_the_drawn_photos() -> None:
    from _open_set_metrics import auroc_fpr, cluster_weights, weighted_auroc_fpr

    rng = np.random.default_rng(0)
    positives = np.round(rng.normal(1.0, 1.0, 40), 1)  # rounded: ties within and across the two sides
    negatives = np.round(rng.normal(0.0, 1.0, 30), 1)
    w_pos = cluster_weights(np.arange(40) // 4, 20, rng)  # clusters of four photos drawn together
    w_neg = cluster_weights(np.arange(30), 20, rng)
    assert (w_pos.sum(1) == 40).all() and (w_pos.reshape(20, 10, 4) == w_pos.reshape(20, 10, 4)[:, :, :1]).all()
    aurocs, fprs = weighted_auroc_fpr(positives, negatives, w_pos, w_neg)
    for r in range(20):
        expected = auroc_fpr(np.repeat(positives, w_pos[r]), np.repeat(negatives, w_neg[r]))
        assert (aurocs[r], fprs[r]) == pytest.approx(expected, abs=1e-12)
    assert auroc_fpr(np.array([2.0, 3.0]), np.array([1.0, 2.0])) == (0.875, 0.5)  # by hand: one tie counts half
    # TPR reaches 95 % at 3, where one negative of ten passes (0.1), a point scikit-learn's default curve drops
    positives, negatives = np.r_[np.full(18, 5.0), 3.0, 2.0], np.r_[3.0, 2.0, np.zeros(8)]
    assert auroc_fpr(positives, negatives) == pytest.approx((0.99, 0.1))
    ones = np.ones((1, 20)), np.ones((1, 10))
    assert weighted_auroc_fpr(positives, negatives, *ones)[1] == pytest.approx([0.1])


def test_the_benchmarks_thresholds_and_rule() -> None:
    from _open_set_metrics import filed_threshold, reject_threshold
    from _open_set_timing import pick

    positives = np.arange(100, dtype=float)
    threshold = reject_threshold(positives, 0.03)
    assert (positives < threshold).mean() == 0.03
    negatives = np.arange(40, dtype=float)
    assert (negatives >= filed_threshold(negatives, 0.05)).mean() == 0.05
    settings = {
        "max_softmax": {"parts": 1, "tuning_auroc": 0.80},
        "maha": {"parts": 1, "tuning_auroc": 0.900},
        "slow": {"parts": 1, "tuning_auroc": 0.99},
        "combo": {"parts": 2, "tuning_auroc": 0.904},
    }
    times = {"max_softmax": {"ratio": 1.0}, "maha": {"ratio": 1.05}, "slow": {"ratio": 1.2}, "combo": {"ratio": 1.06}}
    assert pick(settings, times)["picked"] == "maha"  # the combination gains less than 0.005: the simpler wins
    settings["combo"]["tuning_auroc"] = 0.91
    assert pick(settings, times)["picked"] == "combo"


def test_neighbour_correlation_by_hand() -> None:
    """A ramp along each row (every column constant down): 1 both ways. Columns alternating 0 and 255: -1 across,
    1 down, mean 0. A checkerboard of single pixels: -1 both ways. Flat colour: no variation, counted 1 (not noise).
    Uniform noise: near 0 (its standard error on 64 x 64 x 3 pairs is about 0.01)."""
    ramp = torch.arange(64, dtype=torch.uint8).expand(1, 3, 64, 64)
    columns = (torch.arange(64) % 2 * 255).to(torch.uint8).expand(1, 3, 64, 64)
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    checker = ((yy + xx) % 2 * 255).to(torch.uint8).expand(1, 3, 64, 64)
    flat = torch.full((1, 3, 64, 64), 77, dtype=torch.uint8)
    noise = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1, 3, 64, 64), dtype=np.uint8))
    values = openset.neighbour_correlation(torch.cat([ramp, columns, checker, flat, noise]))
    assert values.dtype == torch.float64
    assert values[:4].tolist() == pytest.approx([1.0, 0.0, -1.0, 1.0], abs=1e-6)  # float32 sums of 12k products
    assert abs(float(values[4])) < 0.05
    with pytest.raises(ValueError, match="N x C x H x W"):
        openset.neighbour_correlation(torch.zeros(3, 64, 64, dtype=torch.uint8))
