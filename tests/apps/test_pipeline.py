"""Which images `evaluate` scores by default: test/, else the images the model did not train on, else all (loudly)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from heritage_cnn.apps import pipeline
from heritage_cnn.apps.evaluation import evaluate_on
from heritage_cnn.apps.pipeline import run_report
from heritage_cnn.cli.main import main
from heritage_cnn.data.folders import DatasetError, find_layout
from heritage_cnn.data.split import perceptual_hashes
from heritage_cnn.inference.evaluate import hashes_from_hex, hashes_to_hex, near_any


def copy_checkpoint(run, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".safetensors", ".json"):
        shutil.copy(run.checkpoint.with_suffix(suffix), folder / f"model{suffix}")
    return folder / "model.safetensors"


@pytest.fixture(scope="module")
def recorded(
    tiny_run, synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[str], list[str]]:
    """The tiny run's checkpoint with a trained_on record, as training writes it; its training and validation paths."""
    from heritage_cnn.training.config import TrainConfig
    from heritage_cnn.training.prepare import prepare_data

    model = copy_checkpoint(tiny_run, tmp_path_factory.mktemp("recorded"))
    meta = json.loads(model.with_suffix(".json").read_text())
    config = TrainConfig.from_dict({**meta["recipe"], "data": str(synthetic_root), "out": "-", "progress": False})
    _, train_set, val_set = prepare_data(config, log=lambda _: None)
    meta["trained_on"] = {"phash": hashes_to_hex(perceptual_hashes(train_set.images)), "distance": 10}
    model.with_suffix(".json").write_text(json.dumps(meta))
    return model, train_set.paths, val_set.paths


def test_hash_helpers() -> None:
    hashes = np.array([0, 0xFF, 2**64 - 1], dtype=np.uint64)
    assert hashes_to_hex(hashes) == ["0000000000000000", "00000000000000ff", "ffffffffffffffff"]
    assert (hashes_from_hex(hashes_to_hex(hashes)) == hashes).all()
    reference = np.array([0b1111], dtype=np.uint64)
    assert near_any(np.array([0, 0b11111111, 2**63], dtype=np.uint64), reference, 4).tolist() == [True, True, False]
    assert not near_any(hashes, np.empty(0, dtype=np.uint64), 10).any()


def test_default_is_the_test_split_when_there_is_one(tiny_run, kaggle_root: Path, tmp_path: Path) -> None:
    metrics = evaluate_on(str(tiny_run.checkpoint), kaggle_root, out=tmp_path, log=lambda _: None)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["split"] == "test" and metrics["n_images"] == 60


