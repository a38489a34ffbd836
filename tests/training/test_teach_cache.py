"""`heritage teach --cache-dir`: the replayed photos' features are computed once for repeated teaches, and a cache
file is used only when it holds exactly those features."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from conftest import NEW, NEW_LABEL, _nine_data, _photos, train_nine
from heritage_cnn.cli.main import main
from heritage_cnn.data.folders import load_images
from heritage_cnn.inference.classifier import Classifier
from heritage_cnn.inference.teach_photos import read_new_classes
from heritage_cnn.models.checkpoint import load_checkpoint
from heritage_cnn.models.openset import POOLED
from heritage_cnn.training import teach_cache
from heritage_cnn.training.teach import replay_split, teach
from heritage_cnn.training.teach_fit import FitConfig

FAST = FitConfig(hidden_steps=30)


@pytest.fixture(scope="module")
def parent(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_nine(synthetic_root, tmp_path_factory, epochs=3)  # the features, not the answers, are tested


@pytest.fixture
def setting(parent: Path, synthetic_root: Path, tmp_path: Path):
    """The parent, its replayed and validation photos (its data folder), and 20 photos of a new class."""
    checkpoint = load_checkpoint(parent)
    replayed, held_out = replay_split(load_images(_nine_data(synthetic_root, tmp_path)), checkpoint)
    new = tmp_path / "new"
    _photos(new / NEW, NEW_LABEL, 20, seed=11)
    return checkpoint, replayed, held_out, read_new_classes(new, checkpoint.classes)


def _heads(path: Path) -> list[torch.Tensor]:
    head = load_checkpoint(path).model.head
    return [head.fc1.weight, head.fc2.weight]


def test_repeated_teaches_compute_the_features_once_and_learn_the_same(setting, tmp_path, monkeypatch) -> None:
    checkpoint, replayed, _, photos = setting
    passes = []
    compute = teach_cache.network_features

    def counted(classifier, images, layer):
        passes.append(len(images))
        return compute(classifier, images, layer)

    monkeypatch.setattr(teach_cache, "network_features", counted)
    cache = tmp_path / "cache"
    plain = teach(checkpoint, photos, tmp_path / "plain", replayed, FAST, log=lambda _: None)
    first = teach(checkpoint, photos, tmp_path / "first", replayed, FAST, log=lambda _: None, cache_dir=cache)
    lines: list[str] = []
    second = teach(checkpoint, photos, tmp_path / "second", replayed, FAST, log=lines.append, cache_dir=cache)
    assert passes == [2 * len(replayed), 2 * len(replayed)]  # the plain run's and the first cached run's, no more
    assert any("read from" in line for line in lines)
    for a, b, c in zip(_heads(plain.path), _heads(first.path), _heads(second.path), strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)  # the cache changes the time, not the model
    assert len(list(cache.glob("teach-features-*.safetensors"))) == 1


def test_the_key_follows_the_convolutions_and_the_photos_not_the_head(setting) -> None:
    checkpoint, replayed, _, _ = setting
    images = replayed.images[:8]
    key = teach_cache.cache_key(Classifier(checkpoint, bf16=False, tta="none"), images, POOLED)
    other_head = copy.deepcopy(checkpoint)
    with torch.no_grad():
        other_head.model.head.fc2.weight.add_(1.0)
    assert teach_cache.cache_key(Classifier(other_head, bf16=False, tta="none"), images, POOLED) == key
    with torch.no_grad():
        next(p for n, p in other_head.model.named_parameters() if not n.startswith("head.")).add_(1e-3)
    assert teach_cache.cache_key(Classifier(other_head, bf16=False, tta="none"), images, POOLED) != key
    assert teach_cache.cache_key(Classifier(checkpoint, bf16=False, tta="none"), images.flip(3), POOLED) != key


@pytest.mark.parametrize("damage", ["truncate", "nan"])
def test_a_damaged_cache_file_is_computed_again_never_used(setting, tmp_path, damage) -> None:
    checkpoint, replayed, _, _ = setting
    classifier = Classifier(checkpoint, bf16=False, tta="none")
    images = replayed.images[:16]
    good = teach_cache.cached_features(classifier, images, POOLED, tmp_path, log=lambda _: None)
    (path,) = tmp_path.glob("teach-features-*.safetensors")
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    else:
        from heritage_cnn.base.io import save_tensors

        save_tensors(path, {teach_cache.TENSOR: torch.full_like(good, float("nan"))}, {"key": path.stem.split("-")[-1]})
    lines: list[str] = []
    again = teach_cache.cached_features(classifier, images, POOLED, tmp_path, log=lines.append)
    assert torch.equal(again, good)
    assert len(lines) == 1 and str(path) in lines[0] and "computing them again" in lines[0]
    assert torch.equal(teach_cache.cached_features(classifier, images, POOLED, tmp_path, log=lambda _: None), good)


def test_the_command_refuses_a_cache_without_data(parent, tmp_path, capsys) -> None:
    new = tmp_path / "new"
    _photos(new / NEW, NEW_LABEL, 20, seed=11)
    code = main(["teach", str(new), "--model", str(parent), "--out", str(tmp_path / "m"), "--cache-dir", "c"])
    assert code == 2
    assert "--cache-dir" in capsys.readouterr().err and not (tmp_path / "c").exists()


def test_a_cache_file_larger_than_its_features_is_not_read(setting, tmp_path) -> None:
    checkpoint, replayed, _, _ = setting
    classifier = Classifier(checkpoint, bf16=False, tta="none")
    images = replayed.images[:16]
    good = teach_cache.cached_features(classifier, images, POOLED, tmp_path, log=lambda _: None)
    (path,) = tmp_path.glob("teach-features-*.safetensors")
    with path.open("ab") as handle:
        handle.write(b"\0" * (teach_cache.HEADER_ROOM + path.stat().st_size))
    lines: list[str] = []
    assert torch.equal(teach_cache.cached_features(classifier, images, POOLED, tmp_path, log=lines.append), good)
    assert len(lines) == 1 and "larger than" in lines[0]
