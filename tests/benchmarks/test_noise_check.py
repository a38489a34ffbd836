"""What the noise check's statistic computes, on images whose neighbour correlations are worked out by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from noise_check import neighbour_correlation


def test_a_ramp_a_checkerboard_and_a_flat_image() -> None:
    ramp = torch.arange(8).repeat(3, 8, 1)  # x[c, i, j] = j: each pixel and its right neighbour differ by one
    board = ((torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2 * 255).repeat(3, 1, 1)
    flat = torch.full((3, 8, 8), 90)
    got = neighbour_correlation(torch.stack([ramp, board, flat]).to(torch.uint8))
    # the ramp: j against j + 1 across (correlation 1), each column constant down (identical pairs: 1); the board:
    # every neighbour the opposite colour (-1 both ways); a flat image has no variance and counts as correlated (1)
    assert got == pytest.approx([1.0, -1.0, 1.0])


def test_independent_pixels_are_near_zero() -> None:
    noise = torch.randint(0, 256, (4, 3, 64, 64), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    # 3 x 64 x 63 pairs each way per image: the standard error of the mean of the two correlations is about 0.006
    assert abs(neighbour_correlation(noise)).max() < 0.03
