"""The step-time benchmark (benchmarks/step_time.py) times `heritage train`'s own step and reports every optimizer."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import step_time


def test_times_heritage_trains_own_step_for_every_optimizer(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    calls = []
    real = step_time.train_one_epoch

    def counted(network: object, loss: object, optimizer: object, *args: object) -> object:
        calls.append(type(optimizer).__name__)
        return real(network, loss, optimizer, *args)

    monkeypatch.setattr(step_time, "train_one_epoch", counted)
    monkeypatch.setattr(sys, "argv", ["step_time.py", "--batch-size", "4", "--rounds", "1", "--steps", "3"])
    step_time.main()
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert set(rows) == {"adamw", "sgd", "muon"}
    assert rows["adamw"].endswith("1.00x AdamW")
    # warm-up and one round, each the real step with its optimizer
    assert sorted(calls) == sorted(["AdamW", "SGD", "MuonWithAdamW"] * 2)


def test_refuses_fewer_steps_than_the_warm_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["step_time.py", "--steps", "2"])
    with pytest.raises(SystemExit) as stopped:
        step_time.main()
    assert stopped.value.code == 2
