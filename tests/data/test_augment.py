from __future__ import annotations

import pytest
import torch

from heritage_cnn.data.augment import AugmentConfig, augment_batch
from heritage_cnn.models.views import TTA_VIEWS, tta_views

OFF = AugmentConfig(rotation_degrees=0, hflip=False, zoom=0, shift=0, brightness=0, contrast=0, saturation=0)


def _batch() -> torch.Tensor:
    return torch.randint(0, 256, (8, 3, 64, 64), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def test_output_is_float_in_unit_range() -> None:
    out = augment_batch(_batch(), AugmentConfig(), torch.Generator().manual_seed(1))
    assert out.dtype == torch.float32 and out.shape == (8, 3, 64, 64)
    assert out.min() >= 0 and out.max() <= 1


def test_same_seed_same_batch_and_different_seed_differs() -> None:
    a = augment_batch(_batch(), AugmentConfig(), torch.Generator().manual_seed(1))
    b = augment_batch(_batch(), AugmentConfig(), torch.Generator().manual_seed(1))
    c = augment_batch(_batch(), AugmentConfig(), torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_switched_off_is_identity_and_flip_only_mirrors() -> None:
    x = _batch()
    assert torch.allclose(augment_batch(x, OFF), x.float() / 255, atol=1e-5)
    flipped = augment_batch(
        x,
        AugmentConfig(rotation_degrees=0, hflip=True, zoom=0, shift=0, brightness=0, contrast=0, saturation=0),
        torch.Generator().manual_seed(3),
    )
    for original, out in zip(x.float() / 255, flipped, strict=True):
        assert torch.allclose(out, original, atol=1e-5) or torch.allclose(out, original.flip(-1), atol=1e-5)
    mirrored = sum(not torch.allclose(o, i.float() / 255, atol=1e-5) for o, i in zip(flipped, x, strict=True))
    assert 0 < mirrored < len(x)


def test_random_erase_replaces_one_rectangle_in_about_the_chosen_share_of_images() -> None:
    from dataclasses import replace

    x = torch.full((400, 3, 32, 32), 128, dtype=torch.uint8)
    out = augment_batch(x, replace(OFF, erase=0.5), torch.Generator().manual_seed(4))
    changed = (out != 128 / 255).any(1)  # (N, H, W): erased pixels
    erased_images = changed.flatten(1).any(1)
    assert 150 < int(erased_images.sum()) < 250  # binomial(400, 0.5)
    for mask in changed[erased_images]:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        box = mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.float().mean() > 0.98  # a filled rectangle (noise may equal 0.5 at a pixel or two)
        assert 0.01 <= box.numel() / mask.numel() <= 0.3
    assert torch.equal(augment_batch(x, replace(OFF, erase=0.0)), x.float() / 255)


def test_test_time_views_are_the_documented_ones() -> None:
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    assert len(tta_views(x, "none")) == 1 and len(tta_views(x, "flip")) == 2
    views = tta_views(x, "multi")
    assert len(views) == 7 and all(v.shape == x.shape for v in views)
    assert torch.equal(views[0], x) and torch.equal(views[1], x.flip(3))
    # first shift (2 px = 1/16 of 32) looks right by two columns; the left edge is repeated
    assert torch.equal(views[2][..., :-2], x[..., 2:]) and torch.equal(views[2][..., -1], x[..., -1])
    assert torch.equal(views[3][..., :-2, :], x[..., 2:, :])
    assert torch.equal(views[4][..., 2:], x[..., :-2]) and torch.equal(views[5][..., 2:, :], x[..., :-2, :])
    constant = torch.full((1, 3, 32, 32), 0.3)
    assert torch.allclose(tta_views(constant, "multi")[6], constant)  # the zoom keeps a flat image flat
    assert all(len(tta_views(x, mode)) == count for mode, count in TTA_VIEWS.items())  # what forward_mflop counts
    with pytest.raises(ValueError, match="unknown test-time augmentation 'crops'"):
        tta_views(x, "crops")
