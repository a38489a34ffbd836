"""The fits of `heritage teach` (`training/teach.py`): a network's head refitted on frozen features.

- Without the photos the parent trained on: the last layer only (`fit_last_layer`) on the penultimate features, the
  known classes replayed as samples of the Gaussians of the parent's none-of-these statistics (`gaussian`).
- With them (`--data`): both fully connected layers (`fit_hidden_and_last`) on the pooled features (the last stage's
  global average, `head.fc1`'s input), the known classes replayed as those photos' real features and held to the
  parent's answers by distillation (Li & Hoiem's learning without forgetting, ECCV 2016; Hinton et al.'s soft
  targets at temperature 2). The pooled features keep what the hidden layer discarded for the parent's classes: a
  linear fit on them separates a class the network never saw better than one on the penultimate features
  (docs/teach.md, "What limits it").

Both start from **imprinting** (Qi, Brown & Lowe, CVPR 2018): a new class's row is its photos' mean feature, centred
on the known classes' and scaled to the known rows' mean norm.

What a fit costs the known classes is measured on photos of them it never fitted (`known_cost`), and can be bounded
(`offset_for_cost`): one offset that lowers the new classes' logits moves along the trade-off between their recall
and the known classes' accuracy (docs/teach.md, "Recall against what the known classes lose").
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from heritage_cnn.base.checks import in_range, require
from heritage_cnn.models.openset import MahalanobisStats
from heritage_cnn.training.config import check_whole

SAMPLES_PER_CLASS = 512  # Gaussian replay features per class without --data
ANCHOR = 1e-2  # L2 pull of the known rows to the parent's, per weight, when corrections refit them
STEPS = 300  # full-batch Adam steps of the last layer
LR = 0.01
# The fit of both layers, chosen on the tuning class of benchmarks/teach_new_class.py (never a reported class):
HIDDEN_STEPS = 600  # minibatch steps
HIDDEN_LR = 1e-3
BATCH = 512  # replayed photos a step
TAUGHT_PER_BATCH = 8  # taught photos added to every batch, beside the class-balanced loss
DISTILL_WEIGHT = 1.0
TEMPERATURE = 2.0
OFFSET_RANGE = 20.0  # the new classes' logits are lowered by at most this much to meet a bound on the known ones' loss
OFFSET_STEP = 0.05


@dataclass(frozen=True)
class FitConfig:
    steps: int = STEPS
    lr: float = LR
    anchor: float = ANCHOR
    samples_per_class: int = SAMPLES_PER_CLASS
    hidden_steps: int = HIDDEN_STEPS
    hidden_lr: float = HIDDEN_LR
    taught_per_batch: int = TAUGHT_PER_BATCH
    distill_weight: float = DISTILL_WEIGHT
    seed: int = 0

    def __post_init__(self) -> None:
        check_whole(self, "steps", 0)  # 0: the imprinted rows as they are
        check_whole(self, "hidden_steps", 0)
        check_whole(self, "samples_per_class", 1)
        check_whole(self, "taught_per_batch", 1)
        check_whole(self, "seed", 0, 2**63 - 1)  # what torch.Generator takes; ensemble members add their index
        for name in ("lr", "hidden_lr"):  # Adam moves every weight by about lr a step: beyond 1 a fit only diverges
            value = getattr(self, name)
            require(in_range(value, 0, 1, above_low=True), f"{{0}} must be in (0, 1], got {value}", name)
        for name in ("anchor", "distill_weight"):
            value = getattr(self, name)
            require(in_range(value, 0), f"{{0}} must be a finite number >= 0, got {value}", name)


def balanced_weights(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Inverse class frequency, 0 for a class without samples."""
    counts = torch.bincount(labels, minlength=classes).float()
    return torch.where(counts > 0, counts.sum() / (counts.clamp_min(1) * (counts > 0).sum()), 0.0)


