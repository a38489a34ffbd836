from __future__ import annotations

import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from heritage_cnn.apps.pipeline import demo_out_problem
from heritage_cnn.cli.main import build_parser, main
from heritage_cnn.cli.recipe import new_config
from heritage_cnn.data import check as datacheck

COMMANDS = [["data", "download"], ["data", "check"], ["train"], ["evaluate"], ["demo"]]


def test_console_script_help() -> None:
    exe = Path(sys.executable).with_name("heritage")
    result = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
    assert "examples:" in result.stdout and "heritage demo" in result.stdout


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_subcommand_explains_itself_with_an_example(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "example" in text and "heritage " + " ".join(command) in text


def test_data_check_reports_counts_and_conflicting_duplicates(
    kaggle_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "data"
    shutil.copytree(kaggle_root, root)
    altar = sorted((root / "train" / "altar").iterdir())[0]
    shutil.copy(altar, root / "train" / "apse" / "copy_of_altar.png")  # same bytes, two labels
    shutil.copy(altar, root / "test" / "altar" / "leaked.png")  # same photo in train and test
    (root / "train" / "vault" / "broken.jpg").write_bytes(b"not a jpeg")
    assert main(["data", "check", str(root), "--json", str(tmp_path / "check.json")]) == 0
    table = capsys.readouterr().out
    assert "dome (inner)" in table and "1 unreadable" in table
    report = json.loads((tmp_path / "check.json").read_text())
    assert report["layout"] == "kaggle"
    assert report["splits"]["train"]["per_class"]["apse"] == 25 and report["splits"]["test"]["images"] == 61
    assert report["splits"]["train"]["unreadable"][0]["path"].endswith("broken.jpg")
    assert report["splits"]["train"]["modes"] == {"RGB": 241}
    conflicts = report["identical_files"]["conflicting_labels"]
    assert len(conflicts) == 1 and {e["class"] for e in conflicts[0]} == {"altar", "apse"}
    assert report["near_duplicates"]["across_splits"]


def test_download_without_network_fails_at_once_with_manual_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    probes = []  # at once: one reachability probe, then nothing (no kagglehub, no retry, no folder made)

    def unreachable(*args: object) -> str:
        probes.append(args)
        return "Name or service not known"

    monkeypatch.setattr(datacheck, "_reachable", unreachable)
    downloads = []
    fake = types.SimpleNamespace(dataset_download=lambda *args, **kwargs: downloads.append(args))
    monkeypatch.setitem(sys.modules, "kagglehub", fake)
    assert main(["data", "download", "--dest", str(tmp_path / "d")]) == 2
    assert len(probes) == 1 and downloads == [] and not (tmp_path / "d").exists()
    err = capsys.readouterr().err.strip()
    assert "cannot reach kaggle.com (Name or service not known)" in err
    assert len(err.splitlines()) == 1 and "by hand" in err and "train/<class>" in err


def test_missing_data_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv("HERITAGE_DATA", raising=False)
    assert main(["train", "--out", str(tmp_path)]) == 2
    assert "heritage data download" in capsys.readouterr().err
    assert main(["evaluate", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    assert "nowhere: no such folder" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--epochs", "0"]) == 2
    assert "--epochs must be at least 1" in capsys.readouterr().err


def test_evaluate_command_writes_figures_and_names_unknown_classes(
    tiny_run, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(tiny_run.checkpoint)
    assert (
        main(
            [
                "evaluate",
                "--model",
                model,
                "--data",
                str(synthetic_root),
                "--split",
                "val",
                "--out",
                str(tmp_path / "val"),
            ]
        )
        == 0
    )
    metrics = json.loads((tmp_path / "val" / "metrics.json").read_text())
    assert metrics["n_images"] == tiny_run.val_size and metrics["accuracy"]["value"] == pytest.approx(
        tiny_run.final["val_accuracy"]
    )
    assert (tmp_path / "val" / "confusion_matrix.png").stat().st_size > 10_000
    subset = tmp_path / "subset"
    shutil.copytree(synthetic_root / "apse", subset / "apse")
    shutil.copytree(synthetic_root / "vault", subset / "vault")
    assert main(["evaluate", "--model", model, "--data", str(subset), "--out", str(tmp_path / "sub"), "--tta"]) == 0
    assert "no images of 8 model class(es)" in capsys.readouterr().out
    (subset / "castle").mkdir()
    (subset / "castle" / "a.png").write_bytes((synthetic_root / "apse" / "000.png").read_bytes())
    assert main(["evaluate", "--model", model, "--data", str(subset), "--out", str(tmp_path / "x")]) == 2
    assert "unknown ['castle']" in capsys.readouterr().err


def test_demo_runs_the_whole_pipeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import make_dataset
    from heritage_cnn.models.checkpoint import load_checkpoint

    data = tmp_path / "kaggle"  # the shipped model's classes, so the demo compares it with the new network
    classes = load_checkpoint(None).classes
    make_dataset(data / "train", per_class=12, seed=1, classes=classes)
    make_dataset(data / "test", per_class=4, seed=2, classes=classes)
    out = tmp_path / "demo"
    args = ["demo", "--data", str(data), "--out", str(out), "--recipe", "quick", "--epochs", "2", "--widths", "8,16"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "== 3/3 evaluate" in text and str(out.resolve()) in text
    assert "the shipped model, for comparison" in text
    for name in (
        "data_check.json",
        "train-quick/last.safetensors",
        "train-quick/curves.png",
        "eval-val/confusion_matrix.png",
        "eval-test/metrics.md",
        "shipped/eval-test/metrics.md",
    ):
        assert (out / name).exists(), name
    assert demo_out_problem(out) is None  # all of it the demo's own: `make demo` runs again into the same folder


@pytest.mark.parametrize("foreign", ["photo.jpg", "holiday"])
def test_demo_refuses_an_out_that_holds_other_files(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], foreign: str
) -> None:
    """Its figures would lie among the user's photos, and a later sort of the folder would read them as photos."""
    out = tmp_path / "photos"
    out.mkdir()
    if "." in foreign:
        (out / foreign).write_bytes(b"x")
    else:
        (out / foreign).mkdir()
    (out / "index.html").write_text("an earlier demo's page")  # the demo's own: no reason to refuse
    before = sorted(out.rglob("*"))
    assert main(["demo", "--no-train", "--data", str(synthetic_root), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"holds {foreign!r}, not the demo's" in err and len(err.strip().splitlines()) == 1
    assert sorted(out.rglob("*")) == before


def test_report_checks_member_before_making_out(tiny_run, synthetic_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "r5"
    args = ["report", "--model", str(tiny_run.checkpoint), "--member", "5", "--data", str(synthetic_root)]
    assert main([*args, "--out", str(out), "-q"]) == 2
    assert not out.exists()


def test_recipe_presets_are_starting_points_that_typed_flags_override() -> None:
    from heritage_cnn.training.config import TrainConfig
    from heritage_cnn.training.recipes import recipe_config

    parser = build_parser()
    quick = new_config(parser.parse_args(["demo", "--recipe", "quick"]), "d", "o")
    assert quick == recipe_config("quick", "d", "o")
    assert (quick.epochs, quick.model.blocks, quick.model.widths) == (13, (1, 1, 1, 1), (16, 32, 64, 128))
    assert quick.bn_statistics == "precise" and TrainConfig(data="d", out="d").bn_statistics == "running"
    assert new_config(parser.parse_args(["demo"]), "d", "o") == quick  # the demo's default: minutes, not half an hour
    assert new_config(parser.parse_args(["demo", "--recipe", "full"]), "d", "o") == TrainConfig(data="d", out="o")
    assert new_config(parser.parse_args(["train", "--out", "o"]), "d", "o") == TrainConfig(data="d", out="o")
    assert new_config(parser.parse_args(["demo", "--epochs", "3"]), "d", "o").epochs == 3
    adamw = new_config(parser.parse_args(["train", "--out", "o", "--recipe", "adamw", "--epochs", "60"]), "d", "o")
    assert (adamw.optimizer, adamw.epochs) == ("adamw", 60) and TrainConfig(data="d", out="o").optimizer == "muon"
    with pytest.raises(ValueError, match="the recipes are: full, adamw, quick"):
        recipe_config("slow", "d", "o")


def test_a_config_saved_before_the_optimizer_field_reads_as_adamw_not_as_todays_default() -> None:
    from heritage_cnn.training.config import TrainConfig

    saved = TrainConfig(data="d", out="o", optimizer="adamw").to_dict()
    del saved["optimizer"]  # as config.json and checkpoint recipes were written before Muon existed
    assert TrainConfig.from_dict(saved).optimizer == "adamw"
    assert TrainConfig.from_dict({**saved, "optimizer": "muon"}).optimizer == "muon"


def test_train_flags_become_the_recipe_and_defaults_stay_the_shipped_recipe() -> None:
    from heritage_cnn.training.config import TrainConfig

    parser = build_parser()
    flags = "--ema 0.998 --cutmix 1 --mixup 0.2 --balanced-loss --zoom 0.3 --shift 0.05 --dropout 0.1 --warmup 2"
    flags += " --input-scale 1.5"
    args = parser.parse_args(["train", "--out", "o", *flags.split(), "--batch-size", "64"])
    two_views = parser.parse_args(["train", "--out", "o", "--consistency", "12"])
    assert new_config(two_views, "d", "o").consistency_weight == 12
    config = new_config(args, "d", "o")
    assert (config.ema_decay, config.cutmix_alpha, config.mixup_alpha, config.balanced_loss) == (0.998, 1, 0.2, True)
    assert (config.augment.zoom, config.augment.shift, config.model.dropout) == (0.3, 0.05, 0.1)
    assert config.model.input_scale == 1.5
    assert (config.warmup_epochs, config.batch_size) == (2, 64)
    plain = new_config(parser.parse_args(["train", "--out", "o"]), "d", "o")
    assert plain == TrainConfig(data="d", out="o")


def test_widths_keep_the_default_depth_when_the_stage_count_matches() -> None:
    from heritage_cnn.models.network import ModelConfig

    parser = build_parser()

    def model_of(*flags: str) -> ModelConfig:
        return new_config(parser.parse_args(["train", "--out", "o", *flags]), "d", "o").model

    default_blocks = ModelConfig().blocks
    assert model_of("--widths", "32,64,128,256").blocks == default_blocks  # four stages: the default depth
    assert model_of("--widths", "8,16").blocks == (1, 1)  # another stage count: one block each
    assert model_of("--widths", "8,16", "--blocks", "2,1").blocks == (2, 1)
    assert model_of("--blocks", "1,1,1,1").blocks == (1, 1, 1, 1)


# --------------------------------------------------------------------------------------------
# The recipe table, resume, and the conventions every command shares
# --------------------------------------------------------------------------------------------


def test_every_recipe_field_has_one_flag_and_its_default_comes_from_the_dataclass(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from heritage_cnn.cli import recipe
    from heritage_cnn.training.config import TrainConfig

    assert recipe.config_fields() <= recipe.recipe_fields()
    assert len({flag.name for flag in recipe.RECIPE}) == len(recipe.RECIPE)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"images per step (default {TrainConfig.batch_size})" in help_text


@pytest.mark.parametrize("command, recipe", [("train", "full"), ("demo", "quick")])
def test_the_defaults_shown_are_those_of_the_commands_own_recipe(
    command: str, recipe: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`heritage demo` trains the quick recipe: its help shows the quick recipe's values, not the full one's."""
    from heritage_cnn.training.recipes import recipe_config

    config = recipe_config(recipe, "", "")
    with pytest.raises(SystemExit):
        main([command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"the {recipe} recipe" in help_text
    widths = ",".join(map(str, config.model.widths))
    for shown in (f"(default {config.epochs})", f"(default {config.optimizer})", f"(default {widths})"):
        assert shown in help_text, shown


def test_zero_is_a_value_not_a_missing_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    flags = "--label-smoothing 0 --warmup 0 --weight-decay 0 --dropout 0 --split-seed 0 --rotation 0"
    config = new_config(parser.parse_args(["train", "--out", "o", *flags.split()]), "d", "o")
    assert (config.label_smoothing, config.warmup_epochs, config.weight_decay, config.model.dropout) == (0, 0, 0, 0)
    assert config.augment.rotation_degrees == 0
    for flag, message in (("--lr", "--lr must be a positive"), ("--val-fraction", "--val-fraction must be in")):
        assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), flag, "0"]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    for flags, message in (
        (["--input-scale", "0.5"], "--input-scale must be from 1 to 4"),
        (["--widths", "8,16", "--blocks", "1,1,1"], "--widths (8, 16) and --blocks (1, 1, 1) must"),
        (["--dropout", "1"], "--dropout must be in [0, 1), got 1.0"),
        (["--zoom", "-2"], "--zoom must be a finite number from 0 to 3, got -2.0"),  # log(1 + zoom): NaN
        (["--rotation", "inf"], "--rotation must be a finite number from 0 to 180, got inf"),
        (["--weight-decay", "nan"], "--weight-decay must be a finite number >= 0, got nan"),  # nan < 0 is false
        (
            ["--mixup", "0.2", "--consistency", "1"],
            "--consistency compares two views of the same image: it cannot be combined with --mixup/--cutmix",
        ),
        (
            ["--split-seed", "0", "--blocks", "1", "--widths", "8"],
            "--optimizer muon (the default) needs a network "
            "with more than one convolution (it updates the ones after the stem): add --optimizer adamw",
        ),
    ):
        assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), *flags]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1  # the flag the user typed, not the field


def test_too_few_photos_for_the_split_is_one_line_naming_the_folder(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "--data", str(synthetic_root), "--out", str(tmp_path / "r"), "--limit-per-class", "4", "-q"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(synthetic_root) in err and "needs at least 5 photos" in err
    assert not (tmp_path / "r" / "last.safetensors").exists()


def test_nproc_checks_the_batch_size_that_train_config_will_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from heritage_cnn.training.config import TrainConfig

    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--nproc", "3"]) == 2
    assert f"--batch-size {TrainConfig.batch_size} must be divisible by the 3" in capsys.readouterr().err


def test_resume_takes_the_saved_recipe_and_refuses_a_different_one(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from heritage_cnn.base.io import atomic_write_json
    from heritage_cnn.training import loop as train
    from heritage_cnn.training.config import TrainConfig

    run = tmp_path / "run"
    saved = TrainConfig(data=str(synthetic_root), out=str(run), epochs=56, lr=0.002)
    atomic_write_json(run / "config.json", saved.to_dict())
    seen: list[TrainConfig] = []

    def fake_train(config: TrainConfig, *args: object, **kwargs: object) -> None:
        seen.append(config)
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "train", fake_train)
    resume = ["train", "--out", str(run), "--resume"]
    assert main(resume) == 130
    assert main([*resume, "--epochs", "56", "--lr", "0.002", "--data", str(synthetic_root)]) == 130
    assert main([*resume, "--device", "cpu", "--threads", "1"]) == 130
    assert seen[0] == seen[1] and seen[0].resume and seen[0].epochs == 56 and seen[0].lr == 0.002
    assert (seen[2].device, seen[2].threads) == ("cpu", 1)
    capsys.readouterr()
    assert main([*resume, "--epochs", "80"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--epochs 80 (the run has 56)" in err and "config.json" in err
    assert main([*resume, "--widths", "8,16", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--widths 8,16 (the run has 24,48,96,192)" in err and f"--data {tmp_path}" in err
    assert len(seen) == 3


def test_a_copied_run_resumes_into_its_own_folder_and_never_writes_the_original(
    synthetic_root: Path, tmp_path: Path
) -> None:
    """A run folder copied (or moved) keeps its config.json, which names the folder it was trained in: resuming the
    copy must write the copy only (it once wrote the original's checkpoint, config and lock)."""
    from conftest import TINY

    original, copy = tmp_path / "original", tmp_path / "copy"
    tiny = ["--widths", ",".join(map(str, TINY["widths"])), "--blocks", ",".join(map(str, TINY["blocks"]))]
    common = ["--data", str(synthetic_root), "--epochs", "1", "--no-amp", "--optimizer", "adamw", "-q", *tiny]
    assert main(["train", "--out", str(original), *common]) == 0
    shutil.copytree(original, copy)
    before = {p.name: p.read_bytes() for p in original.iterdir() if p.is_file()}
    assert main(["train", "--out", str(copy), "--resume", "-q"]) == 0
    assert {p.name: p.read_bytes() for p in original.iterdir() if p.is_file()} == before
    assert json.loads((copy / "config.json").read_text())["out"] == str(copy)


def test_command_flags_rebuild_the_config_they_were_read_from() -> None:
    """What the recipe log records as a run's command is the command line's own table read backwards: typed again,
    it gives the same config, for every kind of flag (values, lists, switches, repeated ones, --no-augment)."""
    import shlex
    from dataclasses import replace

    from heritage_cnn.cli.recipe import command_flags, new_config
    from heritage_cnn.training.config import TrainConfig
    from heritage_cnn.training.recipes import recipe_config

    parser = build_parser()
    base = TrainConfig(data="d", out="o")
    configs = [
        base,
        replace(recipe_config("quick", "d", "o"), outliers="neg dir", outlier_weight=0.25, seed=3),
        replace(recipe_config("adamw", "d", "o"), teachers=("a", "b"), distill_weight=0.9, mixup_alpha=0.2),
        TrainConfig.from_dict(
            {
                **base.to_dict(),
                "amp": False,
                "balanced_loss": True,
                "relabel": "r.csv",
                "model": {"widths": (8, 16), "blocks": (1, 1), "residual": False, "stem_pool_first": True},
                "augment": {
                    "rotation_degrees": 5.0,
                    "hflip": False,
                    "zoom": 0,
                    "shift": 0,
                    "brightness": 0,
                    "contrast": 0,
                    "saturation": 0,
                    "erase": 0,
                },
                "split": {"seed": 2},
            }
        ),
    ]
    for config in configs:
        flags = command_flags(config)
        assert not any(f.startswith("(") for f in flags), flags
        typed = shlex.split(" ".join(shlex.quote(part) for f in flags for part in f.split(" ", 1)))
        assert new_config(parser.parse_args(["train", "--out", "o", *typed]), "d", "o") == config, flags
    odd = replace(base, eval_batch_size=16, split=replace(base.split, near_duplicate_distance=4))
    assert command_flags(odd)[-1] == "(split.near_duplicate_distance 4)"  # no flag sets it: named, not lost


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    from heritage_cnn import __version__

    with pytest.raises(SystemExit) as info:
        main(["-V"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"heritage-cnn {__version__}"


def test_predict_output_file_format_and_device(
    tiny_run, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, photo = str(tiny_run.checkpoint), str(synthetic_root / "apse" / "000.png")
    assert main(["predict", photo, "--model", model, "--device", "cpu", "-o", str(tmp_path / "p.json")]) == 0
    assert "written to" in capsys.readouterr().err
    rows = json.loads((tmp_path / "p.json").read_text())
    assert len(rows) == 1 and rows[0]["path"] == photo
    assert main(["predict", photo, "--model", model, "--output", str(tmp_path / "p.csv")]) == 0
    assert (tmp_path / "p.csv").read_text().splitlines()[0].startswith("path")
    assert main(["predict", photo, "--model", model, "-o", str(tmp_path / "p.txt"), "--format", "json"]) == 0
    assert json.loads((tmp_path / "p.txt").read_text())[0]["path"] == photo
    assert not list(tmp_path.glob(".*.tmp"))
    capsys.readouterr()
    assert main(["predict", photo, "--model", model, "-o", str(tmp_path / "p.xyz")]) == 2
    assert "p.xyz" in capsys.readouterr().err


def test_one_line_errors_name_the_file(
    tiny_run, synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    photo = str(synthetic_root / "apse" / "000.png")
    broken = tmp_path / "broken.safetensors"
    shutil.copy(tiny_run.checkpoint, broken)
    meta = json.loads(tiny_run.checkpoint.with_suffix(".json").read_text())
    del meta["normalisation"]
    broken.with_suffix(".json").write_text(json.dumps(meta))
    assert main(["predict", photo, "--model", str(broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert "broken" in err and err != "heritage: error: normalisation" and len(err.splitlines()) == 1

    def full_disk(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    target = tmp_path / "out.json"
    assert main(["predict", photo, "--model", str(tiny_run.checkpoint), "-o", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"heritage: error: {target}: No space left on device"


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--port", "-5"],
        ["serve", "--port", "99999"],
        ["visualize", "deconv", "--top", "0", "--out", "x"],
        ["visualize", "deconv", "--top", "100000", "--out", "x"],  # asked the allocator for 78 GB: a traceback
        ["visualize", "deconv", "--top-channels", "-1", "--out", "x"],
        ["generate", "--all", "--n", "0", "--out", "x"],
        ["generate", "--all", "--n", "100000", "--out", "x"],  # drew a million images in one batch: out of memory
        ["visualize", "units", "--layer", "stage1", "--channels", "7-2", "--out", "x"],
        ["predict", "p.jpg", "--device", "tpu"],
        ["serve", "--max-upload-mb", "inf"],  # int(inf * 2**20) was a traceback
        ["serve", "--max-upload-mb", "nan"],
        ["serve", "--max-upload-mb", "0"],
        ["generate", "--all", "--diversity", "nan", "--out", "x"],  # drew NaN-steered images and said nothing
        ["generate", "--all", "--lr", "-1", "--out", "x"],
        ["data", "check", "--near-duplicate-distance", "-5"],  # found no duplicates, and said so
        ["data", "check", "--near-duplicate-distance", "65"],  # beyond the 64 bits of a hash
    ],
    ids=" ".join,
)
def test_bad_numbers_are_refused_by_argparse(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert info.value.code == 2 and last.startswith("heritage ") and "--host" not in last


def test_one_channel_grammar() -> None:
    from heritage_cnn.cli.options import channel_list

    assert channel_list("0-3,7") == [0, 1, 2, 3, 7]
    assert channel_list("5") == [5]
    assert channel_list("0,5,7") == [0, 5, 7]


def test_cuda_when_absent_is_one_line(
    tiny_run, synthetic_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    photo = str(synthetic_root / "apse" / "000.png")
    assert main(["predict", photo, "--model", str(tiny_run.checkpoint), "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert main(["predict", photo, "--model", str(tiny_run.checkpoint), "--device", "auto"]) == 0


def test_sort_summary_mentions_unreadable_files_only_when_there_are_some(
    tiny_run, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    survey = tmp_path / "survey"
    shutil.copytree(synthetic_root / "apse", survey)
    model = str(tiny_run.checkpoint)
    assert main(["sort", str(survey), "--out", str(tmp_path / "a"), "--model", model, "-q"]) == 0
    assert "unreadable" not in capsys.readouterr().out
    (survey / "broken.jpg").write_bytes(b"not a jpeg")
    assert main(["sort", str(survey), "--out", str(tmp_path / "b"), "--model", model]) == 0
    assert "1 unreadable file(s) skipped, listed in" in capsys.readouterr().out


def test_predict_output_is_never_a_photo_it_reads(
    tiny_run, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `predict --format json -o ovr/g.jpg ovr/g.jpg` wrote the JSON over the photo and exited 0
    survey = tmp_path / "survey"
    survey.mkdir()
    for name in ("000.png", "001.png"):
        shutil.copy(synthetic_root / "apse" / name, survey / name)
    photo, old = survey / "000.png", tmp_path / "old.png"
    shutil.copy(photo, old)
    before = {p: p.read_bytes() for p in (photo, old)}
    model = ["--model", str(tiny_run.checkpoint), "--format", "json"]
    cases = [
        ([str(photo)], photo, f"is the input {photo}; write the predictions elsewhere"),
        ([str(photo)], survey / ".." / "survey" / "000.png", f"is the input {photo}; write the predictions elsewhere"),
        ([str(survey)], photo, "an image file already there; predictions are never written over an image"),
        ([str(survey)], survey / "new.jpg", f"an image's name inside the input folder {survey}; use .csv or .json"),
    ]
    for inputs, output, why in cases:
        assert main(["predict", *inputs, *model, "-o", str(output)]) == 2
        err = capsys.readouterr().err
        assert err == f"heritage: error: -o {output}: {why}\n"
    assert main(["predict", str(photo), *model, "-o", str(old)]) == 2  # an image elsewhere: never replaced
    err = capsys.readouterr().err
    assert (
        err == f"heritage: error: -o {old}: an image file already there; predictions are never written over an image\n"
    )
    assert {p: p.read_bytes() for p in (photo, old)} == before and sorted(survey.iterdir()) == [
        photo,
        survey / "001.png",
    ]
    assert main(["predict", str(survey), *model, "-o", str(tmp_path / "p.json")]) == 0  # beside it: written
    # in the survey folder itself, a CSV is written and is not read as a photo on the next run
    assert main(["predict", str(survey), *model, "-o", str(survey / "p.csv")]) == 0
    assert main(["predict", str(survey), *model, "-o", str(tmp_path / "again.json")]) == 0
    assert len(json.loads((tmp_path / "again.json").read_text())) == 2


def test_none_threshold_help_says_which_score_and_where_to_read_it(
    tiny_run, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from heritage_cnn.models.checkpoint import shipped_checkpoint_path

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    helps = {
        name: next(a.help for a in commands[name]._actions if "--none-threshold" in a.option_strings)
        for name in ("predict", "sort", "map", "serve", "evaluate")
    }
    (text,) = set(helps.values())  # one text, declared once
    assert "mahalanobis" not in text  # the shipped score has been energy since 2026-12-05
    assert "energy for the shipped models" in text and "open_set_score" in text and "open_set.score" in text
    for name in ("default", "fast"):  # what the help says is true: the shipped score, the fields it points to
        assert (
            json.loads(shipped_checkpoint_path(name).with_suffix(".json").read_text())["open_set"]["score"] == "energy"
        )
    assert json.loads(tiny_run.checkpoint.with_suffix(".json").read_text())["open_set"]["score"]
    photo = str(synthetic_root / "apse" / "000.png")
    assert main(["predict", photo, "--model", str(tiny_run.checkpoint), "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert isinstance(row["open_set_score"], float) and isinstance(row["none_threshold"], float)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc, where no file can be made")
def test_an_output_that_cannot_be_made_is_named_not_its_temporary_file(
    tiny_run, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = str(synthetic_root / "apse" / "000.png")
    assert main(["predict", photo, "--model", str(tiny_run.checkpoint), "-o", "/proc/x.csv"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("heritage: error: /proc/x.csv: ") and ".tmp" not in err and err.count("\n") == 1


def test_a_symbolic_link_loop_gives_its_true_reason(
    tiny_run, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import errno
    import os

    loop = tmp_path / "loopA.jpg"
    loop.symlink_to("loopB.jpg")
    (tmp_path / "loopB.jpg").symlink_to("loopA.jpg")
    reason = f"cannot read ({os.strerror(errno.ELOOP)})"
    assert main(["predict", str(loop), "--model", str(tiny_run.checkpoint)]) == 2  # given directly
    assert capsys.readouterr().err.splitlines()[0] == f"heritage: {loop}: {reason}"  # was "no such file or folder"
    shutil.copy(synthetic_root / "apse" / "000.png", tmp_path / "good.png")
    assert main(["predict", str(tmp_path), "--model", str(tiny_run.checkpoint)]) == 0  # found in a folder
    assert f"heritage: skipped {loop}: {reason}" in capsys.readouterr().err.splitlines()
    assert main(["predict", str(tmp_path / "gone.jpg"), "--model", str(tiny_run.checkpoint)]) == 2
    assert capsys.readouterr().err.splitlines()[0] == f"heritage: {tmp_path / 'gone.jpg'}: no such file or folder"


def test_teach_says_how_many_corrections_the_taught_model_answers_as_labelled(tiny_run) -> None:
    """A photo labelled otherwise than the parent answers counts; the taught model is read, not assumed to agree."""
    import torch

    from heritage_cnn.cli.teach import _corrections_line
    from heritage_cnn.inference.classifier import Classifier
    from heritage_cnn.inference.teach_photos import TeachPhotos
    from heritage_cnn.models.checkpoint import load_checkpoint

    parent = load_checkpoint(tiny_run.checkpoint)
    images = torch.randint(0, 256, (6, 3, 64, 64), dtype=torch.uint8)
    answers = Classifier(parent, tta="none").probabilities(images).argmax(1).tolist()
    agreed = [parent.classes[a] for a in answers]
    other = [parent.classes[(a + 1) % len(parent.classes)] for a in answers]

    def photos(labels: list[str]) -> TeachPhotos:
        return TeachPhotos(images, labels, [f"{i}.png" for i in range(6)], [str(i) for i in range(6)], ["moved"] * 6)

    assert _corrections_line(parent, tiny_run.checkpoint, photos(agreed)) is None  # nothing corrected
    line = _corrections_line(parent, tiny_run.checkpoint, photos([*other[:4], *agreed[4:]]))  # the parent, unchanged
    assert line.startswith("corrections: 0 of the 4 photo(s) the parent answered otherwise")
