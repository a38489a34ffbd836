"""Atomic file writes and safe tensor files.

Every file the tool writes goes to a temporary file in the same folder and is renamed into
place, so a crash never leaves half a checkpoint where a good one was. Tensors are stored as
safetensors, which cannot carry code, unlike pickles.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import glob
import hashlib
import io
import json
import os
import pickletools
import re
import secrets
import stat
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from heritage_cnn.base.names import CSV_ERRORS, json_text


class CheckpointError(ValueError):
    """A weights or metadata file that cannot be used. The message names the file."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    Errors name `path`, never the temporary file; a folder (or a name ending in a separator) is refused
    before anything is written."""
    given = os.fspath(path)
    path = Path(path)
    if given.endswith(("/", os.sep)) or path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder: give a file name", given)
    path.parent.mkdir(parents=True, exist_ok=True)
    # named before it is made, so that an interrupt at any moment after (Ctrl-C inside mkstemp) still removes it
    tmp = str(path.parent / f"{_temp_prefix(path.name)}{secrets.token_hex(8)}.tmp")
    try:
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        except OSError as error:  # a folder where no file can be made (/proc, read-only): the file asked for, not ours
            error.filename, error.filename2 = given, None
            tmp = None  # not made: nothing to remove
            raise
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(error, OSError) and error.filename in (None, tmp):
            error.filename, error.filename2 = str(path), None  # a full disk says which file it was writing
        raise


def _temp_prefix(name: str) -> str:
    """How `atomic_path`'s temporary file for `name` begins; the name is cut so that it fits in 255 bytes too."""
    return f".{os.fsdecode(os.fsencode(name)[:200])}."


