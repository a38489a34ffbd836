"""`train`'s guards: a stop request is never lost, and --resume refuses data that are not the run's."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from dataclasses import replace
from pathlib import Path

import pytest
from _loop_helpers import _config

from conftest import CLASSES, make_dataset
from heritage_cnn.cli.main import main
from heritage_cnn.training import loop as training
from heritage_cnn.training import state as trainstate
from heritage_cnn.training.config import TrainConfig
from heritage_cnn.training.loop import train


def test_a_signal_during_the_end_of_an_epoch_stops_the_run(synthetic_root: Path, tmp_path: Path, monkeypatch) -> None:
    """A Ctrl-C that arrives while the epoch is validated is kept: the run stops after that epoch, resumable."""
    validate, calls = training.validate, []

    def validate_then_signal(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            signal.raise_signal(signal.SIGINT)  # the handler sets the stop flag here, mid end-of-epoch
        return validate(*args, **kwargs)

    monkeypatch.setattr(training, "validate", validate_then_signal)
    out = tmp_path / "run"
    result = train(_config(synthetic_root, out, epochs=4), log=lambda _: None)
    assert result.interrupted and len(result.history) == 1
    assert trainstate.has_resume_state(out) and json.loads((out / "metrics.json").read_text())[-1]["epoch"] == 1


def _cut_run(tmp_path: Path, **overrides) -> tuple[Path, Path, TrainConfig]:
    """(data folder, run folder, its config): a run of 2 epochs stopped in its first, on a data set of its own."""
    data = make_dataset(tmp_path / "data", per_class=12)
    out = tmp_path / "run"
    config = _config(data, out, epochs=2, batch_size=16, **overrides)
    train(config, log=lambda _: None, should_stop=lambda e, s: (e, s) == (0, 2))
    return data, out, config


def test_resume_refuses_a_data_folder_that_gained_or_lost_photos(tmp_path: Path) -> None:
    data, out, config = _cut_run(tmp_path)
    split = (out / "split.json").read_bytes()
    first = data / CLASSES[0]
    photos = sorted(first.iterdir())
    photos[0].unlink()
    photos[1].unlink()
    shutil.copy(photos[2], first / "new.png")
    with pytest.raises(ValueError, match=r"1 photo added \(.*new\.png\); 2 photos removed .*another --out"):
        train(replace(config, resume=True), log=lambda _: None)
    assert (out / "split.json").read_bytes() == split  # refused before anything was written


def test_resume_of_an_older_run_refuses_another_split(tmp_path: Path) -> None:
    """A split.json without the photos' digests (written before them): the split rebuilt must be the one recorded."""
    data, out, config = _cut_run(tmp_path)
    record = json.loads((out / "split.json").read_text())
    del record["photos"], record["relabel_sha256"]
    (out / "split.json").write_text(json.dumps(record))
    for photo in sorted((data / CLASSES[1]).iterdir())[:3]:
        photo.unlink()
    with pytest.raises(ValueError, match=r"another split than split\.json records"):
        train(replace(config, resume=True), log=lambda _: None)


def test_resume_refuses_an_edited_relabel_file(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", per_class=12)
    photos = sorted((data / CLASSES[0]).iterdir())
    relabel = tmp_path / "relabel.csv"
    relabel.write_text(f"path,new_label\n{photos[0]},{CLASSES[1]}\n")
    out = tmp_path / "run"
    config = _config(data, out, epochs=2, batch_size=16, relabel=str(relabel))
    train(config, log=lambda _: None, should_stop=lambda e, s: (e, s) == (0, 2))
    relabel.write_text(relabel.read_text() + f"{photos[1]},{CLASSES[2]}\n")
    with pytest.raises(ValueError, match=r"the relabel file .*relabel\.csv is not the one the run began with"):
        train(replace(config, resume=True), log=lambda _: None)


def test_an_unchanged_run_resumes_from_another_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """config.json names the data absolute: the run is resumed from anywhere, through the command line."""
    monkeypatch.chdir(tmp_path)
    make_dataset(tmp_path / "data", per_class=12)
    config = _config(Path("data"), Path("run"), epochs=2, batch_size=16)
    train(config, log=lambda _: None, should_stop=lambda e, s: (e, s) == (0, 2))
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"] == str(tmp_path / "data")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["train", "--out", "../run", "--resume", "--data", "../data", "-q"]) == 0
    assert len(json.loads((tmp_path / "run" / "metrics.json").read_text())) == 2


def test_an_older_run_with_a_relative_data_path_takes_the_data_folder_typed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    data, out, _ = _cut_run(tmp_path)
    saved = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**saved, "data": "data"}))  # as runs of before stored it
    split = json.loads((out / "split.json").read_text())
    del split["data"], split["photos"], split["relabel_sha256"]
    split["val_paths"] = [os.path.relpath(p, tmp_path) for p in split["val_paths"]]
    (out / "split.json").write_text(json.dumps(split))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["train", "--out", str(out), "--resume", "--data", str(data), "-q"]) == 0


