"""What `heritage teach` learns from: folders of new classes, and corrections read from folders people edit.

Two sources, one result (`TeachPhotos`: decoded photos, each with its class and why it is there):

- **New classes**: a folder holding one subfolder per new class (`PORTALS/portal/*.jpg`). A subfolder named like a
  class the model knows, or like sort's reserved folders (`_uncertain`, `_none`), is refused: photos of a known class
  are corrections, and come from a sorted folder.
- **Corrections**: a folder `heritage sort` wrote (its `manifest.csv` says where each photo was filed) after the user
  moved photos between its folders. Each photo of the manifest is found where it is now, by its content (SHA-256), so
  a renamed photo still counts:
  - still in the class folder it was filed in: **confirmed** (a label the user saw and kept);
  - in another class folder: **moved**, a correction; moved into a folder the model does not know: a new class;
  - not found: **deleted** (listed, not learned from); photos left in `_uncertain/` or `_none/`: not labelled.
  Photos in a class folder that the manifest does not list were **added** by the user and learn as that class.
  The web page's "mark wrong" writes the same kind of folder (`apps.corrections`): a photo the user marked is stored
  in the right class's folder, with a manifest row naming the folder the model chose.
  A manifest that sort did not write as it is (a missing column, a destination outside the folder or in a folder
  its label does not name) is refused with a line saying so: corrections are made by moving photos, not by editing
  the manifest.

Every photo is decoded by the prediction policy (`decode.try_decode`); a file that cannot be read is skipped and
listed, never stops the run. The user's folders are only read.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from heritage_cnn.base.io import file_sha256
from heritage_cnn.base.names import CSV_ERRORS, shown
from heritage_cnn.data.decode import try_decode
from heritage_cnn.data.folders import IMAGE_EXTENSIONS, DatasetError, walk_files
from heritage_cnn.inference.sort import MANIFEST_FIELDS, NONE, UNCERTAIN
from heritage_cnn.models.metadata import class_name_problem

RESERVED = (UNCERTAIN, NONE)
MIN_NEW_PHOTOS = 20  # photos a new class needs: the fewest the benchmark teaches from (docs/teach.md)
SHARED = "manifest rows sharing another row's file (identical photos)"  # counted, not taught twice
KINDS = ("new", "moved", "added", "confirmed")  # why a photo is taught; "new": a photo of a new class's folder


@dataclass
class TeachPhotos:
    """Decoded photos (N, 3, S, S) uint8 with their class names, paths, SHA-256 and why each is taught; the files
    skipped (path, reason) and what the corrections folders held (`found`: counts by kind, deleted included)."""

    images: torch.Tensor
    labels: list[str]
    paths: list[str]
    digests: list[str]
    kinds: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    found: Counter = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, keep: list[int]) -> TeachPhotos:
        index = torch.as_tensor(keep, dtype=torch.long)
        pick = [self.labels, self.paths, self.digests, self.kinds]
        return TeachPhotos(self.images[index], *([p[i] for i in keep] for p in pick), self.skipped, self.found)

    def per_class(self) -> dict[str, int]:
        return dict(Counter(self.labels))


def _decoded(
    items: list[tuple[Path, str, str]],
    size: int,
    skipped: list[tuple[str, str]],
    digests: dict[Path, str] | None = None,
) -> TeachPhotos:
    """Decode (path, class, kind) items; unreadable files go to `skipped`. `digests`: SHA-256 already read, by path."""
    digests = digests or {}
    arrays, labels, paths, sha256, kinds = [], [], [], [], []
    for path, label, kind in items:
        pixels = try_decode(path, size)
        if isinstance(pixels, str):
            skipped.append((str(path), pixels))
            continue
        arrays.append(pixels)
        labels.append(label)
        paths.append(str(path))
        sha256.append(digests.get(path) or file_sha256(path))
        kinds.append(kind)
    images = (
        torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        if arrays
        else torch.empty(0, 3, size, size, dtype=torch.uint8)
    )
    return TeachPhotos(images, labels, paths, sha256, kinds, skipped)


def _class_subfolders(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"{shown(folder)}: not a folder")
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_new_classes(folder: str | os.PathLike, known: list[str], size: int = 64) -> TeachPhotos:
    """The photos of a folder of new-class subfolders; DatasetError (one line) for a subfolder that cannot be a new
    class (a known or reserved name, a name no class may have) or holds fewer than MIN_NEW_PHOTOS readable photos."""
    root = Path(folder)
    subfolders = _class_subfolders(root)
    if not subfolders:
        raise DatasetError(
            f"{shown(root)}: no class folders in it (one subfolder per new class: {shown(root)}/portal/)"
        )
    items, skipped = [], []
    for sub in subfolders:
        name = sub.name
        if name in known:
            raise DatasetError(
                f"{shown(sub)}: {name!r} is already a class of the model; photos of a class it knows are corrections "
                "(--corrections: a sorted folder whose photos you moved)"
            )
        if name in RESERVED:
            raise DatasetError(f"{shown(sub)}: {name!r} is reserved for sort's photos of no class or an unsure one")
        problem = class_name_problem(name)
        if problem:
            raise DatasetError(f"{shown(sub)}: the folder name {problem}, so it cannot name a class")
        files, problems = walk_files(sub, IMAGE_EXTENSIONS)
        skipped.extend(problems)
        items.extend((path, name, "new") for path in files)
    photos = _decoded(items, size, skipped)
    for sub in subfolders:
        count = photos.labels.count(sub.name)
        if count < MIN_NEW_PHOTOS:
            raise DatasetError(f"{shown(sub)}: {count} readable photo(s); a new class needs at least {MIN_NEW_PHOTOS}")
    photos.found = Counter({"new": len(photos)})
    return photos


def _manifest_rows(root: Path) -> list[dict[str, str]]:
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        raise DatasetError(
            f"{shown(manifest)}: missing; --corrections reads a folder that heritage sort wrote (its manifest says "
            "where each photo was filed)"
        )
    with open(manifest, newline="", encoding="utf-8", errors=CSV_ERRORS) as handle:
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


def _filed_folder(row: dict[str, str], root: Path, line: int) -> str:
    """The folder sort filed a manifest row's photo in, checked against the row's own answer."""
    where = f"{shown(root / 'manifest.csv')}: line {line}"
    destination = Path(row.get("destination") or "")
    if destination.parent.parent != root:
        raise DatasetError(f"{where}: was edited: its destination is not a folder of {shown(root)}")
    folder = destination.parent.name
    if folder not in RESERVED and folder != row.get("top1_label"):
        raise DatasetError(f"{where}: was edited: filed in {folder!r} but its answer is {row.get('top1_label')!r}")
    return folder


def read_corrections(folder: str | os.PathLike, size: int = 64) -> TeachPhotos:
    """The labelled photos of a sorted folder after the user's moves (the module's docstring); DatasetError for a
    folder without sort's manifest or with one that was edited."""
    root = Path(folder).resolve()
    rows = _manifest_rows(root)
    filed = {Path(row["destination"]): _filed_folder(row, root, n) for n, row in enumerate(rows, start=2)}
    sources = {Path(row["destination"]): Path(row["source"]) for row in rows}
    # sort keeps one copy of identical photos of one name, and the manifest a row for each: one file, read once
    shared = len(rows) - len(filed)
    files, skipped = [], []
    for sub in _class_subfolders(root):
        found, problems = walk_files(sub, IMAGE_EXTENSIONS)
        skipped.extend(problems)
        files.extend(found)
    at_destination = {path for path in files if path in filed}
    # a photo still where sort put it is that row's, whatever its content: only the others are matched by content
    digests = {path: file_sha256(path) for path in files if path not in at_destination}
    by_content: dict[str, list[Path]] = {}
    for path, digest in digests.items():
        by_content.setdefault(digest, []).append(path)
    counts: Counter = Counter({SHARED: shared} if shared else {})
    items: list[tuple[Path, str, str]] = []
    claimed: set[Path] = set()
    for destination, was in filed.items():
        if destination in at_destination:
            claimed.add(destination)
            if was not in RESERVED:
                items.append((destination, was, "confirmed"))
            counts["confirmed" if was not in RESERVED else f"left in {was}"] += 1
            continue
        now = _moved_to(destination, sources[destination], by_content, claimed)
        if now is None:
            counts["deleted"] += 1
            continue
        claimed.add(now)
        if now.parent.name in RESERVED:
            counts[f"moved to {now.parent.name}"] += 1
        else:
            items.append((now, now.parent.name, "moved" if now.parent.name != was else "confirmed"))
            counts["moved" if now.parent.name != was else "confirmed"] += 1
    for path in files:
        if path not in claimed and path not in at_destination and path.parent.name not in RESERVED:
            items.append((path, path.parent.name, "added"))
            counts["added"] += 1
    for name in {label for _, label, _ in items}:
        problem = class_name_problem(name)
        if problem:
            raise DatasetError(f"{shown(root / name)}: the folder name {problem}, so it cannot name a class")
    photos = _decoded(items, size, skipped, digests)
    photos.found = counts
    return photos


def _moved_to(destination: Path, source: Path, by_content: dict[str, list[Path]], claimed: set[Path]) -> Path | None:
    """Where the photo sort copied from `source` to `destination` is now: the unclaimed file with the source's content
    (sort's copies and links are byte for byte the source), else one with the destination's file name; None: deleted."""
    candidates: list[Path] = []
    if source.is_file():
        candidates = by_content.get(file_sha256(source), [])
    if not candidates:
        candidates = [p for paths in by_content.values() for p in paths if p.name == destination.name]
    return next((p for p in candidates if p not in claimed), None)
