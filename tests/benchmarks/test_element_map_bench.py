"""The element-map benchmark's pure parts (benchmarks/element_map.py): the seeded mosaics, their drawing, and the
per-mosaic scores, worked by hand. No model and no data set."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import element_map as bench

CLASSES = [f"c{i}" for i in range(10)]


def test_mosaics_are_seeded_and_keep_their_promises() -> None:
    labels = np.repeat(np.arange(10), 5)
    specs = bench.mosaic_specs(labels, negatives=30, count=20, seed=0)
    assert specs == bench.mosaic_specs(labels, negatives=30, count=20, seed=0)
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
    canvas = bench.render(spec, photos, negatives, 100)
    assert canvas.shape == (200, 200, 3)
    assert [canvas[50, 50, 0], canvas[50, 150, 0], canvas[150, 50, 0], canvas[150, 150, 0]] == [10, 200, 99, 10]


def test_scores_of_one_mosaic_by_hand() -> None:
    # 2 x 2, cells of 100 px: c1 top left, c2 top right, a negative bottom left, c3 bottom right
    spec = {"kind": "2x2", "grid": 2, "cells": [("val", 0, 1), ("val", 1, 2), ("neg", 0, -1), ("val", 2, 3)]}
    maps = np.zeros((10, 2, 2), np.float32)  # one cell of the map per 100 px cell of the mosaic
    maps[1, 0, 0] = 0.9  # peaks in its own cell
    maps[2, 1, 1] = 0.7  # peaks in c3's cell: wrong place
    maps[5, 1, 0] = 0.8  # a false element on the negative
    listed = [SimpleNamespace(label=c, confidence=0.8) for c in ("c1", "c2", "c5")]
    emap = SimpleNamespace(maps=maps, cell=(100.0, 100.0), elements=listed, known_tiles=3, tiles=4)
    row = bench.score_mosaic(spec, emap, CLASSES, 100)
    assert row["present"] == ["c1", "c2", "c3"] and row["hits"] == 2
    assert row["f1"] == 2 * 2 / (3 + 3)
    assert row["peaks_in_tile"] == [True, False, False]  # c3's map is zero everywhere: a miss
    summary = bench.summarise([row, {**row, "kind": "none", "listed": [], "empty": True}], seed=0)
    assert summary["2x2"]["f1_mean"] == 2 / 3 and summary["none"]["empty"] == 1.0
    assert summary["mixed"]["precision"] == 2 / 3 and summary["mixed"]["recall"] == 2 / 3
