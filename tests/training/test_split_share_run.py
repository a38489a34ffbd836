"""A run says the validation share it takes where --val-fraction is rounded, and records k (split.json, last.json)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from _loop_helpers import _config

from conftest import CLASSES, make_dataset
from heritage_cnn.data.split import SplitRecipe
from heritage_cnn.training.loop import train


def test_a_run_says_and_records_the_share_its_split_takes(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", per_class=10, classes=CLASSES[:3])
    said: list[str] = []
    config = _config(data, tmp_path / "run", epochs=1, batch_size=8, optimizer="adamw")
    result = train(replace(config, split=SplitRecipe(val_fraction=0.45)), log=said.append)
    assert result.val_size == 15  # a half, not 45 %
    notes = [line for line in said if "1 fold in 2 (50 %)" in line]
    assert len(notes) == 1 and "--val-fraction 0.45 is rounded to 1/k" in notes[0]
    assert json.loads((tmp_path / "run" / "split.json").read_text())["folds"] == 2
    assert json.loads((tmp_path / "run" / "last.json").read_text())["split"]["folds"] == 2
