"""A run's data: the training folder decoded once into uint8 tensors, limited per class if asked, and split
into training and validation sets (duplicate-aware, stratified: heritage_cnn.data.split); and the photos of none
of the classes that outlier exposure shows it (`--outliers`)."""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from heritage_cnn.base.io import file_sha256
from heritage_cnn.base.names import first_few, shown
from heritage_cnn.data.folders import (
    DatasetError,
    ImageSet,
    class_folders,
    find_layout,
    folder_key,
    load_images,
    reused,
)
from heritage_cnn.data.relabel import applied, apply_relabel, read_relabel
from heritage_cnn.data.split import make_split
from heritage_cnn.inference.openset_eval import load_negatives
from heritage_cnn.models.metadata import MAX_CLASSES, class_name_problem
from heritage_cnn.training.config import Log, TrainConfig

# why a row that moves a photo was not applied, in a run's log (`relabel.applied`'s counts)
_NOT_APPLIED = {
    "unreadable": "unreadable",
    "limited_out": "left out by --limit-per-class",
    "not_read": "not among the photos read",
}


def stratified_limit(images: ImageSet, per_class: int, seed: int) -> ImageSet:
    """At most `per_class` images of each class, chosen with a fixed seed."""
    rng = np.random.default_rng(seed)
    labels = images.labels.numpy()
    keep = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(len(images.classes))]
    return images.subset(np.sort(np.concatenate(keep)))


def check_class_folders(folder: str | Path) -> None:
    """Refuse, before a run folder is made or any photo decoded (`loop.train`), class folders a trained model could
    not have: a name its checkpoint would be refused for when loaded (`class_name_problem`), or fewer than 2 (or
    more than MAX_CLASSES) of them."""
    found = class_folders(folder)
    for path in found:
        problem = class_name_problem(path.name)
        if problem:
            raise DatasetError(
                f"{shown(path)}: the class folder's name {problem}: rename it (class names become file names)"
            )
    if not 2 <= len(found) <= MAX_CLASSES:
        raise DatasetError(
            f"{shown(folder)}: {len(found)} class folder(s) ({first_few([shown(p.name) for p in found])}); a "
            f"classifier is trained on 2 to {MAX_CLASSES} classes"
        )


def prepare_data(config: TrainConfig, log: Log = print) -> tuple[ImageSet, ImageSet, ImageSet]:
    """Decode the training folder once; return (all, train, validation)."""
    layout = find_layout(config.data)
    limit = (config.limit_per_class, config.seed) if config.limit_per_class else None
    relabel = relabel_digest(config.relabel)
    # inside `folders.reuse_decoded()` (`heritage demo`, `heritage report`) decoded and split once: the demo trains,
    # then rebuilds the same split for each model it evaluates
    key = f"split {folder_key(layout.train)} {asdict(config.split)} {limit} {relabel}"
    images, train_set, val_set = reused(key, lambda: _decode_and_split(config, layout.train))
    if relabel:
        log(_relabel_line(config, relabel_record(config, images)["relabel"]))
    for path, reason in images.skipped[:10]:
        log(f"skipped {shown(path)}: {reason}")
    if images.skipped:
        log(
            f"skipped {len(images.skipped)} unreadable file(s) or folder(s); all listed in skipped.json in the run folder"
        )
    _log_unvalidated(images, val_set, log)
    return images, train_set, val_set


def _log_unvalidated(images: ImageSet, val_set: ImageSet, log: Log) -> None:
    """Name the classes the split gave no validation photo (one photo, or all near-duplicates of each other): they
    train, but the validation accuracy says nothing of them."""
    counts, held = images.class_counts(), val_set.class_counts()
    missing = [
        f"{shown(name)} ({n} photo{'s' if n != 1 else ''})"
        for name, n, v in zip(images.classes, counts, held, strict=True)
        if not v
    ]
    if missing:
        log(
            f"no validation photo for {len(missing)} class(es): {', '.join(missing)}; validation accuracy leaves them out"
        )


