"""The web page's "mark wrong": the user's corrections kept in a folder that `heritage teach --corrections` reads.

The folder has `heritage sort`'s layout (one subfolder per class, `manifest.csv` with `sort_manifest.MANIFEST_FIELDS`)
and is written as if sort had filed the photo in the folder of the model's answer and the user had then moved it:
- the photo's bytes, exactly as uploaded, at `DIR/<label>/<first 16 hex of their SHA-256><extension>` (the upload's
  extension when it is an image one, else `.jpg`; the content decides how it is decoded, never the name);
- a manifest row: `source` `upload:<the uploaded file name>`, `destination` `DIR/<the model's answer>/<the same
  file name>`, and the prediction's `flat(3)` columns. The prediction is the server's own, on the uploaded bytes.
  The model's answer is the folder sort would have chosen (`answer_folder`): `_none` (sort's `NONE`) for a photo that
  is none of the ten (`known` false; its top-1 label, the closest class, stays in the row's columns), else its top-1
  label. A photo the page called "not sure" counts as its top-1 label: `_uncertain` depends on a sort's own
  `--min-confidence`, and the page names the class.
`teach_photos.read_corrections` then reads the photo as moved from the model's answer to `label` (found by its file
name: the source is no file), or as confirmed when the label is the model's answer: a photo of none of the ten marked
as a class is moved out of `_none/`, never confirmed. "None of these" is no label the page or `POST /api/correct`
takes (`_none` is refused, as teach refuses a class folder of that name, and teach learns nothing from `_none/`).

The same photo (the same bytes) marked again replaces its file and row: the latest label wins. Every file is written
atomically (`base.io`); one request writes at a time (a thread lock), and never while another process holds sort's
folder lock on DIR (a `heritage sort` into it, or another server keeping its corrections there). Nothing is written
outside DIR: the photo's path is resolved, links included, and refused if it leaves it.
"""

from __future__ import annotations

import csv
import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from heritage_cnn.apps.upload import UploadError
from heritage_cnn.base.io import FolderBusy, atomic_write_bytes, atomic_write_csv, folder_lock
from heritage_cnn.base.names import CSV_ERRORS, is_hidden, shown, visible_subfolders
from heritage_cnn.data.folders import IMAGE_EXTENSIONS
from heritage_cnn.inference.classifier import Prediction
from heritage_cnn.inference.sort import LOCK_NAME, NONE, UNCERTAIN
from heritage_cnn.inference.sort_manifest import MANIFEST_ENCODING, MANIFEST_FIELDS, MANIFEST_NAME, MANIFEST_TOP
from heritage_cnn.inference.teach_photos import new_class_problem, same_class_as

SOURCE_PREFIX = "upload:"  # a manifest row written by the page, not by sort
DIGEST_HEX = 16  # hex digits of the SHA-256 in a stored photo's name
DEFAULT_EXTENSION = ".jpg"


def answer_folder(prediction: Prediction) -> str:
    """The folder `heritage sort` (without --multi) would have filed the photo in, were it sure enough: `_none` for
    none of the ten, else the model's top-1 label."""
    return NONE if prediction.known is False else prediction.top[0].label


def photo_name(data: bytes, upload_name: str) -> str:
    """`<first 16 hex of the SHA-256><extension>`: the upload's image extension (lower case), else `.jpg`."""
    suffix = PurePosixPath(upload_name.replace("\\", "/")).suffix.lower()
    extension = suffix if suffix in IMAGE_EXTENSIONS else DEFAULT_EXTENSION
    return hashlib.sha256(data).hexdigest()[:DIGEST_HEX] + extension


