"""The negative set's drawn pictures (benchmarks/negative_pictures.py): a cut-out laid on a drawn background."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
from _pictures import cut_out

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import negative_pictures


def test_a_scene_shows_the_whole_cut_out_where_its_record_says() -> None:
    for seed in range(8):
        scene, placement = negative_pictures.stamp_scene(cut_out("x"), random.Random(seed))
        assert scene.mode == "RGB" and scene.size == (64, 64) and placement["crop_box"] is None
        record = placement["scene"]
        assert 0.5 <= record["scale"] <= 1.1 and record["ground"] in negative_pictures.SCENE_GROUNDS
        # the trimmed cut-out is the 40 x 20 rectangle: its longer side becomes scale x 128 pixels of the 128-pixel
        # canvas, pasted around `centre` and clipped by the frame, then halved to 64. Muted grounds never reach pure
        # red (at least 40 % grey), so the red pixels are the rectangle's.
        width = round(40 * record["scale"] * 128 / 40)
        height = round(20 * record["scale"] * 128 / 40)
        (cx, cy), lo = record["centre"], lambda c, n: c - n // 2
        seen_w = min(128, lo(cx, width) + width) - max(0, lo(cx, width))
        seen_h = min(128, lo(cy, height) + height) - max(0, lo(cy, height))
        pixels = np.asarray(scene).astype(int)
        red = (pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)
        expected = seen_w * seen_h / 4
        assert abs(red.sum() - expected) <= (seen_w + seen_h) / 2 + 4, (seed, red.sum(), expected)
    again, _ = negative_pictures.stamp_scene(cut_out("x"), random.Random(3))
    first, _ = negative_pictures.stamp_scene(cut_out("x"), random.Random(3))
    other, _ = negative_pictures.stamp_scene(cut_out("x"), random.Random(4))
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(other))
