"""Objectives: scores to maximise (class logits and margins, channels, units) and penalties, composable.

`a + b`, `a - b` and `2 * a` build new objectives, so a recipe reads as a sum:
`class_logit(3) - 20 * total_variation()`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class Context:
    """What an objective can look at in one step."""

    image: Tensor  # (n, 3, h, w) in [0, 1], before the transforms: what the penalties judge
    logits: Tensor  # (n, classes)
    activations: dict[str, Tensor]  # layer name -> that layer's (pre-ReLU) response to the transformed image


@dataclass(frozen=True)
class Objective:
    """A score to maximise, summed over the batch; `a + b`, `a - b`, `2 * a` make new objectives."""

    fn: Callable[[Context], Tensor]
    name: str
    layers: frozenset[str] = frozenset()  # layers whose activations `fn` reads

    def __call__(self, context: Context) -> Tensor:
        return self.fn(context)

    def __add__(self, other: Objective) -> Objective:
        return Objective(lambda c: self(c) + other(c), f"{self.name} + {other.name}", self.layers | other.layers)

    def __radd__(self, other: object) -> Objective:  # so that sum([a, b, c]) works
        if other == 0:
            return self
        return NotImplemented

    def __sub__(self, other: Objective) -> Objective:
        return Objective(lambda c: self(c) - other(c), f"{self.name} - {other.name}", self.layers | other.layers)

    def __neg__(self) -> Objective:
        return Objective(lambda c: -self(c), f"-({self.name})", self.layers)

    def __mul__(self, factor: float) -> Objective:
        if not isinstance(factor, int | float):
            return NotImplemented
        return Objective(lambda c: factor * self(c), f"{factor:g} * ({self.name})", self.layers)

    __rmul__ = __mul__


def _per_image(index: int | Sequence[int], n: int, device: torch.device) -> Tensor:
    """One index per image: an int applies to all, a sequence gives image i index[i]; on the images' device."""
    indices = torch.as_tensor([index] * n if isinstance(index, int) else list(index), dtype=torch.long, device=device)
    if len(indices) != n:
        raise ValueError(f"{len(indices)} targets for a batch of {n} images")
    return indices


def class_logit(target: int | Sequence[int]) -> Objective:
    """The target class's logit (raw score before softmax)."""

    def fn(c: Context) -> Tensor:
        return c.logits.gather(1, _per_image(target, len(c.logits), c.logits.device)[:, None]).sum()

    return Objective(fn, f"logit[{target}]")


def class_margin(target: int | Sequence[int]) -> Objective:
    """Target logit minus the mean of the others: raising every logit together gains nothing."""

    def fn(c: Context) -> Tensor:
        own = c.logits.gather(1, _per_image(target, len(c.logits), c.logits.device)[:, None])[:, 0]
        others = (c.logits.sum(1) - own) / (c.logits.shape[1] - 1)
        return (own - others).sum()

    return Objective(fn, f"margin[{target}]")


def channel(layer_name: str, index: int | Sequence[int]) -> Objective:
    """A channel's mean response over the image (feature visualisation)."""

    def fn(c: Context) -> Tensor:
        act = c.activations[layer_name]
        return (
            act[torch.arange(len(act), device=act.device), _per_image(index, len(act), act.device)].mean((1, 2)).sum()
        )

    return Objective(fn, f"{layer_name}:{index}", frozenset({layer_name}))


def unit(layer_name: str, index: int | Sequence[int], y: int | None = None, x: int | None = None) -> Objective:
    """A single unit: one channel at one position (default: the centre of the feature map)."""

    def fn(c: Context) -> Tensor:
        act = c.activations[layer_name]
        row = act.shape[2] // 2 if y is None else y
        col = act.shape[3] // 2 if x is None else x
        return act[torch.arange(len(act), device=act.device), _per_image(index, len(act), act.device), row, col].sum()

    return Objective(fn, f"{layer_name}:{index}@{y},{x}", frozenset({layer_name}))


def diversity(layer_name: str) -> Objective:
    """Minus the mean cosine similarity of the images' Gram matrices at a layer: rewards different styles."""

    def fn(c: Context) -> Tensor:
        act = c.activations[layer_name]
        n = len(act)
        if n < 2:
            return act.sum() * 0
        flat = act.flatten(2)
        gram = F.normalize((flat @ flat.transpose(1, 2)).flatten(1), dim=1)
        similarity = gram @ gram.T
        return -(similarity.sum() - similarity.diagonal().sum()) / (n - 1)

    return Objective(fn, f"diversity({layer_name})", frozenset({layer_name}))


def l2(centre: float = 0.5) -> Objective:
    """Mean squared distance of the pixels from grey (a penalty: subtract it)."""
    return Objective(lambda c: (c.image - centre).pow(2).mean((1, 2, 3)).sum(), "l2")


def total_variation() -> Objective:
    """Mean absolute difference of neighbouring pixels (a penalty: subtract it)."""

    def fn(c: Context) -> Tensor:
        dy = (c.image[:, :, 1:] - c.image[:, :, :-1]).abs().mean((1, 2, 3))
        dx = (c.image[:, :, :, 1:] - c.image[:, :, :, :-1]).abs().mean((1, 2, 3))
        return (dy + dx).sum()

    return Objective(fn, "tv")


def blur() -> Objective:
    """Squared distance from a 3x3-blurred copy held fixed (a penalty: subtract it); pulls towards smooth."""

    def fn(c: Context) -> Tensor:
        blurred = F.avg_pool2d(F.pad(c.image, (1, 1, 1, 1), mode="replicate"), 3, stride=1).detach()
        return (c.image - blurred).pow(2).mean((1, 2, 3)).sum()

    return Objective(fn, "blur")
