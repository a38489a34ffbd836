"""What --resume reads of a run folder besides its weights: a record edited into another shape is named."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from heritage_cnn.cli.main import main


@pytest.mark.parametrize("text", ["{}", "[]", '{"val_paths": "all", "train": 3}'])
def test_a_split_record_of_another_shape_is_one_line_naming_it(
    tiny_run, tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A damaged split.json said only "heritage: error: input: missing entry 'val_paths'"."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run.checkpoint.parent, run)
    (run / "split.json").write_text(text)
    assert main(["train", "--out", str(run), "--resume", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"heritage: error: {run}/split.json: not the split record this run wrote (val_paths")
    assert err.count("\n") == 1, err


def test_resume_never_trains_over_weights_it_cannot_continue(tiny_run, tmp_path: Path, capsys) -> None:
    """With resume.safetensors removed (to save room, say), --resume said "starting from scratch" and replaced the
    run's trained last.* and best.* without --overwrite."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run.checkpoint.parent, run)
    (run / "resume.safetensors").unlink()
    before = (run / "last.safetensors").read_bytes()
    assert main(["train", "--out", str(run), "--resume", "-q"]) == 2
    err = capsys.readouterr().err
    assert f"{run} holds checkpoints but no resume state to continue from" in err and "--overwrite" in err, err
    assert (run / "last.safetensors").read_bytes() == before
