"""A person's label corrections (`heritage train --relabel FILE`): a CSV of `path,new_label` rows, as
`heritage review` writes in relabel.csv for someone to edit.

`path` is a photo's path relative to the class-folder root (`altar/0001.jpg`; the Kaggle layout's `train/`), or an
absolute path below it; `new_label` is a class by folder name, display name or index (`data.labels.resolve_class`),
and an empty one keeps the photo's label (a row a person decided against). The photos stay where they are: only the
labels a run trains on change. A class that does not exist, a path that is not one of the folder's photos, a path
listed twice or a file without the two columns is refused in one line naming the file and the row.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heritage_cnn.data.folders import DatasetError, ImageSet
from heritage_cnn.data.labels import resolve_class

COLUMNS = ("path", "new_label")


@dataclass(frozen=True)
class Relabel:
    """The rows of one relabel file: relative path -> (row number, new class index)."""

    file: str
    sha256: str
    rows: dict[str, tuple[int, int]] = field(default_factory=dict)

    def changes(self, classes: list[str]) -> int:
        """Rows that move a photo to another class than its folder's (the first part of its relative path)."""
        return sum(key.split("/")[0] != classes[index] for key, (_, index) in self.rows.items())

    def record(self, classes: list[str]) -> dict[str, Any]:
        """What a run records of it (the checkpoint's provenance)."""
        changed = self.changes(classes)
        return {"file": self.file, "sha256": self.sha256, "rows": len(self.rows), "labels_changed": changed}


def _key(path: str, root: Path) -> str:
    """A photo's path relative to `root`, with forward slashes: how relabel rows and folder photos are compared."""
    p = Path(path)
    if p.is_absolute():
        p = Path(os.path.relpath(p.resolve(), root.resolve()))
    return p.as_posix()


def read_relabel(file: str | os.PathLike, classes: list[str], root: Path) -> Relabel:
    """Read and check a relabel CSV against the folder's `classes`; paths are keyed relative to `root`."""
    file = Path(file)
    data = file.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DatasetError(f"{file}: not UTF-8 text") from None
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or not set(COLUMNS) <= {f.strip() for f in reader.fieldnames}:
        raise DatasetError(f"{file}: row 1: expected the header {','.join(COLUMNS)}, got {reader.fieldnames}")
    rows: dict[str, tuple[int, int]] = {}
    for number, row in enumerate(reader, start=2):  # row 1 is the header
        path, label = ((row.get(c) or "").strip() for c in COLUMNS)
        if not path:
            raise DatasetError(f"{file}: row {number}: no path")
        if not label:
            continue
        try:
            index = resolve_class(label, classes)
        except ValueError as error:
            raise DatasetError(f"{file}: row {number}: {error}") from None
        key = _key(path, root)
        if key in rows:
            raise DatasetError(f"{file}: row {number}: {path} is listed already (row {rows[key][0]})")
        rows[key] = (number, index)
    return Relabel(str(file), hashlib.sha256(data).hexdigest(), rows)


def apply_relabel(images: ImageSet, relabel: Relabel, root: Path) -> tuple[ImageSet, int]:
    """`images` with the relabelled photos' labels replaced, and how many changed; a row whose path is not one of
    the photos is refused (a typo would otherwise silently change nothing); one of the unreadable photos the folder
    skipped is passed over."""
    where = {_key(p, root): i for i, p in enumerate(images.paths)}
    unreadable = {_key(p, root) for p, _ in images.skipped}  # skipped and listed already: nothing to relabel
    labels = images.labels.clone()
    for key, (number, index) in relabel.rows.items():
        if key in unreadable:
            continue
        if key not in where:
            raise DatasetError(f"{relabel.file}: row {number}: {key} is not a photo of {root}")
        labels[where[key]] = index
    changed = int((labels != images.labels).sum())
    relabelled = ImageSet(images.images, labels, images.paths, images.classes, images.skipped, images.empty_classes)
    return relabelled, changed


__all__ = ["COLUMNS", "Relabel", "apply_relabel", "read_relabel"]
