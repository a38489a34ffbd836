"""`make bench` on a machine without the synthesis judges: the section says why it is skipped, the others run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from run import missing_judges


def test_without_judges_the_synthesis_section_gives_its_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the pool's judges are looked for relative to the working directory
    reason = missing_judges(None)
    assert reason is not None and "train_pool.py" in reason and "--judge" in reason


def test_a_judge_given_or_one_of_the_pool_lets_it_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert missing_judges("some/judge.safetensors") is None
    (tmp_path / "runs" / "pool" / "t-b1111-s21").mkdir(parents=True)
    assert missing_judges(None) is None
