"""Placing `heritage sort`'s files (`inference.sort`): one photo put in one class folder, never overwriting.

- A copy is written to a temporary name (TEMP_PREFIX) and published with `os.link`, which fails rather than replace an
  existing name; a clash gets `-1`, `-2`, ... (`copy_name`). A copy's name never starts with "." (`HIDDEN_MARK`): a
  hidden copy is one that `teach --corrections` and file managers do not show, so a correction made by moving it
  would be lost.
- `mode="link"` makes hard links only, to the photo's real file (a symbolic link among the photos is followed: a link
  to the link would dangle once the originals move); where one is impossible (NOT_LINKABLE: another file system, or
  not permitted) the photo is copied instead and counted, with why. Never a symbolic link.
- A name a manifest row names is never given to another photo, even once its file is gone; a file there holding the
  same bytes is an identical photo's copy, shared (SHARED), or one placed by an earlier run killed before its
  manifest (FOUND). Each file is hashed once per run (`Digests`).
- A photo that cannot be read when it is placed (moved away or made unreadable since it was decoded) raises
  `SourceError`: sort skips and lists it and goes on. Any other error is the output's (a full or read-only disk) and
  stops the run, naming the class folder, never a temporary file.
- The temporary files a killed sort left (its copies', the manifest's, skipped.csv's and the settings') are removed
  while the output folder's lock is held.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from heritage_cnn.base.io import file_sha256, stale_temps
from heritage_cnn.base.names import portable_name
from heritage_cnn.inference.sort_manifest import MANIFEST_NAME, SKIPPED_NAME
from heritage_cnn.inference.sort_settings import SETTINGS_NAME

TEMP_PREFIX = ".heritage-sort-"
HIDDEN_MARK = "_"  # put before a copy's name that would start with ".": `.IMG_1.jpg` -> `_.IMG_1.jpg`
COPY_BLOCK = 1 << 20
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


class SourceError(OSError):
    """The photo being placed could not be read (gone, or unreadable since it was decoded): a file to skip and list,
    not a reason to stop. An OSError naming the photo, so that one that escapes is still one line."""

    @classmethod
    def of(cls, source: Path, error: OSError) -> SourceError:
        return cls(error.errno, error.strerror or str(error), str(source))


class Digests:
    """Each file's SHA-256, computed once per run: many photos of one name and size (`scan.bmp` in every folder) are
    each compared with every earlier one's copy, and hashing all of them again for each newcomer made a sort
    quadratic in bytes read. A digest is reused while the file's identity, size and times are unchanged."""

    def __init__(self) -> None:
        self._known: dict[Path, tuple[tuple[int, ...], str]] = {}

    def of(self, path: Path) -> str:
        stat = path.stat()
        key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        known = self._known.get(path)
        if known is None or known[0] != key:
            known = self._known[path] = (key, file_sha256(path))
        return known[1]


@contextlib.contextmanager
def _writing(folder: Path) -> Iterator[None]:
    """An OSError while writing into `folder` names the folder: the temporary file's name means nothing to the user,
    and the folder is what is full or read-only. The photo's own errors (SourceError) pass unchanged."""
    try:
        yield
    except SourceError:
        raise
    except OSError as error:
        error.filename, error.filename2 = str(folder), None
        raise


def _read(reader: BinaryIO, source: Path) -> bytes:
    try:
        return reader.read(COPY_BLOCK)
    except OSError as error:
        raise SourceError.of(source, error) from None


