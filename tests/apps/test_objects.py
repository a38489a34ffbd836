"""The workflows load the model once and work out the data folder's layout once, then hand the objects on."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

import heritage_cnn
from heritage_cnn.apps.evaluation import evaluate_on
from heritage_cnn.apps.pipeline import run_report
from heritage_cnn.apps.serve import create_app
from heritage_cnn.cli.main import main
from heritage_cnn.data import folders
from heritage_cnn.models import checkpoint as checkpoints

APPS = ("heritage_cnn.apps.", "heritage_cnn.cli.")


def count_calls(monkeypatch: pytest.MonkeyPatch, home: object, name: str) -> Counter[str]:
    """Calls of `home.name` from anywhere in the package, by calling module: every module that imported the
    function gets a counting wrapper in its place (all modules are imported first, so lazy imports find it too)."""
    for module in pkgutil.walk_packages(heritage_cnn.__path__, "heritage_cnn."):
        if not module.name.endswith("__main__"):  # that one runs the command
            importlib.import_module(module.name)
    original: Callable = getattr(home, name)
    calls: Counter[str] = Counter()

    def counted(*args, **kwargs):
        calls[sys._getframe(1).f_globals["__name__"]] += 1
        return original(*args, **kwargs)

    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("heritage_cnn") and getattr(module, name, None) is original:
            monkeypatch.setattr(module, name, counted)
    return calls


def in_apps(calls: Counter[str]) -> int:
    return sum(n for module, n in calls.items() if module.startswith(APPS))


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> tuple[Counter[str], Counter[str]]:
    loads = count_calls(monkeypatch, checkpoints, "load_checkpoint")
    layouts = count_calls(monkeypatch, folders, "find_layout")
    return loads, layouts


def test_a_report_loads_the_model_once_and_finds_the_layout_once(
    tiny_run, kaggle_root: Path, tmp_path: Path, counts
) -> None:
    """On the Kaggle layout the report evaluates both splits, looks inside, draws and writes the page."""
    loads, layouts = counts
    page = run_report(str(tiny_run.checkpoint), str(kaggle_root), tmp_path, log=lambda _: None)
    assert page.exists() and (tmp_path / "eval-val" / "metrics.json").exists()
    assert (tmp_path / "eval-test" / "metrics.json").exists()
    assert sum(loads.values()) == 1, loads
    assert in_apps(layouts) == 1, layouts


def test_evaluate_loads_the_model_once_and_finds_the_layout_once(
    tiny_run, kaggle_root: Path, tmp_path: Path, counts
) -> None:
    loads, layouts = counts
    evaluate_on(str(tiny_run.checkpoint), kaggle_root, out=tmp_path, log=lambda _: None)
    assert sum(loads.values()) == 1, loads
    assert in_apps(layouts) == 1, layouts


def test_a_loaded_model_is_used_as_it_is(tiny_run, kaggle_root: Path, tmp_path: Path, counts, classifier) -> None:
    from fastapi.testclient import TestClient

    loads, _ = counts
    checkpoint = classifier.checkpoint
    metrics = evaluate_on(checkpoint, kaggle_root, out=tmp_path, log=lambda _: None)
    assert metrics["n_images"] == 60
    app = create_app(classifier, draw_class_images=False)
    info = TestClient(app, base_url="http://127.0.0.1").get("/api/info").json()
    assert info["model"] == Path(str(tiny_run.checkpoint)).name and app.state.open_set is classifier.open_set
    assert sum(loads.values()) == 0, loads
    with pytest.raises(ValueError, match="none_threshold"):
        create_app(classifier, none_threshold=1.0)


def test_the_cli_resolves_the_model_once(tiny_run, synthetic_root: Path, tmp_path: Path, counts) -> None:
    loads, _ = counts
    model = str(tiny_run.checkpoint)
    commands = [
        ["evaluate", "--model", model, "--data", str(synthetic_root), "--out", str(tmp_path / "e")],
        ["visualize", "kernels", "--model", model, "--out", str(tmp_path / "k")],
        ["generate", "--class", "altar", "--n", "1", "--steps", "2", "--model", model, "--out", str(tmp_path / "g")],
    ]
    for command in commands:
        loads.clear()
        assert main(command) == 0
        assert sum(loads.values()) == 1, (command[0], loads)
