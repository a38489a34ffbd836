"""One seed type for every command's --seed (`seed_number`): a seed out of range is one line naming --seed, never
"Overflow when unpacking long long"; the largest accepted seed works wherever a seed goes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from heritage_cnn.base.checks import SEED_MAX
from heritage_cnn.cli.main import build_parser, main

# Every command with a --seed: those declared by `add_seed`, and train's recipe flag
COMMANDS = {
    "train": ["train", "--data", "data", "--out", "o"],
    "generate": ["generate", "--all", "--model", "fast", "--steps", "1", "--out", "o"],
    "visualize units": ["visualize", "units", "--layer", "stage1", "--model", "fast", "--steps", "1", "--out", "o"],
    "review": ["review", "data", "--out", "o"],
    "teach": ["teach", "data", "--out", "o"],
}


@pytest.mark.parametrize("command", COMMANDS.values(), ids=COMMANDS.keys())
@pytest.mark.parametrize("seed", ["99999999999999999999", str(2**64), str(SEED_MAX + 1), "-1", "x"])
def test_a_seed_out_of_range_is_one_line_naming_the_flag(
    command: list[str], seed: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was `heritage: error: Overflow when unpacking long long` from torch, after loading the model (generate,
    visualize units), no flag named; or, for a seed torch takes, the work done (in a folder of the test's own)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main([*command, "--seed", seed])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert info.value.code == 2 and "argument --seed: " in last and seed in last, last
    if seed != "x":
        assert f"a seed is 0 to {SEED_MAX}" in last


@pytest.mark.parametrize("command", COMMANDS.values(), ids=COMMANDS.keys())
def test_the_bounds_are_accepted(command: list[str]) -> None:
    dest = "recipe_seed" if command[0] == "train" else "seed"  # train's recipe flags keep their own namespace
    for seed in (0, SEED_MAX):
        assert getattr(build_parser().parse_args([*command, "--seed", str(seed)]), dest) == seed


def test_train_s_split_seed_takes_the_same_range(capsys: pytest.CaptureFixture[str]) -> None:
    """Was scikit-learn's "Seed must be between 0 and 2**32 - 1" after the photos were decoded, no flag named."""
    with pytest.raises(SystemExit) as info:
        main(["train", "--data", "data", "--out", "o", "--split-seed", str(2**32)])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert info.value.code == 2 and f"argument --split-seed: a seed is 0 to {SEED_MAX}" in last, last


def test_the_largest_seed_works_wherever_a_seed_goes() -> None:
    """torch's generators take below 2**64, scikit-learn's folds below 2**32, and a distributed training run seeds
    each epoch's augmentation on its other ranks with (seed * 1_000_003 + epoch) * 7919 + rank (training.state): below
    2**64 at SEED_MAX, not at 2**32 - 1."""
    from sklearn.model_selection import StratifiedGroupKFold

    from heritage_cnn.inside.synthesis.draw import Settings, make_param

    epoch_seed = SEED_MAX * 1_000_003 + 10_000
    torch.Generator().manual_seed(epoch_seed * 7919 + 64)
    with pytest.raises((RuntimeError, ValueError)):
        torch.Generator().manual_seed(((2**32 - 1) * 1_000_003) * 7919)
    folds = StratifiedGroupKFold(n_splits=2, shuffle=True, random_state=SEED_MAX)
    assert len(list(folds.split([[0]] * 4, [0, 1, 0, 1], [0, 1, 2, 3]))) == 2
    make_param(Settings(), 1, 8, torch.Generator().manual_seed(SEED_MAX))