def gaussian(stats: MahalanobisStats, means: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` samples per row of `means` (C, D) from N(mean, covariance), the covariance the inverse of the
    statistics' precision W W^T: x = mean + W^-T z. (C * count, D)."""
    dim = means.shape[1]
    z = torch.randn(len(means) * count, dim, generator=generator, dtype=torch.float64)
    offsets = torch.linalg.solve_triangular(stats.whitening.double().T, z.T, upper=True).T
    return (means.double().repeat_interleave(count, 0) + offsets).float()


def imprint(old: nn.Linear, new_means: torch.Tensor, known_means: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows for new classes (weights (K, D), biases (K,)): each mean centred on the known means' average, scaled to
    the known rows' mean norm; the known rows' mean bias."""
    centred = new_means - known_means.mean(0, keepdim=True)
    scale = old.weight.norm(dim=1).mean()
    rows = centred / centred.norm(dim=1, keepdim=True).clamp_min(1e-8) * scale
    return rows, old.bias.mean().expand(len(new_means)).clone()


def fit_last_layer(
    old: nn.Linear,
    features: torch.Tensor,
    labels: torch.Tensor,
    new_rows: tuple[torch.Tensor, torch.Tensor],
    fit_known: bool,
    config: FitConfig,
) -> nn.Linear:
    """`old` with the new rows added, fitted on (features, labels) by class-balanced cross-entropy; the known rows
    held near `old`'s by `config.anchor`, or frozen when not `fit_known`."""
    known = old.out_features
    w0, b0 = old.weight.detach().float(), old.bias.detach().float()
    weight = torch.cat([w0, new_rows[0].detach().float()]).requires_grad_(True)
    bias = torch.cat([b0, new_rows[1].detach().float()]).requires_grad_(True)
    total = len(w0) + len(new_rows[0])
    class_weight = balanced_weights(labels, total)
    mask = torch.ones(total, 1)
    if not fit_known:
        mask[:known] = 0
    optimiser = torch.optim.Adam([weight, bias], lr=config.lr)
    for _ in range(config.steps):
        optimiser.zero_grad(set_to_none=True)
        logits = features @ weight.T + bias
        loss = nn.functional.cross_entropy(logits, labels, weight=class_weight)
        if fit_known:
            pull = (weight[:known] - w0).pow(2).sum() + (bias[:known] - b0).pow(2).sum()
            loss = loss + config.anchor * pull
        loss.backward()
        weight.grad.mul_(mask)
        bias.grad.mul_(mask[:, 0])
        optimiser.step()
    head = _linear(old.in_features, total)
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    if not torch.isfinite(head.weight).all() or not torch.isfinite(head.bias).all():
        raise ValueError("the head's fit diverged (non-finite weights); nothing was written")
    return head


def _finite(*layers: nn.Linear) -> None:
    if not all(torch.isfinite(p).all() for layer in layers for p in layer.parameters()):
        raise ValueError("the head's fit diverged (non-finite weights); nothing was written")


def fit_hidden_and_last(
    head: nn.Sequential,
    replayed: torch.Tensor,
    replayed_labels: torch.Tensor,
    taught: torch.Tensor,
    taught_labels: torch.Tensor,
    new_classes: int,
    config: FitConfig,
) -> tuple[nn.Linear, nn.Linear]:
    """New `fc1` and `fc2` for a network's `head` (gap, flatten, drop1, fc1, relu, drop2, fc2), fitted on pooled
    features: `replayed` (R, D) with their labels, distilled towards the parent head's answers, and `taught` (T, D);
    `new_classes` rows added to fc2 (imprinted from the taught photos of each). Minibatches of BATCH replayed
    features and `taught_per_batch` taught ones, class-balanced cross-entropy, dropout as the network trains."""
    known = head.fc2.out_features
    fc1, old2 = _copy(head.fc1), head.fc2
    with torch.no_grad():
        targets = F.softmax(old2(F.relu(fc1(replayed))) / TEMPERATURE, 1)
        hidden = F.relu(fc1(torch.cat([replayed, taught])))
        labels = torch.cat([replayed_labels, taught_labels])
        known_means = torch.stack([hidden[labels == k].mean(0) for k in range(known)])
        new_means = (
            torch.stack([hidden[labels == known + k].mean(0) for k in range(new_classes)])
            if new_classes
            else hidden[:0]
        )
        rows, biases = imprint(old2, new_means, known_means)
    fc2 = _linear(old2.in_features, known + new_classes)
    with torch.no_grad():
        fc2.weight.copy_(torch.cat([old2.weight, rows]))
        fc2.bias.copy_(torch.cat([old2.bias, biases]))
    weight = _per_batch_balance(replayed_labels, taught_labels, known + new_classes, config.taught_per_batch)
    dropout = head.drop1.p
    optimiser = torch.optim.Adam([*fc1.parameters(), *fc2.parameters()], lr=config.hidden_lr)
    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):  # dropout's draws from the seed too: one seed, one head
        torch.manual_seed(config.seed)
        for _ in range(config.hidden_steps):
            old = torch.randint(len(replayed), (min(BATCH, len(replayed)),), generator=generator)
            new = (
                torch.randint(len(taught), (config.taught_per_batch,), generator=generator) if len(taught) else old[:0]
            )
            x = torch.cat([replayed[old], taught[new]])
            y = torch.cat([replayed_labels[old], taught_labels[new]])
            logits = fc2(F.dropout(F.relu(fc1(F.dropout(x, dropout))), dropout))
            loss = F.cross_entropy(logits, y, weight=weight)
            if config.distill_weight:
                mine = F.log_softmax(logits[: len(old), :known] / TEMPERATURE, 1)
                loss = loss + config.distill_weight * TEMPERATURE**2 * F.kl_div(
                    mine, targets[old], reduction="batchmean"
                )
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    _finite(fc1, fc2)
    return fc1, fc2


def _per_batch_balance(
    replayed: torch.Tensor, taught: torch.Tensor, classes: int, taught_per_batch: int
) -> torch.Tensor:
    """Class weights that give every class the same share of each batch's loss, from the batch's expected make-up
    (BATCH replayed and `taught_per_batch` taught features, each drawn uniformly from its own set)."""
    expected = torch.bincount(replayed, minlength=classes).float() * min(BATCH, len(replayed)) / max(len(replayed), 1)
    if len(taught):
        expected += torch.bincount(taught, minlength=classes).float() * taught_per_batch / len(taught)
    present = expected > 0
    return torch.where(present, expected[present].mean() / expected.clamp_min(1e-12), 0.0)


def answers(logits: torch.Tensor, known: int, offset: float = 0.0) -> torch.Tensor:
    """The class each photo is given from its networks' logits (M, N, C), `offset` added to the new classes' columns
    (index `known` on); the networks combined as `Ensemble` does (mean probability). (N,) class indices."""
    shifted = torch.cat([logits[..., :known], logits[..., known:] + offset], -1)
    return torch.logsumexp(shifted.float().log_softmax(-1), 0).argmax(-1)


@dataclass(frozen=True)
class KnownCost:
    """What teaching cost the known classes on `photos` photos of them that no fit saw: the parent's and the taught
    model's accuracy, the share given a new class, and the offset added to the new classes' logits."""

    photos: int
    parent: float
    taught: float
    new_answers: float
    offset: float = 0.0
    bound: float | None = None  # the most accuracy points the known classes were allowed to lose

    @property
    def loss_points(self) -> float:
        return 100.0 * (self.parent - self.taught)


def known_cost(
    parent_logits: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, offset: float = 0.0
) -> KnownCost:
    """The cost on photos of known classes (`labels` < the parent's class count) of the taught networks' `logits`
    (M, N, C) against the parent's (M, N, K)."""
    known = parent_logits.shape[-1]
    before, after = answers(parent_logits, known), answers(logits, known, offset)
    return KnownCost(
        photos=len(labels),
        parent=(before == labels).float().mean().item(),
        taught=(after == labels).float().mean().item(),
        new_answers=(after >= known).float().mean().item(),
        offset=offset,
    )


def offset_for_cost(parent_logits: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, bound: float) -> KnownCost:
    """The offset nearest 0 (0, -OFFSET_STEP, ... down to -OFFSET_RANGE) added to the new classes' logits at which the
    known classes lose at most `bound` accuracy points on these photos, with its cost: the fit's own answers when they
    meet the bound, never more new-class answers than it gave. Lowering the new classes' logits takes back photos
    given a new class; a bound the known rows' own refit (with --data both layers are fitted again, new classes or
    corrections alike) already exceeds cannot be met: ValueError."""
    known = parent_logits.shape[-1]
    parent = (answers(parent_logits, known) == labels).float().mean().item()  # the same at every offset
    for offset in torch.arange(0.0, -OFFSET_RANGE - OFFSET_STEP / 2, -OFFSET_STEP).tolist():
        taught = (answers(logits, known, round(offset, 6)) == labels).float().mean().item()
        if 100.0 * (parent - taught) <= bound + 1e-9:
            return replace(known_cost(parent_logits, logits, labels, round(offset, 6)), bound=bound)
    lowest = known_cost(parent_logits, logits, labels, -OFFSET_RANGE)
    raise ValueError(
        f"the known classes lose {lowest.loss_points:.2f} points on {lowest.photos} of their photos even when the new "
        f"classes are never answered: --max-known-loss {bound:g} cannot be met (teaching fits the "
        "known classes' weights again too, with the new classes and any corrections)"
    )


def _copy(layer: nn.Linear) -> nn.Linear:
    copy = _linear(layer.in_features, layer.out_features)
    copy.load_state_dict(layer.state_dict())
    return copy


def _linear(in_features: int, out_features: int) -> nn.Linear:
    """A linear layer whose weights are set after: its initialisation draws nothing from the caller's random stream."""
    with torch.random.fork_rng(devices=[]):
        return nn.Linear(in_features, out_features)


__all__ = [
    "FitConfig",
    "KnownCost",
    "answers",
    "balanced_weights",
    "fit_hidden_and_last",
    "fit_last_layer",
    "gaussian",
    "imprint",
    "known_cost",
    "offset_for_cost",
]
