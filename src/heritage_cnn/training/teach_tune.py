"""`heritage teach --tune stage`: the last convolutional stage fitted too, on the photos the parent trained on.

A network's last layer alone can only re-weigh features the network already computes; a class it never saw may
need features it does not compute (docs/teach.md: a linear layer on the frozen features of a nine-class network
reaches 75 % recall on the tenth class even when fitted on all of its ~900 photos). So this stage fits the last
stage and the head together, on their cached inputs: the input of the last stage is computed once per photo (two
views of each photo the parent trained on, the `teach.VIEWS` of each taught one), then a few epochs of Adam run on
the small top of the network only. Batch norm keeps the parent's statistics (a few dozen photos of a new class
would move them for every class). Forgetting is held off by replay and by distillation (Li & Hoiem's "learning
without forgetting", ECCV 2016): on the replayed photos, the known classes' probabilities are pulled towards the
parent's. The features change, so the none-of-these statistics and threshold are fitted again, by the rule every
trained model's are (`openset_fit.fit_operating_point`), on the parent's own training and validation photos.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from heritage_cnn.models.network import HeritageNet

EPOCHS = 4  # a few passes: the top of a network moves quickly from a good start (docs/teach.md)
LR = 3e-4  # Adam; a tenth of training's peak, for a network that is already trained
BATCH = 128
DISTILL_WEIGHT = 1.0  # the distillation term beside the cross-entropy, at temperature 2 (Hinton et al., 2015)
TEMPERATURE = 2.0


@dataclass(frozen=True)
class TuneConfig:
    epochs: int = EPOCHS
    lr: float = LR
    batch_size: int = BATCH
    distill_weight: float = DISTILL_WEIGHT
    seed: int = 0


def _top(net: HeritageNet) -> nn.Sequential:
    return nn.Sequential(getattr(net, net.stage_names[-1]), net.head)


@torch.no_grad()
def last_stage_inputs(
    net: HeritageNet, images: torch.Tensor, normalise: Callable[[torch.Tensor], torch.Tensor], batch_size: int = 256
) -> torch.Tensor:
    """The input of `net`'s last stage for uint8 photos (N, 3, S, S), in float32, normalised batch by batch."""
    net.eval()
    parts = []
    for start in range(0, len(images), batch_size):
        x = net.resize(normalise(images[start : start + batch_size]))
        for name in net.stage_names[:-1]:
            x = getattr(net, name)(x)
        parts.append(x.float())
    return torch.cat(parts)


@torch.no_grad()
def parent_probabilities(net: HeritageNet, inputs: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """The parent network's softmax at TEMPERATURE on cached last-stage inputs."""
    top = _top(net).eval()
    return torch.cat(
        [F.softmax(top(inputs[s : s + batch_size]) / TEMPERATURE, 1) for s in range(0, len(inputs), batch_size)]
    )


def tune_top(
    net: HeritageNet,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    targets: torch.Tensor,
    known: int,
    config: TuneConfig = TuneConfig(),
) -> None:
    """Fit `net`'s last stage and head in place on cached inputs (N, C, H, W) with labels (N,): class-balanced
    cross-entropy, plus distillation towards `targets` (R, known) on the first R inputs (the replayed photos)."""
    top = _top(net)
    top.train()
    for module in top.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()  # the parent's statistics
    counts = torch.bincount(labels, minlength=net.head.fc2.out_features).float()
    weight = torch.where(counts > 0, counts.sum() / (counts.clamp_min(1) * (counts > 0).sum()), 0.0)
    optimiser = torch.optim.Adam([p for p in top.parameters() if p.requires_grad], lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    replayed = len(targets)
    for _ in range(config.epochs):
        for batch in torch.randperm(len(inputs), generator=generator).split(config.batch_size):
            logits = top(inputs[batch])
            loss = F.cross_entropy(logits, labels[batch], weight=weight)
            old = batch[batch < replayed]
            if len(old) and config.distill_weight:
                mine = logits[batch < replayed, :known] / TEMPERATURE
                kl = F.kl_div(F.log_softmax(mine, 1), targets[old], reduction="batchmean")
                loss = loss + config.distill_weight * kl * TEMPERATURE**2
            if not torch.isfinite(loss):
                raise ValueError("the last stage's fit diverged (a non-finite loss); nothing was written")
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    net.eval()


__all__ = ["TuneConfig", "last_stage_inputs", "parent_probabilities", "tune_top"]
