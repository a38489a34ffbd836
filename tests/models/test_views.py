"""The test-time views a model reads (models/views.py): exactly the documented ones."""

from __future__ import annotations

import pytest
import torch

from heritage_cnn.models.views import TTA_VIEWS, tta_views


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
