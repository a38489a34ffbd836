"""Find and load photos (decoding one photo is `decode.py`; walking a folder tree is `walk.py`; the validation split
is `split.py`; the decoded pixels kept on disk, `pixel_cache.py`).

Every image is decoded once into a uint8 tensor held in memory (optionally cached on disk), so
training never touches PIL or the file system in its hot loop.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import unicodedata
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from heritage_cnn import __version__
from heritage_cnn.base.names import shown, visible_subfolders
from heritage_cnn.data.decode import DECODE_REVISION, IMAGE_SIZE, UNDECODED_PHOTOS, try_decode
from heritage_cnn.data.pixel_cache import read_pixels, write_pixels
from heritage_cnn.data.walk import distinct_folders, walk_folders

T = TypeVar("T")

# The photo files looked at, those Pillow cannot decode included (they are skipped and listed, saying why)
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", *UNDECODED_PHOTOS})


class DatasetError(ValueError):
    """A dataset folder that cannot be used. The message names the folder and what is wrong."""


def display_name(folder_name: str) -> str:
    """Readable class name: `dome(inner)` -> `dome (inner)`, `bell_tower` -> `bell tower`."""
    name = folder_name.replace("_", " ")
    name = re.sub(r"\s*\(\s*", " (", name)
    name = re.sub(r"\s*\)", ")", name)
    return re.sub(r"\s+", " ", name).strip()


# --------------------------------------------------------------------------------------------
# Finding files
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where the splits of a dataset root are: Kaggle layout (`train/`, `test/`) or one class-folder root."""

    root: Path
    train: Path
    test: Path | None

    @property
    def is_kaggle(self) -> bool:
        return self.train != self.root


