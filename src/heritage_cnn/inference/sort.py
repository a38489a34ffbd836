"""`heritage sort`: copy (or hard-link) a survey's photos into one folder per class, safely and resumably.

What it promises, and how:
- The photos are only read. Nothing is written outside the output folder: each destination is resolved
  (symbolic links included) and refused if it escapes, whatever the checkpoint's class names say.
- A file already in the output folder is never overwritten: a copy is written to a temporary name and
  published with `os.link`, which fails rather than replace an existing name; a clash gets `-1`, `-2`, ...
- `--mode link` makes hard links only. Where one is impossible (another file system, or not permitted)
  the photo is copied instead and counted: "linked 10, copied 2 (other file system)". Never a symbolic
  link, which would dangle once the originals move.
- One sort at a time per output folder: an exclusive, non-blocking `flock` on OUT/.heritage-sort.lock.
  A second run refuses at once (`SortLocked`, exit 2 in the CLI) naming the holder's pid, rather than
  waiting silently; the lock goes with the process, so a killed sort never leaves the folder locked.
- The manifest is rewritten atomically (temp + rename) every few photos and at the end. After a kill,
  the next run finds the photos already placed by their content and lists them again: nothing missing,
  no second copy, and leftover temporary files of the killed run are removed.
- `multi=True` (`--multi`) files a photo under every element the element map finds in it (each element's class
  folder, as copies or hard links by the same rules), and under the single-class rule (`_none/`, `_uncertain/`
  or its class) when it finds none. The manifest keeps one row per photo, so that a reader keyed by `source` and
  the resume (its `destination` exists: done) work unchanged: `destination` is the first placement (the most
  confident element's), `elements` and `destinations` (every placement) are two more columns, each a list in one
  cell (`base.names.cell_text`). An output folder is sorted one way only: mixing would leave photos filed once
  by a run that skips them as done.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from heritage_cnn.base.io import FolderBusy, atomic_write_text, file_sha256, folder_lock
from heritage_cnn.base.names import CSV_ERRORS, cell_text, portable_name, shown
from heritage_cnn.inference.classifier import Classifier, Prediction, find_photos, flat_fields
from heritage_cnn.inference.element_map import MapConfig, with_elements
from heritage_cnn.models.openset_point import NOISE

UNCERTAIN = "_uncertain"  # one of the ten, unsure which
NONE = "_none"  # none of the ten (open-set score below its threshold, or noise): checked before UNCERTAIN
MIN_CONFIDENCE = 0.6  # below this top-class probability a photo is "uncertain": sort's default, the web page's
LOCK_NAME = ".heritage-sort.lock"
TEMP_PREFIX = ".heritage-sort-"
MANIFEST_TOP = 3  # top-k columns in the manifest
MANIFEST_FIELDS = ["source", "destination", *flat_fields(MANIFEST_TOP)[1:]]
MULTI_FIELDS = [*MANIFEST_FIELDS, "elements", "destinations"]  # the manifest of a sort with `multi`
SAVE_EVERY = 64  # photos between manifest saves
NOT_LINKABLE = {
    errno.EXDEV: "other file system",
    errno.EPERM: "hard link not permitted",
    errno.EACCES: "hard link not permitted",
    errno.EMLINK: "too many links",
    errno.ENOTSUP: "file system without hard links",
}


class SortLocked(FolderBusy):
    """Another process is sorting into the same output folder."""


@dataclass
class SortSummary:
    placed: int = 0
    already_done: int = 0
    uncertain: int = 0
    none: int = 0
    noise: int = 0  # of `none`, those the noise check called noise (`Prediction.none_reason`)
    rejects: bool = False  # whether the model can call a photo none of the ten
    linked: int = 0
    copied: int = 0
    copied_because: dict[str, int] = field(default_factory=dict)  # why a link became a copy -> count
    skipped: list[tuple[str, str]] = field(default_factory=list)
    per_class: dict[str, int] = field(default_factory=dict)
    manifest: Path = Path("manifest.csv")
    multi: bool = False  # filed under every element found
    several: int = 0  # with multi: photos filed under two or more elements
    no_element: int = 0  # with multi: photos with no element found, filed by the single-class rule

    def how_placed(self) -> str:
        """E.g. "copied 12", or "linked 10, copied 2 (other file system)"."""
        if not self.linked and not self.copied_because:
            return f"copied {self.copied}"
        why = ", ".join(f"{n} {reason}" if len(self.copied_because) > 1 else reason
                        for reason, n in sorted(self.copied_because.items()))  # fmt: skip
        return f"linked {self.linked}, copied {self.copied}" + (f" ({why})" if why else "")

    def describe(self, min_confidence: float) -> str:
        """The summary the command prints."""
        noise = f" ({self.noise} of them noise)" if self.noise else ""
        none = f"{self.none} none of the ten in {NONE}/{noise}, " if self.rejects else ""
        lines = [
            f"{self.placed} photo(s) sorted ({none}{self.uncertain} below {min_confidence:.2f} in {UNCERTAIN}/), "
            f"{self.already_done} already done earlier; {self.how_placed()}"
        ]
        if self.multi:
            lines.append(
                f"--multi: {self.several} photo(s) filed under two or more elements, {self.no_element} with no "
                "element found (filed as without --multi); the counts below are placements"
            )
        if self.skipped:
            lines.append(
                f"{len(self.skipped)} unreadable file(s) skipped, listed in {shown(self.manifest.parent / 'skipped.csv')}"
            )
        lines += [f"  {name:<20} {count}" for name, count in sorted(self.per_class.items())]
        lines.append(f"manifest: {shown(self.manifest)}")
        return "\n".join(lines)


def output_lock(folder: Path) -> contextlib.AbstractContextManager[None]:
    """Hold an exclusive lock on `folder` (OUT/.heritage-sort.lock) or raise SortLocked at once."""
    return folder_lock(folder, LOCK_NAME, "sorted", SortLocked)


def _inside(root: Path, path: Path) -> Path:
    """`path` resolved, or ValueError when it is not strictly below `root` (already resolved)."""
    resolved = path.resolve()
    if root not in resolved.parents:
        raise ValueError(f"{path}: refused, it would write outside the output folder {root}")
    return resolved


def _class_folders(root: Path, classes: Iterable[str]) -> dict[str, Path]:
    """Each class's folder below `root`; refuses a name that is not one plain folder name."""
    folders = {}
    for name in [*classes, UNCERTAIN, NONE]:
        if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
            raise ValueError(f"class name {name!r} is not a plain folder name; refusing to sort into it")
        folders[name] = root / name
    return folders


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


