"""Open-set scores: how much a photo looks like one of the ten classes, to answer "none of these".

Every score is a plain function on tensors, one value per photo, and follows one convention: **higher means more
likely one of the ten** (a threshold then says "none" below it). Post-hoc scores only: they need no retraining.

- `max_softmax(logits)`: the top class probability, the confidence the tool reports (Hendrycks & Gimpel, 2017).
- `max_logit(logits)`: the top raw logit (Hendrycks et al., 2022).
- `energy(logits, temperature)`: `T * logsumexp(logits / T)`, the negative free energy (Liu et al., 2020).
- `mahalanobis_fit(features, labels, ridge)` then `mahalanobis(features, stats)`: class means and one shared
  covariance of penultimate features fitted on the training photos; the score is minus the smallest squared
  Mahalanobis distance to a class mean (Lee et al., 2018). The stats are tensors (`MahalanobisStats.tensors()`),
  stored in a checkpoint beside the weights (`heritage_cnn.models.openset_point`). The distances are computed in
  one place, `whitened_distances`, for one network or for several at once (an ensemble's members, each with its
  own stats).
- `disagreement(member_probs)`: for an ensemble, minus the mean KL divergence of each member's softmax to the
  members' mean (zero when all members agree, lower the more they disagree).
- `combine(parts, weights, reference)`: a weighted sum of z-scored scores, the z-scores taken against reference
  statistics (`zscore_reference`, e.g. of the training photos).
- `neighbour_correlation(images)`: not a score of the network but of the pixels, the check in front of the score:
  photographs, drawings and documents have strongly correlated neighbouring pixels, uniform noise none, and every
  network here files such noise as stained glass with a photo's confidence (docs/open_set.md, "A check for noise in
  front of the score").

`forward_with_features(model, images, layers)` runs a `HeritageNet` or an `Ensemble` once and returns its output,
every member's logits and the inputs of the named layers (`head.fc2`: the penultimate features, after the hidden
layer's ReLU; `head.fc1`: the globally pooled convolutional features), recorded by forward hooks that are removed
in `finally`. `open_set_scores` turns that into every score at once; for an ensemble a per-network score
(max logit, energy, Mahalanobis) is the mean of the members' scores, and max softmax is that of the averaged
softmax, the ensemble's answer. benchmarks/open_set.py measures them (docs/open_set.md).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from heritage_cnn.models.ensemble import networks

PENULTIMATE = "head.fc2"  # its input: the hidden layer's output after ReLU (dropout is the identity in eval mode)
POOLED = "head.fc1"  # its input: the global average of the last stage's feature maps
# The noise check reads every 4th row (and column) of a 64 px image: 3,000 pairs each way, enough to tell noise
# (correlation 0 +- 0.02) from a photograph (0.5 and up), at 1/14 of the time of every pair (0.6 against 8 ms for 64
# photos on two cores), 2 % of `fast`'s prediction (docs/open_set.md, "Noise as a reason for none of these").
NOISE_STRIDE = 4
EXACT_DISTANCES = "donot_use_mm_for_euclid_dist"  # differences, not |x|^2 - 2xy + |y|^2: no cancellation


def max_softmax(logits: torch.Tensor) -> torch.Tensor:
    """The largest class probability (N,) of logits (N, C); log-probabilities give the same answer."""
    return torch.softmax(logits.float(), 1).amax(1)


def max_logit(logits: torch.Tensor) -> torch.Tensor:
    """The largest logit (N,)."""
    return logits.float().amax(1)


def neighbour_correlation(images: torch.Tensor, every: int = NOISE_STRIDE) -> torch.Tensor:
    """(N,) float64: the mean of the horizontal and the vertical lag-1 Pearson correlation of images (N, C, H, W),
    the channels pooled, the horizontal pairs read on every `every`-th row and the vertical ones on every `every`-th
    column: near 1 for photographs, near 0 for independent pixels, -1 for a checkerboard. An image without variation
    along a direction (flat colour) counts 1 there: nothing in it is noise."""
    if images.ndim != 4 or images.shape[-1] < 2 or images.shape[-2] < 2:
        raise ValueError(f"images must be N x C x H x W with H, W at least 2, got shape {tuple(images.shape)}")
    # float32, summed per image over (C, H, W) without copies; within 1e-7 of float64 on 64 px photos, far below the
    # 0.01 margin the check's threshold keeps
    rows, columns = images[:, :, ::every, :].float(), images[:, :, :, ::every].float()
    dims = (1, 2, 3)

    def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = a - a.mean(dims, keepdim=True), b - b.mean(dims, keepdim=True)
        scale = (a.square().sum(dims) * b.square().sum(dims)).sqrt()
        return torch.where(scale > 0, (a * b).sum(dims) / scale.clamp_min(1e-30), torch.ones_like(scale))

    return ((pearson(rows[..., :-1], rows[..., 1:]) + pearson(columns[..., :-1, :], columns[..., 1:, :])) / 2).double()


def energy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Negative free energy `T * logsumexp(logits / T)` (N,); tends to `max_logit` as T goes to 0."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return temperature * torch.logsumexp(logits.float() / temperature, 1)


@dataclass(frozen=True)
class MahalanobisStats:
    """Class means (C, D) and a whitening matrix W (D, D), the Cholesky factor of the precision P = W W^T (the
    inverse of the shared covariance plus its ridge): the squared distance is |x W - m W|^2."""

    means: torch.Tensor
    whitening: torch.Tensor

    @property
    def precision(self) -> torch.Tensor:
        return self.whitening @ self.whitening.T

    def tensors(self, prefix: str = "openset.mahalanobis.") -> dict[str, torch.Tensor]:
        """As named tensors, the way a checkpoint stores them."""
        return {f"{prefix}means": self.means, f"{prefix}whitening": self.whitening}

    @classmethod
    def from_tensors(
        cls, tensors: Mapping[str, torch.Tensor], prefix: str = "openset.mahalanobis."
    ) -> MahalanobisStats:
        return cls(tensors[f"{prefix}means"].float(), tensors[f"{prefix}whitening"].float())


class SingularCovariance(ValueError):
    """The class statistics' covariance cannot be inverted at this ridge (`mahalanobis_fit`)."""

    def __init__(self, ridge: float) -> None:
        self.ridge = ridge
        self.problem = (
            "the covariance of the class statistics' features is singular at this ridge (a feature that never "
            "varies, or fewer photos than features), so it has no inverse; a ridge such as 1e-4 makes it invertible"
        )
        super().__init__(f"ridge {ridge:g}: {self.problem}")

    def __reduce__(self) -> tuple[type, tuple[float]]:  # pickled (a worker's error) by its ridge, not its message
        return type(self), (self.ridge,)


