"""The mosaics of photos whose content is known (`data.mosaics`): seeded, keeping their promises, each photo in its
cell."""

from __future__ import annotations

import numpy as np
import pytest

from heritage_cnn.data.mosaics import mosaic_specs, photo_mosaic


def test_mosaics_are_seeded_and_keep_their_promises() -> None:
    labels = np.repeat(np.arange(10), 5)
    specs = mosaic_specs(labels, negatives=30, count=20, seed=0)
    assert specs == mosaic_specs(labels, negatives=30, count=20, seed=0)
    assert [s["kind"] for s in specs] == ["2x2"] * 20 + ["3x3"] * 20 + ["none"] * 20
    for spec in specs:
        assert len(spec["cells"]) == spec["grid"] ** 2
        classes = [c for source, _, c in spec["cells"] if source == "val"]
        if spec["kind"] == "none":
            assert classes == [] and len({i for _, i, _ in spec["cells"]}) == len(spec["cells"])  # distinct negatives
            continue
        assert classes and len(set(classes)) == len(classes)  # one photo per class, at least one
        for source, index, c in spec["cells"]:
            assert labels[index] == c if source == "val" else c == -1
    assert [s["grid"] for s in specs if s["kind"] == "none"][:4] == [2, 3, 2, 3]


def test_render_puts_each_photo_in_its_cell() -> None:
    photos = np.stack([np.full((64, 64, 3), v, np.uint8) for v in (10, 200)])
    negatives = np.full((1, 64, 64, 3), 99, np.uint8)
    spec = {"grid": 2, "cells": [("val", 0, 3), ("val", 1, 4), ("neg", 0, -1), ("val", 0, 3)]}
    canvas = photo_mosaic(spec, photos, negatives, 100)
    assert canvas.shape == (200, 200, 3)
    assert [canvas[50, 50, 0], canvas[50, 150, 0], canvas[150, 50, 0], canvas[150, 150, 0]] == [10, 200, 99, 10]


def test_mosaics_of_the_classes_held_only() -> None:
    """The report's: 2 x 2 mosaics of validation photos alone, from a set that lacks some classes."""
    labels = np.array([0, 0, 2, 5, 7, 7, 9])
    specs = mosaic_specs(labels, negatives=0, count=3, seed=0, kinds=("2x2",), negative_share=0)
    assert [s["grid"] for s in specs] == [2, 2, 2]
    for spec in specs:
        classes = [c for source, _, c in spec["cells"] if source == "val"]
        assert len(classes) == 4 and len(set(classes)) == 4 and set(classes) <= {0, 2, 5, 7, 9}
        assert all(labels[index] == c for _, index, c in spec["cells"])
    with pytest.raises(ValueError, match="photos of 4 classes, got 3"):
        mosaic_specs(np.array([1, 3, 3, 8]), 0, 1, 0, kinds=("2x2",), negative_share=0)
