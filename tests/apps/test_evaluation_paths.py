"""`evaluate_on` checks its output folder as `heritage evaluate` does, before any work: never inside the data (its
files would be read as a class next time), never a training run's folder (its metrics.json would replace the run's),
never a default in the current folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import file_digest
from heritage_cnn.apps.evaluation import evaluate_on
from heritage_cnn.cli.main import main
from heritage_cnn.data.folders import load_images
from heritage_cnn.models.checkpoint import load_checkpoint

QUIET = {"log": lambda _: None}


@pytest.fixture
def run_copy(tiny_run, tmp_path: Path) -> Path:
    """A copy of the tiny run's folder: its checkpoints, config.json, metrics.json (the epochs), curves."""
    return Path(shutil.copytree(tiny_run.out, tmp_path / "run"))


def test_an_output_inside_the_data_folder_is_refused(tiny_run, synthetic_root: Path, tmp_path: Path) -> None:
    data = Path(shutil.copytree(synthetic_root, tmp_path / "data3"))
    classes = load_images(data).classes
    for out in (data / "eval", data / "altar" / "eval"):
        with pytest.raises(ValueError, match=f"out {out}: inside the data folder {data}") as caught:
            evaluate_on(tiny_run.checkpoint, data, "all", out, **QUIET)
        assert "\n" not in str(caught.value) and not out.exists()
    assert load_images(data).classes == classes  # no class "eval"


def test_a_training_run_folder_is_refused_and_its_metrics_kept(tiny_run, run_copy: Path, synthetic_root) -> None:
    before = {p.name: file_digest(p) for p in run_copy.iterdir() if p.is_file()}
    with pytest.raises(ValueError, match=f"out {run_copy}: a training run's folder") as caught:
        evaluate_on(load_checkpoint(run_copy), synthetic_root, "val", run_copy, **QUIET)
    assert "metrics.json would be replaced" in str(caught.value) and "\n" not in str(caught.value)
    assert {p.name: file_digest(p) for p in run_copy.iterdir() if p.is_file()} == before
    inside = run_copy / "eval"  # a folder of its own inside the run is fine
    assert evaluate_on(load_checkpoint(run_copy), synthetic_root, "val", inside, **QUIET)["accuracy"]["value"] > 0


def test_the_cli_refuses_a_run_folder_in_one_line(run_copy: Path, synthetic_root: Path, capsys) -> None:
    metrics = file_digest(run_copy / "metrics.json")
    args = ["evaluate", "--model", str(run_copy), "--data", str(synthetic_root), "--out", str(run_copy)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"heritage: error: --out {run_copy}: a training run's folder") and err.count("\n") == 1
    assert file_digest(run_copy / "metrics.json") == metrics


def test_out_is_required_and_an_earlier_evaluation_may_be_replaced(
    tiny_run, synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="out: give the folder"):
        evaluate_on(tiny_run.checkpoint, synthetic_root, "val", **QUIET)
    assert list(tmp_path.iterdir()) == []  # nothing written into the current folder
    out = tmp_path / "eval"
    first = evaluate_on(tiny_run.checkpoint, synthetic_root, "val", out, **QUIET)
    assert (out / "metrics.json").exists()  # an evaluation's own metrics.json marks no training run
    assert evaluate_on(tiny_run.checkpoint, synthetic_root, "val", out, **QUIET)["accuracy"] == first["accuracy"]


def test_a_folder_holding_only_a_runs_name_of_file_is_no_run(tiny_run, synthetic_root: Path, tmp_path: Path) -> None:
    """Any folder with a config.json or a curves.png was refused as a training run's, though nothing there would be
    replaced: a run is its weights, or a metrics.json of epochs."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.json").write_text("{}")
    (project / "curves.png").write_bytes(b"\x89PNG")
    assert evaluate_on(tiny_run.checkpoint, synthetic_root, "val", project, **QUIET)["accuracy"]["value"] > 0
    epochs = tmp_path / "epochs"
    epochs.mkdir()
    (epochs / "metrics.json").write_text('[{"epoch": 1}]')
    with pytest.raises(ValueError, match=r"a training run's folder \(it holds metrics\.json\)"):
        evaluate_on(tiny_run.checkpoint, synthetic_root, "val", epochs, **QUIET)


@pytest.fixture
def no_scoring(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What an evaluation scored: a refusal that should come before any scoring finds this empty."""
    from heritage_cnn.apps import evaluation

    scored: list[str] = []
    monkeypatch.setattr(evaluation, "scored_logits", lambda *a, **k: scored.append("scored") or [][0])
    monkeypatch.setattr(evaluation, "predict_logits", lambda *a, **k: scored.append("predicted") or [][0])
    return scored


def test_negatives_without_photos_are_refused_before_anything_is_made(
    tiny_run, synthetic_root: Path, tmp_path: Path, no_scoring: list[str], capsys
) -> None:
    """An empty --negatives folder: refused before the model is loaded, in one line, leaving no --out behind."""
    (tmp_path / "negempty").mkdir()
    out = tmp_path / "n1"
    args = ["evaluate", "--model", str(tiny_run.out), "--data", str(synthetic_root), "--out", str(out)]
    assert main([*args, "--negatives", str(tmp_path / "negempty")]) == 2
    err = capsys.readouterr().err
    assert err == f"heritage: error: --negatives {tmp_path / 'negempty'}: no photos in it\n"
    assert not out.exists() and no_scoring == []
    with pytest.raises(ValueError, match=r"negatives .*negempty: no photos in it"):
        evaluate_on(tiny_run.checkpoint, synthetic_root, "val", out, negatives=tmp_path / "negempty", **QUIET)
    assert not out.exists()


def test_unreadable_negatives_are_named_and_refused_before_the_data_is_scored(
    tiny_run, synthetic_root: Path, tmp_path: Path, no_scoring: list[str], capsys
) -> None:
    bad = tmp_path / "negbad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "n2"
    args = ["evaluate", "--model", str(tiny_run.out), "--data", str(synthetic_root), "--out", str(out)]
    assert main([*args, "--split", "val", "--negatives", str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"heritage: error: --negatives {bad}: no readable photos in it (1 file(s) could ")
    assert f"{bad / 'a.jpg'}: " in captured.err and captured.err.count("\n") == 1
    assert not out.exists() and no_scoring == [] and "excluded" not in captured.out
    for i in range(4):  # the first few named, the rest counted
        (bad / f"b{i}.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"\(5 file\(s\) could not be read: .*; and 2 more\)$"):
        evaluate_on(tiny_run.checkpoint, synthetic_root, "val", out, negatives=bad, **QUIET)
    assert not out.exists() and no_scoring == []