def stale_temps(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """The temporary files `atomic_path` left in `folder` for the file `name` (None: for any file) when its process
    was killed mid-write. Remove them only while holding the folder's lock: otherwise one may be another process's
    file being written. Only names of `atomic_path`'s exact shape (its 16 hex digits) are ours: a user's own
    `.notes.tmp` in an output folder is not."""
    prefix = ".*" if name is None else glob.escape(_temp_prefix(name)) + "*"
    ours = re.compile(("." + ".+" if name is None else re.escape(_temp_prefix(name))) + r"[0-9a-f]{16}\.tmp")
    return [path for path in Path(folder).glob(f"{prefix}.tmp") if ours.fullmatch(path.name)]


def file_in_the_way(path: str | os.PathLike) -> Path | None:
    """The file that stops `path` being a folder: `path` itself, or a folder above it that is a file; None when
    `path` is a folder or can be made one. Said before any work, in words, rather than as mkdir's OSError. A
    symbolic link to nothing on the way (`path` or a folder above it, as typed) is such a file: mkdir cannot make a
    folder through it and says only "File exists"; it is returned as typed."""
    typed = Path(path)
    dangling = next((p for p in (typed, *typed.parents) if p.is_symlink() and not p.exists()), None)
    if dangling is not None:
        return dangling
    target = Path(os.path.realpath(path))
    return next((p for p in (target, *target.parents) if p.exists() and not p.is_dir()), None)


def output_problem(path: str | os.PathLike, folder: bool = True, flag: str = "") -> str | None:
    """Why `path` cannot be written as an output folder (`folder`) or file, in one line that names the file in the
    way (`flag`, e.g. "--out", before the path), or None. Asked before any work: otherwise a command learns it only
    when it writes, after all its work, and says mkdir's "File exists" or "Not a directory", naming neither the file
    in the way nor the fix. An output file's existing file is no problem: it is replaced atomically."""
    given = os.fspath(path)
    name = f"{flag} {given}" if flag else given
    if not folder and (given.endswith(("/", os.sep)) or os.path.isdir(given)):
        return f"{name}: is a folder: give a file name"
    blocker = file_in_the_way(given if folder else Path(given).parent)
    if blocker is None:
        return writable_problem(given if folder else Path(given).parent, name)
    if blocker.is_symlink():
        why = "make that folder or choose another" if folder else "make its folder or choose another name"
        return f"{name}: cannot be made: {os.fspath(blocker)} is a link to {os.readlink(blocker)}, which does not exist; {why}"
    if folder and blocker == Path(os.path.realpath(given)):
        return f"{name}: is a file; the output folder must be a folder"
    # the file in the way as the user typed it (`out/sub` names `out`), else its real path
    typed = next((p for p in Path(given).parents if Path(os.path.realpath(p)) == blocker), blocker)
    why = "; the output folder must be a folder" if folder else ", not a folder"
    return f"{name}: cannot be made: {os.fspath(typed)} is a file{why}"


def writable_problem(folder: str | os.PathLike, name: str) -> str | None:
    """Why nothing can be written in the folder `folder` (or made there: its nearest existing folder above), or None:
    otherwise a long command learns it only when it writes its results, at the end, and loses them."""
    target = Path(os.path.realpath(folder))
    existing = next(p for p in (target, *target.parents) if p.exists())
    if os.access(existing, os.W_OK | os.X_OK):
        return None
    return f"{name}: cannot be written: {os.fspath(existing)} is not writable (permissions or a read-only disk)"


def inside_problem(out: str | os.PathLike, folder: str | os.PathLike, out_name: str, folder_name: str) -> str | None:
    """Why the output folder `out` must not be written, in one line naming both as the caller calls them (`--out`,
    `--data`): it is, or lies inside, the folder of photos `folder` (`inside_input`), whose next reading would take
    its figures for photos; None when it does not."""
    if inside_input(out, [folder]) is None:
        return None
    return f"{out_name} {out}: inside the {folder_name} folder {folder}; its figures would be read as photos there"


def holds_anything(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder with anything in it. A command that writes a new folder of results takes only a
    new or empty one, so that its files never mix with another run's."""
    path = Path(path)
    return path.is_dir() and any(path.iterdir())


def inside_input(path: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> str | None:
    """The input (a photo or a folder, as given) that the output `path` is or lies below, or None: a command that
    writes there would overwrite what it reads, or read what it wrote on its next run. Paths are compared resolved
    (`..` and symbolic links do not hide an input), and a second name of an input (a hard link) is found too. The
    rule `heritage sort` applies to its OUT and IN_DIR, for the commands that take any photos and folders."""
    target = Path(os.path.realpath(path))
    for item in inputs:
        source = Path(os.path.realpath(item))
        if target == source or source in target.parents:
            return os.fspath(item)
        with contextlib.suppress(OSError):
            if os.path.samefile(target, source):
                return os.fspath(item)
    return None


def umask() -> int:
    """The process's file-creation mask (os.umask reads it only by setting it, so it is set back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (hex), read in blocks: photos can be large."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_text(path: str | os.PathLike, text: str, errors: str = "strict") -> None:
    """UTF-8; `errors="surrogateescape"` (`names.CSV_ERRORS`) writes file names' undecodable bytes as they are."""
    atomic_write_bytes(path, text.encode("utf-8", errors))


def atomic_write_csv(
    path: str | os.PathLike, fields: list[str], rows: Iterable[dict[str, Any]], line_end: str = "\r\n"
) -> None:
    """`rows` as a CSV of `fields` (a missing cell empty, other keys left out), written atomically, file names exact:
    their undecodable bytes as they are on disk (`names.CSV_ERRORS`), a comma, quote or newline in one quoted."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, restval="", extrasaction="ignore", lineterminator=line_end)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue(), errors=CSV_ERRORS)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Valid UTF-8 JSON whatever file names `obj` holds (`names.json_text`)."""
    atomic_write_text(path, json_text(obj) + "\n")


MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit on the JSON header


def save_tensors(
    path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Write tensors as safetensors, atomically."""
    from safetensors.torch import save

    contiguous = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    atomic_write_bytes(path, save(contiguous, metadata=metadata))


def safetensors_header(data: bytes) -> dict[str, Any] | None:
    """The JSON header of safetensors bytes (8-byte little-endian length, then that much JSON), or None
    when `data` does not start like one. Decided by parsing, never by a magic byte: a valid header
    length of 128 mod 256 makes the first byte 0x80, the same as a pickle's."""
    if len(data) < 8:
        return None
    length = int.from_bytes(data[:8], "little")
    if not 2 <= length <= min(len(data) - 8, MAX_HEADER_BYTES):
        return None
    try:
        header = json.loads(data[8 : 8 + length])
    except (ValueError, RecursionError):
        return None
    return header if isinstance(header, dict) else None


def is_pickle(data: bytes) -> bool:
    """True for a torch.save zip archive or bytes that parse as a pickle (opcodes are read, never run)."""
    if zipfile.is_zipfile(io.BytesIO(data)):
        return True
    try:
        for _ in pickletools.genops(io.BytesIO(data)):
            pass
    except Exception:  # whatever the parser trips on, it is not a pickle
        return False
    return True


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and string metadata of a safetensors file; a pickle, a zip or a truncated file is a
    CheckpointError that names the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read ({error.strerror or error})") from None
    header = safetensors_header(data)
    if header is None:
        if is_pickle(data):
            raise CheckpointError(
                f"{path}: is a pickle/torch.save file; heritage-cnn only loads safetensors "
                "(pickles can run code when loaded)"
            )
        raise CheckpointError(f"{path}: not a valid safetensors file (no safetensors header)")
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path}: not a valid safetensors file ({error})") from None
    metadata = header.get("__metadata__") or {}
    return tensors, metadata if isinstance(metadata, dict) else {}


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a safetensors file; anything else (a pickle, a truncated file) is a CheckpointError."""
    return read_safetensors(path)[0]


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read ({error.strerror or error})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: JSON nested too deeply to read") from None


class FolderBusy(ValueError):
    """Another process holds the folder (a sort or a training run writing into it)."""


@contextlib.contextmanager
def folder_lock(folder: Path, name: str, doing: str, busy: type[FolderBusy] = FolderBusy) -> Iterator[None]:
    """Hold an exclusive, non-blocking `flock` on `folder / name` or raise `busy` at once, naming the holder's pid.

    The kernel releases the lock with the process, so a killed holder never leaves the folder locked; the
    file stays (removing it would race with a process that has just opened it). A lock that is not a plain file
    (a link, which the pid would be written through to a file outside the folder; a folder; a pipe) is a ValueError
    naming it: nothing is written."""
    path = folder / name
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # no link, never wait on a pipe
    try:
        descriptor = os.open(path, flags, 0o666)
    except OSError as error:
        kind = "a link" if error.errno == errno.ELOOP else error.strerror
        raise ValueError(f"{path}: the folder's lock file cannot be used ({kind}); remove it") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise ValueError(f"{path}: the folder's lock file is not a plain file; remove it")
    handle = os.fdopen(descriptor, "r+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise busy(f"{folder} is being {doing} by another process (pid {holder})") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()
