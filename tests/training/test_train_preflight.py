"""What `train` refuses before it trains, what it leaves behind when it fails, and what it leaves of the caller's
state: the run folder of a failed fresh run does not block the same command again, and the caller's random stream is
the caller's."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CLASSES, TINY, make_dataset
from heritage_cnn.data.folders import MIN_CHANNEL_STD, DatasetError
from heritage_cnn.models.checkpoint import load_checkpoint
from heritage_cnn.models.network import ModelConfig
from heritage_cnn.training import optim
from heritage_cnn.training import state as trainstate
from heritage_cnn.training.config import TrainConfig
from heritage_cnn.training.loop import train
from heritage_cnn.training.losses import NonFiniteLossError
from heritage_cnn.training.prepare import prepare_data


def _quiet(_: str) -> None:
    pass


def _data(root: Path, classes: list[str] = CLASSES[:3], per_class: int = 12) -> Path:
    """3 classes x 12 photos: a split of 28 training and 8 validation photos."""
    return make_dataset(root, per_class=per_class, classes=classes)


def _tiny(data: Path, out: Path, **overrides) -> TrainConfig:
    config = TrainConfig(
        data=str(data),
        out=str(out),
        epochs=1,
        batch_size=8,
        lr=1e-2,
        model=ModelConfig(**TINY),
        amp=False,
        progress=False,
    )
    return replace(config, **overrides)


def _names(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_train_leaves_the_callers_random_stream_as_it_was(tmp_path: Path) -> None:
    """After a run, and after one that fails once it has seeded, the caller draws what it would have drawn."""
    data = _data(tmp_path / "data")
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    train(_tiny(data, tmp_path / "run"), log=_quiet)
    assert torch.equal(torch.rand(3), expected)
    torch.manual_seed(1)
    deep = ModelConfig(**{**TINY, "widths": (8,) * 7, "blocks": (1,) * 7})  # refused once the photos are in
    with pytest.raises(ValueError, match="for 7 stages"):
        train(_tiny(data, tmp_path / "refused", model=deep), log=_quiet)
    assert torch.equal(torch.rand(3), expected)


def test_a_class_folder_name_no_checkpoint_may_hold_is_refused_before_training(tmp_path: Path) -> None:
    data = _data(tmp_path / "data", classes=["altar", "ap\tse", "column"])
    out = tmp_path / "run"
    with pytest.raises(DatasetError) as caught:
        train(_tiny(data, out), log=_quiet)
    message = str(caught.value)
    assert "\n" not in message and str(data / "ap\\tse") in message and "contains a control character" in message
    assert not out.exists()


def test_a_channel_that_never_varies_trains_and_records_the_std_it_used(tmp_path: Path) -> None:
    """Blue 0 in every photo: std 0 gave NaN on the first step; the floor is what the checkpoint records and uses."""
    data = _data(tmp_path / "data")
    for photo in data.rglob("*.png"):
        pixels = np.asarray(Image.open(photo)).copy()
        pixels[..., 2] = 0
        Image.fromarray(pixels).save(photo)
    result = train(_tiny(data, tmp_path / "run"), log=_quiet)
    assert all(math.isfinite(row["train_loss"]) for row in result.history)
    checkpoint = load_checkpoint(result.checkpoint)
    assert checkpoint.std[2] == round(MIN_CHANNEL_STD, 4)
    recorded = json.loads((tmp_path / "run" / "last.json").read_text())["normalisation"]
    assert recorded == {"mean": checkpoint.mean, "std": checkpoint.std}


@pytest.mark.parametrize("case", ["one class", "too deep"])
def test_data_or_a_network_that_cannot_train_is_refused_before_anything_is_written(case: str, tmp_path: Path) -> None:
    data = _data(tmp_path / "data", classes=CLASSES[:1] if case == "one class" else CLASSES[:3])
    out = tmp_path / "run"
    deep = ModelConfig(**{**TINY, "widths": (8,) * 7, "blocks": (1,) * 7})  # 2**7 px needed, 64 given
    config = _tiny(data, out, **({"model": deep} if case == "too deep" else {}))
    said = (
        rf"^{re.escape(str(data))}: 1 class folder\(s\) \(altar\); .* 2 to" if case == "one class" else "for 7 stages"
    )
    with pytest.raises(ValueError, match=said) as caught:
        train(config, log=_quiet)
    assert "\n" not in str(caught.value)
    assert not out.exists()


def _diverging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(optim, "learning_rate", lambda step, total, warmup, peak: 1e9)


def test_a_fresh_run_that_fails_before_its_first_checkpoint_can_be_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its records (config.json, skipped.json, split.json) are removed, and a folder it made; a folder of the
    user's keeps what it held."""
    data = _data(tmp_path / "data")
    made, own = tmp_path / "made", tmp_path / "own"
    own.mkdir()
    (own / "notes.txt").write_text("mine")
    for out in (made, own):
        with monkeypatch.context() as patch:
            _diverging(patch)
            with pytest.raises(NonFiniteLossError, match=r"lower --lr\. No checkpoint was written"):
                train(_tiny(data, out), log=_quiet)
        assert not out.exists() if out == made else _names(out) == [trainstate.RUN_LOCK, "notes.txt"]
        assert train(_tiny(data, out), log=_quiet).history  # the same command again
    assert (own / "notes.txt").read_text() == "mine"