def find_layout(root: str | os.PathLike) -> Layout:
    """Accept `<root>/train/<class>/*` (+ optional `test/`) or a bare `<root>/<class>/*`."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: no such folder")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    train, test = root / "train", root / "test"
    if train.is_dir():
        return Layout(root, train, test if test.is_dir() else None)
    if _only_test_folder(root, test):  # the Kaggle test split downloaded alone: train/ is missing
        return Layout(root, train, test)
    return Layout(root, root, None)


def _only_test_folder(root: Path, test: Path) -> bool:
    """`<root>/test/<class>/*` and no other folder: a Kaggle layout without train/, not a class named test."""
    return visible_subfolders(root) == [test] and bool(visible_subfolders(test))


def split_folder(layout: Layout, split: str) -> Path:
    """The folder holding one split (`train`, `test`) of a layout."""
    if split == "train":
        if not layout.train.is_dir():
            raise DatasetError(f"{layout.root}: has no train/ folder (only test/)")
        return layout.train
    if split == "test":
        if layout.test is None:
            raise DatasetError(f"{layout.root}: has no test/ folder")
        return layout.test
    raise ValueError(f"unknown split {split!r}")


@dataclass
class FileList:
    """The image files of one class-folder root, their labels, and what was left out and why."""

    root: Path
    classes: list[str]
    files: list[Path]
    labels: list[int]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)  # the classes that have a folder


def class_folders(folder: str | os.PathLike, skipped: list[tuple[str, str]] | None = None) -> list[Path]:
    """The class folders of a class-folder root (every folder not hidden), sorted, less the symlinked ones leading
    back to it or to another class folder (`walk.distinct_folders`: listed in `skipped`). A DatasetError when `folder`
    is no folder, holds none, or holds two whose names are one in two Unicode spellings (`composed`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder")
    left_out = [] if skipped is None else skipped
    found = distinct_folders(folder, visible_subfolders(folder), left_out)
    if not found:
        first = f" (left out: {shown(left_out[0][0])}: {left_out[0][1]})" if left_out else ""
        raise DatasetError(f"{folder}: no class folders inside (expected <root>/<class>/<image>){first}")
    names = [composed(path.name) for path in found]
    if alike := [path.name for path, name in zip(found, names, strict=True) if names.count(name) > 1]:
        raise DatasetError(  # they would be two classes that print alike
            f"{shown(folder)}: class folders {' and '.join(map(ascii, alike))} are one name in two Unicode spellings "
            "(composed and decomposed, as macOS writes names); put their photos in one folder"
        )
    return found


def composed(name: str) -> str:
    """A name as Unicode composes it (NFC): `portál` typed on Linux (one code point, NFC) and as macOS writes file
    names (NFD: `a` and a combining accent) are one text, and one class; names that differ otherwise stay apart."""
    return unicodedata.normalize("NFC", name)


def _spelled(names: Iterable[str], codes: bool) -> str:
    """Names for a message: as Python writes them (an invisible character escaped), with the code points of each
    character beyond ASCII when `codes` (names that print alike, a Cyrillic о for a Latin o, told apart)."""
    shown_names = [
        repr(n) + (f" ({' '.join(f'U+{ord(c):04X}' for c in n if ord(c) > 127)})" if codes and not n.isascii() else "")
        for n in names
    ]
    return f"[{', '.join(shown_names)}]"


def folder_classes(names: Sequence[str], classes: Sequence[str], folder: str | os.PathLike) -> list[str]:
    """The class of each class folder name: the class of that name, else the one class it spells in another Unicode
    normalisation (`composed`). A DatasetError naming the folders that are no class and the classes with no folder
    (a name never both; code points shown when both lists are there, so that names printed alike can be compared)."""
    spellings: dict[str, list[str]] = {}
    for name in classes:
        spellings.setdefault(composed(name), []).append(name)

    def class_of(name: str) -> str | None:
        alike = spellings.get(composed(name), [])
        return name if name in alike else alike[0] if len(alike) == 1 else None

    found = [class_of(name) for name in names]
    unknown = sorted(n for n, c in zip(names, found, strict=True) if c is None)
    if unknown:
        missing = sorted(set(classes) - set(found))
        raise DatasetError(
            f"{folder}: class folders differ from the model's classes: unknown {_spelled(unknown, bool(missing))}, "
            f"missing {_spelled(missing, True)}"
        )
    return [c for c in found if c is not None]


def list_images(folder: str | os.PathLike, classes: Sequence[str] | None = None) -> FileList:
    """List `<folder>/<class>/**/<image>`; classes are folder names kept exactly, their folders walked together
    (`walk.walk_folders`: a real folder reached from two class folders is listed for one of them).

    With `classes` given (a model's classes), labels follow that order and folders of other names are an error; a
    subset of the classes is allowed, and a folder named in another Unicode spelling of a class (`folder_classes`:
    macOS's decomposed `porta\u0301l` for `portál`) is that class."""
    left_out: list[tuple[str, str]] = []
    class_dirs = class_folders(folder, left_out)
    names = [p.name for p in class_dirs]
    classes = names if classes is None else list(classes)
    found = folder_classes(names, classes, folder)
    index = {c: i for i, c in enumerate(classes)}
    out = FileList(Path(folder), classes, [], [], left_out, present=found)  # a str or PathLike: root is a Path
    for (paths, problems), name in zip(walk_folders(class_dirs), found, strict=True):
        count = 0
        out.skipped.extend(problems)
        for path in sorted(paths):
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                out.skipped.append((str(path), f"not an image file extension ({path.suffix or 'none'})"))
                continue
            out.files.append(path)
            out.labels.append(index[name])
            count += 1
        if count == 0:
            out.empty_classes.append(name)
    if not out.files:
        unread = [f"{p}: {r}" for p, r in out.skipped if r.startswith("folder not read")]
        detail = f" ({len(unread)} folder(s) could not be read, first: {unread[0]})" if unread else ""
        raise DatasetError(f"{folder}: no image files in any class folder{detail}")
    return out


# --------------------------------------------------------------------------------------------
# The in-memory image set
# --------------------------------------------------------------------------------------------


@dataclass
class ImageSet:
    """Decoded photos of one split: uint8 images (N, 3, H, W), int64 labels, and provenance."""

    images: torch.Tensor
    labels: torch.Tensor
    paths: list[str]
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)
    # the images' perceptual hashes once computed (`split.set_hashes`): the data check, the split and the record of
    # what a run trained on read the same ones
    hashes: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def display_names(self) -> list[str]:
        return [display_name(c) for c in self.classes]

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> ImageSet:
        """The images at `indices` (with their hashes, if known); skipped files stay with the parent."""
        index = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return ImageSet(
            self.images[index],
            self.labels[index],
            [self.paths[i] for i in index.tolist()],
            self.classes,
            hashes=None if self.hashes is None else self.hashes[index.numpy()],
        )

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=len(self.classes)).tolist()


