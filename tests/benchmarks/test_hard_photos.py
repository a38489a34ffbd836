"""What benchmarks/hard_photos.py reads from the recipe log: which runs count, and the shares it reports."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from hard_photos import correctness, summary


def entry(run: str, epochs: int, correct: str, sha: str = "a") -> dict:
    return {"run": run, "epochs": epochs, "val_paths_sha": sha, "plain": {"correct": correct}}


def test_only_full_length_runs_on_the_common_split_count() -> None:
    log = [
        entry("short", 15, "0000"),
        entry("a", 45, "1100"),
        entry("b", 56, "1010"),
        entry("c", 150, "1000"),
        entry("other-split", 56, "1111", sha="b"),
    ]
    names, matrix, sha = correctness(log, 45)
    assert names == ["a", "b", "c"] and sha == "a"
    assert matrix.tolist() == [[True, True, False, False], [True, False, True, False], [True, False, False, False]]
    assert correctness(log, 45, until="b")[0] == ["a", "b"]  # the log as it stood when "b" was added
    with pytest.raises(SystemExit, match="200 epochs"):
        correctness(log, 200)
    with pytest.raises(SystemExit, match="no such run"):
        correctness(log, 45, until="missing")


def test_summary_counts_majorities_and_what_the_target_needs(capsys: pytest.CaptureFixture[str]) -> None:
    # 4 networks, 20 photos: 16 right for all, 1 for three, 1 for two (a tie is no majority), 1 for one, 1 for none
    columns = [[1, 1, 1, 1]] * 16 + [[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    matrix = np.array(columns, dtype=bool).T
    share = summary(matrix, 45, target=0.95)
    assert share.tolist()[-4:] == [0.75, 0.5, 0.25, 0.0]
    out = capsys.readouterr().out
    assert "a majority of them right: 0.8500" in out and "at least one right: 0.9500" in out
    assert "photos that none of them get right: 1 (5.00%)" in out
    assert "photos that half or fewer get right: 3 (15.00%)" in out
    assert "95% needs 2 photos more than the majority vote wins" in out  # 19 of 20 needed, 17 won
