"""Test-time views: the views of a photo whose logits prediction averages.

A model's own views are part of its file format (an ensemble's `views`, validated on load), and every tool that
predicts (evaluate, the Classifier, the report) reads them from here.
"""

from __future__ import annotations

import torch

TTA_VIEWS = {"none": 1, "flip": 2, "multi": 7}  # each mode's forward passes per photo
TTA_MODES = tuple(TTA_VIEWS)
TTA_WORDS = {"none": "one view", "flip": "image + mirror", "multi": "7 views: mirror, shifts, zoom"}


def tta_views(x: torch.Tensor, mode: str = "none") -> list[torch.Tensor]:
    """The views of a batch (N, C, H, W) whose logits test-time augmentation averages.

    "flip": the image and its mirror. "multi": seven views inside the training augmentation's range,
    the image, its mirror, four shifts by 1/16 of the side (edges repeated) and a 1.125x centre zoom;
    about +0.8 pt on the validation split for 7x the prediction cost (benchmarks/recipes.md).
    Shifting and bilinear resampling commute with per-channel normalisation, so `x` may be either.
    """
    if mode not in TTA_MODES:
        raise ValueError(f"unknown test-time augmentation {mode!r}; choose one of {', '.join(TTA_MODES)}")
    views = [x]
    if mode in ("flip", "multi"):
        views.append(torch.flip(x, dims=[3]))
    if mode == "multi":
        size, shift = x.shape[-1], max(1, x.shape[-1] // 16)
        padded = torch.nn.functional.pad(x, (shift, shift, shift, shift), mode="replicate")
        for dy, dx in ((0, shift), (shift, 0), (0, -shift), (-shift, 0)):
            views.append(padded[:, :, shift + dy : shift + dy + size, shift + dx : shift + dx + size])
        zoomed_size = size + 2 * (size // 16)
        zoomed = torch.nn.functional.interpolate(x, size=zoomed_size, mode="bilinear", antialias=True)
        margin = (zoomed_size - size) // 2
        views.append(zoomed[:, :, margin : margin + size, margin : margin + size])
    return [view.contiguous(memory_format=torch.channels_last) for view in views]