def in_class_order(images: ImageSet, classes: Sequence[str], where: str | os.PathLike) -> ImageSet:
    """The same photos labelled in the order of `classes` (a model's: a taught one appends its classes after its
    parent's, so its order is not the folders' alphabetical one), each folder's class found by `folder_classes`
    (`where`: the folder, for its message). The labels change, nothing else: a split drawn before keeps its sides."""
    found = folder_classes(images.classes, classes, where)
    index = torch.tensor([list(classes).index(c) for c in found], dtype=torch.long)
    empty = [found[images.classes.index(c)] for c in images.empty_classes]
    labels = index[images.labels]
    return ImageSet(images.images, labels, images.paths, list(classes), images.skipped, empty, images.hashes)


def _cache_key(files: FileList, size: int, labelled: bool = True) -> str:
    """Key of a decode: the file list with sizes and modification times, and (`labelled`) the classes and labels.
    The disk cache leaves the labels out: the pixels are the same for a model with more classes (a taught one)."""
    digest = hashlib.sha256(f"heritage-cnn {__version__} decode {DECODE_REVISION} size={size}\n".encode())
    if labelled:
        digest.update(json.dumps(files.classes).encode())
    for path, label in zip(files.files, files.labels, strict=True):
        shown_label = f"\t{label}" if labelled else ""
        try:
            stat = path.stat()
            line = f"{path}{shown_label}\t{stat.st_size}\t{stat.st_mtime_ns}\n"
        except OSError:
            line = f"{path}{shown_label}\tmissing\n"
        digest.update(line.encode("utf-8", "surrogateescape"))  # any file name: its bytes
    return digest.hexdigest()[:32]


def folder_key(folder: str | os.PathLike, size: int = IMAGE_SIZE) -> str:
    """What a decode of `folder` depends on (every image's path, class, size and modification time): equal keys,
    equal decoded images."""
    return _cache_key(list_images(folder), size)


# Inside `reuse_decoded()`: what was decoded from a folder, or derived from it, so far, each under a key that names
# every file it read (`_cache_key`: paths, classes, sizes, times). None outside the block, so that a library call
# keeps nothing alive.
_REUSED: dict[str, Any] | None = None


@contextmanager
def reuse_decoded() -> Iterator[None]:
    """Within the block a folder whose files have not changed is decoded once (and split once, `reused`):
    `heritage demo` checks the data, then trains and evaluates on it (benchmarks/recipes.md, "The quick recipe on
    an AVX2 CPU"). Later calls get the same objects, not copies (nothing modifies them); all are let go when the
    block ends."""
    global _REUSED
    outer = _REUSED
    _REUSED = {} if outer is None else outer
    try:
        yield
    finally:
        _REUSED = outer


def reused(key: str, make: Callable[[], T]) -> T:
    """Inside `reuse_decoded()`, what `make()` returned the first time for `key`, which must name every input it
    read; outside the block, `make()` every time."""
    if _REUSED is None:
        return make()
    if key not in _REUSED:
        _REUSED[key] = make()
    return _REUSED[key]


def load_images(
    folder: str | os.PathLike,
    classes: Sequence[str] | None = None,
    size: int = IMAGE_SIZE,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
    workers: int | None = None,
    require_every_class: bool = False,
) -> ImageSet:
    """Decode every image of a class-folder root once into memory.

    Unreadable files and folders are skipped and listed in `ImageSet.skipped`; they never stop the run.
    With `require_every_class` (training), a class folder without one readable image is a DatasetError:
    a model in which that class can never appear is a silent wrong result. With `cache_dir`, the decoded
    tensor is stored there, keyed by the file list.
    """
    files = list_images(folder, classes)
    key = _cache_key(files, size) if cache_dir is not None or _REUSED is not None else ""
    result = reused(f"images {key}", lambda: _decode_files(files, size, cache_dir, key, workers, progress, classes))
    return _check_classes(result, files.root, require_every_class)


