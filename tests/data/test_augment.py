from __future__ import annotations

import pytest
import torch

from heritage_cnn.data.augment import AugmentConfig, augment_batch

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


def test_a_float_batch_is_refused_and_left_as_it_was() -> None:
    """Only uint8 is taken: a float batch was divided by 255 in place (`.float()` of a float tensor is itself), the
    caller's images ruined and the output near black."""
    images = _batch().float() / 255
    before = images.clone()
    with pytest.raises(TypeError, match=r"uint8 images .* got torch\.float32"):
        augment_batch(images, OFF)
    assert torch.equal(images, before)
    x = _batch()
    kept = x.clone()
    augment_batch(x, AugmentConfig(erase=0.5), torch.Generator().manual_seed(5))
    assert torch.equal(x, kept)
