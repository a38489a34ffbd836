"""What the outlier-exposure benchmark computes: its loss and interval by hand, and which layers its fine-tune moves."""

from __future__ import annotations

import math
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from conftest import draw
from heritage_cnn.data.folders import ImageSet
from heritage_cnn.models.checkpoint import load_checkpoint
from heritage_cnn.training.config import TrainConfig
from heritage_cnn.training.losses import uniform_cross_entropy
from outlier_exposure import BATCH, fine_tune, paired_interval


def test_equal_logits_are_uniform_already() -> None:
    # softmax of equal logits is 1/C everywhere: the cross-entropy from uniform is log C = log 10
    assert uniform_cross_entropy(torch.zeros(3, 10)).item() == pytest.approx(math.log(10))


def test_one_confident_answer_costs_more_than_uniform() -> None:
    # logits (log 9, 0): softmax (0.9, 0.1); from uniform: -(log 0.9 + log 0.1) / 2 = 1.2040
    logits = torch.tensor([[math.log(9.0), 0.0]])
    assert uniform_cross_entropy(logits).item() == pytest.approx(-(math.log(0.9) + math.log(0.1)) / 2)


def test_paired_interval_of_the_change() -> None:
    assert paired_interval(np.ones(50, bool), np.ones(50, bool)) == (0.0, 0.0, 0.0)
    # two of four photos gained, none lost: the change is +0.5, and every resample lies in [0, 1]
    mean, low, high = paired_interval(np.zeros(4, bool), np.array([1, 1, 0, 0], bool))
    assert mean == 0.5 and 0.0 <= low <= mean <= high <= 1.0


def tuned(tiny_run, part: str) -> tuple[dict, dict, str]:
    """The tiny network's state before and after one epoch of `fine_tune` with `--part part` (two steps)."""
    base = load_checkpoint(tiny_run.checkpoint)  # a fresh copy: the fine-tune changes it in place
    rng = np.random.default_rng(0)
    pictures = np.stack([draw(i % 10, rng) for i in range(2 * BATCH)])
    images = torch.from_numpy(pictures).permute(0, 3, 1, 2).contiguous()
    train_set = ImageSet(images, torch.arange(2 * BATCH) % 10, [f"{i}.png" for i in range(2 * BATCH)], base.classes)
    pool = torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    args = Namespace(part=part, seed=0, epochs=1, lr=1e-2, weight=0.5, distill_weight=0.9, distill_temperature=2.0)
    model = fine_tune(base, train_set, train_set, pool, [], args, TrainConfig(data=".", out=".", lr=1e-2))
    return before, model.state_dict(), base.model.stage_names[-1]


@pytest.mark.parametrize("part", ["head", "last"])
def test_only_the_chosen_part_moves_and_frozen_batch_norm_keeps_its_statistics(tiny_run, part) -> None:
    before, after, last = tuned(tiny_run, part)
    trained = ("head.",) if part == "head" else (f"{last}.", "head.")
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved, "nothing was trained"
    assert all(k.startswith(trained) for k in moved), sorted(k for k in moved if not k.startswith(trained))
    if part == "last":  # the last stage's batch norm trains with it: its statistics move too
        assert any(k.endswith("running_mean") for k in moved)


def test_the_pool_with_training_is_the_pool_before_it_then_training(tmp_path: Path) -> None:
    from PIL import Image

    from negative_pictures import GENERATORS
    from outlier_exposure import DRAWN_PER_GENERATOR, outlier_pool

    for side, colour in (("tuning", (10, 20, 30)), ("training", (200, 100, 50))):
        (tmp_path / side / "photo").mkdir(parents=True)
        Image.new("RGB", (64, 64), colour).save(tmp_path / side / "photo" / "a.png")
    plain, both = outlier_pool(tmp_path), outlier_pool(tmp_path, with_training=True)
    drawn = len(GENERATORS) * DRAWN_PER_GENERATOR
    assert len(plain) == 1 + drawn and len(both) == 2 + drawn
    assert torch.equal(both[:-1], plain) and both[-1, :, 0, 0].tolist() == [200, 100, 50]
    (tmp_path / "training" / "photo" / "a.png").unlink()
    with pytest.raises(SystemExit, match="training"):
        outlier_pool(tmp_path, with_training=True)