class Corrections:
    """The corrections folder of a server: created if missing, refused (ValueError, one line) if it is a file or holds
    a manifest that is not sort's single-folder one."""

    def __init__(self, folder: str | os.PathLike, classes: Sequence[str]) -> None:
        root = Path(folder).resolve()
        if root.exists() and not root.is_dir():
            raise ValueError(f"--corrections {shown(folder)}: not a folder")
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.classes = list(classes)
        self.lock = threading.Lock()
        self._read_manifest()  # a folder that cannot take corrections is refused when the server starts

    def class_of(self, label: object) -> str:
        """The class a photo's right `label` names: one of the model's classes, a new class already in the folder, or
        a new one. A name that is one of those but for case, spaces or underscores (the page's display name `bell
        tower`) is that class, so that teach never finds two folders of one class; anything teach would refuse as a
        new class's name (`teach_photos.new_class_problem`) is an UploadError 400, one line."""
        if not isinstance(label, str) or not label:
            raise UploadError(400, "send the right class in the form field 'label'")
        if label in self.classes:
            return label
        problem = new_class_problem(label)  # the name alone: a variant of a class is that class, below
        if problem:
            raise UploadError(400, problem)
        self._make_root()
        taken = [p.name for p in visible_subfolders(self.root)]
        same = same_class_as(label, [*self.classes, *(t for t in taken if t not in (UNCERTAIN, NONE))])
        if same is not None:
            return same
        if (self.root / label).exists():
            raise UploadError(400, f"{label!r} is a file of the corrections folder, so it cannot name a class")
        return label

    def save(self, data: bytes, upload_name: str, label: str, prediction: Prediction) -> dict[str, Any]:
        """Store the photo under `label` and its row (the model's answer: `prediction`), replacing an earlier mark of
        the same photo; what was stored. UploadError: a 409 for a folder that cannot take it, 503 while it is busy."""
        name = photo_name(data, upload_name)
        answer = answer_folder(prediction)
        row = {
            "source": SOURCE_PREFIX + PurePosixPath(upload_name.replace("\\", "/")).name,
            "destination": str(self.root / answer / name),  # where sort would have filed it: `_none` or a class
            **prediction.flat(MANIFEST_TOP),
        }
        try:
            self._make_root()
            with self.lock, folder_lock(self.root, LOCK_NAME, "written"):
                # named again under the lock: two requests naming one new class two ways (`Portál`, `PORTÁL`) at
                # once must land in one folder, the one the first of them made
                label = self.class_of(label)
                photo = self._inside(label, name)
                fields, rows = self._read_manifest()
                earlier = [r for r in rows if self._same_photo(r, name)]
                # the earlier mark's file goes first: a crash after it leaves the old row, which then finds the new
                # file by its name (or counts the photo as deleted), never the old label beside the new one
                for old in {PurePosixPath(r.get("destination") or "").name for r in earlier}:
                    self._remove_everywhere(old, keep=photo)
                atomic_write_bytes(photo, data)
                kept = [r for r in rows if not self._same_photo(r, name)]
                self._write_manifest(fields, [*kept, row])
        except FolderBusy as error:
            raise UploadError(503, f"{error}; try again in a few seconds") from None
        except ValueError as error:  # the manifest was replaced by one that cannot take corrections
            raise UploadError(409, str(error)) from None
        except OSError as error:  # a full disk, a folder made read-only while the server runs
            where = shown(error.filename or self.root)
            raise UploadError(500, f"{where}: {error.strerror or error}; the correction was not stored") from None
        return {
            "label": label,
            "answer": answer,
            "kind": "confirmed" if label == answer else "moved",
            "file": f"{label}/{name}",
            "replaced": len(earlier),
            "folder": str(self.root),
        }

    def _make_root(self) -> None:
        """The folder again, if it was moved or removed while the server ran (409 if a file now stands there)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UploadError(409, f"{shown(self.root)}: cannot hold corrections ({error.strerror})") from None

    def _inside(self, label: str, name: str) -> Path:
        """`DIR/label/name`, refused (409) if it resolves (through a link) outside DIR's own subfolder `label`."""
        path = self.root / label / name
        if path.resolve() != path:
            raise UploadError(409, f"{shown(path)}: leads out of the corrections folder (a link); not written")
        return path

    def _same_photo(self, row: dict[str, str], name: str) -> bool:
        """A row this server wrote for the same bytes (its file name's digest), whatever extension it had."""
        stored = PurePosixPath(row.get("destination") or "").stem
        return (row.get("source") or "").startswith(SOURCE_PREFIX) and stored == name[:DIGEST_HEX]

    def _remove_everywhere(self, name: str, keep: Path) -> None:
        """Remove the file `name` from every class folder and the folders the user made inside them (teach reads
        those too), not following links, except `keep`."""
        for folder, subfolders, files in os.walk(self.root):
            subfolders[:] = [d for d in subfolders if not is_hidden(d)]  # os.walk follows no link by default
            old = Path(folder) / name
            if name in files and folder != str(self.root) and old != keep and not old.is_symlink():
                old.unlink()

    def _read_manifest(self) -> tuple[list[str], list[dict[str, str]]]:
        """The manifest's columns and rows (sort's columns and none when there is none yet); ValueError for one
        that sort did not write without --multi."""
        manifest = self.root / MANIFEST_NAME
        if not manifest.exists():
            return list(MANIFEST_FIELDS), []
        with open(manifest, newline="", encoding=MANIFEST_ENCODING, errors=CSV_ERRORS) as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            fields = list(reader.fieldnames or [])
        missing = [f for f in MANIFEST_FIELDS if f not in fields]
        if "destinations" in fields or missing:
            raise ValueError(
                f"{shown(manifest)}: not the manifest of a sort without --multi, so heritage teach could not read "
                "corrections beside it; keep corrections in another folder"
            )
        return fields, rows

    def _write_manifest(self, fields: list[str], rows: list[dict[str, str]]) -> None:
        atomic_write_csv(self.root / MANIFEST_NAME, fields, rows)
