"""What `heritage teach` learns from: folders of new classes, and corrections read from folders people edit.

Two sources, one result (`TeachPhotos`: decoded photos, each with its class and why it is there):

- **New classes**: a folder holding one subfolder per new class (`PORTALS/portal/*.jpg`). A subfolder named like a
  class the model knows (its name or display name, whatever the case or Unicode spelling: `Altar`, `bell tower` for
  `bell_tower`, a fullwidth `ａltar`), or like sort's reserved folders (`_uncertain`, `_none`), is refused: photos of a
  known class are corrections, and come from a sorted folder. So is a name holding a character that prints nothing.
- **Corrections**: a folder `heritage sort` wrote (its `manifest.csv` says where each photo was filed) after the user
  moved photos between its folders. A row's destination is read as its class folder and file name inside the folder
  being read, so a sorted folder that was moved or copied elsewhere reads the same. Each photo of the manifest is
  found where it is now, by the content (SHA-256) of its source, so a renamed photo still counts:
  - still in the class folder it was filed in: **confirmed** (a label the user saw and kept);
  - in another class folder: **moved**, a correction; moved into a folder the model does not know: a new class;
  - not found: **deleted** (listed, not learned from); photos left in `_uncertain/` or `_none/`: not labelled.
    Where the source is gone too (the survey folder moved or deleted), a photo that is not where sort filed it
    cannot be told renamed from deleted: it is counted as such (`NOT_FOUND`), never as deleted.
  Photos in a class folder that the manifest does not list were **added** by the user and learn as that class.
  A photo's class is the top folder it lies in: the user's subfolders inside a class folder belong to that class.
  The web page's "mark wrong" writes the same kind of folder (`apps.corrections`): a photo the user marked is stored
  in the right class's folder, with a manifest row naming the folder the model chose and a source `upload:<name>`
  (`UPLOAD_SOURCE`), which is no path and is never looked up as one.
  A manifest that sort did not write as it is (a missing column, a row with more or fewer cells than the header, a
  destination that is not a file in a class folder, one in a folder its label does not name, or no row beside
  photos) is refused with a line saying so: corrections are made by moving
  photos, not by editing the manifest.

Every photo is decoded by the prediction policy (`decode.try_decode`); a file that cannot be read is skipped and
listed, never stops the run. One content is taught once: under two classes it is refused, naming both files; twice
under one class, the second is skipped and listed (`TeachPhotos`). The user's folders are only read.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from heritage_cnn.base.names import CSV_ERRORS, shown, visible_subfolders
from heritage_cnn.data.decode import IMAGE_SIZE, regular_file_sha256, try_decode
from heritage_cnn.data.folders import IMAGE_EXTENSIONS, DatasetError
from heritage_cnn.data.walk import walk_files
from heritage_cnn.inference.class_names import RESERVED, new_class_problem
from heritage_cnn.inference.sort_manifest import (
    MANIFEST_ENCODING,
    MANIFEST_FIELDS,
    MANIFEST_NAME,
    MANIFEST_TOP,
)

MIN_NEW_PHOTOS = 20  # photos a new class needs: the fewest the benchmark teaches from (docs/teach.md)
SHARED = "manifest rows sharing another row's file (identical photos)"  # counted, not taught twice
KINDS = ("new", "moved", "added", "confirmed")  # why a photo is taught; "new": a photo of a new class's folder
UNREADABLE = "unreadable (skipped)"  # files that would have been taught but cannot be decoded
REPEATED = "repeated (the same content twice in one class: taught once)"
NOT_FOUND = "not where sort filed them, sources gone (deleted or renamed: cannot tell which)"
ADDED_OR_RENAMED = "added or renamed (not in the manifest)"  # "added" while some rows are NOT_FOUND
UPLOAD_SOURCE = "upload:"  # the source of a row the web page wrote (`apps.corrections`): a file name, not a path


@dataclass
class TeachPhotos:
    """Decoded photos (N, 3, S, S) uint8 with their class names, paths, SHA-256 and why each is taught; the files
    skipped (path, reason), what the corrections folders held (`found`: counts by kind, deleted included) and the
    class folders each class was read from (`folders`, for messages that name them).

    One content, one photo, whatever built them (a reader, or several merged): a content found again under the same
    class is dropped, listed in `skipped` and counted (`REPEATED`); under another class it is refused (DatasetError
    naming both files)."""

    images: torch.Tensor
    labels: list[str]
    paths: list[str]
    digests: list[str]
    kinds: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    found: Counter = field(default_factory=Counter)
    folders: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        first: dict[str, int] = {}
        keep = []
        for i, digest in enumerate(self.digests):
            j = first.setdefault(digest, i)
            if j == i:
                keep.append(i)
            elif self.labels[j] != self.labels[i]:
                raise DatasetError(
                    f"{shown(self.paths[j])} and {shown(self.paths[i])}: one photo (the same content) as two classes, "
                    f"{self.labels[j]!r} and {self.labels[i]!r}; keep it in one class's folder"
                )
            else:
                same = "read twice" if self.paths[i] == self.paths[j] else f"the same photo as {shown(self.paths[j])}"
                self.skipped.append((self.paths[i], f"{same}: taught once"))
        if len(keep) < len(self.digests):
            self.found[REPEATED] += len(self.digests) - len(keep)
            self.images = self.images[torch.as_tensor(keep, dtype=torch.long)]
            self.labels, self.paths, self.digests, self.kinds = (
                [p[i] for i in keep] for p in (self.labels, self.paths, self.digests, self.kinds)
            )

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, keep: list[int]) -> TeachPhotos:
        index = torch.as_tensor(keep, dtype=torch.long)
        pick = [self.labels, self.paths, self.digests, self.kinds]
        kept = ([p[i] for i in keep] for p in pick)
        return TeachPhotos(self.images[index], *kept, self.skipped, self.found, self.folders)

    def where(self, label: str) -> str:
        """The class folder(s) `label` was read from, shown (`few/portal`), or the label when none is recorded."""
        return ", ".join(shown(folder) for folder in self.folders.get(label, [])) or label

    def per_class(self) -> dict[str, int]:
        return dict(Counter(self.labels))


def _decoded(
    items: list[tuple[Path, str, str]],
    size: int,
    skipped: list[tuple[str, str]],
    digests: dict[Path, str | None] | None = None,
) -> TeachPhotos:
    """Decode (path, class, kind) items; unreadable files go to `skipped`. `digests`: SHA-256 already read, by path.
    `found` counts the photos by kind, and the unreadable ones (`UNREADABLE`)."""
    digests = digests or {}
    arrays, labels, paths, sha256, kinds = [], [], [], [], []
    unreadable = 0
    for path, label, kind in items:
        pixels = try_decode(path, size)
        digest = None if isinstance(pixels, str) else digests.get(path) or regular_file_sha256(path)
        if digest is None:
            skipped.append((str(path), pixels if isinstance(pixels, str) else "could not be read"))
            unreadable += 1
            continue
        arrays.append(pixels)
        labels.append(label)
        paths.append(str(path))
        sha256.append(digest)
        kinds.append(kind)
    images = (
        torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        if arrays
        else torch.empty(0, 3, size, size, dtype=torch.uint8)
    )
    photos = TeachPhotos(images, labels, paths, sha256, kinds, skipped)
    photos.found.update(photos.kinds)
    if unreadable:
        photos.found[UNREADABLE] += unreadable
    return photos


def _class_subfolders(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"{shown(folder)}: not a folder")
    return visible_subfolders(folder)


def _refuse_name(folder: Path, name: str, known: Iterable[str], taken: Iterable[str] = ()) -> None:
    """DatasetError (one line, starting with the folder) when the folder `name` cannot name a new class
    (`new_class_problem`)."""
    problem = new_class_problem(name, known, taken, called="the folder name")
    if problem:
        raise DatasetError(f"{shown(folder)}: {problem}")


def read_new_classes(folder: str | os.PathLike, known: list[str], size: int = IMAGE_SIZE) -> TeachPhotos:
    """The photos of a folder of new-class subfolders, each labelled by its subfolder (its own subfolders included);
    DatasetError (one line) for a subfolder that cannot be a new class (`_refuse_name`) or holds fewer than
    MIN_NEW_PHOTOS readable photos of its own."""
    root = Path(folder)
    subfolders = _class_subfolders(root)
    if not subfolders:
        raise DatasetError(
            f"{shown(root)}: no class folders in it (one subfolder per new class: {shown(root)}/portal/)"
        )
    items, skipped = [], []
    for sub in subfolders:
        if sub.name in known:
            raise DatasetError(
                f"{shown(sub)}: {sub.name!r} is already a class of the model; photos of a class it knows are "
                "corrections (--corrections: a sorted folder whose photos you moved)"
            )
        _refuse_name(sub, sub.name, known, [s.name for s in subfolders])
        files, problems = walk_files(sub, IMAGE_EXTENSIONS)
        skipped.extend(problems)
        items.extend((path, sub.name, "new") for path in files)
    photos = _decoded(items, size, skipped)
    photos.folders = {sub.name: [str(sub)] for sub in subfolders}
    for sub in subfolders:
        count = photos.labels.count(sub.name)
        if count < MIN_NEW_PHOTOS:
            raise DatasetError(
                f"{shown(sub)}: {count} readable photo(s) (each content counted once); a new class needs at least "
                f"{MIN_NEW_PHOTOS}"
            )
    return photos


def _manifest_rows(root: Path) -> list[dict[str, str]]:
    manifest = root / MANIFEST_NAME
    if not manifest.is_file():
        raise DatasetError(
            f"{shown(manifest)}: missing; --corrections reads a folder that heritage sort wrote (its manifest says "
            "where each photo was filed)"
        )
    with open(manifest, newline="", encoding=MANIFEST_ENCODING, errors=CSV_ERRORS) as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or []
        rows = list(reader)
    if "destinations" in fields:
        raise DatasetError(
            f"{shown(manifest)}: sorted with --multi, where a photo lies in several folders; corrections are read "
            "from a sort without --multi"
        )
    missing = [f for f in MANIFEST_FIELDS if f not in fields]
    if missing:
        raise DatasetError(f"{shown(manifest)}: was edited or is not sort's: column(s) {', '.join(missing)} missing")
    return rows


def filed_photos(rows: list[dict[str, str]], root: Path) -> list[Path]:
    """Where sort filed each manifest row's photo inside `root` (`_filed_at`); DatasetError naming the first row teach
    refuses, by its line. The one rule for teach and for the web page, which must never write beside such a row
    (rewriting the manifest would hide the damage from teach)."""
    return [_filed_at(row, root, n) for n, row in enumerate(rows, start=2)]


def _filed_at(row: dict[str, str], root: Path, line: int) -> Path:
    """Where sort filed a manifest row's photo, inside `root`: its destination's class folder and file name (sort
    writes absolute paths, and the folder may have been moved or copied since), checked against the row's answer."""
    where = f"{shown(root / MANIFEST_NAME)}: line {line}"
    _check_cells(row, where)
    destination = Path(row.get("destination") or "")
    names = destination.parts[1:] if destination.is_absolute() else destination.parts
    if len(names) < 2 or not (destination.is_absolute() or len(names) == 2):
        raise DatasetError(f"{where}: was edited: its destination is not a file in a class folder")
    folder, name = names[-2:]
    if folder not in RESERVED and folder != row.get("top1_label"):
        raise DatasetError(f"{where}: was edited: filed in {folder!r} but its answer is {row.get('top1_label')!r}")
    return root / folder / name


