from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from heritage_cnn import cli, datacheck
from heritage_cnn.cli.recipe import new_config

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
        cli.main([*command, "--help"])
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
    assert cli.main(["data", "check", str(root), "--json", str(tmp_path / "check.json")]) == 0
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
    monkeypatch.setattr(datacheck, "_reachable", lambda: "Name or service not known")
    started = time.perf_counter()
    assert cli.main(["data", "download", "--dest", str(tmp_path / "d")]) == 2
    assert time.perf_counter() - started < 5
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "by hand" in err and "train/<class>" in err


def test_missing_data_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv("HERITAGE_DATA", raising=False)
    assert cli.main(["train", "--out", str(tmp_path)]) == 2
    assert "heritage data download" in capsys.readouterr().err
    assert cli.main(["evaluate", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    assert "nowhere: no such folder" in capsys.readouterr().err
    assert cli.main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--epochs", "0"]) == 2
    assert "--epochs must be at least 1" in capsys.readouterr().err


def test_evaluate_command_writes_figures_and_names_unknown_classes(
    tiny_run, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(tiny_run.checkpoint)
    assert (
        cli.main(
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
    assert cli.main(["evaluate", "--model", model, "--data", str(subset), "--out", str(tmp_path / "sub"), "--tta"]) == 0
    assert "no images of 8 model class(es)" in capsys.readouterr().out
    (subset / "castle").mkdir()
    (subset / "castle" / "a.png").write_bytes((synthetic_root / "apse" / "000.png").read_bytes())
    assert cli.main(["evaluate", "--model", model, "--data", str(subset), "--out", str(tmp_path / "x")]) == 2
    assert "unknown ['castle']" in capsys.readouterr().err


def test_demo_runs_the_whole_pipeline(kaggle_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    args = [
        "demo",
        "--data",
        str(kaggle_root),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--widths",
        "8,16",
        "--batch-size",
        "32",
    ]
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    assert "== 3/3 evaluate" in text and str(out.resolve()) in text
    for name in (
        "data_check.json",
        "train/last.safetensors",
        "train/curves.png",
        "eval-val/confusion_matrix.png",
        "eval-test/metrics.md",
    ):
        assert (out / name).exists(), name


def test_train_flags_become_the_recipe_and_defaults_stay_the_shipped_recipe() -> None:
    from heritage_cnn.train import TrainConfig

    parser = cli.build_parser()
    flags = "--ema 0.998 --cutmix 1 --mixup 0.2 --balanced-loss --zoom 0.3 --shift 0.05 --dropout 0.1 --warmup 2"
    args = parser.parse_args(["train", "--out", "o", *flags.split(), "--batch-size", "64"])
    two_views = parser.parse_args(["train", "--out", "o", "--consistency", "12"])
    assert new_config(two_views, "d", "o").consistency_weight == 12
    config = new_config(args, "d", "o")
    assert (config.ema_decay, config.cutmix_alpha, config.mixup_alpha, config.balanced_loss) == (0.998, 1, 0.2, True)
    assert (config.augment.zoom, config.augment.shift, config.model.dropout) == (0.3, 0.05, 0.1)
    assert (config.warmup_epochs, config.batch_size) == (2, 64)
    plain = new_config(parser.parse_args(["train", "--out", "o"]), "d", "o")
    assert plain == TrainConfig(data="d", out="o")


def test_widths_keep_the_default_depth_when_the_stage_count_matches() -> None:
    from heritage_cnn.model import ModelConfig

    parser = cli.build_parser()

    def model_of(*flags: str) -> ModelConfig:
        return new_config(parser.parse_args(["train", "--out", "o", *flags]), "d", "o").model

    default_blocks = ModelConfig().blocks
    assert model_of("--widths", "32,64,128,256").blocks == default_blocks  # four stages: the default depth
    assert model_of("--widths", "8,16").blocks == (1, 1)  # another stage count: one block each
    assert model_of("--widths", "8,16", "--blocks", "2,1").blocks == (2, 1)
    assert model_of("--blocks", "1,1,1,1").blocks == (1, 1, 1, 1)