def test_a_folder_with_the_records_of_a_failed_run_is_named_alike_fresh_and_resumed(tmp_path: Path) -> None:
    data = _data(tmp_path / "data")
    out = tmp_path / "run"
    out.mkdir()
    (out / trainstate.CONFIG_FILE).write_text("{}")  # what a run killed before its first checkpoint leaves
    said = "holds the records of a run that stopped before its first checkpoint"
    with pytest.raises(FileExistsError, match=rf"^{re.escape(str(out))} {said} \(config\.json\): --resume starts it"):
        train(_tiny(data, out), log=_quiet)
    lines: list[str] = []
    train(_tiny(data, out, resume=True), log=lines.append)
    assert f"--resume: {out} {said}, starting from scratch" in lines


def test_a_cache_inside_the_data_folder_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    data = _data(tmp_path / "data")
    before = _names(tmp_path)
    for cache in (data / "cache", data / CLASSES[0] / "cache"):
        said = rf"^--cache-dir {re.escape(str(cache))}: inside the data folder {re.escape(str(data))}; keep the cache"
        with pytest.raises(ValueError, match=said):
            train(_tiny(data, tmp_path / "run", cache_dir=str(cache)), log=_quiet)
    assert _names(tmp_path) == before
    # a hidden folder there is one the data set's walk skips: never read as photos, so it is taken
    result = train(_tiny(data, tmp_path / "run", cache_dir=str(data / ".cache")), log=_quiet)
    assert result.train_size == 28 and any((data / ".cache").iterdir())


def test_outliers_that_overlap_the_data_folder_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    """Once taken without a word: the network was taught a uniform answer on its own training photos."""
    data = _data(tmp_path / "data")
    before = _names(tmp_path)
    for outliers, said in (
        (data, f"is the data folder {data}"),
        (data / CLASSES[1], f"lies inside the data folder {data}"),
        (tmp_path, f"holds the data folder {data}"),
    ):
        with pytest.raises(ValueError, match=rf"^--outliers {re.escape(str(outliers))}: {re.escape(said)}"):
            train(_tiny(data, tmp_path / "run", outliers=str(outliers)), log=_quiet)
    assert _names(tmp_path) == before