def _check_cells(row: dict, where: str) -> None:
    """DatasetError when a row has fewer cells than the header (csv gives the missing ones as None: a file cut off
    mid-row, or a row cut short by hand) or more (kept under the key None): sort writes every cell of every row."""
    header = [key for key in row if key is not None]
    cells = sum(row[key] is not None for key in header)
    if cells < len(header):
        raise DatasetError(
            f"{where}: is incomplete, {cells} of the header's {len(header)} cells (the file was cut off mid-row, "
            "or the row edited)"
        )
    if None in row:
        raise DatasetError(f"{where}: was edited: {cells + len(row[None])} cells, the header has {len(header)}")


def class_files(root: Path) -> tuple[dict[Path, str], list[tuple[str, str]]]:
    """Every image file below `root`'s class folders, with the class folder it lies in (subfolders included), and
    the folders that could not be read: the files teach reads (the web page looks there for a photo sort filed)."""
    files: dict[Path, str] = {}
    skipped: list[tuple[str, str]] = []
    for sub in _class_subfolders(root):
        found, problems = walk_files(sub, IMAGE_EXTENSIONS)
        skipped.extend(problems)
        files.update((path, sub.name) for path in found)
    return files, skipped


def _manifest_classes(rows: list[dict[str, str]]) -> set[str]:
    """The model's classes a manifest names (each row's answer and its top classes)."""
    columns = ["label", *(f"top{i}_label" for i in range(1, MANIFEST_TOP + 1))]
    return {row[c] for row in rows for c in columns if row.get(c)}


