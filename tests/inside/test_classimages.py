"""The web page's class images (inside/classimages.py): packaged for the shipped models, drawn once for others."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import CLASSES
from heritage_cnn.base.io import file_sha256
from heritage_cnn.inference.classifier import Classifier
from heritage_cnn.inside.classimages import (
    PACKAGED,
    PACKAGED_FAST,
    Gallery,
    drawn_for,
    find_class_images,
    model_key,
    packaged_for,
)
from heritage_cnn.models.checkpoint import load_checkpoint


def test_class_images_absent_or_missing(tmp_path: Path) -> None:
    assert "heritage generate --all" in find_class_images(tmp_path).note
    nothing = find_class_images(None)  # only a path given explicitly: never the repository's docs/
    assert nothing.files == {} and nothing.grid is None and nothing.state == "none"
    with pytest.raises(ValueError, match="no such folder"):
        find_class_images(tmp_path / "missing")


def test_shipped_model_class_images_are_packaged() -> None:
    """The shipped models' class images come with the package (no flag, no drawing): one folder drawn by the
    default ensemble's member 0, one by the fast network; the other members get their own."""
    ensemble = Classifier.load(None).checkpoint
    fast = load_checkpoint("fast")
    assert model_key(fast) == file_sha256(fast.path)
    assert packaged_for(model_key(fast)) == PACKAGED_FAST and drawn_for(PACKAGED_FAST, model_key(fast))
    assert packaged_for(model_key(ensemble.member(0))) == PACKAGED
    assert packaged_for(model_key(ensemble.member(1))) is None
    for checkpoint in (fast, ensemble.member(0)):
        images = Gallery(checkpoint, draw=False).current()
        assert images.state == "ready" and images.grid == "class_images.png"
        assert sorted(images.per_class) == sorted(checkpoint.classes)
    assert Gallery(ensemble.member(1), draw=False).current().state == "none"
    for folder in (PACKAGED, PACKAGED_FAST):
        assert sum(p.stat().st_size for p in folder.iterdir()) < 400_000


def test_other_models_draw_class_images_once_into_the_cache(tiny_run, tmp_path: Path, monkeypatch) -> None:
    checkpoint = load_checkpoint(tiny_run.checkpoint)
    first = Gallery(checkpoint, cache_dir=tmp_path, steps=3)
    assert first.current().state == "drawing" and "drawing" in first.current().note
    first.thread.join(120)
    images = first.current()
    assert images.state == "ready", images.note
    folder = tmp_path / "class-images" / file_sha256(tiny_run.checkpoint)[:16]
    assert sorted(images.per_class) == sorted(CLASSES) and all(p.parent == folder for p in images.files.values())
    assert not [p for p in tmp_path.rglob(".*")]  # no temporary folder or file left

    def never(*args, **kwargs):
        raise AssertionError("drew again")

    monkeypatch.setattr("heritage_cnn.inside.synthesis.draw.draw_classes", never)
    again = Gallery(checkpoint, cache_dir=tmp_path)
    assert again.thread is None and again.current().files == images.files
    manifest = folder / "class_images.json"  # drawn for other weights: not shown, drawn again
    manifest.write_text(manifest.read_text().replace('"weights_sha256": "', '"weights_sha256": "0'))
    assert Gallery(checkpoint, cache_dir=tmp_path, draw=False).current().state == "none"
    failing = Gallery(checkpoint, cache_dir=tmp_path)
    failing.thread.join(60)
    assert failing.current().state == "failed" and "drew again" in failing.current().note
