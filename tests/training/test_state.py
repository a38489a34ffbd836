"""A run folder's own files, and only those, are the training run's to remove."""

from __future__ import annotations

from pathlib import Path

from heritage_cnn.training import state


def test_a_fresh_run_removes_its_own_half_written_files_and_no_one_elses(tmp_path: Path) -> None:
    """`claim_run_folder` removed every hidden `*.tmp` in --out: a user's `.fieldnotes.tmp` went with the run's."""
    ours, theirs = tmp_path / ".resume.safetensors.0123456789abcdef.tmp", tmp_path / ".fieldnotes.tmp"
    alike = tmp_path / ".survey.csv.0123456789abcdef.tmp"  # the shape of one, for a file no run writes
    for path in (ours, theirs, alike):
        path.write_text("x")
    state.claim_run_folder(tmp_path, resume=False, overwrite=False)
    assert not ours.exists() and theirs.read_text() == "x" and alike.read_text() == "x"
