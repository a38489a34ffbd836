"""What goes wrong in a training run loses nothing: a missing teacher or a diverging loss stops it with the
good checkpoint kept, a run folder is never written over by another run, --resume refuses a changed recipe, and
real SIGKILLs, even inside a save, resume to identical weights."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from _loop_helpers import _config

from conftest import TINY
from heritage_cnn.base.io import FolderBusy, load_tensors, read_safetensors
from heritage_cnn.cli.main import main
from heritage_cnn.models.checkpoint import load_checkpoint
from heritage_cnn.models.network import ModelConfig
from heritage_cnn.training import loop as training
from heritage_cnn.training import optim
from heritage_cnn.training import state as trainstate
from heritage_cnn.training.loop import train
from heritage_cnn.training.losses import NonFiniteLossError
from heritage_cnn.training.optim import learning_rate


def test_a_missing_teacher_fails_before_any_photo_is_decoded(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def decode(*args, **kwargs):
        raise AssertionError("the photos were decoded before the teacher was checked")

    monkeypatch.setattr(training, "prepare_data", decode)
    config = _config(synthetic_root, tmp_path / "run", teachers=(str(tmp_path / "nowhere"),))
    with pytest.raises(ValueError, match=f"^{tmp_path / 'nowhere'}: no such checkpoint"):
        train(config, log=lambda _: None)


def test_a_diverging_run_stops_with_a_clear_error_and_keeps_the_good_checkpoint(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, good = tmp_path / "run", {}
    names = ("last.safetensors", "last.json", "resume.safetensors")

    def exploding(step: int, total: int, warmup: int, peak: float) -> float:
        if step < total // 2:  # epoch 1 of 2 trains normally and is saved
            return learning_rate(step, total, warmup, peak)
        good.setdefault("files", {name: (out / name).read_bytes() for name in names})
        return 1e9

    monkeypatch.setattr(optim, "learning_rate", exploding)
    with pytest.raises(NonFiniteLossError, match=r"epoch 2\b.*lower --lr"):
        train(_config(synthetic_root, out, epochs=2), log=lambda _: None)
    assert {name: (out / name).read_bytes() for name in names} == good["files"]  # epoch 1's, not NaN
    with pytest.raises(ValueError, match=r"^lr must be a positive finite number up to 1e\+06, got inf"):
        _config(synthetic_root, out, lr=float("inf"))


def test_a_run_folder_is_never_written_over_by_another_run(synthetic_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = train(_config(synthetic_root, out, epochs=1), log=lambda _: None)
    (out / "notes.txt").write_text("mine")
    kept = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    with pytest.raises(FileExistsError, match=f"^{out} already holds a training run .*--resume continues it"):
        train(_config(synthetic_root, out, epochs=1), log=lambda _: None)  # the same command typed again
    assert main(["train", "--data", str(synthetic_root), "--out", str(out), "--epochs", "1"]) == 2
    assert {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()} == kept
    # a second process cannot train into a folder in use, not even to resume it
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from heritage_cnn.base.io import folder_lock\n"
         f"with folder_lock(Path({str(out)!r}), {trainstate.RUN_LOCK!r}, 'held'):\n"
         "    print('locked', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderBusy, match=f"being trained into by another process \\(pid {holder.pid}\\)"):
            train(_config(synthetic_root, out, epochs=1, resume=True), log=lambda _: None)
    finally:
        holder.communicate("")
    # --overwrite: a new run in its place; only the run's own files were removed
    again = train(_config(synthetic_root, out, epochs=1, seed=5, overwrite=True), log=lambda _: None)
    assert (out / "notes.txt").read_text() == "mine" and again.history[0] != first.history[0]
    with pytest.raises(ValueError, match="resume and overwrite exclude each other"):
        _config(synthetic_root, out, resume=True, overwrite=True)


def test_resume_refuses_a_changed_recipe_but_not_changed_runtime_settings(synthetic_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "cut"
    train(_config(synthetic_root, out, epochs=2), log=lambda _: None, should_stop=lambda e, s: (e, s) == (0, 2))
    with pytest.raises(
        ValueError,
        match=r"epochs: 2 in the run, 5 now.*model\.widths: \[8, 16\] in the run, \[8, 32\].*needs another folder",
    ):
        train(
            _config(synthetic_root, out, epochs=5, resume=True, model=ModelConfig(**{**TINY, "widths": (8, 32)})),
            log=lambda _: None,
        )
    spelled_otherwise = Path(os.path.relpath(synthetic_root))
    resumed = train(
        replace(_config(synthetic_root, out, epochs=2, resume=True), data=str(spelled_otherwise), threads=1),
        log=lambda _: None,
    )
    assert len(resumed.history) == 2 and not resumed.interrupted


# The run the test kills: a tiny network, resumed from whatever its folder holds. With a pause (argv[3] seconds > 0)
# every save of the resume state is followed by the pause, before the loop goes on to write last.*: the window
# between the two writes, widened from the test's side so that a SIGKILL lands in it.
_KILLABLE = """
import sys, time
from heritage_cnn.models.network import ModelConfig
from heritage_cnn.training import state
from heritage_cnn.training.config import TrainConfig
from heritage_cnn.training.epoch import precise_batch_norm
from heritage_cnn.training.loop import train

