"""Nothing lost: interrupted runs, untrusted files, failing disks, random bytes."""

from __future__ import annotations

import errno
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import TINY
from heritage_cnn.base import io as hio
from heritage_cnn.base.io import CheckpointError
from heritage_cnn.data.decode import ImageError, decode_image
from heritage_cnn.models.checkpoint import load_checkpoint, save_checkpoint
from heritage_cnn.models.network import ModelConfig
from heritage_cnn.training.config import TrainConfig
from heritage_cnn.training.loop import train

# Both runs of the resume test set the same thread count and float32 explicitly: a reduction split over another
# number of threads rounds differently, and `train` sets the process's thread count, so a default would depend on
# what ran before in the same process. Like for like, the resumed run must end on the same weights bit for bit.
THREADS = 1
TRAIN_ARGS = ["--widths", "8,16", "--batch-size", "4", "--epochs", "4", "--lr", "0.01", "--threads", str(THREADS)]
TRAIN_ARGS += ["--no-amp"]


def _run_cli(args: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "heritage_cnn.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def _wait_for(process: subprocess.Popen[str], text: str, timeout: float = 120) -> str:
    seen, deadline = "", time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        seen += line
        if text in line:
            return seen
    raise AssertionError(f"{text!r} not seen in time; output so far:\n{seen}")


@pytest.fixture(scope="module")
def uninterrupted(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("whole")
    config = TrainConfig(
        data=str(synthetic_root),
        out=str(out),
        epochs=4,
        batch_size=4,
        lr=0.01,
        model=ModelConfig(widths=(8, 16), blocks=(1, 1)),
        threads=THREADS,
        amp=False,
        progress=False,
    )
    return train(config, log=lambda _: None)


# SIGKILL (no handler runs; the last whole save is resumed) is training/test_loop_safety.py's, beside the save window it targets.
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_training_resumes_to_the_same_result(
    sig: signal.Signals, uninterrupted, synthetic_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    process = _run_cli(["train", "--data", str(synthetic_root), "--out", str(out), *TRAIN_ARGS])
    _wait_for(process, "epoch 1/4")
    deadline = time.monotonic() + 120
    while not (out / "curves.png").exists() and time.monotonic() < deadline:  # epoch 1's last write
        time.sleep(0.01)
    time.sleep(0.05)  # inside epoch 2: 48 steps of 4 photos
    process.send_signal(sig)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130 and "--resume" in output, output
    assert "stopped at epoch 2, step" in output, output  # inside an epoch: the resume replays the rest of it
    interrupted_at = load_checkpoint(out / "last").info["validation"]["epoch"]
    assert (out / "resume.safetensors").exists() and (out / "last.safetensors").exists()
    resumed = _run_cli(["train", "--data", str(synthetic_root), "--out", str(out), *TRAIN_ARGS, "--resume"])
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    final = load_checkpoint(out / "last").info["validation"]
    assert interrupted_at < 4 and final["epoch"] == 4  # really stopped early, then finished
    # same threads, same precision, same seed: an exact resume ends on the very weights of the whole run
    whole, resumed_weights = hio.load_tensors(uninterrupted.checkpoint), hio.load_tensors(out / "last.safetensors")
    assert whole.keys() == resumed_weights.keys()
    assert [k for k in whole if not torch.equal(whole[k], resumed_weights[k])] == []
    assert final["val_accuracy"] == uninterrupted.final["val_accuracy"]
    assert final["val_loss"] == uninterrupted.final["val_loss"]
    assert not list(out.glob(".*.tmp"))


def test_broken_checkpoints_are_refused(tiny_run, tmp_path: Path) -> None:
    """Cut, mismatched or half-missing checkpoints (pickles and torch.save files: models/test_checkpoint.py)."""
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(tiny_run.checkpoint.read_bytes()[:5000])
    (tmp_path / "cut.json").write_bytes(tiny_run.checkpoint.with_suffix(".json").read_bytes())
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_checkpoint(truncated)

    other = load_checkpoint(tiny_run.checkpoint)
    other.model = other.model.__class__(ModelConfig(**{**TINY, "widths": (8, 32)}))
    save_checkpoint(tmp_path / "other", other)
    (tmp_path / "other.json").write_bytes(tiny_run.checkpoint.with_suffix(".json").read_bytes())
    with pytest.raises(CheckpointError, match="do not match the model config"):
        load_checkpoint(tmp_path / "other")
    (tmp_path / "lonely.safetensors").write_bytes(tiny_run.checkpoint.read_bytes())
    with pytest.raises(CheckpointError, match=r"lonely\.json is missing"):
        load_checkpoint(tmp_path / "lonely.safetensors")


def test_a_full_disk_never_replaces_a_good_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "metrics.json"
    hio.atomic_write_json(target, {"good": True})
    real_fsync = os.fsync

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        hio.atomic_write_json(target, {"good": False, "padding": "x" * 10_000})
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert target.read_text().strip() == '{\n  "good": true\n}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # no temp file left behind


def test_writing_onto_a_folder_names_the_folder_not_a_temp_file(
    tmp_path: Path, tiny_run, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    from heritage_cnn.cli.main import main

    with pytest.raises(IsADirectoryError) as error:
        hio.atomic_write_json(tmp_path, {})
    assert error.value.filename == str(tmp_path)
    with pytest.raises(IsADirectoryError):
        hio.atomic_write_text(f"{tmp_path}/not_yet_a_folder/", "x")  # a trailing separator means a folder
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written, no temp file
    photo = tmp_path / "p.png"
    Image.new("RGB", (64, 64), "grey").save(photo)
    model = str(tiny_run.checkpoint)
    assert main(["predict", str(photo), "--model", model, "-o", str(tmp_path), "--format", "json"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"heritage: error: -o {tmp_path}: is a folder: give a file name", err


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".jpg", ".png", ".gif", ".webp", ".tif", ".bmp"]))
def test_random_bytes_only_ever_raise_image_error(tmp_path: Path, data: bytes, suffix: str) -> None:
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    try:
        array = decode_image(path)
    except ImageError as error:
        assert str(error).startswith(str(path)) and "\n" not in str(error)
    else:
        assert array.shape == (64, 64, 3) and array.dtype == np.uint8


# One flat colour per mode, and the RGB a correct decoder must give for it. 16-bit white: 65535 is 255 whether a
# format keeps 16 bits (scaled) or Pillow clips to 8 on saving (GIF, WebP); the 16-bit scale is data/test_decode.py's.
FLAT = {
    "RGB": ((200, 120, 40), (200, 120, 40)),
    "L": (150, (150, 150, 150)),
    "RGBA": ((200, 120, 40, 255), (200, 120, 40)),
    "LA": ((150, 255), (150, 150, 150)),
    "P": (0, (200, 120, 40)),  # palette entry 0, set below
    "CMYK": ((55, 135, 215, 0), (200, 120, 40)),  # 255 - C, 255 - M, 255 - Y
    "I;16": (65535, (255, 255, 255)),
    "1": (1, (255, 255, 255)),
}
# A flat colour survives the lossless formats and the resize exactly. JPEG and lossy WebP move it by their colour
# space round trip (YCbCr, 4:2:0) and DC quantisation: 4 levels at most seen over these sizes; 8 keeps it far
# from every other fill above.
LOSSY = {"JPEG": 8, "WEBP": 8}


def _flat_file(mode: str, fmt: str, size: tuple[int, int]) -> bytes | None:
    """A whole file of one flat colour (FLAT), or None when the format cannot hold the mode."""
    image = Image.new(mode, size, FLAT[mode][0])
    if mode == "P":
        image.putpalette([200, 120, 40] + [0] * 765)
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt)
    except (OSError, ValueError, KeyError):
        return None
    return buffer.getvalue()


FORMATS = ["PNG", "JPEG", "GIF", "TIFF", "BMP", "WEBP"]
WRITABLE = [(mode, fmt) for mode in sorted(FLAT) for fmt in FORMATS if _flat_file(mode, fmt, (2, 2))]  # 39 of 48


@pytest.mark.parametrize(("mode", "fmt"), WRITABLE)
def test_whole_small_images_of_every_mode_decode_to_their_colour(tmp_path: Path, mode: str, fmt: str) -> None:
    """Every mode a format can hold, at odd sizes: a valid file must decode (no ImageError), to its colour."""
    for size in ((1, 1), (300, 7), (64, 64), (173, 251)):
        data = _flat_file(mode, fmt, size)
        assert data is not None
        path = tmp_path / f"img.{fmt.lower()}"
        path.write_bytes(data)
        array = decode_image(path)
        assert array.shape == (64, 64, 3) and array.dtype == np.uint8
        error = np.abs(array.astype(int) - np.array(FLAT[mode][1])).max()
        assert error <= LOSSY.get(fmt, 0), (size, error)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    width=st.integers(1, 300),
    height=st.integers(1, 300),
    mode=st.sampled_from(sorted(FLAT)),
    fmt=st.sampled_from(FORMATS),
    cut=st.integers(1, 3),
)
def test_random_truncated_images_decode_or_raise_image_error(
    tmp_path: Path, width: int, height: int, mode: str, fmt: str, cut: int
) -> None:
    """A file cut to 1/4, 1/2 or 3/4 decodes (some formats keep what they have) or raises ImageError, nothing else."""
    data = _flat_file(mode, fmt, (width, height))
    if data is None:
        return  # this format cannot hold this mode: nothing to test
    path = tmp_path / f"img.{fmt.lower()}"
    path.write_bytes(data[: len(data) * cut // 4])
    try:
        array = decode_image(path)
    except ImageError as error:
        assert str(error).startswith(str(path)) and "\n" not in str(error)
        return
    assert array.shape == (64, 64, 3) and array.dtype == np.uint8


def test_awkward_files_and_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from heritage_cnn.data.folders import load_images

    root = tmp_path / "data"
    (root / "gargoyle").mkdir(parents=True)
    frames = [Image.new("RGB", (32, 32), colour) for colour in ("red", "green", "blue")]
    frames[0].save(root / "gargoyle" / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    odd_name = os.fsencode(root / "gargoyle") + b"/caf\xe9-latin1.png"  # not valid UTF-8
    Image.new("RGB", (64, 64), "white").save(odd_name.decode("utf-8", "surrogateescape"))
    os.symlink(root / "gargoyle", root / "gargoyle" / "loop")  # a folder that contains itself
    Image.new("RGB", (64, 64), "grey").save(root / "gargoyle" / "locked.png")
    real_open = os.open  # root reads a chmod 000 file: the real permission test is in data/test_decode.py

    def locked(path, *args, **kwargs):
        if str(path).endswith("locked.png"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", locked)
    images = load_images(root)
    assert len(images) == 2
    gif = images.images[[Path(p).name for p in images.paths].index("animated.gif")]
    assert gif[0].float().mean() > 200 and gif[1].float().mean() < 50  # the first frame (red)
    skipped = {Path(p).name: r for p, r in images.skipped}
    assert skipped.keys() == {"locked.png", "loop"} and skipped["locked.png"] == "permission denied"
    assert "(a loop); not followed" in skipped["loop"]  # listed, never walked


def test_unwritable_output_is_one_line(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from heritage_cnn.cli.main import main

    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    assert main(["train", "--data", str(synthetic_root), "--out", str(blocker / "run"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("heritage: error: ") and str(blocker) in err and len(err.strip().splitlines()) == 1
