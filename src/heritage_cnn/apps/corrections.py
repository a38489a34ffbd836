"""The web page's "mark wrong": the user's corrections kept in a folder that `heritage teach --corrections` reads.

The folder has `heritage sort`'s layout (one subfolder per class, `manifest.csv` with `sort_manifest.MANIFEST_FIELDS`)
and is written as if sort had filed the photo in the folder of the model's answer and the user had then moved it:
- the photo's bytes, exactly as uploaded, at `DIR/<label>/<first 16 hex of their SHA-256><extension>` (the upload's
  extension when it is an image one, else `.jpg`; the content decides how it is decoded, never the name);
- a manifest row: `source` `upload:<the uploaded file name>` (`upload_source`: made a valid file name, at most
  NAME_MAX bytes), `destination` `DIR/<the model's answer>/<the same file name>`, and the prediction's `flat(3)`
  columns. The prediction is the server's own, on the uploaded bytes.
  The model's answer is the folder sort would have chosen (`answer_folder`): `_none` (sort's `NONE`) for a photo that
  is none of the ten (`known` false; its top-1 label, the closest class, stays in the row's columns), else its top-1
  label. A photo the page called "not sure" counts as its top-1 label: `_uncertain` depends on a sort's own
  `--min-confidence`, and the page names the class.
`teach_photos.read_corrections` then reads the photo as moved from the model's answer to `label` (found by its file
name: the source is no file), or as confirmed when the label is the model's answer: a photo of none of the ten marked
as a class is moved out of `_none/`, never confirmed. "None of these" is no label the page or `POST /api/correct`
takes (`_none` is refused, as teach refuses a class folder of that name, and teach learns nothing from `_none/`).

A photo that `heritage sort` filed in DIR already (DIR is a sort's output) is corrected as the user would by hand:
sort's file is moved, under its own name, into the right class's folder, its row left as sort wrote it, and nothing is
stored beside it (a second copy under another class would make teach refuse the whole folder as one photo of two
classes). It is found among the files teach reads by size first, then by the content of those of the upload's size.
One that no sort row lists (put there by hand) is a 409 saying to move it by hand: the page keeps no row for a file it
did not write, and without a row teach could not read a folder whose only rows were the page's.

The manifest's rows are checked as teach checks them (`teach_photos.filed_photos`): a row teach refuses (a file cut off
mid-row) is a 409 naming its line, and nothing is written, as rewriting the manifest would hide the damage from teach.

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

import numpy as np
import torch

from heritage_cnn.apps.upload import UploadError
from heritage_cnn.base.io import CheckpointError, FolderBusy, atomic_write_bytes, atomic_write_csv, folder_lock
from heritage_cnn.base.names import CSV_ERRORS, is_hidden, portable_name, shown, visible_subfolders
from heritage_cnn.data.decode import regular_file_sha256
from heritage_cnn.data.folders import IMAGE_EXTENSIONS
from heritage_cnn.data.split import perceptual_hashes
from heritage_cnn.data.walk import walk_files
from heritage_cnn.inference.class_names import new_class_problem, same_class_as
from heritage_cnn.inference.classifier import Prediction
from heritage_cnn.inference.evaluate import near_any, trained_on
from heritage_cnn.inference.sort import LOCK_NAME, NONE, UNCERTAIN
from heritage_cnn.inference.sort_files import NOT_LINKABLE
from heritage_cnn.inference.sort_manifest import MANIFEST_ENCODING, MANIFEST_FIELDS, MANIFEST_NAME, MANIFEST_TOP
from heritage_cnn.inference.teach_photos import MIN_NEW_PHOTOS, UPLOAD_SOURCE, class_files, filed_photos
from heritage_cnn.models.checkpoint import Checkpoint

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


def upload_source(upload_name: str) -> str:
    """A row's `source`: `upload:<the uploaded file's name>` made a valid file name as sort makes its copies' names
    (`names.portable_name`: UTF-8, no control characters, at most NAME_MAX bytes, the stem cut and the extension kept),
    so that a tool reading it as a path finds nothing there rather than a name too long for the file system."""
    name = PurePosixPath(upload_name.replace("\\", "/")).name
    source = portable_name(UPLOAD_SOURCE + name)
    if not source.startswith(UPLOAD_SOURCE):  # an "extension" nearly a file name long: the whole name cut instead
        source = portable_name(UPLOAD_SOURCE + name.replace(".", "_"))
    return source


def looks_trained_on(checkpoint: Checkpoint, photo: np.ndarray) -> bool | None:
    """Whether `heritage teach` would skip the photo as one the model trained on (`training.teach.known_already`: its
    perceptual hash within the model's `trained_on` distance), from the pixels teach decodes (`photo`, the model's
    input size, as `decode_upload` gives it); None for a model that keeps no such record."""
    try:
        record = trained_on(checkpoint)
    except CheckpointError:  # a record teach cannot read either: nothing to say about the photo
        return None
    if record is None:
        return None
    known, distance = record
    hashes = perceptual_hashes(torch.from_numpy(np.ascontiguousarray(photo)).permute(2, 0, 1)[None].contiguous())
    return bool(near_any(hashes, known, distance)[0])


def _move_no_replace(path: Path, target: Path) -> None:
    """Rename the file `path` to `target`, never replacing a file there: a hard link (which fails if the name exists)
    and then the old name removed; a check and a rename where the file system takes no hard link (the folder is locked
    against sorts and other servers)."""
    try:
        os.link(path, target, follow_symlinks=False)
    except FileExistsError:
        raise UploadError(409, f"{shown(target)}: another file has that name; nothing was moved") from None
    except OSError as error:
        if error.errno not in NOT_LINKABLE:
            raise
        if target.exists() or target.is_symlink():
            raise UploadError(409, f"{shown(target)}: another file has that name; nothing was moved") from None
        os.rename(path, target)
        return
    try:
        path.unlink()
    except OSError as error:  # its folder locked (read-only): the photo is not left in two classes
        target.unlink()
        raise UploadError(409, f"{shown(path)}: cannot be moved ({error.strerror}); nothing was moved") from None


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
        new class's name (`class_names.new_class_problem`) is an UploadError 400, one line."""
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
        the same photo, or move the folder's own file of it (`_move_filed`); what was stored, and how many photos the
        class now holds. UploadError: a 409 for a folder that cannot take it, 503 while it is busy."""
        name = photo_name(data, upload_name)
        answer = answer_folder(prediction)
        row = {
            "source": upload_source(upload_name),
            "destination": str(self.root / answer / name),  # where sort would have filed it: `_none` or a class
            **prediction.flat(MANIFEST_TOP),
        }
        try:
            self._make_root()
            with self.lock, folder_lock(self.root, LOCK_NAME, "written"):
                # named again under the lock: two requests naming one new class two ways (`Portál`, `PORTÁL`) at
                # once must land in one folder, the one the first of them made
                label = self.class_of(label)
                fields, rows, filed = self._read_manifest()
                copies = self._filed_copies(data, name)
                if copies:
                    saved = self._move_filed(copies, label, name, (fields, rows, filed))
                else:
                    saved = self._store(data, name, label, row, (fields, rows))
                held = len(walk_files(self.root / label, IMAGE_EXTENSIONS)[0])
        except FolderBusy as error:
            raise UploadError(503, f"{error}; try again in a few seconds") from None
        except ValueError as error:  # a manifest that cannot take corrections, or one teach would refuse
            raise UploadError(409, str(error)) from None
        except OSError as error:  # a full disk, a folder made read-only while the server runs
            where = shown(error.filename or self.root)
            raise UploadError(500, f"{where}: {error.strerror or error}; the correction was not stored") from None
        return {
            "label": label,
            "answer": answer,
            **saved,
            "folder": str(self.root),
            # teach refuses the whole folder while a new class holds fewer: the page says so rather than "saved"
            "class_photos": held,
            "new_class_needs": None if label in self.classes else MIN_NEW_PHOTOS,
        }

    def _store(
        self, data: bytes, name: str, label: str, row: dict[str, str], manifest: tuple[list[str], list[dict[str, str]]]
    ) -> dict[str, Any]:
        """The page's own copy of the photo in `label`'s folder and its row, replacing its earlier marks."""
        fields, rows = manifest
        photo = self._inside(label, name)
        earlier = [r for r in rows if self._same_photo(r, name)]
        # the earlier mark's file goes first: a crash after it leaves the old row, which then finds the new file by its
        # name (or counts the photo as deleted), never the old label beside the new one
        for old in {PurePosixPath(r.get("destination") or "").name for r in earlier}:
            self._remove_everywhere(old, keep=photo)
        atomic_write_bytes(photo, data)
        kept = [r for r in rows if not self._same_photo(r, name)]
        self._write_manifest(fields, [*kept, row])
        answer = PurePosixPath(row["destination"]).parent.name
        kind = "confirmed" if label == answer else "moved"
        return {"kind": kind, "file": f"{label}/{name}", "replaced": len(earlier), "moved_from": []}

    def _filed_copies(self, data: bytes, name: str) -> dict[Path, str]:
        """The files teach reads (`teach_photos.class_files`) that hold these bytes, with their class folders, other
        than the page's own copies (named by the digest, replaced as marks): a photo sort filed here, or one the user
        put here. Sizes first: only a file of the upload's size is read."""
        files, _ = class_files(self.root)
        digest = hashlib.sha256(data).hexdigest()
        found = {}
        for path, folder in files.items():
            if path.stem == name[:DIGEST_HEX]:
                continue
            try:
                if path.stat().st_size != len(data):
                    continue
            except OSError:  # gone since the walk, or a link that leads nowhere: not a copy of the photo
                continue
            if regular_file_sha256(path) == digest:
                found[path] = folder
        return found

    def _move_filed(
        self,
        copies: dict[Path, str],
        label: str,
        name: str,
        manifest: tuple[list[str], list[dict[str, str]], list[Path]],
    ) -> dict[str, Any]:
        """Correct a photo sort filed in the folder as the user would by hand: each file of it (`copies`) moved under
        its own name into `label`'s folder (one in that class already stays), the page's earlier copies of it and their
        rows removed; no second copy, which teach would refuse as one photo of two classes. A 409, nothing moved, for
        a file no sort row lists (put there by hand), one reached through a link, or one whose name another file has
        in `label`'s folder. Its kind: teach's reading, against the folder sort filed it in."""
        fields, rows, filed = manifest
        by_sort = [f for f, r in zip(filed, rows, strict=True) if not (r.get("source") or "").startswith(UPLOAD_SOURCE)]
        moves: list[tuple[Path, Path]] = []
        sorted_in: dict[Path, str] = {}
        for path, folder in copies.items():
            row = next((f for f in by_sort if f == path), None) or next(
                (f for f in by_sort if f.name == path.name), None
            )
            if row is None:
                raise UploadError(
                    409,
                    f"{shown(path)}: this photo, put in the folder by hand (no row of sort's manifest lists it); "
                    f"move it into {label}/ by hand rather than mark it here",
                )
            sorted_in[path] = row.parent.name  # where sort filed it: teach reads the photo against that folder
            if folder == label:  # where the user wants it already (a subfolder of the class included)
                continue
            if path.resolve() != path:  # moving a link, or a file through a linked folder, could break or leave DIR
                raise UploadError(
                    409, f"{shown(path)}: this photo, reached through a link; move it into {label}/ by hand"
                )
            target = self._inside(label, path.name)
            if target.exists() or target.is_symlink() or target in {t for _, t in moves}:
                raise UploadError(
                    409,
                    f"{shown(path)}: this photo; {shown(target)} is another file of that name, so it was not moved: "
                    f"move it into {label}/ by hand under another name",
                )
            moves.append((path, target))
        earlier = [r for r in rows if self._same_photo(r, name)]
        for old in {PurePosixPath(r.get("destination") or "").name for r in earlier}:
            self._remove_everywhere(old, keep=None)
        if earlier:  # sort's row stays (it lists the photo), so the manifest is never left without a row
            self._write_manifest(fields, [r for r in rows if not self._same_photo(r, name)])
        (self.root / label).mkdir(exist_ok=True)
        for path, target in moves:
            _move_no_replace(path, target)
        was = moves[0][0] if moves else next(iter(copies))
        return {
            "kind": "confirmed" if sorted_in[was] == label else "moved",
            "file": (moves[0][1] if moves else was).relative_to(self.root).as_posix(),
            "replaced": len(earlier),
            "moved_from": [path.relative_to(self.root).as_posix() for path, _ in moves],
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
        return (row.get("source") or "").startswith(UPLOAD_SOURCE) and stored == name[:DIGEST_HEX]

    def _remove_everywhere(self, name: str, keep: Path | None) -> None:
        """Remove the file `name` from every class folder and the folders the user made inside them (teach reads
        those too), not following links, except `keep`."""
        for folder, subfolders, files in os.walk(self.root):
            subfolders[:] = [d for d in subfolders if not is_hidden(d)]  # os.walk follows no link by default
            old = Path(folder) / name
            if name in files and folder != str(self.root) and old != keep and not old.is_symlink():
                old.unlink()

    def _read_manifest(self) -> tuple[list[str], list[dict[str, str]], list[Path]]:
        """The manifest's columns, rows and where each row's photo was filed (sort's columns and none when there is
        none yet); ValueError for one that sort did not write without --multi, or with a row teach would refuse
        (`teach_photos.filed_photos`, naming its line): a row written beside it would hide the damage from teach."""
        manifest = self.root / MANIFEST_NAME
        if not manifest.exists():
            return list(MANIFEST_FIELDS), [], []
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
        try:
            filed = filed_photos(rows, self.root)
        except ValueError as error:
            raise ValueError(
                f"{error}; heritage teach refuses the folder as it is, so no correction is written to it"
            ) from None
        return fields, rows, filed

    def _write_manifest(self, fields: list[str], rows: list[dict[str, str]]) -> None:
        atomic_write_csv(self.root / MANIFEST_NAME, fields, rows)