def test_a_folder_holding_only_test_is_recognised(
    tiny_run, kaggle_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    only = tmp_path / "only"
    shutil.copytree(kaggle_root / "test", only / "test")
    layout = find_layout(only)
    assert layout.test == only / "test" and not layout.train.is_dir()
    model = str(tiny_run.checkpoint)
    assert (
        main(["evaluate", "--model", model, "--data", str(only), "--split", "test", "--out", str(tmp_path / "t")]) == 0
    )
    assert main(["evaluate", "--model", model, "--data", str(only), "--out", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["split"] == "test"
    assert main(["data", "check", str(only)]) == 0
    capsys.readouterr()
    assert (
        main(["evaluate", "--model", model, "--data", str(only), "--split", "all", "--out", str(tmp_path / "x")]) == 2
    )
    assert "has no train/ folder" in capsys.readouterr().err


def test_on_the_training_folder_the_default_leaves_out_every_trained_on_image(
    tiny_run, recorded, synthetic_root: Path, tmp_path: Path
) -> None:
    model = recorded[0]
    lines: list[str] = []
    metrics = evaluate_on(model, synthetic_root, out=tmp_path, log=lines.append)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["split"] == "unseen" and saved["excluded"]["count"] == tiny_run.train_size
    # groups of near-duplicates never straddle the split, so what is left is the validation split
    assert metrics["n_images"] == tiny_run.val_size
    assert metrics["accuracy"]["value"] == pytest.approx(tiny_run.final["val_accuracy"])
    assert any(f"excluded {tiny_run.train_size} of" in line for line in lines)


def test_a_validation_split_rebuilt_on_another_copy_leaves_out_the_trained_on_photos(
    tiny_run, recorded, tmp_path: Path
) -> None:
    """The split's recipe drawn over a smaller copy of the data mixes photos that trained the model into its
    validation side; scoring them would overstate accuracy (a copy of 12 photos a class reported 100 %)."""
    model, train_paths, val_paths = recorded
    smaller = tmp_path / "smaller"
    for path in sorted(train_paths + val_paths)[::2]:
        folder = smaller / Path(path).parent.name
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / Path(path).name)
    lines: list[str] = []
    metrics = evaluate_on(model, smaller, "val", tmp_path / "e", log=lines.append)
    saved = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert saved["excluded"]["count"] > 0 and any("excluded" in line for line in lines)
    kept = saved["excluded"]["of"] - saved["excluded"]["count"]
    assert metrics["n_images"] == kept <= len([p for p in sorted(train_paths + val_paths)[::2] if p in val_paths])
    # on the folder the model was trained on, the rebuilt split is its own validation split: nothing to leave out
    metrics = evaluate_on(model, Path(train_paths[0]).parents[1], "val", tmp_path / "own", log=lambda _: None)
    assert metrics["n_images"] == tiny_run.val_size


def test_on_another_folder_trained_on_copies_and_near_copies_are_flagged(
    recorded, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, train_paths, val_paths = recorded
    foreign = tmp_path / "foreign"
    for path in train_paths[:3]:
        (foreign / Path(path).parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, foreign / Path(path).parent.name / f"copy_{Path(path).name}")
    near = Path(train_paths[3])
    pixels = np.asarray(Image.open(near)).astype(np.int16) + 6  # a little brighter: the same photo
    (foreign / near.parent.name).mkdir(exist_ok=True)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(foreign / near.parent.name / "brighter.png")
    for path in val_paths[:20]:  # photos the model never saw (no near-duplicate of them trained it either)
        (foreign / Path(path).parent.name).mkdir(exist_ok=True)
        shutil.copy(path, foreign / Path(path).parent.name / f"new_{Path(path).name}")
    assert main(["evaluate", "--model", str(model), "--data", str(foreign), "--out", str(tmp_path / "e")]) == 0
    out = capsys.readouterr().out
    saved = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert saved["excluded"]["count"] == 4 and saved["n_images"] == 20 and "excluded 4 of 24" in out
    assert (
        main(
            ["evaluate", "--model", str(model), "--data", str(foreign), "--split", "all", "--out", str(tmp_path / "a")]
        )
        == 0
    )
    assert "includes 4 of 24 images" in capsys.readouterr().out
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["n_images"] == 24


def test_without_a_record_it_scores_everything_and_says_so(
    tiny_run, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = copy_checkpoint(tiny_run, tmp_path / "old")  # a checkpoint that does not record its training images
    meta = json.loads(model.with_suffix(".json").read_text())
    meta.pop("trained_on", None)
    model.with_suffix(".json").write_text(json.dumps(meta))
    assert main(["evaluate", "--model", str(model), "--data", str(synthetic_root), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "WARNING" in out and "cannot be told apart" in out
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["split"] == "all" and saved["trained_on_known"] is False and saved["n_images"] == 240


def test_a_test_split_holding_trained_on_photos_is_warned_about_and_counted(
    tiny_run, recorded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """test/ with copies (and a brightened near-copy) of photos the model trained on: --split auto and --split test
    score them as --split all does, with a warning that counts them, the count in metrics.json and the report."""
    from heritage_cnn.apps.report import build_html_report
    from heritage_cnn.models.checkpoint import load_checkpoint

    model, train_paths, val_paths = recorded
    data = tmp_path / "k"
    for part in ("train", "test"):
        for i, path in enumerate([*train_paths[:3], *val_paths[:12]]):
            (data / part / Path(path).parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, data / part / Path(path).parent.name / f"{i:02d}{Path(path).suffix}")
    near = Path(train_paths[3])
    pixels = np.asarray(Image.open(near)).astype(np.int16) + 6
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(data / "test" / near.parent.name / "brighter.png")
    for split in ("auto", "test"):
        out = tmp_path / "report" / f"eval-{split}"
        assert main(["evaluate", "--model", str(model), "--data", str(data), "--split", split, "--out", str(out)]) == 0
        said = capsys.readouterr().out
        assert "warning: the test split includes 4 of 16 images the model trained on" in said
        saved = json.loads((out / "metrics.json").read_text())
        assert saved["split"] == "test" and saved["n_images"] == 16 and saved["trained_on_known"] is True
        assert saved["trained_on_included"]["count"] == 4 and "4 trained on" in saved["title"]
    (tmp_path / "report" / "eval-auto").rename(tmp_path / "report" / "eval-val")
    page = build_html_report(tmp_path / "report", tmp_path / "index.html", load_checkpoint(model)).read_text()
    header = page[: page.index("<nav")]
    assert "on the test split (16 images). 4 of them the model trained on, which may overstate accuracy." in header
    # a test/ free of them: no warning, a count of none
    for copy in [*(data / "test").rglob("0[0-2].*"), data / "test" / near.parent.name / "brighter.png"]:
        copy.unlink()
    assert main(["evaluate", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "clean")]) == 0
    assert "warning" not in capsys.readouterr().out
    assert json.loads((tmp_path / "clean" / "metrics.json").read_text())["trained_on_included"]["count"] == 0


def test_a_report_into_an_earlier_one_shows_no_split_it_did_not_evaluate(
    tiny_run, kaggle_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A report of a folder with test/, then one of a folder without it, into one --out: the page showed the first
    one's test split, headline included, as the second's."""
    monkeypatch.setattr(pipeline, "FIGURE_STEPS", ())  # the evaluations are what is tested
    out = tmp_path / "report"
    run_report(str(tiny_run.checkpoint), str(kaggle_root), out, log=lambda _: None)
    assert (out / "eval-test" / "metrics.json").exists()
    without_test = shutil.copytree(kaggle_root / "train", tmp_path / "only" / "train")
    page = run_report(str(tiny_run.checkpoint), str(without_test.parent), out, log=lambda _: None)
    assert not (out / "eval-test").exists() and (out / "eval-val" / "metrics.json").exists()
    html = page.read_text(encoding="utf-8")
    assert "Test split" not in html and "on the validation split" in html


def test_curves_an_earlier_report_drew_are_not_shown_for_a_model_without_history(tiny_run, tmp_path: Path) -> None:
    """The page showed the curves an earlier report left in the folder as this model's, which has none."""
    import dataclasses

    from heritage_cnn.apps.report import build_html_report
    from heritage_cnn.models.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(tiny_run.checkpoint)
    (tmp_path / "train").mkdir()
    Image.new("RGB", (40, 30), "white").save(tmp_path / "train" / "curves.png")  # another model's
    bare = dataclasses.replace(checkpoint, info={k: v for k, v in checkpoint.info.items() if k != "history"})
    html = build_html_report(tmp_path, tmp_path / "index.html", bare).read_text(encoding="utf-8")
    assert "training curves" not in html


def test_a_refused_report_leaves_no_out_folder_behind(
    tiny_run, synthetic_root: Path, kaggle_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A folder of two of the model's ten classes: exit 2 with the reason, but --out was made and held
    data_check.json."""
    data = tmp_path / "mix"
    for name in ("altar", "gargoyle"):
        shutil.copytree(synthetic_root / name, data / name)
    out = tmp_path / "out" / "report"
    assert main(["report", "--model", str(tiny_run.checkpoint), "--data", str(data), "--out", str(out), "-q"]) == 2
    assert "no class folder of 'apse'" in capsys.readouterr().err
    assert not out.exists()
    # refused by the test split after the validation split was written: none of the run's files is kept
    real = pipeline.evaluate_split

    def test_split_refused(checkpoint, data, layout, how, folder, **common):
        if how == "test":
            raise DatasetError(f"{data}: test/ refused")
        return real(checkpoint, data, layout, how, folder, **common)

    monkeypatch.setattr(pipeline, "evaluate_split", test_split_refused)
    with pytest.raises(ValueError, match="test/ refused"):
        run_report(str(tiny_run.checkpoint), str(kaggle_root), out, log=lambda _: None)
    assert not out.exists()
    out.mkdir(parents=True)  # a folder the user made is left, as it was
    with pytest.raises(ValueError, match="test/ refused"):
        run_report(str(tiny_run.checkpoint), str(kaggle_root), out, log=lambda _: None)
    assert out.is_dir()


def test_the_demo_never_writes_into_the_data_folder(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """`demo --data D --out D/x --no-train` drew its figures among the photos, which the next run read as photos."""
    data = shutil.copytree(synthetic_root, tmp_path / "data")
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    monkeypatch.setattr(pipeline, "FIGURE_STEPS", ())  # the place is what is tested
    out = data / "x"
    assert main(["demo", "--data", str(data), "--out", str(out), "--no-train", "-q"]) == 2
    assert capsys.readouterr().err == (
        f"heritage: error: --out {out}: inside the --data folder {data}; its figures would be read as photos there\n"
    )
    with pytest.raises(ValueError, match="inside the --data folder"):
        pipeline.run_demo(str(data), data / "y", log=lambda _: None)
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before
