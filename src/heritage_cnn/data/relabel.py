"""A person's label corrections (`heritage train --relabel FILE`): a CSV of `path,new_label` rows, as
`heritage review` writes in relabel.csv for someone to edit.

`path` is a photo's path relative to the class-folder root (`altar/0001.jpg`; the Kaggle layout's `train/`), or an
absolute path below it; `new_label` is a class by folder name, display name or index (`data.labels.resolve_class`),
and an empty one keeps the photo's label (a row a person decided against). The photos stay where they are: only the
labels a run trains on change. A class that does not exist, a path that is not one of the folder's photos, a path
listed twice, a row whose cells are not as many as the header's or a file without the two columns is refused in one
line naming the file and the row. The file may be as a spreadsheet saves it: cells separated by semicolons or tabs
(where the decimal comma makes Excel save CSV so), header names in any case, a cleared row as empty cells (passed
over).

The file is read as review writes it and as every CSV of the tool is read (`base.names.CSV_ERRORS`): UTF-8 whose
file names' undecodable bytes are the bytes on disk, and a quoted cell may hold a newline or a comma, so every
name review lists, however hostile, names its photo exactly.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heritage_cnn.base.names import CSV_ERRORS, shown
from heritage_cnn.data.folders import DatasetError, ImageSet
from heritage_cnn.data.labels import resolve_class

COLUMNS = ("path", "new_label")
# a spreadsheet's CSV: commas, or semicolons (Excel where the decimal separator is a comma), or tabs (its text export)
DELIMITERS = (",", ";", "\t")


@dataclass(frozen=True)
class Relabel:
    """The rows of one relabel file: relative path -> (row number, new class index); and the rows with an empty
    label, which keep the photo's own (relative path -> row number), whose paths are checked all the same."""

    file: str
    sha256: str
    rows: dict[str, tuple[int, int]] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)

    def moves(self, classes: list[str]) -> list[str]:
        """The paths of the rows that move a photo to another class than its folder's (the first part of the path)."""
        return [key for key, (_, index) in self.rows.items() if key.split("/")[0] != classes[index]]

    def record(self, changed: int, not_applied: dict[str, int] | None = None) -> dict[str, Any]:
        """What a run records of it (the checkpoint's provenance): `rows` counts the rows that give a label,
        `labels_changed` the photos of the run it moved (`applied`), `not_applied` the moving rows it could not apply,
        by why (absent when there are none)."""
        record = {"file": self.file, "sha256": self.sha256, "rows": len(self.rows), "labels_changed": changed}
        return record | ({"not_applied": dict(not_applied)} if not_applied else {})


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
    and cells are read without the spaces around them (`path, new_label` is the header); every row has as many cells
    as the header (an empty `new_label` cell keeps the label; a missing one is a mistake, never read as "keep")."""
    file = Path(file)
    data = file.read_bytes()
    decoded = data.decode("utf-8-sig", CSV_ERRORS)
    # newline="": a quoted cell's newline is part of a name, and only \r and \n end a row (not \x1c or \x85)
    text = io.StringIO(decoded, newline="")
    rows: dict[str, tuple[int, int]] = {}
    kept: dict[str, int] = {}
    for number, (cell, label) in _rows(file, csv.reader(text, delimiter=_delimiter(decoded))):
        path, label = _path_cell(cell, root), label.strip()
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


def _path_cell(cell: str, root: Path) -> str:
    """A path cell without the spaces around it, unless they are part of a photo's name (`   .jpg`, a class folder
    named `   `): the cell as written when it names a file, so that neither is read as another photo."""
    if cell != cell.strip() and os.path.lexists(os.path.join(root, cell)):
        return cell
    return cell.strip()


def _header_names(line: str, delimiter: str) -> list[str]:
    """The names of a header `line` split at `delimiter`: without the spaces around them, in lower case."""
    cells = next(csv.reader([line], delimiter=delimiter), [])
    return [name.strip().lower() for name in cells]


def _delimiter(text: str) -> str:
    """The delimiter the header line of `text` names both columns with (`DELIMITERS`, the comma first); the comma
    when none does, so that the refusal quotes the header as written. Only the header decides: a semicolon or tab in
    a photo's name never does."""
    line = text.split("\n", 1)[0].rstrip("\r")
    for delimiter in DELIMITERS:
        if set(COLUMNS) <= set(_header_names(line, delimiter)):
            return delimiter
    return ","


def _rows(file: Path, reader: Iterator[list[str]]) -> Iterator[tuple[int, list[str]]]:
    """(row number, [path, new_label]) of each row after the header, as written; blank lines and rows of empty cells
    (a row a spreadsheet cleared) are passed over. An empty file, a header without the two columns and a row with
    another number of cells than the header are refused in one line naming the file and the row."""
    expected = ",".join(COLUMNS)
    number = 0  # the last row read: a row the csv module cannot read is the next one
    try:
        header = next(reader, None)
        if header is None:
            raise DatasetError(f"{file}: empty; expected the header {expected}")
        number, written, header = 1, header, [name.strip().lower() for name in header]
        if not set(COLUMNS) <= set(header):
            got = shown(",".join(name.strip() for name in written))
            got = got if len(got) <= 60 else f"{got[:60]}..."  # a binary file's first line would fill the screen
            raise DatasetError(
                f'{file}: row 1: expected the header {expected} (or with ";" or tabs between), got "{got}"'
            )
        where = [header.index(c) for c in COLUMNS]
        for number, cells in enumerate(reader, start=2):
            if not any(cell.strip() for cell in cells):  # a blank line, or a row whose cells were cleared
                continue
            if len(cells) != len(header):
                count = f"{len(cells)} cell{'s' if len(cells) != 1 else ''}"
                raise DatasetError(f"{file}: row {number}: {count}, expected {len(header)} ({','.join(header)})")
            yield number, [cells[i] for i in where]
    except csv.Error as error:  # a cell past the csv module's size limit, say
        raise DatasetError(f"{file}: row {number + 1}: not CSV: {error}") from None


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


def applied(relabel: Relabel, images: ImageSet, root: Path, limited: bool = False) -> tuple[int, dict[str, int]]:
    """What `relabel` did to the photos a run trains on (`images`, relabelled, limited per class if `limited`, the
    folder's unreadable files in `skipped`): (the photos it moved to another class; the moving rows it did not apply,
    counted by why: `unreadable` photos, photos `limited_out` by --limit-per-class, photos `not_read` otherwise)."""
    held = {_photo_key(p, root) for p in images.paths}
    unreadable = {_photo_key(p, root) for p, _ in images.skipped}
    changed, not_applied = 0, {}  # type: dict[str, int]
    for key in relabel.moves(images.classes):
        if key in held:
            changed += 1
            continue
        why = "unreadable" if key in unreadable else "limited_out" if limited else "not_read"
        not_applied[why] = not_applied.get(why, 0) + 1
    return changed, not_applied


__all__ = ["COLUMNS", "DELIMITERS", "Relabel", "applied", "apply_relabel", "read_relabel"]