def _place(source: Path, folder: Path, mode: str, summary: SortSummary) -> tuple[Path, bool]:
    """Put `source` in `folder` under a free name, or find it already there: (where it is, already there)."""
    temp = None
    try:
        for candidate in _candidates(folder, source.name):
            if candidate.exists() or candidate.is_symlink():
                if candidate.is_file() and not candidate.is_symlink() and _same_content(candidate, source):
                    return candidate, True  # placed by an earlier run that was killed before its manifest
                continue
            if mode == "link" and temp is None:
                try:
                    os.link(source, candidate)  # fails if the name appeared meanwhile: never an overwrite
                    summary.linked += 1
                    return candidate, False
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
            return candidate, False
    finally:
        if temp is not None:
            temp.unlink(missing_ok=True)
    raise AssertionError("unreachable")


def _read_manifest(path: Path, multi: bool) -> dict[str, dict[str, str]]:
    """The rows of an earlier sort, by source; ValueError when it was sorted the other way (`multi` or not)."""
    if not path.exists():
        return {}
    with open(path, newline="", encoding="utf-8", errors=CSV_ERRORS) as handle:
        reader = csv.DictReader(handle)
        rows = {row["source"]: row for row in reader if row.get("source")}
    was_multi = "destinations" in (reader.fieldnames or [])
    if rows and was_multi != multi:
        raise ValueError(
            f"{path}: this folder was sorted {'with' if was_multi else 'without'} --multi; sort into it "
            f"{'with' if was_multi else 'without'} --multi again, or into another folder"
        )
    return rows


