"""The validation split (heritage_cnn.data.split): near-duplicates on one side, stratified, reproducible."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from heritage_cnn.data import split
from heritage_cnn.data.folders import DatasetError


def test_near_duplicates_stay_on_one_side() -> None:
    # 200 distinct random scenes (smooth noise), ten classes, and a brightened near-copy of every 4th.
    rng = torch.Generator().manual_seed(0)
    scenes = torch.nn.functional.interpolate(torch.rand(200, 3, 8, 8, generator=rng), size=64, mode="bilinear")
    originals = (scenes * 255).to(torch.uint8)
    twins = (originals[::4].int() + 6).clamp(0, 255).to(torch.uint8)
    images = torch.cat([originals, twins])
    labels = np.concatenate([np.arange(200) % 10, (np.arange(200) % 10)[::4]])
    groups = split.group_near_duplicates(split.perceptual_hashes(images), 4)
    n = len(originals)
    for k, original in enumerate(range(0, n, 4)):
        assert groups[original] == groups[n + k]
    assert len(np.unique(groups)) >= 195  # distinct scenes stay apart
    train_idx, val_idx = split.split_train_val(labels, groups, 0.2, seed=0)
    assert not set(groups[train_idx]) & set(groups[val_idx])
    assert len(train_idx) + len(val_idx) == len(images)
    # Stratified: every class is on both sides, in roughly the global proportion (25 per class).
    val_counts = np.bincount(labels[val_idx], minlength=10)
    assert val_counts.min() >= 3 and val_counts.max() <= 8
    again = split.split_train_val(labels, groups, 0.2, seed=0)
    assert np.array_equal(again[1], val_idx)
    other = split.split_train_val(labels, groups, 0.2, seed=1)
    assert not np.array_equal(other[1], val_idx)


def test_a_split_needs_enough_photos_in_some_class() -> None:
    labels = np.repeat(np.arange(10), 4)  # four photos a class: one fold of five cannot be stratified
    with pytest.raises(DatasetError, match=r"1/5 \(val_fraction 0.2\) needs at least 5 photos .* has 4"):
        split.split_train_val(labels, np.arange(40), 0.2, seed=0)
    train_idx, val_idx = split.split_train_val(labels, np.arange(40), 0.25, seed=0)  # four folds: one each
    assert len(val_idx) == 10 and len(train_idx) == 30


def test_hamming_pairs_counts_bits() -> None:
    hashes = np.array([0b0000, 0b0011, 0b1111, 0b0001], dtype=np.uint64)
    pairs = {tuple(p) for p in split.hamming_pairs(hashes, 1).tolist()}
    assert pairs == {(0, 3), (1, 3)}


def test_hashes_are_computed_once_per_set_and_subsets_take_theirs(monkeypatch: pytest.MonkeyPatch) -> None:
    from heritage_cnn.data.folders import ImageSet

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 64, 64), dtype=torch.uint8, generator=generator)
    photos = ImageSet(images, torch.zeros(6, dtype=torch.long), [str(i) for i in range(6)], ["a"])
    expected = split.perceptual_hashes(images)
    calls = []
    real = split.perceptual_hashes
    monkeypatch.setattr(split, "perceptual_hashes", lambda x: calls.append(len(x)) or real(x))
    assert np.array_equal(split.set_hashes(photos), expected) and calls == [6]
    assert split.set_hashes(photos) is photos.hashes and calls == [6]
    part = photos.subset([4, 1])
    assert np.array_equal(split.set_hashes(part), expected[[4, 1]]) and calls == [6]
