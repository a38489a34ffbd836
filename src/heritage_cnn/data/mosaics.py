"""Mosaics of photos whose content is known: the element map's test pictures (benchmarks/element_map.py, whose
protocol is docs/element_map.md's, and the report's "What is where" figures).

A mosaic is a square grid of cells, each one 64 px photo enlarged (Pillow bicubic): a photo of one of the ten from a
validation set, or a photo of none of them (a "negative"). `mosaic_specs` draws which photo goes in each cell from a
seeded generator, so the same seed gives the same mosaics; `photo_mosaic` paints one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

KINDS = ("2x2", "3x3", "none")
NEGATIVE_SHARE = 0.25  # chance that a cell of a mixed mosaic is a photo of none of the ten


def mosaic_specs(
    labels: np.ndarray,
    negatives: int,
    count: int,
    seed: int,
    kinds: Sequence[str] = KINDS,
    negative_share: float = NEGATIVE_SHARE,
) -> list[dict]:
    """Per mosaic: its kind, grid and cells, each ("val", photo index, class) or ("neg", negative index, -1); `count`
    of each kind in `kinds`. A mixed mosaic ("2x2", "3x3") holds a negative in each cell with probability
    `negative_share` (never in every cell) and validation photos of distinct classes (drawn without replacement
    among the classes `labels` holds), each drawn uniformly within its class; a "none" mosaic, alternately 2 x 2 and
    3 x 3, holds distinct negatives. `negatives` is how many negatives there are to draw from."""
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(labels == c) for c in range(int(labels.max()) + 1)]
    held = [c for c, members in enumerate(by_class) if len(members)]
    specs = []
    for kind in kinds:
        for i in range(count):
            grid = 2 if kind == "2x2" or (kind == "none" and i % 2 == 0) else 3
            cells = grid * grid
            if kind == "none":
                chosen = rng.choice(negatives, cells, replace=False)
                specs.append({"kind": kind, "grid": grid, "cells": [("neg", int(n), -1) for n in chosen]})
                continue
            negative = rng.random(cells) < negative_share
            if negative.all():
                negative[rng.integers(cells)] = False
            if int((~negative).sum()) > len(held):
                raise ValueError(f"a {kind} mosaic needs photos of {int((~negative).sum())} classes, got {len(held)}")
            classes = iter(rng.choice(len(held), int((~negative).sum()), replace=False))
            spec = []
            for is_negative in negative:
                if is_negative:
                    spec.append(("neg", int(rng.integers(negatives)), -1))
                else:
                    c = held[int(next(classes))]
                    spec.append(("val", int(rng.choice(by_class[c])), c))
            specs.append({"kind": kind, "grid": grid, "cells": spec})
    return specs


def photo_mosaic(spec: dict, photos: np.ndarray, negatives: np.ndarray | None, tile_px: int) -> np.ndarray:
    """One mosaic as an (grid x tile_px, grid x tile_px, 3) uint8 picture: each cell's (64, 64, 3) photo, from
    `photos` or `negatives`, enlarged to `tile_px` (Pillow bicubic), in reading order."""
    grid = spec["grid"]
    canvas = np.empty((grid * tile_px, grid * tile_px, 3), dtype=np.uint8)
    for i, (source, index, _) in enumerate(spec["cells"]):
        pixels = (photos if source == "val" else negatives)[index]
        big = Image.fromarray(pixels).resize((tile_px, tile_px), Image.Resampling.BICUBIC)
        r, c = divmod(i, grid)
        canvas[r * tile_px : (r + 1) * tile_px, c * tile_px : (c + 1) * tile_px] = np.asarray(big)
    return canvas


__all__ = ["KINDS", "NEGATIVE_SHARE", "mosaic_specs", "photo_mosaic"]
