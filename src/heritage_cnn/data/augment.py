"""Cheap batched augmentation on uint8 tensors already in memory.

One random affine matrix per image (rotation, zoom, shift, horizontal flip) is applied to the
whole batch with a single `grid_sample`, then brightness, contrast and saturation are jittered
with tensor arithmetic, and (optionally) one random rectangle per image is erased with a mask.
No PIL and no per-image Python in the hot loop. Vertical flips are left
out on purpose: an upside-down bell tower is not a photo anyone takes. At the end, the test-time views
(`tta_views`): the few fixed views of a photo whose logits prediction may average.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from heritage_cnn.base.checks import config_from_dict, in_range, require

GREY_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class AugmentConfig:
    """Strength of each random transform; zero (or False) switches it off."""

    rotation_degrees: float = 15.0  # uniform in [-r, r]
    hflip: bool = True  # mirror left-right with probability 1/2
    zoom: float = 0.15  # scale factor log-uniform in [1 / (1 + z), 1 + z]
    shift: float = 0.1  # translation, fraction of the image side, uniform in [-s, s]
    brightness: float = 0.2  # multiply by a factor in [1 - b, 1 + b]
    contrast: float = 0.2
    saturation: float = 0.2
    erase: float = 0.0  # probability of random erasing: a rectangle of 2-25 % of the image set to noise

    def __post_init__(self) -> None:  # bounds where the transform still means what it says
        for name, high in LIMITS.items():
            value = getattr(self, name)
            require(in_range(value, 0, high), f"{{0}} must be a finite number from 0 to {high:g}, got {value}", name)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> AugmentConfig:
        return config_from_dict(cls, data)


# Upper bounds of the strengths: a half turn; a zoom of 1/4 to 4 times; a shift of the whole side; colour
# factors down to zero (beyond 1 they go negative); erasing is a probability.
LIMITS = {
    "rotation_degrees": 180.0,
    "zoom": 3.0,
    "shift": 1.0,
    "brightness": 1.0,
    "contrast": 1.0,
    "saturation": 1.0,
    "erase": 1.0,
}


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device) * (high - low) + low


def random_affine(
    images: torch.Tensor, config: AugmentConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Rotate, zoom, shift and mirror float images (B, C, H, W) with one matrix per image."""
    n, device = images.shape[0], images.device
    angle = _uniform(n, -1.0, 1.0, generator, device) * math.radians(config.rotation_degrees)
    log_zoom = math.log1p(config.zoom)
    scale = torch.exp(_uniform(n, -log_zoom, log_zoom, generator, device))
    shift = _uniform(2 * n, -2 * config.shift, 2 * config.shift, generator, device).view(n, 2)
    flip = torch.ones(n, device=device)
    if config.hflip:
        flip = torch.where(torch.rand(n, generator=generator, device=device) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos * flip, -sin, shift[:, 0]], dim=1),
            torch.stack([sin * flip, cos, shift[:, 1]], dim=1),
        ],
        dim=1,
    ).to(images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def colour_jitter(
    images: torch.Tensor, config: AugmentConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random brightness, contrast and saturation per image, for float images in [0, 1]."""
    n, device = images.shape[0], images.device
    weights = torch.tensor(GREY_WEIGHTS, device=device, dtype=images.dtype).view(1, 3, 1, 1)
    if config.brightness:
        factor = _uniform(n, 1 - config.brightness, 1 + config.brightness, generator, device)
        images = images * factor.view(n, 1, 1, 1).to(images.dtype)
    if config.contrast:
        factor = _uniform(n, 1 - config.contrast, 1 + config.contrast, generator, device).view(n, 1, 1, 1)
        mean = (images * weights).sum(1, keepdim=True).mean((2, 3), keepdim=True)
        images = (images - mean) * factor.to(images.dtype) + mean
    if config.saturation:
        factor = _uniform(n, 1 - config.saturation, 1 + config.saturation, generator, device).view(n, 1, 1, 1)
        grey = (images * weights).sum(1, keepdim=True)
        images = (images - grey) * factor.to(images.dtype) + grey
    return images.clamp_(0.0, 1.0)


def random_erase(images: torch.Tensor, probability: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random erasing (Zhong et al. 2020) per image: with `probability`, a rectangle covering 2-25 % of
    the image, aspect ratio in [0.3, 3.3], is filled with uniform noise. One boolean mask for the batch,
    so the cost does not depend on the batch size in Python steps."""
    n, _, height, width = images.shape
    device = images.device
    area = _uniform(n, 0.02, 0.25, generator, device) * height * width
    log_ratio = _uniform(n, math.log(0.3), math.log(3.3), generator, device)
    box_h = torch.sqrt(area * torch.exp(log_ratio)).clamp(1, height)
    box_w = torch.sqrt(area / torch.exp(log_ratio)).clamp(1, width)
    top = torch.rand(n, generator=generator, device=device) * (height - box_h)
    left = torch.rand(n, generator=generator, device=device) * (width - box_w)
    chosen = torch.rand(n, generator=generator, device=device) < probability
    rows = torch.arange(height, device=device).view(1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, width)
    inside_rows = (rows >= top.view(n, 1, 1)) & (rows < (top + box_h).view(n, 1, 1))
    inside_cols = (cols >= left.view(n, 1, 1)) & (cols < (left + box_w).view(n, 1, 1))
    mask = (inside_rows & inside_cols & chosen.view(n, 1, 1)).unsqueeze(1)
    noise = torch.rand(images.shape, generator=generator, device=device, dtype=images.dtype)
    return torch.where(mask, noise, images)


def augment_batch(
    images: torch.Tensor, config: AugmentConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """uint8 images (B, 3, H, W) -> augmented float images in [0, 1], new tensors: `images` is left as it was.
    Other dtypes are refused: a float batch's scale (0-1 or 0-255) cannot be told from its values."""
    if images.dtype != torch.uint8:
        raise TypeError(f"augment_batch takes uint8 images (B, 3, H, W), got {images.dtype}")
    x = images.float().div_(255.0)  # a new float tensor: dividing it in place leaves the caller's uint8 alone
    if config.rotation_degrees or config.hflip or config.zoom or config.shift:
        x = random_affine(x, config, generator)
    if config.brightness or config.contrast or config.saturation:
        x = colour_jitter(x, config, generator)
    if config.erase:
        x = random_erase(x, config.erase, generator)
    return x
