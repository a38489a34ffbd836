"""Parametrisations: trainable tensors -> a batch of images in [0, 1] (pixels, or a Fourier spectrum).

The parametrisation decides which images gradient ascent finds easy to reach: one parameter per pixel
lets it build high-frequency noise, a scaled spectrum builds coarse shapes first; both may optimise in
a decorrelated colour basis so that channels move together as they do in photos.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

# Symmetric square root of the RGB covariance of 3,000 ahe64 training photos (pixels in [0, 1]),
# scaled so that its largest column has norm 1. Optimising in this basis moves the strongly correlated
# channels together (mostly brightness), as in photos, instead of in saturated independent colours.
AHE64_COLOUR = torch.tensor([[0.6904, 0.4567, 0.2888], [0.4567, 0.5856, 0.4975], [0.2888, 0.4975, 0.8180]])


def colour_matrix(pixels: Tensor) -> Tensor:
    """The decorrelation matrix of (N, 3) pixels in [0, 1], computed as AHE64_COLOUR was."""
    values, vectors = torch.linalg.eigh(torch.cov(pixels.double().T))
    root = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    return (root / root.norm(dim=0).max()).float()


def _to_rgb(x: Tensor, decorrelate: bool) -> Tensor:
    """Unbounded values -> valid images: optional colour correlation, then a sigmoid into [0, 1]."""
    if decorrelate:
        x = torch.einsum("ij,njhw->nihw", AHE64_COLOUR.to(x), x)
    return torch.sigmoid(x)


class PixelImage(nn.Module):
    """One free parameter per pixel and channel: the naive parametrisation (the baseline)."""

    def __init__(self, n: int, size: int, generator: torch.Generator, sd: float = 0.01, decorrelate: bool = False):
        super().__init__()
        self.decorrelate = decorrelate
        self.pixels = nn.Parameter(torch.randn(n, 3, size, size, generator=generator) * sd)

    def forward(self) -> Tensor:
        return _to_rgb(self.pixels, self.decorrelate)


class FourierImage(nn.Module):
    """Parameters are the image's 2-D spectrum, scaled by 1 / frequency**decay_power.

    Equal steps on every coefficient then change coarse structure much more than fine texture, so
    gradient ascent builds shapes first instead of the high-frequency noise pixels give.
    """

    def __init__(
        self,
        n: int,
        size: int,
        generator: torch.Generator,
        sd: float = 0.01,
        decay_power: float = 1.0,
        decorrelate: bool = True,
    ):
        super().__init__()
        self.size, self.decorrelate = size, decorrelate
        fy = torch.fft.fftfreq(size)[:, None]
        fx = torch.fft.rfftfreq(size)[None, :]
        frequency = (fy**2 + fx**2).sqrt().clamp(min=1.0 / size)
        self.register_buffer("scale", frequency**-decay_power, persistent=False)
        self.spectrum = nn.Parameter(torch.randn(n, 3, size, size // 2 + 1, 2, generator=generator) * sd)

    def forward(self) -> Tensor:
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        return _to_rgb(torch.fft.irfft2(spectrum, s=(self.size, self.size), norm="ortho"), self.decorrelate)


class MacoImage(nn.Module):
    """Magnitude-constrained Fourier image (after MACO, Fel et al. 2023): only the spectrum's phase is optimised.

    The magnitude is fixed to 1 / frequency**decay_power (natural images' amplitude spectrum falls about as
    1 / f; pass `magnitude`, e.g. the mean |rfft2| of photos, to use a measured one), so ascent can move
    structure but cannot pile energy into the frequencies that only the generating network reads. Each image
    is standardised before the colour basis and the sigmoid, which fixes its contrast.
    """

    def __init__(
        self,
        n: int,
        size: int,
        generator: torch.Generator,
        decay_power: float = 1.0,
        decorrelate: bool = True,
        magnitude: Tensor | None = None,
    ):
        super().__init__()
        self.size, self.decorrelate = size, decorrelate
        if magnitude is None:
            fy = torch.fft.fftfreq(size)[:, None]
            fx = torch.fft.rfftfreq(size)[None, :]
            magnitude = (fy**2 + fx**2).sqrt().clamp(min=1.0 / size) ** -decay_power
        self.register_buffer("magnitude", magnitude.expand(3, size, size // 2 + 1).clone(), persistent=False)
        self.phase = nn.Parameter((torch.rand(n, 3, size, size // 2 + 1, generator=generator) * 2 - 1) * math.pi)

    def forward(self) -> Tensor:
        spectrum = torch.polar(self.magnitude.expand_as(self.phase), self.phase)
        x = torch.fft.irfft2(spectrum, s=(self.size, self.size), norm="ortho")
        x = (x - x.mean((1, 2, 3), keepdim=True)) / (x.std((1, 2, 3), keepdim=True) + 1e-5)
        return _to_rgb(x, self.decorrelate)
