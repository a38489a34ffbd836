"""`heritage review` refuses a folder it cannot review (no class folders, a class of one photo, fewer photos than
folds) in one line naming it, before any feature is computed, and leaves no --out folder behind."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from heritage_cnn.cli.main import main
from heritage_cnn.data.folders import DatasetError
from heritage_cnn.inference.review import run_review
from heritage_cnn.models.checkpoint import load_checkpoint


def _folder(source: Path, root: Path, counts: dict[str, int]) -> Path:
    """`root` with the first `counts[name]` photos of each of `source`'s class folders named."""
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for photo in sorted((source / name).iterdir())[:count]:
            shutil.copy(photo, root / name / photo.name)
    return root


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ({}, r"no class folders inside"),
        ({"altar": 1, "apse": 5}, r"5-fold review needs at least 2 photos in every class folder: altar has 1"),
        ({"altar": 2, "apse": 2}, r"5-fold review needs at least 5 photos, got 4"),
    ],
)
def test_a_refused_review_leaves_no_folder(
    tiny_run, synthetic_root: Path, tmp_path: Path, counts: dict[str, int], message: str, capsys
) -> None:
    data = _folder(synthetic_root, tmp_path / "data", counts)
    data.mkdir(exist_ok=True)
    out = tmp_path / "x7"
    assert main(["review", str(data), "--model", str(tiny_run.out), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"heritage: error: {data}: ") and err.count("\n") == 1, err
    assert not out.exists()
    with pytest.raises(DatasetError, match=rf"^{re.escape(str(data))}: {message}"):
        run_review(load_checkpoint(tiny_run.checkpoint), data, out / "deeper", log=lambda _: None)
    assert not out.exists()


def test_counts_are_refused_before_the_features(tiny_run, synthetic_root: Path, tmp_path: Path, monkeypatch) -> None:
    from heritage_cnn.inference import review

    monkeypatch.setattr(review, "network_features", lambda *a, **k: pytest.fail("features computed"))
    data = _folder(synthetic_root, tmp_path / "data", {"altar": 1, "apse": 5})
    with pytest.raises(DatasetError, match="altar has 1"):
        run_review(load_checkpoint(tiny_run.checkpoint), data, tmp_path / "out", log=lambda _: None)