def _decode_files(
    files: FileList,
    size: int,
    cache_dir: str | os.PathLike | None,
    key: str,
    workers: int | None,
    progress: bool,
    classes: Sequence[str] | None,
) -> ImageSet:
    """`load_images`' work: read from `cache_dir` when it holds this file list (`key`), else decode (and store)."""
    cache_path = None
    if cache_dir is not None:
        cache_path = Path(cache_dir) / f"pixels-{_cache_key(files, size, labelled=False)}"
        cached = read_pixels(cache_path, [str(path) for path in files.files], size)
        if cached is not None:
            return _labelled(files, *cached, classes)

    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    items: Iterable[np.ndarray | str]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        items = pool.map(lambda p: try_decode(p, size), files.files, chunksize=64)
        if progress and sys.stderr.isatty():
            from tqdm import tqdm

            items = tqdm(items, total=len(files.files), desc=f"decode {files.root.name}", unit="img")
        decoded = list(items)

    arrays, paths, failed = [], [], []
    for path, item in zip(files.files, decoded, strict=True):
        if isinstance(item, str):
            failed.append((str(path), item))
            continue
        arrays.append(item)
        paths.append(str(path))
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous() if arrays else None
    if cache_path is not None and images is not None:
        write_pixels(cache_path, images, paths, failed)
    return _labelled(files, images, paths, failed, classes)


def _labelled(
    files: FileList,
    images: torch.Tensor | None,
    paths: list[str],
    failed: list[tuple[str, str]],
    classes: Sequence[str] | None,
) -> ImageSet:
    """The decoded pixels of `files` (in its order, less the files that `failed`) with the labels of its class list."""
    skipped = [*files.skipped, *failed]
    if images is None:
        first = f" (first: {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise DatasetError(f"{files.root}: none of the {len(files.files)} image files could be read{first}")
    label_of = {str(path): label for path, label in zip(files.files, files.labels, strict=True)}
    labels = [label_of[path] for path in paths]
    counts = np.bincount(labels, minlength=len(files.classes))
    present = set(files.present)  # a model's class with no folder here is not an empty folder
    empty = [c for c, n in zip(files.classes, counts, strict=True) if n == 0 and c in present]
    return ImageSet(images, torch.tensor(labels, dtype=torch.long), paths, files.classes, skipped, empty)


def _check_classes(images: ImageSet, root: Path, require_every_class: bool) -> ImageSet:
    """Refuse (training) or warn about class folders in which no image could be read."""
    if not images.empty_classes:
        return images
    if not require_every_class:
        empty = ", ".join(shown(name) for name in images.empty_classes)
        warnings.warn(f"{shown(root)}: class folders with no readable images: {empty}", stacklevel=3)
        return images
    folder = root / images.empty_classes[0]
    reasons = [r for p, r in images.skipped if p == str(folder) or p.startswith(str(folder) + os.sep)]
    why = f"{len(reasons)} skipped, first: {reasons[0]}" if reasons else "no image files"
    more = f"; also {images.empty_classes[1:]}" if len(images.empty_classes) > 1 else ""
    raise DatasetError(f"{folder}: no readable image in this class folder ({why}){more}")


# The least std a channel is normalised by: one uint8 step. A channel that never varies (blue 0 in every photo) has
# std 0, and dividing by it gives NaN on the first step and a checkpoint no loader accepts (std must be positive).
MIN_CHANNEL_STD = 1 / 255


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units (the normalisation constants), rounded as the
    checkpoint records them; the std at least MIN_CHANNEL_STD."""
    x = images.float().div_(255)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(MIN_CHANNEL_STD)
    return [round(v, 4) for v in mean.tolist()], [round(v, 4) for v in std.tolist()]
