"""The pieces of an epoch that `loop` does not test through whole runs: precise batch-norm statistics, alone and
with outliers."""

from __future__ import annotations

import torch
from torch import nn

from heritage_cnn.training.epoch import precise_batch_norm


def test_precise_statistics_are_the_mean_of_the_batches_statistics() -> None:
    """Two batches of two one-pixel photos, channel 0 holding 0, 2 | 4, 10: batch means 1 and 7, so the mean 4;
    unbiased batch variances 2 and 18, so the variance 10. The statistics training left (zeros) are gone, momentum is
    restored and the network is back in eval mode."""
    images = torch.zeros(4, 3, 1, 1, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.tensor([0, 2, 4, 10], dtype=torch.uint8)
    bn = nn.BatchNorm2d(3, momentum=0.1)
    bn.running_mean.fill_(-5.0)
    model = nn.Sequential(bn).eval()
    precise_batch_norm(model, images, lambda x: x.float(), batch_size=2, device=torch.device("cpu"))
    torch.testing.assert_close(bn.running_mean, torch.tensor([4.0, 0.0, 0.0]))
    torch.testing.assert_close(bn.running_var, torch.tensor([10.0, 0.0, 0.0]))
    assert bn.momentum == 0.1 and not model.training


def test_with_outliers_each_batch_holds_as_many_of_them_as_photos_as_training_did() -> None:
    """Photos of 2 and outliers of 6 in channel 0, two photos a batch: each batch holds 2, 2, 6, 6 (the outliers
    drawn in order), so the mean is 4 and the unbiased variance 4 x 4 / 3 = 16/3; the photos alone would give 2 and
    0, which is what a network trained on mixed batches must not be normalised with."""
    images = torch.zeros(4, 3, 1, 1, dtype=torch.uint8)
    images[:, 0] = 2
    outliers = torch.zeros(3, 3, 1, 1, dtype=torch.uint8)
    outliers[:, 0] = 6
    bn = nn.BatchNorm2d(3)
    model = nn.Sequential(bn).eval()
    precise_batch_norm(model, images, lambda x: x.float(), 2, torch.device("cpu"), outliers=outliers)
    torch.testing.assert_close(bn.running_mean, torch.tensor([4.0, 0.0, 0.0]))
    torch.testing.assert_close(bn.running_var, torch.tensor([16 / 3, 0.0, 0.0]))
