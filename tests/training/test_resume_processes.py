"""The number of processes a run trains with is recorded (last.json, the resume state), and a resume with another
count is taken with the note --threads and --device get: sums split otherwise are not bit-identical."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from _loop_helpers import _config

from conftest import CLASSES, make_dataset
from heritage_cnn.training.loop import train
from heritage_cnn.training.resume_checks import run_config
from heritage_cnn.training.state import resume_record


def test_the_process_count_is_recorded_and_another_on_resume_is_noted(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", per_class=10, classes=CLASSES[:3])
    out = tmp_path / "run"
    config = _config(data, out, epochs=2, batch_size=8, optimizer="adamw")
    result = train(config, log=lambda _: None, should_stop=lambda epoch, step: epoch == 0 and step == 1)
    assert result.interrupted
    assert json.loads((out / "last.json").read_text())["processes"] == 1
    assert resume_record(out)["processes"] == 1
    said: list[str] = []
    _, resuming = run_config(out, replace(config, resume=True), said.append, processes=2)
    assert resuming and said == [
        "note: --nproc 2 differs from the run's (1): the result will not be bit-identical to an uninterrupted run"
    ]
    said.clear()
    run_config(out, replace(config, resume=True), said.append, processes=1)
    assert said == []