pause = float(sys.argv[3])
save_resume_state = state.save_resume_state

def save_then_pause(*args, **kwargs):
    save_resume_state(*args, **kwargs)
    print("save window: between the resume state and last.*", flush=True)
    time.sleep(pause)

if pause > 0:
    state.save_resume_state = save_then_pause
model = ModelConfig(widths=(8, 16), blocks=(1, 1), hidden=32, stem_kernel=3)
config = TrainConfig(data=sys.argv[1], out=sys.argv[2], epochs=4, batch_size=16, lr=0.01, model=model,
                     progress=False, resume=True)
train(config, log=lambda message: print(message, flush=True))
"""


def _start(root: Path, out: Path, pause: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _KILLABLE, str(root), str(out), str(pause)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _read_until(process: subprocess.Popen[str], text: str) -> None:
    assert process.stdout is not None
    seen = ""
    while process.poll() is None:
        line = process.stdout.readline()
        seen += line
        if text in line:
            return
    raise AssertionError(f"{text!r} not seen; output:\n{seen}")


def test_sigkills_anywhere_even_inside_a_save_resume_to_identical_weights(synthetic_root: Path, tmp_path: Path) -> None:
    """Real SIGKILLs: inside the save window (between the resume state and last.*), and at random moments.
    Every kill leaves a whole checkpoint, and resuming ends on bit-identical weights."""
    whole = _start(synthetic_root, tmp_path / "whole", pause=0)  # runs alongside the killed ones
    out, rng = tmp_path / "killed", random.Random(17)
    for kill in ("in the save window", "at random", "in the save window"):
        process = _start(synthetic_root, out, pause=0.5)
        if kill == "at random":
            _read_until(process, "data:")
            time.sleep(rng.uniform(0.0, 2.0))
        else:
            _read_until(process, "save window")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        if kill != "at random":  # the new resume state is whole and ahead of last.*, whole too (the save before)
            state = json.loads(read_safetensors(out / "resume.safetensors")[1]["state"])
            trained = 0
            if (out / "last.safetensors").exists():
                trained = load_checkpoint(out).info["epochs_trained"]
            assert trained < state["epoch"], (trained, state["epoch"])
    finish = _start(synthetic_root, out, pause=0)
    output = finish.communicate(timeout=600)[0]
    assert finish.returncode == 0, output
    assert whole.wait(timeout=600) == 0, whole.communicate()[0]
    a, b = load_tensors(tmp_path / "whole" / "last.safetensors"), load_tensors(out / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((out / "last.json").read_text())["epochs_trained"] == 4
    assert not list(out.glob(".*.tmp"))