def mahalanobis_fit(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None, ridge: float = 1e-3
) -> MahalanobisStats:
    """Class means and a shared covariance of features (N, D) with labels (N,), fitted in float64.

    The covariance is the mean outer product of each feature vector minus its class mean (the maximum-likelihood
    estimate, divided by N); `ridge` times its mean diagonal is added to the diagonal before inverting, so the
    ridge is relative to the features' scale and a rank-deficient covariance (dead ReLU units) stays invertible.
    A covariance that no ridge so small makes invertible (ridge 0 with a dead unit) is a `SingularCovariance`.
    """
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"features must be (N, D) and labels (N,), got {tuple(features.shape)}, {tuple(labels.shape)}")
    if ridge < 0:
        raise ValueError(f"ridge must be at least 0, got {ridge}")
    x, labels = features.double(), labels.long()
    count = int(num_classes) if num_classes is not None else int(labels.max()) + 1
    per_class = torch.bincount(labels, minlength=count)
    if len(per_class) > count or bool((per_class == 0).any()):
        raise ValueError(f"every class 0..{count - 1} needs at least one photo, got counts {per_class.tolist()}")
    sums = torch.zeros(count, x.shape[1], dtype=x.dtype).index_add_(0, labels, x)
    means = sums / per_class[:, None]
    centred = x - means[labels]
    covariance = centred.T @ centred / len(x)
    scale = covariance.diagonal().mean().clamp_min(torch.finfo(x.dtype).tiny)
    covariance = covariance + ridge * scale * torch.eye(x.shape[1], dtype=x.dtype)
    try:
        precision = torch.linalg.inv(covariance)
        whitening = torch.linalg.cholesky((precision + precision.T) / 2).float()
    except torch.linalg.LinAlgError:
        raise SingularCovariance(ridge) from None
    if not bool(torch.isfinite(whitening).all()):  # a ridge too small to count (1e-300): float32 overflows
        raise SingularCovariance(ridge)
    return MahalanobisStats(means.float(), whitening)


