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
    """The rows of one relabel file: relative path -> (row number, new class index); and the rows with an empty
    label, which keep the photo's own (relative path -> row number), whose paths are checked all the same."""

    file: str
    sha256: str
    rows: dict[str, tuple[int, int]] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)

    def changes(self, classes: list[str]) -> int:
        """Rows that move a photo to another class than its folder's (the first part of its relative path)."""
        return sum(key.split("/")[0] != classes[index] for key, (_, index) in self.rows.items())

    def record(self, classes: list[str]) -> dict[str, Any]:
        """What a run records of it (the checkpoint's provenance): `rows` counts the rows that give a label."""
        changed = self.changes(classes)
        return {"file": self.file, "sha256": self.sha256, "rows": len(self.rows), "labels_changed": changed}


def _inside(path: str, root: str) -> str | None:
    """`path` (absolute) relative to `root` (absolute), with forward slashes; None when it is not below it."""
    relative = os.path.relpath(path, root)
    if relative == os.curdir or relative == os.pardir or relative.startswith(os.pardir + os.sep):
        return None
    return Path(relative).as_posix()


def _key(path: str, root: Path) -> str:
    """A photo's path relative to `root`, with forward slashes: how relabel rows and folder photos are compared.
    A relative `path` is relative to `root` already (a relabel row); an absolute one, or a folder photo's path as the
    folder was read (`root/altar/0001.jpg`, `root` relative to the working folder or absolute), is made relative to
    it, first as written, then with links resolved (a root reached through a link); a path below neither stays
    absolute, and so matches no photo."""
    p = Path(path)
    if not p.is_absolute():
        return Path(os.path.normpath(p)).as_posix()
    for resolve in (os.path.abspath, os.path.realpath):
        key = _inside(resolve(p), resolve(root))
        if key is not None:
            return key
    return p.as_posix()


def _photo_key(path: str, root: Path) -> str:
    """A folder photo's key: its path as read (below `root`, however `root` was written) relative to `root`."""
    return _key(os.path.abspath(path), root)


def read_relabel(file: str | os.PathLike, classes: list[str], root: Path) -> Relabel:
    """Read and check a relabel CSV against the folder's `classes`; paths are keyed relative to `root`. Header names
    and cells are read without the spaces around them (`path, new_label` is the header)."""
    file = Path(file)
    data = file.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DatasetError(f"{file}: not UTF-8 text") from None
    reader = csv.reader(text.splitlines())
    header = [name.strip() for name in next(reader, [])]
    if not set(COLUMNS) <= set(header):
        raise DatasetError(f"{file}: row 1: expected the header {','.join(COLUMNS)}, got {header or None}")
    where = [header.index(c) for c in COLUMNS]
    rows: dict[str, tuple[int, int]] = {}
    kept: dict[str, int] = {}
    for number, cells in enumerate(reader, start=2):  # row 1 is the header
        if not cells:  # a blank line
            continue
        path, label = (cells[i].strip() if i < len(cells) else "" for i in where)
        if not path:
            raise DatasetError(f"{file}: row {number}: no path")
        key = _key(path, root)
        listed = rows[key][0] if key in rows else kept.get(key)
        if listed is not None:
            raise DatasetError(f"{file}: row {number}: {path} is listed already (row {listed})")
        if not label:  # a row a person decided against: the photo keeps its label, the path is checked all the same
            kept[key] = number
            continue
        try:
            index = resolve_class(label, classes)
        except ValueError as error:
            raise DatasetError(f"{file}: row {number}: {error}") from None
        rows[key] = (number, index)
    return Relabel(str(file), hashlib.sha256(data).hexdigest(), rows, kept)


def apply_relabel(images: ImageSet, relabel: Relabel, root: Path) -> tuple[ImageSet, int]:
    """`images` with the relabelled photos' labels replaced, and how many changed; a row whose path is not one of
    the photos is refused, an empty-label row's too (a typo would otherwise silently change nothing); one of the
    unreadable photos the folder skipped is passed over."""
    where = {_photo_key(p, root): i for i, p in enumerate(images.paths)}
    unreadable = {_photo_key(p, root) for p, _ in images.skipped}  # skipped and listed already: nothing to relabel
    labels = images.labels.clone()
    checks = [(key, number, index) for key, (number, index) in relabel.rows.items()]
    checks += [(key, number, None) for key, number in relabel.kept.items()]
    for key, number, index in sorted(checks, key=lambda check: check[1]):  # the first bad row is the one named
        if key in unreadable:
            continue
        if key not in where:
            raise DatasetError(f"{relabel.file}: row {number}: {key} is not a photo of {root}")
        if index is not None:
            labels[where[key]] = index
    changed = int((labels != images.labels).sum())
    relabelled = ImageSet(images.images, labels, images.paths, images.classes, images.skipped, images.empty_classes)
    return relabelled, changed


__all__ = ["COLUMNS", "Relabel", "apply_relabel", "read_relabel"]
