"""How the train and demo flags become the recipe (`cli.recipe`): presets, the flag table and its defaults,
refused values, --resume taking the saved recipe, and the flags that rebuild a config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from heritage_cnn.cli.main import build_parser, main
from heritage_cnn.cli.recipe import new_config


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


def test_resume_takes_the_runs_own_files_typed_relative_and_refuses_others(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command that started a run, typed again with --resume, was refused: `--relabel rl.csv (the run has
    /abs/rl.csv)`, the run's config holding the absolute path of the same file."""
    from heritage_cnn.base.io import atomic_write_json
    from heritage_cnn.training import loop as train
    from heritage_cnn.training.config import TrainConfig

    relabel, other = tmp_path / "rl.csv", tmp_path / "other.csv"
    for path in (relabel, other):
        path.write_text("path,new_label\n")
    run = tmp_path / "run"
    atomic_write_json(
        run / "config.json", TrainConfig(data=str(synthetic_root), out=str(run), relabel=str(relabel)).to_dict()
    )

    def started(config: TrainConfig, *args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # the run got past its checks

    monkeypatch.setattr(train, "train", started)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--out", "run", "--resume", "--relabel", "rl.csv"]) == 130
    assert main(["train", "--out", "run", "--resume", "--relabel", "other.csv"]) == 2
    assert "--relabel other.csv (the run has " in capsys.readouterr().err


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


def test_a_moved_data_folder_resumes_when_it_holds_the_runs_photos(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the data folder moved, --resume said "DATA: no such folder" and --resume --data NEW "the run has DATA":
    no way on. The new place is taken when the old one is gone, and its photos are checked against the run's."""
    from conftest import TINY

    data, moved, other = tmp_path / "data", tmp_path / "moved", tmp_path / "other"
    shutil.copytree(synthetic_root, data)
    tiny = ["--widths", ",".join(map(str, TINY["widths"])), "--blocks", ",".join(map(str, TINY["blocks"]))]
    common = ["--epochs", "1", "--no-amp", "--optimizer", "adamw", "-q", *tiny]
    assert main(["train", "--out", str(tmp_path / "run"), "--data", str(data), *common]) == 0
    data.rename(moved)
    shutil.copytree(moved, other)
    next(p for p in (other / "altar").iterdir()).unlink()
    capsys.readouterr()
    resume = ["train", "--out", str(tmp_path / "run"), "--resume", "-q"]
    assert main(resume) == 2
    assert f"the run's data folder {data} is not there" in capsys.readouterr().err
    assert main([*resume, "--data", str(other)]) == 2
    assert "are not those the run began with: 1 photo removed" in capsys.readouterr().err
    assert main([*resume, "--data", str(moved)]) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"] == str(moved)


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


@pytest.mark.parametrize(
    ("record", "said"),
    [
        ('{"survey": "site list"}', "unknown TrainConfig keys: ['survey']"),
        ("[1, 2]", "must be a JSON object of its fields, got a list"),
        ("null", "must be a JSON object of its fields, got null"),
        ('{"out": "o"}', "lacks the required keys ['data']"),
        (
            '{"data": "d", "out": "o", "split": null}',
            "split: SplitRecipe must be a JSON object of its fields, got null",
        ),
        ('{"data": "d", "out": "o", "epochs": "4"}', "epochs must be a whole number, got '4'"),
        ('{"data": "d", "out": "o", "model": "x"}', "model: ModelConfig must be a JSON object of its fields"),
        ('{"data": "d", "out": "o", "model": {"hidden": "x"}}', "model: ModelConfig: a value of the wrong type"),
        ('{"data": 5, "out": "o"}', "data must be a path, got a number"),
    ],
)
def test_a_config_json_of_another_shape_is_one_line_naming_it(
    record: str, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(record)
    assert main(["train", "--out", str(run), "--resume", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{run / 'config.json'}: " in err and said in err, err


def test_a_width_or_learning_rate_no_machine_can_train_is_refused_as_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Once a traceback at the first step: the allocator's (--widths 100000) or AdamW's float32 overflow (--lr 1e300)."""
    for flags, message in (
        (["--widths", "100000"], "--widths must be from 1 to 1024 channels each, got (100000,)"),
        (["--widths", "8,2048"], "--widths must be from 1 to 1024 channels each"),
        (["--lr", "1e300"], "--lr must be a positive finite number up to 1e+06, got 1e+300"),
        (["--lr", "1e7"], "--lr must be a positive finite number up to 1e+06"),
    ):
        assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "r").exists()
    parser = build_parser()
    assert new_config(parser.parse_args(["train", "--out", "o", "--lr", "1e6", "--widths", "8,1024"]), "d", "o")
