"""The recipe log's arithmetic (benchmarks/recipes.py): commands that reproduce a run, paired differences."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

from heritage_cnn.model import ModelConfig
from heritage_cnn.train import TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from recipes import command_of, paired_difference


def test_command_spells_out_the_schedule_and_every_changed_knob() -> None:
    base = TrainConfig(data="d", out="o")
    assert (
        command_of(base)
        == f"heritage train --out RUN --epochs {base.epochs} --batch-size {base.batch_size} --lr 0.003 --blocks 1,1,1,2"
    )
    changed = replace(
        base,
        ema_decay=0.998,
        cutmix_alpha=1.0,
        model=ModelConfig(widths=(32, 64), blocks=(1, 1)),
        augment=replace(base.augment, erase=0.25),
    )
    command = command_of(changed)
    assert "--ema 0.998" in command and "--cutmix 1" in command and "--widths 32,64 --blocks 1,1" in command
    assert "--erase 0.25" in command


def test_paired_difference_and_its_interval() -> None:
    better, worse = "1" * 100, "1" * 50 + "0" * 50
    mean, low, high = paired_difference(better, worse)
    assert mean == pytest.approx(0.5) and low < 0.5 < high and low > 0.35
    assert paired_difference(worse, worse) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        paired_difference("11", "1")
