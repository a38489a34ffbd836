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
- A photo the manifest lists is done, whether its copy is still where sort put it, moved or deleted: the user's
  corrections (`heritage teach --corrections` reads where the copies lie now) are never undone by a copy made
  again, and no other photo is ever given a file name a manifest row names (teach reads a file still where sort
  put it as that row's photo). The summary says how many of them were found moved or deleted.
- Identical photos of one name (one content) share one copy, with a manifest row each, and are counted as such,
  not as sorted twice nor as done earlier: the per-class counts are the files this run put in each folder.
- What decides where a photo goes is recorded in OUT/sort-settings.json (`sort_settings`, atomic) by the first
  run: the model (its files' SHA-256), --min-confidence, the none-of-these threshold, --tta, --multi and the
  element map's settings. A later run with other settings is refused in one line naming each difference (the
  photos sorted earlier would keep the old ones); a folder sorted before the record existed is resumed, saying
  its settings could not be checked. --mode is not recorded: a copy and a hard link are the same photo.
- A photo whose real path lies inside OUT (IN holding a symbolic link to it) is left out, and counted: a sort
  never files its own copies.
- A photo that cannot be read any more when it is copied (moved away or made unreadable since it was decoded:
  `sort_files.SourceError`) is skipped and listed like a file that cannot be decoded, and the run goes on; an error
  writing the output stops it, naming the class folder. What would stop a run half-way through is refused before
  any work, nothing written (`_output_refusal`): a manifest.csv or skipped.csv sort did not write (it would
  overwrite the user's file), a class folder that is a file, a broken link or leads out of OUT.
- `multi=True` (`--multi`) files a photo under every element the element map finds in it (each element's class
  folder, as copies or hard links by the same rules), and under the single-class rule (`_none/`, `_uncertain/`
  or its class) when it finds none. The manifest (`sort_manifest`) keeps one row per photo, so that a reader keyed
  by `source` and the resume (a row: done) work unchanged: `destination` is the first placement (the most
  confident element's), `elements` and `destinations` (every placement) are two more columns, each a list in one
  cell (`base.names.cell_text`). An output folder is sorted one way only: mixing would leave photos filed once
  by a run that skips them as done.

Placing one file (a copy published under a free name, a hard link or why not, the names manifest rows keep, the copy
identical photos share, a killed run's temporary files) is `sort_files`'s; the manifest is `sort_manifest`'s, the
settings' record `sort_settings`'s.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from heritage_cnn.base.io import FolderBusy, atomic_write_csv, folder_lock, inside_input, output_problem
from heritage_cnn.base.names import shown
from heritage_cnn.inference.classifier import Classifier, Prediction, find_photos
from heritage_cnn.inference.element_map import with_elements
from heritage_cnn.inference.openset_eval import known_classes
from heritage_cnn.inference.sort_files import FOUND, NEW, SHARED, Digests, SourceError, place, remove_stale_temps
from heritage_cnn.inference.sort_manifest import (
    MANIFEST_FIELDS,
    MANIFEST_NAME,
    MULTI_FIELDS,
    SKIPPED_NAME,
    manifest_columns,
    manifest_row,
    not_sorts,
    read_manifest,
    row_files,
)
from heritage_cnn.inference.sort_settings import SETTINGS_NAME, check_settings, recorded_settings, settings_of
from heritage_cnn.inference.tiles import MapConfig
from heritage_cnn.models.openset_point import NOISE

UNCERTAIN = "_uncertain"  # one of the ten, unsure which
NONE = "_none"  # none of the ten (open-set score below its threshold, or noise): checked before UNCERTAIN
MIN_CONFIDENCE = 0.6  # below this top-class probability a photo is "uncertain": sort's default, the web page's
LOCK_NAME = ".heritage-sort.lock"
SAVE_EVERY = 64  # photos between manifest saves


class SortLocked(FolderBusy):
    """Another process is sorting into the same output folder."""


@dataclass
class SortSummary:
    placed: int = 0
    already_done: int = 0
    uncertain: int = 0
    none: int = 0
    noise: int = 0  # of `none`, those the noise check called noise (`Prediction.none_reason`)
    rejects: bool = False  # whether the model can call a photo none of its classes
    classes: int = 10  # how many the model has (a taught model: more than the ten), for "none of the 12 classes"
    linked: int = 0
    copied: int = 0
    copied_because: dict[str, int] = field(default_factory=dict)  # why a link became a copy -> count
    skipped: list[tuple[str, str]] = field(default_factory=list)
    per_class: dict[str, int] = field(default_factory=dict)
    manifest: Path = Path(MANIFEST_NAME)
    multi: bool = False  # filed under every element found
    several: int = 0  # with multi: photos filed under two or more elements
    no_element: int = 0  # with multi: photos with no element found, filed by the single-class rule
    identical: int = 0  # photos that share the copy of an identical one (one name, one content): a row, no file
    moved_or_deleted: int = 0  # of `already_done`, those a manifest row lists whose copy is gone from where sort put it
    inside_out: int = 0  # files below IN whose real path is inside OUT (a symbolic link to it): left out
    settings_unchecked: bool = False  # OUT was sorted before sort recorded its settings: they could not be compared

    def how_placed(self) -> str:
        """E.g. "copied 12", or "linked 10, copied 2 (other file system)"."""
        if not self.linked and not self.copied_because:
            return f"copied {self.copied}"
        why = ", ".join(f"{n} {reason}" if len(self.copied_because) > 1 else reason
                        for reason, n in sorted(self.copied_because.items()))  # fmt: skip
        return f"linked {self.linked}, copied {self.copied}" + (f" ({why})" if why else "")

    def nothing_sorted(self, in_dir: str | os.PathLike) -> str | None:
        """One line when not one photo of `in_dir` is sorted, by this run or an earlier one (every file unreadable,
        or left out), for the command to exit 2 with, as predict does when it reads no photo; None otherwise. A run
        that finds every photo done earlier sorted them: a resumed sort with nothing left to do is no error."""
        if self.placed or self.already_done or self.identical:
            return None
        if not self.skipped:
            return f"no photo of {shown(in_dir)} sorted: its {self.inside_out} file(s) lie inside the output folder"
        (path, reason), count = self.skipped[0], len(self.skipped)
        first = f"{shown(path)}: {reason}" if count == 1 else f"{count} files, the first {shown(path)}: {reason}"
        listed = shown(self.manifest.parent / SKIPPED_NAME)
        return f"no photo of {shown(in_dir)} could be read ({first}); listed in {listed}"

    def describe(self, min_confidence: float) -> str:
        """The summary the command prints."""
        noise = f" ({self.noise} of them noise)" if self.noise else ""
        none = f"{self.none} none of {known_classes(self.classes)} in {NONE}/{noise}, " if self.rejects else ""
        identical = (
            f"{self.identical} identical to a photo sorted before it (sharing its copy: one file, a manifest row each), "
            if self.identical
            else ""
        )
        gone = (
            f" ({self.moved_or_deleted} of them moved or deleted from where sort put them: left so, not copied again)"
            if self.moved_or_deleted
            else ""
        )
        # two decimals, or as many as the threshold has: --min-confidence 0.555 is not "below 0.56"
        threshold = f"{min_confidence:.2f}" if round(min_confidence, 2) == min_confidence else f"{min_confidence:g}"
        lines = [
            f"{self.placed} photo(s) sorted ({none}{self.uncertain} below {threshold} in {UNCERTAIN}/), "
            f"{identical}{self.already_done} already done earlier{gone}; {self.how_placed()}"
        ]
        if self.settings_unchecked:
            lines.append(
                f"settings not checked: {shown(self.manifest.parent)} has no {SETTINGS_NAME} (sorted by an earlier "
                "version, or removed); the photos sorted before stay where their run's settings put them"
            )
        if self.inside_out:
            lines.append(
                f"{self.inside_out} file(s) left out: their real path is inside the output folder "
                "(a symbolic link to it in the input folder)"
            )
        if self.multi:
            lines.append(
                f"--multi: {self.several} photo(s) filed under two or more elements, {self.no_element} with no "
                "element found (filed as without --multi); the counts below are placements"
            )
        if self.skipped:
            lines.append(
                f"{len(self.skipped)} unreadable file(s) skipped, listed in {shown(self.manifest.parent / SKIPPED_NAME)}"
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


def _output_refusal(root: Path, folders: dict[str, Path]) -> str | None:
    """Why sort cannot write into OUT (`root`, resolved) as it is, in one line, or None; asked before any work, so that
    a run never stops on it after copying some photos: a manifest.csv or skipped.csv that sort did not write
    (`sort_manifest.not_sorts`), a class folder that is a file or a broken link, or leads out of OUT. Only folders
    that exist are asked about: the others are made when a photo goes there."""
    problem = not_sorts(root)
    if problem is not None:
        return problem
    for name, folder in folders.items():
        if not (folder.exists() or folder.is_symlink()):
            continue
        if not folder.is_dir():
            what = "a link to nothing" if folder.is_symlink() and not folder.exists() else "a file"
            return (
                f"{shown(folder)}: is {what}, where sort puts the photos of {name}; move it away, or sort into "
                "another --out"
            )
        _inside(root, folder)  # a class folder that is a symbolic link out of OUT is refused
    # A read-only class folder is no refusal: a user may lock a folder they reviewed, and a run that files nothing
    # there must go on; a photo that must go there stops the run naming the folder (`sort_files._writing`).
    return None


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
    rule above when it finds none. Running it again skips every photo the manifest lists (its copy there, moved or
    deleted), so an interrupted sort resumes and the user's corrections stay. Raises SortLocked when another process
    sorts into `out_dir`, ValueError when `in_dir` holds no photo (before `out_dir` is made), when `out_dir` holds
    what sort must not overwrite or cannot write into (`_output_refusal`, before any work), or when it was sorted
    the other way (`multi` or not) or with other settings (`SETTINGS_NAME`). A photo that cannot be read when it is
    copied is skipped and listed (`SortSummary.skipped`), as one that cannot be decoded.
    """
    if mode not in ("copy", "link"):
        raise ValueError(f"--mode must be copy or link, got {mode!r}")
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"--min-confidence must be between 0 and 1, got {min_confidence}")
    source_root, target_root = Path(in_dir).resolve(), Path(out_dir).resolve()
    if not source_root.is_dir():
        raise ValueError(f"{in_dir}: {'not a folder' if source_root.exists() else 'no such folder'}")
    problem = output_problem(out_dir)
    if problem is not None:  # said before any photo is read
        raise ValueError(problem)
    if inside_input(target_root, [source_root]) is not None:
        raise ValueError(f"{out_dir}: the output folder must not be inside the input folder {in_dir}")
    if target_root in source_root.parents:
        raise ValueError(f"{in_dir}: the input folder must not be inside the output folder {out_dir}")
    folders = _class_folders(target_root, classifier.classes)
    if target_root.is_dir():
        problem = _output_refusal(target_root, folders)
        if problem is not None:  # said before any photo is read, and nothing written
            raise ValueError(problem)
    photos, problems = find_photos([source_root])
    if not photos:  # nothing to sort: refused before OUT is made, as predict refuses an empty folder
        first = f" ({shown(problems[0][0])}: {problems[0][1]})" if problems else ""
        raise ValueError(f"no photos found in {in_dir}{first}")
    target_root.mkdir(parents=True, exist_ok=True)
    with output_lock(target_root):
        remove_stale_temps(target_root)
        config = (map_config or MapConfig()) if multi else None
        return _sort_locked(
            classifier, (photos, problems), target_root, folders, min_confidence, mode, progress, config
        )


@dataclass
class _Filing:
    """What filing one photo needs, the same for the whole run."""

    root: Path  # OUT, resolved
    folders: dict[str, Path]
    min_confidence: float
    mode: str
    summary: SortSummary
    taken: set[Path]  # `place`'s
    digests: Digests = field(default_factory=Digests)  # each file hashed once per run


def _file(item: Prediction, filing: _Filing) -> dict[str, str] | None:
    """Place one photo in each of its folders, count it; its manifest row, or None when it could not be read any more
    (moved away or made unreadable since it was decoded): then skipped and listed, as a file that cannot be decoded.

    A photo with a new copy or link is sorted by this run, and counted in its folders; one whose every copy was
    found already there, placed by an earlier run killed before its manifest, is done earlier; one whose every
    placement is an identical photo's file shares it, a manifest row and no file, counted in no folder."""
    source, summary = Path(str(item.path)), filing.summary
    names, destinations, outcomes = _folder_names(item, filing.min_confidence), [], []
    counts = (summary.linked, summary.copied, dict(summary.copied_because))
    try:
        for name in names:
            folder = filing.folders[name]
            folder.mkdir(exist_ok=True)
            _inside(filing.root, folder)  # a class folder made a symbolic link out of OUT since the start: refused
            destination, outcome = place(source, folder, filing.mode, summary, filing.taken, filing.digests)
            destinations.append(destination)
            outcomes.append(outcome)
    except SourceError as error:
        # a photo is filed whole or not at all: the files made for it already (--multi) go, and their counts
        for destination, outcome in zip(destinations, outcomes, strict=True):
            if outcome == NEW:
                destination.unlink(missing_ok=True)
                filing.taken.discard(destination)
        summary.linked, summary.copied, summary.copied_because = counts
        why = f"could not be copied: {error.strerror} (moved, deleted or made unreadable after it was read)"
        summary.skipped.append((str(item.path), why))
        return None
    if NEW in outcomes:
        summary.placed += 1
        for name, outcome in zip(names, outcomes, strict=True):
            if outcome != SHARED:
                summary.per_class[name] = summary.per_class.get(name, 0) + 1
        summary.uncertain += names == [UNCERTAIN]
        summary.none += names == [NONE]
        summary.noise += names == [NONE] and item.none_reason == NOISE
        summary.several += len(names) > 1
        summary.no_element += item.elements == ()
    elif FOUND in outcomes:
        summary.already_done += 1
    else:
        summary.identical += 1
    return manifest_row(source, destinations, item)


def _sort_locked(
    classifier: Classifier,
    found_photos: tuple[list[Path], list[tuple[str, str]]],
    target_root: Path,
    folders: dict[str, Path],
    min_confidence: float,
    mode: str,
    progress: bool,
    map_config: MapConfig | None,
) -> SortSummary:
    manifest_path = target_root / MANIFEST_NAME
    then = recorded_settings(target_root)
    manifest = read_manifest(manifest_path, map_config is not None, None if then is None else bool(then.get("multi")))
    placed = bool(manifest) or any(folder.is_dir() and any(folder.iterdir()) for folder in folders.values())
    settings = settings_of(classifier, min_confidence, map_config)
    checked = check_settings(target_root, settings, then, bool(manifest), placed)
    fields = manifest_columns(manifest_path, MANIFEST_FIELDS if map_config is None else MULTI_FIELDS)
    found, problems = found_photos  # `find_photos`, walked before OUT was made
    # a file reached through a symbolic link to OUT is one of this sort's copies (or another file of OUT): never a photo
    photos = [p for p in found if not _resolves_inside(target_root, p)]
    # a photo the manifest lists is done, wherever its copy is now: the user may have moved or deleted it
    todo = [p for p in photos if str(p) not in manifest]
    done = [manifest[str(p)] for p in photos if str(p) in manifest]
    summary = SortSummary(already_done=len(done), skipped=list(problems), manifest=manifest_path)
    summary.moved_or_deleted = sum(not all(f.is_file() for f in row_files(target_root, row)) for row in done)
    summary.inside_out, summary.settings_unchecked = len(found) - len(photos), not checked
    summary.rejects, summary.multi = classifier.open_set is not None, map_config is not None
    summary.classes = len(classifier.checkpoint.classes)
    taken = {f for row in manifest.values() for f in row_files(target_root, row)}
    filing = _Filing(target_root, folders, min_confidence, mode, summary, taken)
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
                row = _file(item, filing)
                if row is not None:
                    manifest[str(item.path)] = row
            if bar is not None:
                bar.update(1)
            if count % SAVE_EVERY == 0:  # progress survives an interruption
                atomic_write_csv(manifest_path, fields, manifest.values())
    finally:
        if bar is not None:
            bar.close()
        atomic_write_csv(manifest_path, fields, manifest.values())
        skipped = ({"source": p, "reason": r} for p, r in summary.skipped)
        atomic_write_csv(target_root / SKIPPED_NAME, ["source", "reason"], skipped)
    return summary


def _resolves_inside(root: Path, path: Path) -> bool:
    """Whether `path`'s real path (every symbolic link followed) is `root` (resolved) or lies below it."""
    real = Path(os.path.realpath(path))
    return real == root or root in real.parents
