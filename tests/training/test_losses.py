"""What training minimises (training/losses.py): the consistency term between two views."""

from __future__ import annotations

import pytest
import torch

from heritage_cnn.training.losses import consistency_loss


def test_consistency_term_is_zero_for_agreeing_views_and_grows_with_disagreement() -> None:
    same = torch.randn(6, 10)
    assert consistency_loss(torch.cat([same, same])).item() == pytest.approx(0.0, abs=1e-6)
    near, far = same + 0.1 * torch.randn(6, 10), same + 3 * torch.randn(6, 10)
    small, large = (consistency_loss(torch.cat([same, other])).item() for other in (near, far))
    assert 0 < small < large <= torch.log(torch.tensor(2.0)).item() + 1e-6  # Jensen-Shannon is bounded by log 2
    other = torch.randn(6, 10)  # symmetric in the two views
    assert consistency_loss(torch.cat([same, other])).item() == pytest.approx(
        consistency_loss(torch.cat([other, same])).item()
    )