@pytest.mark.parametrize("where", ["inside", "class", "file"])
def test_a_run_folder_inside_the_data_or_a_file_is_refused_before_anything_is_written(
    where: str, tmp_path: Path
) -> None:
    data = make_dataset(tmp_path / "data", per_class=4)
    out = {"inside": data / "run", "class": data / CLASSES[0] / "run", "file": tmp_path / "afile"}[where]
    if where == "file":
        out.write_text("mine")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    message = (
        "is a file; the output folder must be a folder"
        if where == "file"
        else "inside the data folder .*; write the run elsewhere"
    )
    with pytest.raises(ValueError, match=rf"--out {out}: {message}"):
        train(_config(data, out), log=lambda _: None)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_a_data_folder_that_is_not_there_makes_no_run_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped --data is one line, exit 2, and leaves no new --out behind (not even the run's lock file)."""
    out = tmp_path / "runs" / "a"
    assert main(["train", "--data", str(tmp_path / "no-such-data"), "--out", str(out), "-q"]) == 2
    assert capsys.readouterr().err.strip() == f"heritage: error: {tmp_path / 'no-such-data'}: no such folder"
    assert not (tmp_path / "runs").exists()
    (tmp_path / "empty").mkdir()  # a folder, but no class folders in it
    assert main(["train", "--data", str(tmp_path / "empty"), "--out", str(out), "-q"]) == 2
    assert "no class folders inside" in capsys.readouterr().err and not (tmp_path / "runs").exists()


def test_a_run_refused_after_its_folder_was_made_leaves_no_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refusals that need the photos or the relabel file come after the lock is taken; a new --out is removed."""
    data = make_dataset(tmp_path / "data", per_class=4)
    bad = tmp_path / "bad.csv"
    bad.write_text("nonsense\n")
    out = tmp_path / "runs"
    assert main(["train", "--data", str(data), "--out", str(out), "--relabel", str(bad), "-q"]) == 2
    assert "expected the header" in capsys.readouterr().err and not out.exists()
    (data / "no_photos").mkdir()
    assert main(["train", "--data", str(data), "--out", str(out), "-q"]) == 2
    assert "no readable image" in capsys.readouterr().err and not out.exists()
    out.mkdir()  # the user's own folder stays, with nothing of the run's but its lock
    assert main(["train", "--data", str(data), "--out", str(out), "-q"]) == 2
    assert [p.name for p in out.iterdir()] == [trainstate.RUN_LOCK]


def test_resume_refusals_name_a_typed_recipe_and_values_as_typed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = _cut_run(tmp_path)
    split = (out / "split.json").read_bytes()
    for flags, said in (
        (["--recipe", "quick"], r"--recipe quick \(the run's recipe differs: "),
        (["--limit-per-class", "10"], r"--limit-per-class 10 \(the run has not set\)"),
        (["--no-augment"], r"--no-augment sets rotation_degrees 0, hflip False, .*\(the run has rotation_degrees 15"),
    ):
        assert main(["train", "--out", str(out), "--resume", "-q", *flags]) == 2
        error = capsys.readouterr().err
        assert re.search(said, error) and "{" not in error and "None" not in error, error
        assert len(error.strip().splitlines()) == 1
    assert (out / "split.json").read_bytes() == split


def test_resume_with_other_threads_says_it_is_not_bit_exact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = _cut_run(tmp_path)
    assert main(["train", "--out", str(out), "--resume", "-q", "--threads", "1"]) == 0
    assert (
        "note: --threads 1 differs from the run's (not set): the result will not be bit-identical"
        in capsys.readouterr().out
    )
