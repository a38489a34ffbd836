"""A run's data: the training folder decoded once into uint8 tensors, limited per class if asked, and split
into training and validation sets (duplicate-aware, stratified: heritage_cnn.data.split)."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from heritage_cnn.data.folders import DatasetError, ImageSet, find_layout, folder_key, load_images
from heritage_cnn.data.split import make_split
from heritage_cnn.training.config import Log, TrainConfig


def stratified_limit(images: ImageSet, per_class: int, seed: int) -> ImageSet:
    """At most `per_class` images of each class, chosen with a fixed seed."""
    rng = np.random.default_rng(seed)
    labels = images.labels.numpy()
    keep = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(len(images.classes))]
    return images.subset(np.sort(np.concatenate(keep)))


# The last folder prepared in this process: `heritage demo` trains, then rebuilds the same validation split for each
# model it evaluates, and each rebuild would decode the folder again (benchmarks/recipes.md, "The quick recipe on
# an AVX2 CPU", reusing the prepared data). Keyed by the folder's file list (paths, sizes, modification times) and
# the split's recipe; one entry, so memory stays one folder's.
_LAST_PREPARED: dict[str, tuple[ImageSet, ImageSet, ImageSet]] = {}


def prepare_data(config: TrainConfig, log: Log = print) -> tuple[ImageSet, ImageSet, ImageSet]:
    """Decode the training folder once; return (all, train, validation)."""
    layout = find_layout(config.data)
    limit = (config.limit_per_class, config.seed) if config.limit_per_class else None
    key = f"{folder_key(layout.train)} {asdict(config.split)} {limit}"
    if key not in _LAST_PREPARED:
        _LAST_PREPARED.clear()
        _LAST_PREPARED[key] = _decode_and_split(config, layout.train)
    images, train_set, val_set = _LAST_PREPARED[key]
    for path, reason in images.skipped[:10]:
        log(f"skipped {os.fsencode(path).decode('utf-8', 'replace')}: {reason}")
    if images.skipped:
        log(
            f"skipped {len(images.skipped)} unreadable file(s) or folder(s); all listed in skipped.json in the run folder"
        )
    return images, train_set, val_set


def _decode_and_split(config: TrainConfig, folder: Path) -> tuple[ImageSet, ImageSet, ImageSet]:
    images = load_images(folder, cache_dir=config.cache_dir, progress=config.progress, require_every_class=True)
    skipped = images.skipped
    if config.limit_per_class:
        images = stratified_limit(images, config.limit_per_class, config.seed)
        images.skipped = skipped
    try:
        train_set, val_set = make_split(images, config.split)
    except DatasetError as error:
        raise DatasetError(f"{folder}: {error}") from None
    return images, train_set, val_set
