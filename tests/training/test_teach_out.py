"""Where `heritage teach` writes (`teach_out`): one pair of files, named by the whole of --out, checked, printed and
written; an existing model, a folder that holds files, a name a file stands in the way of, and a --cache-dir that is
not a folder are refused before any photo is read."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import NEW, _nine_data, file_digest, new_class_folder, train_nine
from heritage_cnn.base.io import CheckpointError
from heritage_cnn.cli.main import main
from heritage_cnn.inference.teach_photos import read_new_classes
from heritage_cnn.models.checkpoint import checkpoint_files, load_checkpoint
from heritage_cnn.training.teach import teach


@pytest.fixture(scope="module")
def nine(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_nine(synthetic_root, tmp_path_factory, epochs=2)  # where the files go is tested, not the answers


@pytest.fixture(scope="module")
def new_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return new_class_folder(tmp_path_factory)


@pytest.mark.parametrize("name", ["M1.v2.final", "portal_2024.12.07", "M3.txt", "a.b.safetensors", "a.b.json"])
def test_a_dot_is_part_of_the_name_however_often_the_files_are_named(name, tmp_path) -> None:
    """The pair named by a stem, by either of its files, and by the pair's files named again are the same two files:
    a second `checkpoint_files` (a save through the weights path) never strips another suffix."""
    weights, meta = checkpoint_files(tmp_path / name)
    stem = name.removesuffix(".safetensors").removesuffix(".json")
    assert (weights.name, meta.name) == (f"{stem}.safetensors", f"{stem}.json")
    assert checkpoint_files(weights) == checkpoint_files(meta) == (weights, meta)
    folder = tmp_path / "outdir"
    assert checkpoint_files(f"{folder}/") == (folder / "last.safetensors", folder / "last.json")


def _teach_cli(new: Path, model: str | Path, out: str, *more: str) -> int:
    return main(["teach", str(new), "--model", str(model), "--out", out, "--steps", "5", *more])


def test_a_dotted_out_never_overwrites_the_parent(nine, new_folder, tmp_path, monkeypatch, capsys) -> None:
    """`--model M1 --out M1.v2.final` once wrote the child over M1 (the parent); the files checked, printed and
    written are one pair, and an existing one is refused."""
    monkeypatch.chdir(tmp_path)
    for source, target in zip(checkpoint_files(nine), checkpoint_files("M1"), strict=True):
        shutil.copy(source, target)
    parent = {p: file_digest(p) for p in checkpoint_files("M1")}
    for out in ("M1.v2.final", "portal_2024.12.07"):
        assert _teach_cli(new_folder, "M1", out) == 0
        printed = capsys.readouterr().out.splitlines()[-1]
        assert printed == f"model: {out}.safetensors + {out}.json (10 classes; use it with --model {out})"
        assert load_checkpoint(out).classes[-1] == NEW and Path(f"{out}.json").exists()
        assert {p: file_digest(p) for p in checkpoint_files("M1")} == parent  # the parent is never written
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == sorted(
        f"{stem}.{ext}" for stem in ("M1", "M1.v2.final", "portal_2024.12.07") for ext in ("json", "safetensors")
    )
    child = {p: file_digest(p) for p in checkpoint_files("M1.v2.final")}
    for out in ("M1.v2.final", "M1.v2.final.json", "M1"):
        assert _teach_cli(new_folder, "M1", out) == 2
        err = capsys.readouterr().err
        assert "exists; teach never overwrites a model" in err and err.count("\n") == 1
    assert {p: file_digest(p) for p in checkpoint_files("M1.v2.final")} == child
    assert {p: file_digest(p) for p in checkpoint_files("M1")} == parent


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("full", "full: a folder that holds files"),
        ("", "--out is empty"),
        ("afile/M", "afile: not a folder"),
        ("M1", "M1.safetensors: exists"),
    ],
)
def test_an_out_that_cannot_be_a_new_model_is_refused_before_any_photo_is_read(
    nine, tmp_path, monkeypatch, capsys, out, message
) -> None:
    """Refused in one line (exit 2) before NEW is read (here it does not even exist), nothing written."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    (tmp_path / "afile").write_text("mine")
    shutil.copy(checkpoint_files(nine)[0], "M1.safetensors")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert _teach_cli(tmp_path / "no_such_folder", nine, out) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "no_such_folder" not in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_a_folder_out_and_an_odd_name_say_what_they_wrote(nine, new_folder, tmp_path, monkeypatch, capsys) -> None:
    """An empty folder, or a name ending in /, gets last.*; `M3.txt` writes M3.txt.safetensors + M3.txt.json (the
    whole name, said); `--out fast` is not the shipped `fast`: the hint names ./fast."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    for out, weights, hint in [
        ("empty", "empty/last.safetensors", "empty/last"),
        ("outdir/", "outdir/last.safetensors", "outdir/last"),
        ("M3.txt", "M3.txt.safetensors", "M3.txt"),
        ("fast", "fast.safetensors", "./fast"),
        ("default.safetensors", "default.safetensors", "./default"),
    ]:
        assert _teach_cli(new_folder, nine, out) == 0, out
        printed = capsys.readouterr().out.splitlines()[-1]
        meta = weights.removesuffix(".safetensors") + ".json"
        assert printed == f"model: {weights} + {Path(meta).name} (10 classes; use it with --model {hint})"
        assert Path(weights).is_file() and Path(meta).is_file()
        assert load_checkpoint(hint).classes[-1] == NEW  # the hint loads the model written, not a shipped one
    assert not Path("outdir.safetensors").exists() and not Path("M3.safetensors").exists()


def test_a_cache_dir_that_is_a_file_is_refused_before_any_photo_is_decoded(
    nine, new_folder, synthetic_root, tmp_path, capsys
) -> None:
    data = _nine_data(synthetic_root, tmp_path)
    afile = tmp_path / "afile"
    afile.write_text("mine")
    for cache in (afile, afile / "below"):
        code = _teach_cli(new_folder, nine, str(tmp_path / "m"), "--data", str(data), "--cache-dir", str(cache))
        err = capsys.readouterr()
        assert code == 2 and err.err.startswith(f"heritage: error: --cache-dir {cache}") and err.err.count("\n") == 1
        assert "not a folder" in err.err and "photos" not in err.out  # refused before --data was read
    assert afile.read_text() == "mine" and not any(tmp_path.glob("m.*"))
    parent = load_checkpoint(nine)
    with pytest.raises(CheckpointError, match=f"--cache-dir {afile}: not a folder"):
        teach(parent, read_new_classes(new_folder, parent.classes), tmp_path / "m", log=print, cache_dir=afile)