def stacked_whitening(stats: Sequence[MahalanobisStats]) -> tuple[torch.Tensor, torch.Tensor]:
    """Several networks' statistics stacked for `whitened_distances`: the whitening matrices (M, D, D) and the
    whitened class means (M, C, D)."""
    whitening = torch.stack([s.whitening for s in stats])
    return whitening, torch.bmm(torch.stack([s.means for s in stats]), whitening)


def whitened_distances(features: torch.Tensor, whitening: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Squared Mahalanobis distances (..., N, C) of features (..., N, D) to every class mean, given the whitening
    matrix (..., D, D) and the whitened class means (..., C, D): whitened features' squared Euclidean distances to the
    whitened means, taken as differences (no cancellation), in float32. One matrix product per photo: about
    0.13 MFLOP for 256 features. With a leading dimension, every network of an ensemble at once, each with its own
    statistics (`stacked_whitening`): a few large operations rather than three per network, as each small one pays
    a thread synchronisation (a scheduler slice on busy cores)."""
    return torch.cdist(features.float() @ whitening, centres, compute_mode=EXACT_DISTANCES).square()


def mahalanobis_distances(features: torch.Tensor, stats: MahalanobisStats) -> torch.Tensor:
    """Squared Mahalanobis distances (N, C) of one network's features (N, D) to every class mean."""
    return whitened_distances(features, stats.whitening, stats.means @ stats.whitening)


def mahalanobis(features: torch.Tensor, stats: MahalanobisStats) -> torch.Tensor:
    """Minus the smallest squared Mahalanobis distance to a class mean (N,): 0 at a class mean, lower farther."""
    return -mahalanobis_distances(features, stats).amin(1)


def disagreement(member_probs: torch.Tensor) -> torch.Tensor:
    """Minus the mean KL divergence KL(member || mean) over the members of softmax outputs (M, N, C): (N,).

    Zero when every member gives the same probabilities; more negative the more they disagree (higher = more
    likely one of the ten, as for every score here). This is the ensemble's mutual information between the
    prediction and the member (its "epistemic" part)."""
    if member_probs.ndim != 3:
        raise ValueError(f"member_probs must be (members, N, classes), got {tuple(member_probs.shape)}")
    p = member_probs.double()
    mean = p.mean(0, keepdim=True)
    kl = (torch.xlogy(p, p) - torch.xlogy(p, mean.expand_as(p))).sum(2)
    return -kl.mean(0).float()


def zscore_reference(parts: Sequence[torch.Tensor]) -> list[tuple[float, float]]:
    """(mean, standard deviation) of each score on reference photos, to z-score it with `combine`."""
    return [(float(part.double().mean()), float(part.double().std().clamp_min(1e-12))) for part in parts]


def combine(
    parts: Sequence[torch.Tensor], weights: Sequence[float], reference: Sequence[tuple[float, float]]
) -> torch.Tensor:
    """Weighted sum of z-scored scores: sum_i w_i (s_i - mean_i) / std_i, each score's mean and std from `reference`."""
    if not (len(parts) == len(weights) == len(reference)) or not parts:
        raise ValueError(
            f"need as many parts, weights and references, got {len(parts)}, {len(weights)}, {len(reference)}"
        )
    total = torch.zeros_like(parts[0], dtype=torch.float64)
    for part, weight, (mean, std) in zip(parts, weights, reference, strict=True):
        total += weight * (part.double() - mean) / std
    return total.float()


@dataclass(frozen=True)
class ForwardRecord:
    """One forward pass: the model's output (N, C), each member's logits (M, N, C) and, for every named layer,
    each member's input to it (M, N, D). A single network is an ensemble of one (M = 1)."""

    logits: torch.Tensor
    member_logits: torch.Tensor
    features: dict[str, torch.Tensor]


@torch.no_grad()
def forward_with_features(
    model: nn.Module, images: torch.Tensor, layers: Sequence[str] = (PENULTIMATE,)
) -> ForwardRecord:
    """Run `model` (a HeritageNet or an Ensemble, in eval mode) once on a normalised batch, recording each member's
    logits and its input to each layer in `layers` (names as in `model.named_modules()` of a member)."""
    nets = networks(model)
    logits_seen: list[list[torch.Tensor]] = [[] for _ in nets]
    inputs_seen: dict[str, list[list[torch.Tensor]]] = {name: [[] for _ in nets] for name in layers}
    # Hooks belong to the module, not the call: a server's threads share one model, and each thread's hooks fire
    # on every thread's forward pass. Each records only the passes of the thread that registered it.
    owner = threading.get_ident()

    def keep(seen: list[torch.Tensor], tensor: torch.Tensor) -> None:
        if threading.get_ident() == owner:
            seen.append(tensor.float())

    handles = []
    try:
        for index, net in enumerate(nets):
            handles.append(net.register_forward_hook(lambda _m, _i, out, s=logits_seen[index]: keep(s, out)))
            for name in layers:
                record = inputs_seen[name][index]
                handles.append(net.get_submodule(name).register_forward_pre_hook(lambda _m, a, r=record: keep(r, a[0])))
        output = model(images).float()
    finally:
        for handle in handles:
            handle.remove()
    member_logits = torch.stack([seen[-1] for seen in logits_seen])
    features = {name: torch.stack([seen[-1] for seen in per]).flatten(2) for name, per in inputs_seen.items()}
    return ForwardRecord(output, member_logits, features)


def open_set_scores(
    record: ForwardRecord,
    stats: Mapping[str, Sequence[MahalanobisStats]] | None = None,
    temperature: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Every score of one forward record: max_softmax (of the model's output), max_logit and energy (mean over
    members), disagreement (ensembles only) and, for each layer with fitted stats (one per member),
    `mahalanobis[layer]` (mean over members)."""
    m = record.member_logits
    scores = {
        "max_softmax": max_softmax(record.logits),
        "max_logit": torch.stack([max_logit(x) for x in m]).mean(0),
        "energy": torch.stack([energy(x, temperature) for x in m]).mean(0),
    }
    if len(m) > 1:
        scores["disagreement"] = disagreement(torch.softmax(m, 2))
    for layer, per_member in (stats or {}).items():
        if len(per_member) != len(m):
            raise ValueError(f"{layer}: {len(per_member)} Mahalanobis stats for {len(m)} members")
        features = record.features[layer]
        scores[f"mahalanobis[{layer}]"] = torch.stack(
            [mahalanobis(features[k], s) for k, s in enumerate(per_member)]
        ).mean(0)
    return scores


__all__ = [
    "EXACT_DISTANCES",
    "NOISE_STRIDE",
    "PENULTIMATE",
    "POOLED",
    "ForwardRecord",
    "MahalanobisStats",
    "SingularCovariance",
    "combine",
    "disagreement",
    "energy",
    "forward_with_features",
    "mahalanobis",
    "mahalanobis_distances",
    "mahalanobis_fit",
    "max_logit",
    "max_softmax",
    "neighbour_correlation",
    "open_set_scores",
    "stacked_whitening",
    "whitened_distances",
    "zscore_reference",
]