def read_corrections(folder: str | os.PathLike, size: int = IMAGE_SIZE, known: list[str] | None = None) -> TeachPhotos:
    """The labelled photos of a sorted folder after the user's moves (the module's docstring); DatasetError for a
    folder without sort's manifest, with one that was edited, or with a class folder that cannot name a new class.
    `known`: the model's classes, which a new class's name must differ from (the classes the manifest names are
    checked whether given or not)."""
    root = Path(folder).resolve()
    rows = _manifest_rows(root)
    filed = dict(zip(filed_photos(rows, root), (row["source"] for row in rows), strict=True))
    # sort keeps one copy of identical photos of one name, and the manifest a row for each: one file, read once
    shared = len(rows) - len(filed)
    files, skipped = class_files(root)
    if not rows and files:  # sort refuses a folder with nothing to sort before writing anything: this was emptied
        raise DatasetError(
            f"{shown(root / MANIFEST_NAME)}: was edited or is not sort's: it lists no photo, but its folders hold "
            f"{len(files)}"
        )
    # a photo still where sort put it is that row's, whatever its content: only the others are matched by content
    digests = {path: regular_file_sha256(path) for path in files if path not in filed}
    items, counts = _matched(filed, files, digests)
    if shared:
        counts[SHARED] = shared
    classes = _manifest_classes(rows) | set(known or ())
    labels = sorted({label for _, label, _ in items})
    for name in labels:
        if name not in classes:
            _refuse_name(root / name, name, classes, labels)
    photos = _decoded(items, size, skipped, digests)
    photos.folders = {name: [str(root / name)] for name in labels}
    if counts[NOT_FOUND] and photos.found["added"]:
        photos.found[ADDED_OR_RENAMED] = photos.found.pop("added")
    photos.found.update(counts)
    return photos