def test_outliers_beside_a_kaggle_layouts_splits_are_no_photos_of_them(tmp_path: Path) -> None:
    """ahe64/outliers next to ahe64/train was refused as "inside the data folder ahe64": training reads train/ only."""
    from heritage_cnn.training.preflight import check_outliers

    root = tmp_path / "kaggle"
    for split in ("train", "test"):
        _data(root / split)
    (root / "outliers").mkdir()
    check_outliers(TrainConfig(data=str(root), out="-", outliers=str(root / "outliers")))  # no error
    for outliers, said in ((root / "test", f"is the data folder {root / 'test'}"), (root, "holds the data folder")):
        with pytest.raises(ValueError, match=rf"^--outliers {re.escape(str(outliers))}: {re.escape(said)}"):
            check_outliers(TrainConfig(data=str(root), out="-", outliers=str(outliers)))


def test_a_refused_overwrite_leaves_the_earlier_run_as_it_was(tmp_path: Path) -> None:
    """--overwrite removed the earlier run's files before the new run's checks, so a refused one lost both."""
    data = _data(tmp_path / "data")
    out = tmp_path / "run"
    train(_tiny(data, out), log=_quiet)
    before = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    deep = ModelConfig(**{**TINY, "widths": (8,) * 7, "blocks": (1,) * 7})
    with pytest.raises(ValueError, match="for 7 stages"):
        train(_tiny(data, out, overwrite=True, model=deep), log=_quiet)
    assert {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()} == before
    train(_tiny(data, out, overwrite=True, epochs=2), log=_quiet)  # one that passes replaces it
    assert len(json.loads((out / "metrics.json").read_text())) == 2


def test_a_batch_larger_than_the_training_set_trains_and_says_so(tmp_path: Path) -> None:
    """A first try on a few dozen photos with the default batch: one step an epoch, said in one line."""
    data = _data(tmp_path / "data")
    lines: list[str] = []
    result = train(_tiny(data, tmp_path / "run", batch_size=64), log=lines.append)
    assert (
        f"note: --batch-size 64 is more than the 28 training photos of {data}: each step takes all 28, one step an epoch"
        in lines
    )
    assert result.checkpoint.exists()


def test_classes_without_a_validation_photo_are_named(tmp_path: Path) -> None:
    data = _data(tmp_path / "data")
    lonely = make_dataset(tmp_path / "lonely", per_class=1, classes=[CLASSES[3]]) / CLASSES[3]
    lonely.rename(data / CLASSES[3])
    lines: list[str] = []
    prepare_data(_tiny(data, tmp_path / "run"), log=lines.append)
    assert [line for line in lines if "validation" in line] == [
        f"no validation photo for 1 class(es): {CLASSES[3]} (1 photo); validation accuracy leaves them out"
    ]


def test_photos_a_new_decoder_reads_otherwise_are_said_so_on_resume(tmp_path: Path) -> None:
    """A run begun before a decoder change was told its photos had changed and to restore them, though only the
    decoder had: the files are as they were, so restoring them cannot help."""
    data = _data(tmp_path / "data")
    out = tmp_path / "run"
    train(_tiny(data, out, epochs=2), log=_quiet, should_stop=lambda epoch, step: (epoch, step) == (0, 1))
    split = json.loads((out / "split.json").read_text())
    first = sorted(split["photos"])[0]
    split["photos"][first] = "0" * 16  # the pixels an earlier decoder gave this file
    del split["decode_revision"]  # a run from before split.json recorded it
    (out / "split.json").write_text(json.dumps(split))
    said = r"1 photo changed \(.*\) in .*: this version decodes photos otherwise .* \(decoder revision 1 then, 2 now\)"
    with pytest.raises(ValueError, match=said):
        train(_tiny(data, out, epochs=2, resume=True), log=_quiet)
    split["decode_revision"] = 2  # the same decoder: the file itself changed
    (out / "split.json").write_text(json.dumps(split))
    with pytest.raises(ValueError, match=r"are not those the run began with: 1 photo changed .*; restore them"):
        train(_tiny(data, out, epochs=2, resume=True), log=_quiet)
