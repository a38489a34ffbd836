"""The patch-whitening initialisation screened for the recipe log (benchmarks/whiten_stem.py) must whiten."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from whiten_stem import whitening_filters


def test_whitening_filters_decorrelate_the_patches_they_were_fitted_on() -> None:
    torch.manual_seed(0)
    images = (torch.rand(64, 3, 16, 16) * 255).to(torch.uint8)
    images[:, 1] = images[:, 0]  # correlated channels: whitening has work to do
    filters = whitening_filters(images, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25], kernel=3, count=8)
    assert filters.shape == (8, 3, 3, 3)
    torch.testing.assert_close(filters[4:], -filters[:4])
    x = (images.float() / 255 - 0.5) / 0.25
    responses = F.conv2d(x, filters[:4]).permute(1, 0, 2, 3).reshape(4, -1)
    covariance = responses @ responses.T / responses.shape[1]
    torch.testing.assert_close(covariance, torch.eye(4), atol=0.05, rtol=0)
