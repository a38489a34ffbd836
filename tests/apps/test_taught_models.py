"""A taught model (`heritage teach`) through the commands that rebuild its split and report on it: its classes are its
parent's followed by the ones it was taught, so its class list is not the folders' alphabetical order.

The model here is taught two classes that sort among its parent's (`arch` before `bell_tower`, `rose window` before
`stained_glass`): an evaluation that compared class lists in order refused it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import CLASSES, NEW, NEW_LABEL, _photos, draw
from heritage_cnn.apps import pipeline
from heritage_cnn.apps.evaluation import evaluate_on
from heritage_cnn.base.io import read_json
from heritage_cnn.cli.main import main
from heritage_cnn.inference.teach_photos import MIN_NEW_PHOTOS, read_new_classes
from heritage_cnn.models.checkpoint import load_checkpoint
from heritage_cnn.training.teach import teach

ARCH, ROSE = "arch", "rose window"  # taught: each sorts before some of the parent's classes
EXTRA = 6  # photos of each taught class in the data folder that the model was not taught


@pytest.fixture(scope="module")
def taught(nine: Path, synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a model taught ARCH and ROSE from `nine`, a data folder: the parent's training photos and a folder for each
    taught class holding the photos it was taught and EXTRA it was not)."""
    root = tmp_path_factory.mktemp("taught")
    new = root / "new"
    for name, label, seed in ((ARCH, NEW_LABEL, 11), (ROSE, len(CLASSES), 12)):
        _photos(new / name, label, MIN_NEW_PHOTOS, seed=seed)
    parent = load_checkpoint(nine)
    teach(parent, read_new_classes(new, parent.classes), root / "model", log=lambda _: None)
    data = root / "data"
    shutil.copytree(synthetic_root, data, ignore=shutil.ignore_patterns(NEW))
    for name, label, seed in ((ARCH, NEW_LABEL, 21), (ROSE, len(CLASSES), 22)):
        shutil.copytree(new / name, data / name)
        rng = np.random.default_rng(seed)
        for i in range(EXTRA):
            Image.fromarray(draw(label, rng)).save(data / name / f"unseen_{i}.png")
    return root / "model.safetensors", data


def _relative(paths: list[str]) -> set[str]:
    return {f"{Path(p).parent.name}/{Path(p).name}" for p in paths}


def test_the_split_of_a_taught_model_is_its_parents_labelled_in_its_order(nine: Path, taught) -> None:
    """`evaluate --split val` and `data none-fit` rebuild the split: the parent run's split of its own classes, the
    taught classes' photos on the side the model's record puts them, every label the model's index of the folder."""
    from heritage_cnn.apps.evaluation import rebuilt_split, run_classes  # here: the other tests run without them

    model, data = taught
    child = load_checkpoint(model)
    parent = load_checkpoint(nine)
    assert child.classes == [*parent.classes, ARCH, ROSE] and child.classes != sorted(child.classes)
    assert run_classes(child) == parent.classes
    train, val, _ = rebuilt_split(child, data)
    for side in (train, val):
        assert side.classes == child.classes
        assert [child.classes[k] for k in side.labels.tolist()] == [Path(p).parent.name for p in side.paths]
    recorded = read_json(Path(nine).parent / "split.json")  # the parent's run: the split it trained on
    own = [p for p in val.paths if Path(p).parent.name in parent.classes]
    assert _relative(own) == _relative(recorded["val_paths"])
    taught_val = [Path(p).name for p in val.paths if Path(p).parent.name in (ARCH, ROSE)]
    assert sorted(taught_val) == sorted([f"unseen_{i}.png" for i in range(EXTRA)] * 2)  # never a photo it learned
    assert sum(Path(p).parent.name == ARCH for p in train.paths) == MIN_NEW_PHOTOS


def test_evaluate_val_and_none_fit_take_a_taught_model(taught, tmp_path: Path) -> None:
    model, data = taught
    metrics = evaluate_on(str(model), data, split="val", out=tmp_path / "val", log=lambda _: None)
    assert [row["class"] for row in metrics["per_class"]] == [*load_checkpoint(model).display_names]
    support = {row["class"]: row["support"] for row in metrics["per_class"]}
    assert support[ARCH] == support[ROSE] == EXTRA  # the photos of its taught classes it did not learn
    out = tmp_path / "fitted"
    assert main(["data", "none-fit", "--model", str(model), "--data", str(data), "--out", str(out)]) == 0
    fitted = load_checkpoint(out)
    assert fitted.classes == load_checkpoint(model).classes and fitted.open_set is not None


def test_the_report_says_the_model_was_taught_and_whose_curves_it_shows(nine: Path, taught, tmp_path, monkeypatch):
    """The taught model carries its parent's epochs: the page names the parent and the classes added, and labels the
    curves as the training before teaching, not the taught model's own."""
    monkeypatch.setattr(pipeline, "FIGURE_STEPS", ())  # the evaluation and the page are what is tested
    model, data = taught
    page = pipeline.run_report(str(model), str(data), tmp_path, log=lambda _: None).read_text()
    generation = json.loads(Path(nine).with_suffix(".json").read_text())["generation"]
    parent = f"{Path(nine).name} (generation {generation})"
    training = page[page.index("<section id='training'>") : page.index("<section id='eval-val'>")]
    assert f"taught from {parent} by heritage teach, which added 2 classes: {ARCH}, {ROSE}" in training
    assert f"(from {2 * MIN_NEW_PHOTOS} photos)" in training
    assert f"Before teaching, the training of {parent}: loss and accuracy per epoch (" in training
    assert "<figcaption>Loss and accuracy per epoch" not in page  # never as the taught model's own
    header = page[: page.index("<nav")]
    assert f"taught from {parent}" in header and "trained 8 epochs" not in header


def test_none_of_these_texts_count_the_models_classes(taught, tmp_path: Path, monkeypatch) -> None:
    """Eleven classes: the open-set table, the ROC and the report's captions say so, never "the ten"."""
    from heritage_cnn.base import figures

    titles: list[str] = []
    save = figures.save_figure

    def keep_titles(fig, path, *args, **kwargs):
        titles.extend(f"{ax.get_title()} / {ax.get_ylabel()}" for ax in fig.axes)
        return save(fig, path, *args, **kwargs)

    monkeypatch.setattr(figures, "save_figure", keep_titles)
    model, data = taught
    negatives = tmp_path / "none"
    negatives.mkdir()
    rng = np.random.default_rng(3)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(negatives / f"{i}.png")
    out = tmp_path / "report" / "eval-val"
    evaluate_on(str(model), data, split="val", out=out, negatives=negatives, log=lambda _: None)
    table = (out / "open_set.md").read_text()
    assert "| photos of the 11 classes called none |" in table
    assert "| AUROC (the 11 classes against the none-photos) |" in table and "the ten" not in table
    roc = [title for title in titles if title.startswith("ROC")]
    assert roc == ["ROC: the 11 classes against none of them / photos of the 11 classes kept"]
    from heritage_cnn.apps.report import build_html_report

    page = build_html_report(out.parent, out.parent / "index.html", load_checkpoint(model)).read_text()
    section = page[page.index("<h3>None of these</h3>") :]
    assert "looks like one of the 11 classes" in section and "the ten" not in section