def load_outliers(config: TrainConfig, size: int, log: Log) -> tuple[torch.Tensor | None, dict, list]:
    """`--outliers`: (the photos, uint8, or None; what the checkpoint records of them; the files skipped)."""
    if not config.outliers:
        return None, {}, []
    photos, skipped = load_negatives(config.outliers, size, flag="--outliers")
    for path, reason in skipped[:10]:
        log(f"skipped {shown(path)}: {reason}")
    log(
        f"outlier exposure: {len(photos)} photos of none of the classes from {config.outliers} (weight "
        f"{config.outlier_weight:g}), as many as the training photos in every step"
        + (f"; {len(skipped)} file(s) skipped, listed in skipped.json" if skipped else "")
    )
    # what the run learned "none" from: --resume refuses a folder whose photos changed (`check_same_data`)
    digest = hashlib.sha256(photos.numpy().tobytes()).hexdigest()
    record = {"folder": str(config.outliers), "photos": len(photos), "skipped": len(skipped), "sha256": digest}
    return photos, {"outliers": record}, skipped


def relabel_digest(file: str | None) -> str | None:
    """The SHA-256 of a relabel file (None: none): an edited file is another run's data."""
    if not file:
        return None
    return file_sha256(file)


def relabel_record(config: TrainConfig, images: ImageSet) -> dict:
    """The run's relabel file as its checkpoint records it (file, SHA-256, rows, the labels of the run's photos it
    changed and the rows it could not apply: `Relabel.record`); {} without one. `images`: the photos `prepare_data`
    returned (relabelled and limited, the unreadable files in `skipped`): only they tell which rows moved a photo
    the run trains on."""
    if not config.relabel:
        return {}
    folder = find_layout(config.data).train
    relabel = read_relabel(config.relabel, images.classes, folder)
    return {"relabel": relabel.record(*applied(relabel, images, folder, limited=bool(config.limit_per_class)))}


def _relabel_line(config: TrainConfig, record: dict) -> str:
    """The log's line of what the relabel file did: the photos it moved, and the rows it could not apply, by why."""
    line = f"relabel: {record['labels_changed']} photos moved to another class by {shown(config.relabel)}"
    not_applied = record.get("not_applied") or {}
    if not_applied:
        count = sum(not_applied.values())
        whys = ", ".join(f"{n} photo{'s' if n != 1 else ''} {_NOT_APPLIED[why]}" for why, n in not_applied.items())
        line += f"; {count} row{'s' if count != 1 else ''} not applied: {whys}"
    return line


def _decode_and_split(config: TrainConfig, folder: Path) -> tuple[ImageSet, ImageSet, ImageSet]:
    images = load_images(folder, cache_dir=config.cache_dir, progress=config.progress, require_every_class=True)
    return split_as_run(images, config, folder)


def split_as_run(images: ImageSet, config: TrainConfig, folder: Path) -> tuple[ImageSet, ImageSet, ImageSet]:
    """The decoded photos of the run's classes relabelled, limited per class and split as the recipe `config` says:
    (all of them, training, validation). The one home of those steps, for a run and for a split rebuilt later."""
    if config.relabel:  # before the split: the split is stratified by the labels the run trains on
        images, _ = apply_relabel(images, read_relabel(config.relabel, images.classes, folder), folder)
        emptied = [shown(name) for name, n in zip(images.classes, images.class_counts(), strict=True) if not n]
        if emptied:  # an empty class folder is refused; a class the relabel file empties would train on nothing
            raise DatasetError(
                f"{shown(config.relabel)}: moves every photo out of {', '.join(emptied)}; a class needs photos to "
                "train on: keep some, or remove its folder"
            )
    skipped = images.skipped
    if config.limit_per_class:
        images = stratified_limit(images, config.limit_per_class, config.seed)
        images.skipped = skipped
    try:
        train_set, val_set = make_split(images, config.split)
    except DatasetError as error:
        raise DatasetError(f"{folder}: {error}") from None
    return images, train_set, val_set
