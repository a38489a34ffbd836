"""The recipe log's arithmetic (benchmarks/recipes.py): commands that reproduce a run, paired differences."""

from __future__ import annotations

import re
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from heritage_cnn.models.checkpoint import load_checkpoint, save_checkpoint, save_ensemble
from heritage_cnn.models.network import ModelConfig
from heritage_cnn.training.config import TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from recipes import command_of, judge, paired_difference, report_ensemble


def test_command_spells_out_the_schedule_and_every_changed_knob() -> None:
    base = TrainConfig(data="d", out="o")
    assert (
        command_of(base)
        == f"heritage train --out RUN --epochs {base.epochs} --batch-size {base.batch_size} --optimizer muon --lr 0.003 --blocks 1,1,1,2"
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
    quick = replace(base, bn_statistics="precise", outliers="pool", model=ModelConfig(stem_pool_first=True))
    assert all(f in command_of(quick) for f in ("--bn-statistics precise", "--outliers pool", "--stem-pool-first"))


def test_paired_difference_and_its_interval() -> None:
    better, worse = "1" * 100, "1" * 50 + "0" * 50
    mean, low, high = paired_difference(better, worse)
    assert mean == pytest.approx(0.5) and low < 0.5 < high and low > 0.35
    assert paired_difference(worse, worse) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        paired_difference("11", "1")


def _run_copy(tiny_run, folder: Path, always_class: int | None = None) -> Path:
    """A copy of the tiny run folder; with `always_class`, its network answers that class for every photo."""
    shutil.copytree(tiny_run.out, folder)
    if always_class is not None:
        checkpoint = load_checkpoint(folder / "last")
        with torch.no_grad():
            checkpoint.model.head.fc2.bias[always_class] = 1e4
        save_checkpoint(folder / "last", checkpoint)
    return folder


def test_ensemble_report_pairs_each_member_and_the_reference(tiny_run, synthetic_root, tmp_path: Path, capsys) -> None:
    """Three copies of one network: the ensemble is each of them, so every paired difference is exactly zero;
    a member that always answers class 0 is outvoted only when the others are sure, and the report says what
    that member costs against the reference."""
    data = str(synthetic_root)
    same = [_run_copy(tiny_run, tmp_path / name) for name in ("a", "b", "c")]
    alone = judge(same[0], data)["plain"]["accuracy"]["value"]
    report_ensemble(same, [same[0]], data)
    out = capsys.readouterr().out
    assert f"accuracy {alone:.4f}" in out
    # vs alone and leave-one-out per member, and vs --ref with one view and with flip views
    assert out.count("+0.00 pt (+0.0…+0.0)") == 3 * 2 + 2
    broken = [*same[:2], _run_copy(tiny_run, tmp_path / "zero", always_class=0)]
    report_ensemble(broken, [same[0]], data)
    out = capsys.readouterr().out
    member = re.search(r"zero: alone ([0-9.]+)", out)
    assert member and float(member.group(1)) < alone
    assert re.search(r"vs the reference ensemble of 1 \(a, [0-9.]+, one view\): [+-].*with flip TTA vs it: [+-]", out)
    packed = save_ensemble(
        tmp_path / "packed", [load_checkpoint(run / "last") for run in broken], names=["p", "q", "r"]
    )
    report_ensemble([packed.with_suffix("")], None, data)  # a model file stands for its members
    assert re.search(r"ensemble of 3 \(p, q, r\): accuracy", capsys.readouterr().out)