def _matched(
    filed: dict[Path, str], files: dict[Path, str], digests: dict[Path, str | None]
) -> tuple[list[tuple[Path, str, str]], Counter]:
    """Each manifest row's photo found where it is now (`filed`: where sort put it -> its source; `files`: the files
    now, with their class folders; `digests`: the SHA-256 of those not where sort put a photo, None if unreadable):
    the photos to teach (path, class, kind), and the rows not taught, counted."""
    by_content: dict[str, list[Path]] = {}
    for path, digest in digests.items():
        if digest is not None:
            by_content.setdefault(digest, []).append(path)
    counts: Counter = Counter()
    items: list[tuple[Path, str, str]] = []
    claimed: set[Path] = set()
    for destination, source in filed.items():
        was = destination.parent.name
        now = destination if destination in files else None
        if now is None:
            now, searched = _moved_to(destination, source, by_content, claimed)
            if now is None:
                counts["deleted" if searched else NOT_FOUND] += 1
                continue
        claimed.add(now)
        if files[now] in RESERVED:
            counts[f"left in {was}" if files[now] == was else f"moved to {files[now]}"] += 1
        else:
            items.append((now, files[now], "confirmed" if files[now] == was else "moved"))
    items += [(p, top, "added") for p, top in files.items() if p not in claimed and top not in RESERVED]
    return items, counts


def _moved_to(
    destination: Path, source: str, by_content: dict[str, list[Path]], claimed: set[Path]
) -> tuple[Path | None, bool]:
    """Where the photo sort copied from `source` to `destination` is now: the unclaimed file with the source's content
    (sort's copies and links are byte for byte the source), else one with the destination's file name; None when
    neither is found. The flag: whether the source could be read, so that no file holding its content means the
    photo is gone (else it may have been renamed)."""
    digest = _source_sha256(source)
    candidates = by_content.get(digest, []) if digest is not None else []
    if not candidates:
        candidates = [p for paths in by_content.values() for p in paths if p.name == destination.name]
    return next((p for p in candidates if p not in claimed), None), digest is not None


def _source_sha256(source: str) -> str | None:
    """The SHA-256 of a row's source, None when it is not there to read: the web page's `upload:<name>` (no path, never
    looked up: a long name would fail as too long for a file name), a path that cannot be looked at (too long, a NUL
    in it: any OSError or ValueError), or one that is no regular file."""
    if not source or source.startswith(UPLOAD_SOURCE):
        return None
    try:
        return regular_file_sha256(source)  # None for an OSError while it opens or reads the file
    except (OSError, ValueError):  # what it lets through: a NUL in the path is a ValueError
        return None
