"""The `heritage` commands end to end: help and version, data check and download, evaluate, demo, report,
refused numbers, and what predict, sort and teach say."""

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


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    from heritage_cnn import __version__

    with pytest.raises(SystemExit) as info:
        main(["-V"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"heritage-cnn {__version__}"


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
    """One line, as every other error: argparse put its usage block (four or five lines) before the reason."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and err.startswith(f"heritage {argv[0]}"), err
    assert "--host" not in err and err.endswith(" --help)\n")


def test_a_reader_that_stops_early_is_no_error(tmp_path: Path) -> None:
    """`heritage data check DIR | head` said "heritage: error: Broken pipe" (exit 2) or printed a traceback."""
    code = (
        "import sys\n"
        "from heritage_cnn.cli import main as cli\n"
        "def flood(args):\n"  # stands in for any command printing more than the reader takes
        "    for _ in range(100_000): print('x' * 100)\n"
        "cli.refuse_outputs = flood\n"
        "sys.exit(cli.main(['predict', 'p.jpg']))\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.read(10)
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141 and err == "", err


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


def test_ctrl_c_before_a_command_starts_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C while torch was still being imported (before the command's own handler) printed a traceback."""
    from heritage_cnn.cli import main as cli

    def interrupted(argv: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_run", interrupted)
    assert main(["predict", "p.jpg"]) == 130 and capsys.readouterr().err == "heritage: interrupted\n"


def test_review_names_each_file_it_skipped_as_every_command_does(
    tiny_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """review said only "2 unreadable files skipped (listed in summary.json)"; evaluate and predict name each."""
    from heritage_cnn.inference import review

    record = {
        "flagged": 1,
        "photos": 8,
        "skipped": [{"path": "d/altar/a.jpg", "reason": "truncated"}, {"path": "d/apse/b.jpg", "reason": "empty"}],
        "seconds": {"total": 1.0},
    }
    monkeypatch.setattr(review, "run_review", lambda *args, **kwargs: record)
    assert main(["review", str(tmp_path), "--model", str(tiny_run.checkpoint), "--out", str(tmp_path / "r")]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "heritage: skipped d/altar/a.jpg: truncated",
        "heritage: skipped d/apse/b.jpg: empty",
        "heritage: 2 of 10 file(s) could not be read",
    ]
    assert "2 unreadable files skipped (listed in summary.json)" in out


def test_a_flag_a_command_does_not_take_points_to_that_commands_help(capsys: pytest.CaptureFixture[str]) -> None:
    """The top level said it, pointing at `heritage --help`, which lists no command's options."""
    with pytest.raises(SystemExit) as info:
        main(["data", "check", "DIR", "--foo"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err == (
        "heritage data check: error: unrecognized arguments: --foo (see heritage data check --help)\n"
    )
