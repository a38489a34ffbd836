"""Transforms: a random small change of each image every step (pad, jitter, scale, rotate).

An image that must keep its score under small shifts, zooms and turns cannot rely on a pixel-exact
pattern: this is what makes the images mean something to networks other than the one that drew them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Transform = Callable[[Tensor, torch.Generator], Tensor]


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def pad(pixels: int, mode: str = "reflect") -> Transform:
    """A border (mirrored by default; "constant" is grey), so that jitter can move content off the edge."""
    if mode == "constant":
        return lambda x, g: F.pad(x, (pixels,) * 4, value=0.5)
    return lambda x, g: F.pad(x, (pixels,) * 4, mode=mode)


def jitter(pixels: int) -> Transform:
    """Crop `pixels` rows and columns at a random offset (the image shrinks by `pixels`)."""

    def apply(x: Tensor, g: torch.Generator) -> Tensor:
        offsets = torch.randint(0, pixels + 1, (x.shape[0], 2), generator=g).tolist()
        h, w = x.shape[-2] - pixels, x.shape[-1] - pixels
        return torch.stack([image[:, dy : dy + h, dx : dx + w] for image, (dy, dx) in zip(x, offsets, strict=True)])

    return apply


def _affine(x: Tensor, theta: Tensor) -> Tensor:
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def scale(low: float, high: float) -> Transform:
    """Zoom each image by a random factor in [low, high] about its centre (size unchanged)."""

    def apply(x: Tensor, g: torch.Generator) -> Tensor:
        inverse = 1.0 / _uniform(x.shape[0], low, high, g)
        theta = torch.zeros(x.shape[0], 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = inverse
        return _affine(x, theta)

    return apply


def rotate(degrees: float) -> Transform:
    """Rotate each image by a random angle in [-degrees, degrees] about its centre."""

    def apply(x: Tensor, g: torch.Generator) -> Tensor:
        angle = _uniform(x.shape[0], -degrees, degrees, g) * (math.pi / 180)
        cos, sin = angle.cos(), angle.sin()
        theta = torch.stack([torch.stack([cos, -sin, 0 * cos], 1), torch.stack([sin, cos, 0 * cos], 1)], 1)
        return _affine(x, theta)

    return apply


def standard_transforms(size: int = 64, pixels: int = 4, zoom: float = 0.1, degrees: float = 8.0) -> list[Transform]:
    """Lucid's recipe (pad, jitter, scale, rotate, jitter) with shifts sized for 64 px images."""
    px = max(1, round(pixels * size / 64))
    return [pad(px), jitter(px), scale(1 - zoom, 1 + zoom), rotate(degrees), jitter(max(1, px // 2))]