def _copy(source: Path, temp: Path, folder: Path) -> None:
    """`source`'s bytes, permission bits and times (as `shutil.copy2`) into the new file `temp`, made here: the photo's
    errors (opening or reading it) are SourceError, the output's name `folder` (`_writing`)."""
    try:
        reader = open(source, "rb")  # noqa: SIM115 (closed below: its errors and the output's are told apart)
    except OSError as error:
        raise SourceError.of(source, error) from None
    with reader, _writing(folder), open(temp, "xb") as writer:
        while block := _read(reader, source):
            writer.write(block)
        writer.flush()  # before the times are set: a later write would change them
        stat = os.fstat(reader.fileno())
        os.chmod(writer.fileno(), stat.st_mode & 0o7777)
        os.utime(writer.fileno(), ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _source_problem(source: Path) -> SourceError | None:
    """Why `source` cannot be read now (a SourceError), or None: asked when an operation on both the photo and the
    output failed, to tell whose fault it was."""
    try:
        with open(source, "rb") as handle:
            handle.read(1)
    except OSError as error:
        return SourceError.of(source, error)
    return None


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


def copy_name(name: str, n: int = 0) -> str:
    """The name of a photo's copy: `name` made valid (`names.portable_name`: UTF-8, no control characters, at most 255
    bytes), with `-n` before the suffix when n > 0, and HIDDEN_MARK before a name that starts with "." (a hidden copy
    is left out by `teach --corrections`, which would lose a correction made by moving it)."""
    return portable_name(HIDDEN_MARK + name if name.startswith(".") else name, n)


def _names(folder: Path, name: str, legacy: bool = False) -> Iterator[Path]:
    """`copy_name`'s names in `folder`, `-1`, `-2`, ... on; `legacy`: as sort named copies before HIDDEN_MARK (a hidden
    photo's copy hidden too)."""
    n = 0
    while True:
        yield folder / (portable_name(name, n) if legacy else copy_name(name, n))
        n += 1


def _holds(candidate: Path, source: Path, size: int, digests: Digests) -> bool:
    """Whether the file `candidate` (not a link) holds `source`'s bytes (`size` long)."""
    try:
        if not candidate.is_file() or candidate.is_symlink() or candidate.stat().st_size != size:
            return False
        mine = digests.of(candidate)
    except FileNotFoundError:  # the user moved it away this instant: not this photo's copy, and its name not free
        return False
    try:
        return digests.of(source) == mine
    except OSError as error:
        raise SourceError.of(source, error) from None


def _earlier_hidden_copy(source: Path, folder: Path, size: int, taken: set[Path], digests: Digests) -> Path | None:
    """A copy of a hidden photo (`.IMG_1.jpg`) with its bytes under the name sort gave such copies before HIDDEN_MARK,
    so that an identical photo sorted later shares it rather than getting a second copy; None if there is none."""
    if not source.name.startswith("."):
        return None
    for old in _names(folder, source.name, legacy=True):
        if not (old.exists() or old.is_symlink() or old in taken):
            return None
        if _holds(old, source, size, digests):
            return old
    raise AssertionError("unreachable")


def place(
    source: Path, folder: Path, mode: str, summary: PlaceCounts, taken: set[Path], digests: Digests
) -> tuple[Path, str]:
    """Put `source` in `folder` under a free name, or find it already there: (where it is, NEW, FOUND or SHARED).

    `taken`: every file a manifest row names (as `sort_manifest.row_files` gives it) or this run placed. Such a name
    is never given to another photo, even once its file is gone (moved or deleted by the user): teach would read the
    newcomer as that row's photo. A taken file holding the same bytes is an identical photo's copy: shared (SHARED).
    An untaken one holding them was placed by an earlier run killed before its manifest (FOUND). Adds the name used
    to `taken`. SourceError when `source` cannot be read; another OSError names `folder`."""
    try:
        size = source.stat().st_size
    except OSError as error:
        raise SourceError.of(source, error) from None
    earlier = _earlier_hidden_copy(source, folder, size, taken, digests)
    if earlier is not None:
        outcome = SHARED if earlier in taken else FOUND
        taken.add(earlier)
        return earlier, outcome
    temp = None
    try:
        for candidate in _names(folder, source.name):
            if candidate.exists() or candidate.is_symlink():
                if _holds(candidate, source, size, digests):
                    outcome = SHARED if candidate in taken else FOUND
                    taken.add(candidate)
                    return candidate, outcome
                continue
            if candidate in taken:  # a manifest row's copy, moved or deleted since: its name stays that row's
                continue
            if mode == "link" and temp is None:
                try:
                    # the real file: link(2) does not follow a symbolic link, and a link to one dangles once it moves
                    os.link(os.path.realpath(source), candidate)  # fails if the name appeared meanwhile
                    summary.linked += 1
                    taken.add(candidate)
                    return candidate, NEW
                except FileExistsError:
                    continue
                except OSError as error:
                    if error.errno not in NOT_LINKABLE:
                        raise _source_problem(source) or _named(error, folder) from None
                    reason = NOT_LINKABLE[error.errno]
                    summary.copied_because[reason] = summary.copied_because.get(reason, 0) + 1
            if temp is None:
                # named before it is made, so that the finally removes it whenever an interrupt comes (a Ctrl-C
                # inside mkstemp, after it made the file, left it behind)
                temp = folder / f"{TEMP_PREFIX}{secrets.token_hex(8)}.tmp"
                _copy(source, temp, folder)
            with _writing(folder):
                published = _publish(temp, candidate)
            if not published:
                continue
            summary.copied += 1
            taken.add(candidate)
            return candidate, NEW
    finally:
        if temp is not None:
            temp.unlink(missing_ok=True)
    raise AssertionError("unreachable")


def _named(error: OSError, folder: Path) -> OSError:
    error.filename, error.filename2 = str(folder), None
    return error


def remove_stale_temps(root: Path) -> None:
    """Temporary copies left by a sort that was killed (only ours: the lock is held)."""
    for folder in [root, *(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())]:
        for temp in folder.glob(f"{TEMP_PREFIX}*.tmp"):
            temp.unlink(missing_ok=True)
        for name in (MANIFEST_NAME, SKIPPED_NAME, SETTINGS_NAME):
            for temp in stale_temps(folder, name):
                temp.unlink(missing_ok=True)
