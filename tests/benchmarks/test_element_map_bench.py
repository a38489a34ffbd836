"""The element-map benchmark's pure parts (benchmarks/element_map.py): the per-mosaic scores, worked by hand (its
mosaics are the library's: tests/data/test_mosaics.py). No model and no data set."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import element_map as bench

CLASSES = [f"c{i}" for i in range(10)]


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