def _write_rows(path: Path, fields: list[str], rows: Iterable[dict[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, restval="", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue(), errors=CSV_ERRORS)  # source paths exact, byte for byte


def _remove_stale_temps(root: Path) -> None:
    """Temporary copies left by a sort that was killed (only ours: the lock is held)."""
    for folder in [root, *(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())]:
        for temp in folder.glob(f"{TEMP_PREFIX}*.tmp"):
            temp.unlink(missing_ok=True)
        for temp in [*folder.glob(".manifest.csv.*.tmp"), *folder.glob(".skipped.csv.*.tmp")]:  # atomic_path's
            temp.unlink(missing_ok=True)


def _manifest_row(source: Path, destinations: list[Path], prediction: Prediction) -> dict[str, str]:
    row = {"source": str(source), "destination": str(destinations[0]), **prediction.flat(MANIFEST_TOP)}
    if prediction.elements is not None:  # multi: its `elements` column comes from `flat`
        row["destinations"] = cell_text([[str(d)] for d in destinations])
    return row


def _folder_names(prediction: Prediction, min_confidence: float) -> list[str]:
    """Where a photo goes: the folder of each element the map found (multi), most confident first, whatever the
    whole photo's answer (a west front can be none of the ten as a whole and hold three of them); else the
    single-class rule: none of the ten first, then below `min_confidence`, then its class."""
    if prediction.elements:
        return [e.label for e in prediction.elements]
    if prediction.known is False:
        return [NONE]
    return [prediction.label if prediction.probability >= min_confidence else UNCERTAIN]


def sort_photos(
    classifier: Classifier,
    in_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    min_confidence: float = MIN_CONFIDENCE,
    mode: str = "copy",
    progress: bool = True,
    multi: bool = False,
    map_config: MapConfig | None = None,
) -> SortSummary:
    """Copy (or hard-link) every photo below `in_dir` into `out_dir/<class>/`, `_none/` (none of the ten, when the
    classifier has a none-of-these threshold) or `_uncertain/` (below `min_confidence`), with a manifest.

    `multi`: into the folder of every element the element map (`map_config`) finds in the photo instead, by the
    rule above when it finds none. Running it again skips photos already in the manifest whose copy exists, so an
    interrupted sort resumes. Raises SortLocked when another process sorts into `out_dir`, ValueError when it was
    sorted the other way (`multi` or not).
    """
    if mode not in ("copy", "link"):
        raise ValueError(f"--mode must be copy or link, got {mode!r}")
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"--min-confidence must be between 0 and 1, got {min_confidence}")
    source_root, target_root = Path(in_dir).resolve(), Path(out_dir).resolve()
    if not source_root.is_dir():
        raise ValueError(f"{in_dir}: not a folder")
    if target_root == source_root or source_root in target_root.parents:
        raise ValueError(f"{out_dir}: the output folder must not be inside the input folder {in_dir}")
    if target_root in source_root.parents:
        raise ValueError(f"{in_dir}: the input folder must not be inside the output folder {out_dir}")
    folders = _class_folders(target_root, classifier.classes)
    target_root.mkdir(parents=True, exist_ok=True)
    with output_lock(target_root):
        _remove_stale_temps(target_root)
        config = (map_config or MapConfig()) if multi else None
        return _sort_locked(classifier, source_root, target_root, folders, min_confidence, mode, progress, config)


def _file(
    item: Prediction,
    target_root: Path,
    folders: dict[str, Path],
    min_confidence: float,
    mode: str,
    summary: SortSummary,
) -> dict[str, str]:
    """Place one photo in each of its folders, count it; its manifest row."""
    source = Path(str(item.path))
    names, destinations, already = _folder_names(item, min_confidence), [], True
    for name in names:
        folder = folders[name]
        folder.mkdir(exist_ok=True)
        _inside(target_root, folder)  # a class folder that is a symbolic link out of OUT is refused
        destination, there = _place(source, folder, mode, summary)
        destinations.append(destination)
        already &= there
        summary.per_class[name] = summary.per_class.get(name, 0) + 1
    summary.placed += not already
    summary.already_done += already
    summary.uncertain += names == [UNCERTAIN]
    summary.none += names == [NONE]
    summary.noise += names == [NONE] and item.none_reason == NOISE
    summary.several += len(names) > 1
    summary.no_element += item.elements == ()
    return _manifest_row(source, destinations, item)


def _sort_locked(
    classifier: Classifier,
    source_root: Path,
    target_root: Path,
    folders: dict[str, Path],
    min_confidence: float,
    mode: str,
    progress: bool,
    map_config: MapConfig | None,
) -> SortSummary:
    manifest_path = target_root / "manifest.csv"
    manifest = _read_manifest(manifest_path, multi=map_config is not None)
    fields = MANIFEST_FIELDS if map_config is None else MULTI_FIELDS
    photos, problems = find_photos([source_root])
    todo = [p for p in photos if not (str(p) in manifest and Path(manifest[str(p)].get("destination") or "").is_file())]
    summary = SortSummary(already_done=len(photos) - len(todo), skipped=list(problems), manifest=manifest_path)
    summary.rejects, summary.multi = classifier.open_set is not None, map_config is not None
    items = classifier.predict_files(todo)
    if map_config is not None:
        items = with_elements(classifier, items, map_config)
    bar = None
    if progress and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="sort", unit="photo")
    try:
        for count, item in enumerate(items, start=1):
            if isinstance(item, tuple):
                summary.skipped.append(item)
            else:
                manifest[str(item.path)] = _file(item, target_root, folders, min_confidence, mode, summary)
            if bar is not None:
                bar.update(1)
            if count % SAVE_EVERY == 0:  # progress survives an interruption
                _write_rows(manifest_path, fields, manifest.values())
    finally:
        if bar is not None:
            bar.close()
        _write_rows(manifest_path, fields, manifest.values())
        _write_rows(
            target_root / "skipped.csv", ["source", "reason"], ({"source": p, "reason": r} for p, r in summary.skipped)
        )
    return summary
