"""What the teach benchmarks compute: the paired change and its interval, the draw, and the halves of the split."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from heritage_cnn.data.folders import ImageSet
from teach_new_class import CLASSES, TUNING_CLASS, draw, paired


def test_the_paired_change_and_its_interval_by_hand() -> None:
    # differences 1, 0, 0, -1, 1: mean 0.2, sample sd sqrt(0.7), half-width 1.96 * sqrt(0.7 / 5)
    result = paired(np.array([1, 1, 0, 0, 1]), np.array([0, 1, 0, 1, 0]))
    half = 1.959964 * math.sqrt(0.7) / math.sqrt(5)
    assert math.isclose(result["difference"], 0.2)
    assert np.allclose(result["ci95"], [0.2 - half, 0.2 + half])


def test_the_classes_are_drawn_before_the_runs_and_apart_from_the_tuning_class() -> None:
    assert CLASSES == ["dome(outer)", "altar", "stained_glass", "flying_buttress"]
    assert TUNING_CLASS not in CLASSES


def test_a_draw_is_fixed_by_its_seed_and_holds_only_its_class() -> None:
    labels = torch.tensor([0, 1] * 30)
    images = ImageSet(torch.zeros(60, 3, 8, 8, dtype=torch.uint8), labels, [f"p{i}" for i in range(60)], ["a", "b"])
    first, again, other = draw(images, "b", 20, 0), draw(images, "b", 20, 0), draw(images, "b", 20, 1)
    assert first == again and first != other and len(set(first)) == 20
    assert all(int(p[1:]) % 2 == 1 for p in first)
