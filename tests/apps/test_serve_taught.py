"""`heritage serve` with a model `heritage teach` wrote: /api/info and the page say what is known of its accuracy
(never its parent's figure as its own) and count its classes (eleven here, not "the ten")."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from _serve_helpers import cards, class_images, open_page, settled
from fastapi.testclient import TestClient
from PIL import Image

from conftest import cli_server
from heritage_cnn.apps.serve import create_app
from heritage_cnn.inference.teach_photos import MIN_NEW_PHOTOS, read_new_classes
from heritage_cnn.models.checkpoint import checkpoint_files, load_checkpoint
from heritage_cnn.training.teach import teach


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return class_images(tmp_path_factory.mktemp("class_images"))


@pytest.fixture(scope="module")
def eleven(nine, new_folder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The nine-class parent taught `vault` and `portal` without --data: eleven classes, no accuracy measured."""
    from conftest import _photos

    root = tmp_path_factory.mktemp("eleven")
    shutil.copytree(new_folder, root / "new")
    _photos(root / "new" / "portal", 5, MIN_NEW_PHOTOS, seed=21)
    parent = load_checkpoint(nine)
    return teach(parent, read_new_classes(root / "new", parent.classes), root / "taught", log=lambda _: None).path


def _info(model: Path, gallery: Path) -> dict:
    client = TestClient(create_app(model, gallery, draw_class_images=False), base_url="http://127.0.0.1")
    return client.get("/api/info").json()


def _edited(model: Path, folder: Path, **fields) -> Path:
    """A copy of the pair at `model` with `fields` set in its JSON (`taught` ones merged into its record)."""
    weights, meta = checkpoint_files(model)
    shutil.copy(weights, folder / "edited.safetensors")
    record = json.loads(meta.read_text(encoding="utf-8"))
    record["taught"] |= fields.pop("taught", {})
    (folder / "edited.json").write_text(json.dumps(record | fields), encoding="utf-8")
    return folder / "edited.safetensors"


def test_info_gives_a_taught_model_no_accuracy_of_its_parent(nine, eleven, gallery, tmp_path) -> None:
    """The QA case: /api/info said 94.5%, the parent's validation accuracy, for every model taught from it."""
    parent = load_checkpoint(nine)
    assert _info(nine, gallery)["val_accuracy"] == parent.info["validation"]["val_accuracy"]  # its own, measured
    info = _info(eleven, gallery)
    assert len(info["classes"]) == 11 and info["val_accuracy"] is None
    assert info["taught"] == {
        "parent": nine.name,
        "classes_added": ["portal", "vault"],
        "known_photos": None,
        "known_accuracy_before": None,
        "known_accuracy": None,
    }
    # a model taught before the fix carries its parent's figure at the top of its JSON: still not its own
    older = _edited(eleven, tmp_path, validation=parent.info["validation"])
    assert _info(older, gallery)["val_accuracy"] is None
    # taught with --data: the known classes measured on the parent's validation photos after teaching
    cost = {"photos": 40, "parent": 0.9, "taught": 0.875, "new_answers": 0.0, "offset": 0.0, "bound": None}
    (tmp_path / "measured").mkdir()
    measured = _info(_edited(eleven, tmp_path / "measured", taught={"known_cost": cost}), gallery)
    assert measured["val_accuracy"] is None
    assert {k: measured["taught"][k] for k in ("known_photos", "known_accuracy_before", "known_accuracy")} == {
        "known_photos": 40,
        "known_accuracy_before": 0.9,
        "known_accuracy": 0.875,
    }


@pytest.fixture(scope="module")
def server(eleven, gallery):
    with cli_server("--model", str(eleven), "--class-images", str(gallery)) as served:
        yield served


def test_the_page_counts_the_models_classes(server, browser, tmp_path: Path) -> None:
    """The QA case: with a 12-class model the page said "not one of the ten elements", "Closest of the ten"."""
    from selenium.webdriver.common.by import By

    wait = open_page(browser, server[0])
    limits = browser.find_element(By.ID, "limits").text
    assert "not one of the eleven elements" in limits and "ten" not in limits
    photo = tmp_path / "static.png"  # uniform noise: none of the classes, whatever its score
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(photo)
    browser.find_element(By.ID, "file").send_keys(str(photo))
    wait.until(lambda d: settled(d, 1))
    card = cards(browser)[0]
    assert card.find_element(By.CSS_SELECTOR, ".verdict").text.startswith("not one of the eleven elements")
    assert card.find_element(By.CSS_SELECTOR, ".closest").text.startswith("Closest of the eleven: ")
    assert "not one of the eleven elements (" in browser.find_element(By.ID, "status").text


def test_the_page_claims_no_accuracy_of_the_parent(server, eleven, browser) -> None:
    """The QA case: "12 classes, 94.5% right on its validation photos", the parent's figure."""
    from selenium.webdriver.common.by import By

    open_page(browser, server[0])
    model = browser.find_element(By.ID, "model").text
    assert model.startswith(f"model {eleven.name}: 11 classes, taught from ") and "(2 classes added)" in model
    assert "not measured after teaching" in model and "right on its validation photos" not in model
    measured = browser.execute_script(
        "return accuracyText({val_accuracy: 0.945, classes: new Array(12), taught: {parent: 'fast.safetensors', "
        "classes_added: ['a', 'b'], known_photos: 2026, known_accuracy_before: 0.945, known_accuracy: 0.941}})"
    )
    assert measured == (
        ", taught from fast.safetensors (2 classes added); its 10 known classes 94.1% right on the parent's 2026 "
        "validation photos after teaching (94.5% before)"
    )
