"""Placing `heritage sort`'s files (`inference.sort`): one photo put in one class folder, never overwriting.

- A copy is written to a temporary name (TEMP_PREFIX) and published with `os.link`, which fails rather than replace an
  existing name; a clash gets `-1`, `-2`, ... (`names.portable_name`).
- `mode="link"` makes hard links only; where one is impossible (NOT_LINKABLE: another file system, or not permitted)
  the photo is copied instead and counted, with why. Never a symbolic link.
- A name a manifest row names is never given to another photo, even once its file is gone; a file there holding the
  same bytes is an identical photo's copy, shared (SHARED), or one placed by an earlier run killed before its
  manifest (FOUND).
- The temporary files a killed sort left (its copies', the manifest's, skipped.csv's and the settings') are removed
  while the output folder's lock is held.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from heritage_cnn.base.io import file_sha256, stale_temps
from heritage_cnn.base.names import portable_name
from heritage_cnn.inference.sort_manifest import MANIFEST_NAME, SKIPPED_NAME
from heritage_cnn.inference.sort_settings import SETTINGS_NAME

TEMP_PREFIX = ".heritage-sort-"
# How one placement of a photo went: a new copy or link; its copy found already there by content, left by an earlier
# run killed before its manifest; or the file of an identical photo (a manifest row's, or one placed in this run).
NEW, FOUND, SHARED = "new", "found", "shared"
NOT_LINKABLE = {
    errno.EXDEV: "other file system",
    errno.EPERM: "hard link not permitted",
    errno.EACCES: "hard link not permitted",
    errno.EMLINK: "too many links",
    errno.ENOTSUP: "file system without hard links",
}


class PlaceCounts(Protocol):
    """What `place` counts (sort's `SortSummary`): hard links made, copies made, why a link became a copy -> count."""

    linked: int
    copied: int
    copied_because: dict[str, int]


def _same_content(a: Path, b: Path) -> bool:
    return a.stat().st_size == b.stat().st_size and file_sha256(a) == file_sha256(b)


def _publish(temp: Path, name: Path) -> bool:
    """Give the finished copy `temp` the name `name` unless that name exists (False): never an overwrite.

    A hard link does it atomically; on a file system without hard links (FAT, exFAT) a rename after a
    check, safe because the folder is locked against other sorts."""
    try:
        os.link(temp, name)
        return True
    except FileExistsError:
        return False
    except OSError as error:
        if error.errno not in NOT_LINKABLE:
            raise
    if name.exists() or name.is_symlink():
        return False
    os.rename(temp, name)
    return True


def _candidates(folder: Path, name: str) -> Iterator[Path]:
    """`name` made valid (`names.portable_name`: UTF-8, no control characters, at most 255 bytes), then
    `-1`, `-2`, ... before the suffix."""
    n = 0
    while True:
        yield folder / portable_name(name, n)
        n += 1


def place(source: Path, folder: Path, mode: str, summary: PlaceCounts, taken: set[Path]) -> tuple[Path, str]:
    """Put `source` in `folder` under a free name, or find it already there: (where it is, NEW, FOUND or SHARED).

    `taken`: every file a manifest row names (as `sort_manifest.row_files` gives it) or this run placed. Such a name
    is never given to another photo, even once its file is gone (moved or deleted by the user): teach would read the
    newcomer as that row's photo. A taken file holding the same bytes is an identical photo's copy: shared (SHARED).
    An untaken one holding them was placed by an earlier run killed before its manifest (FOUND). Adds the name used
    to `taken`."""
    temp = None
    try:
        for candidate in _candidates(folder, source.name):
            if candidate.exists() or candidate.is_symlink():
                if candidate.is_file() and not candidate.is_symlink() and _same_content(candidate, source):
                    outcome = SHARED if candidate in taken else FOUND
                    taken.add(candidate)
                    return candidate, outcome
                continue
            if candidate in taken:  # a manifest row's copy, moved or deleted since: its name stays that row's
                continue
            if mode == "link" and temp is None:
                try:
                    os.link(source, candidate)  # fails if the name appeared meanwhile: never an overwrite
                    summary.linked += 1
                    taken.add(candidate)
                    return candidate, NEW
                except FileExistsError:
                    continue
                except OSError as error:
                    if error.errno not in NOT_LINKABLE:
                        raise
                    reason = NOT_LINKABLE[error.errno]
                    summary.copied_because[reason] = summary.copied_because.get(reason, 0) + 1
            if temp is None:
                fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".tmp", dir=folder)
                os.close(fd)
                temp = Path(name)
                shutil.copy2(source, temp)
            if not _publish(temp, candidate):
                continue
            summary.copied += 1
            taken.add(candidate)
            return candidate, NEW
    finally:
        if temp is not None:
            temp.unlink(missing_ok=True)
    raise AssertionError("unreachable")


def remove_stale_temps(root: Path) -> None:
    """Temporary copies left by a sort that was killed (only ours: the lock is held)."""
    for folder in [root, *(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())]:
        for temp in folder.glob(f"{TEMP_PREFIX}*.tmp"):
            temp.unlink(missing_ok=True)
        for name in (MANIFEST_NAME, SKIPPED_NAME, SETTINGS_NAME):
            for temp in stale_temps(folder, name):
                temp.unlink(missing_ok=True)
