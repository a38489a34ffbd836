"""Find, load and split photos (decoding one photo is `decode.py`).

Every image is decoded once into a uint8 tensor held in memory (optionally cached on disk), so
training never touches PIL or the file system in its hot loop. The validation split is stratified
and duplicate-aware: photos whose perceptual hashes are near each other stay on the same side,
because the dataset holds near-copies that would otherwise inflate validation accuracy.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from heritage_cnn import __version__
from heritage_cnn.checks import config_from_dict, in_range, require
from heritage_cnn.decode import (  # noqa: F401  (re-exported: the names callers have always imported from here)
    IMAGE_SIZE,
    MAX_IMAGE_PIXELS,
    ImageError,
    decode_image,
    fit_square,
    os_reason,
    to_rgb,
    try_decode,
)
from heritage_cnn.io import atomic_write_json, load_tensors, save_tensors

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif"})

# Default near-duplicate threshold: Hamming distance between 64-bit perceptual hashes. At 10 on the
# AHE64 train split, 213 photos fall in groups of 2-4 (re-uploads, crops, the same dome twice); false
# matches only make a group larger, which costs nothing, while a missed copy inflates validation.
NEAR_DUPLICATE_DISTANCE = 10


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
    folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return folders == [test] and any(p.is_dir() and not p.name.startswith(".") for p in test.iterdir())


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


def walk_files(
    folder: str | os.PathLike, extensions: frozenset[str] | None = None, hidden: bool = False
) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files below `folder` (names sorted, symlinked folders not followed, hidden ones skipped) and the
    folders that could not be read, with why. A FIFO named photo.jpg is returned: the decoder refuses it
    before opening it, so it is listed with the other skipped files."""
    found: list[Path] = []
    problems: list[tuple[str, str]] = []

    def unreadable(error: OSError) -> None:
        problems.append((str(error.filename or folder), f"folder not read ({os_reason(error)})"))

    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False, onerror=unreadable):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(
            Path(dirpath) / f
            for f in sorted(filenames)
            if (hidden or not f.startswith(".")) and (extensions is None or Path(f).suffix.lower() in extensions)
        )
    return found, problems


@dataclass
class FileList:
    """The image files of one class-folder root, their labels, and what was left out and why."""

    root: Path
    classes: list[str]
    files: list[Path]
    labels: list[int]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)


def list_images(folder: str | os.PathLike, classes: Sequence[str] | None = None) -> FileList:
    """List `<folder>/<class>/**/<image>`; classes are folder names kept exactly.

    With `classes` given (a model's classes), labels follow that order and folders of other
    names are an error; a subset of the classes is allowed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder")
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DatasetError(f"{folder}: no class folders inside (expected <root>/<class>/<image>)")
    names = [p.name for p in class_dirs]
    if classes is None:
        classes = names
    else:
        unknown = sorted(set(names) - set(classes))
        if unknown:
            missing = sorted(set(classes) - set(names))
            raise DatasetError(
                f"{folder}: class folders differ from the model's classes: unknown {unknown}, missing {missing}"
            )
    index = {c: i for i, c in enumerate(classes)}
    out = FileList(folder, list(classes), [], [])
    for class_dir in class_dirs:
        count = 0
        paths, problems = walk_files(class_dir)
        out.skipped.extend(problems)
        for path in sorted(paths):
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                out.skipped.append((str(path), f"not an image file extension ({path.suffix or 'none'})"))
                continue
            out.files.append(path)
            out.labels.append(index[class_dir.name])
            count += 1
        if count == 0:
            out.empty_classes.append(class_dir.name)
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

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def display_names(self) -> list[str]:
        return [display_name(c) for c in self.classes]

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> ImageSet:
        """The images at `indices`; skipped files stay with the parent."""
        index = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return ImageSet(
            self.images[index],
            self.labels[index],
            [self.paths[i] for i in index.tolist()],
            self.classes,
        )

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=len(self.classes)).tolist()


def _cache_key(files: FileList, size: int) -> str:
    """Key of a decoded-image cache: the file list with sizes and modification times."""
    digest = hashlib.sha256(f"heritage-cnn {__version__} size={size}\n".encode())
    digest.update(json.dumps(files.classes).encode())
    for path, label in zip(files.files, files.labels, strict=True):
        try:
            stat = path.stat()
            digest.update(f"{path}\t{label}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\t{label}\tmissing\n".encode())
    return digest.hexdigest()[:32]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "heritage-cnn"


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
    cache_path = None
    if cache_dir is not None:
        cache_path = Path(cache_dir) / f"images-{_cache_key(files, size)}"
        cached = _read_cache(cache_path, files)
        if cached is not None:
            return _check_classes(cached, files.root, require_every_class)

    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    items: Iterable[np.ndarray | str]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        items = pool.map(lambda p: try_decode(p, size), files.files, chunksize=64)
        if progress and sys.stderr.isatty():
            from tqdm import tqdm

            items = tqdm(items, total=len(files.files), desc=f"decode {files.root.name}", unit="img")
        decoded = list(items)

    arrays, labels, paths = [], [], []
    skipped = list(files.skipped)
    for path, label, item in zip(files.files, files.labels, decoded, strict=True):
        if isinstance(item, str):
            skipped.append((str(path), item))
            continue
        arrays.append(item)
        labels.append(label)
        paths.append(str(path))
    if not arrays:
        first = f" (first: {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise DatasetError(f"{files.root}: none of the {len(files.files)} image files could be read{first}")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    counts = np.bincount(labels, minlength=len(files.classes))
    present = {p.name for p in files.root.iterdir() if p.is_dir()} if classes is not None else set(files.classes)
    empty = [c for c, n in zip(files.classes, counts, strict=True) if n == 0 and c in present]
    result = ImageSet(images, torch.tensor(labels, dtype=torch.long), paths, files.classes, skipped, empty)
    if cache_path is not None:
        _write_cache(cache_path, result)
    return _check_classes(result, files.root, require_every_class)


def _check_classes(images: ImageSet, root: Path, require_every_class: bool) -> ImageSet:
    """Refuse (training) or warn about class folders in which no image could be read."""
    if not images.empty_classes:
        return images
    if not require_every_class:
        warnings.warn(f"{root}: class folders with no readable images: {images.empty_classes}", stacklevel=3)
        return images
    folder = root / images.empty_classes[0]
    reasons = [r for p, r in images.skipped if p == str(folder) or p.startswith(str(folder) + os.sep)]
    why = f"{len(reasons)} skipped, first: {reasons[0]}" if reasons else "no image files"
    more = f"; also {images.empty_classes[1:]}" if len(images.empty_classes) > 1 else ""
    raise DatasetError(f"{folder}: no readable image in this class folder ({why}){more}")


def _write_cache(path: Path, images: ImageSet) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_tensors(path.with_suffix(".safetensors"), {"images": images.images, "labels": images.labels})
        atomic_write_json(
            path.with_suffix(".json"),
            {
                "paths": images.paths,
                "classes": images.classes,
                "skipped": images.skipped,
                "empty_classes": images.empty_classes,
            },
        )
    except OSError as error:  # a cache that cannot be written only costs time
        warnings.warn(f"{path}: could not write the image cache ({error})", stacklevel=3)


def _read_cache(path: Path, files: FileList) -> ImageSet | None:
    tensors_path, meta_path = path.with_suffix(".safetensors"), path.with_suffix(".json")
    if not (tensors_path.exists() and meta_path.exists()):
        return None
    try:
        tensors = load_tensors(tensors_path)
        meta = json.loads(meta_path.read_text())
        return ImageSet(
            tensors["images"],
            tensors["labels"],
            meta["paths"],
            meta["classes"],
            [tuple(s) for s in meta["skipped"]],
            meta["empty_classes"],
        )
    except (OSError, ValueError, KeyError) as error:
        warnings.warn(f"{path}: ignoring an unreadable image cache ({error})", stacklevel=3)
        return None


# --------------------------------------------------------------------------------------------
# Near-duplicates and the validation split
# --------------------------------------------------------------------------------------------


def perceptual_hashes(images: torch.Tensor) -> np.ndarray:
    """64-bit DCT perceptual hash (imagehash.phash) of each uint8 image, as uint64."""
    import imagehash

    out = np.empty(len(images), dtype=np.uint64)
    array = images.permute(0, 2, 3, 1).numpy()
    for i, pixels in enumerate(array):
        bits = imagehash.phash(Image.fromarray(pixels)).hash.flatten()
        out[i] = np.packbits(bits).view(">u8")[0]
    return out


def hamming_pairs(hashes: np.ndarray, max_distance: int, chunk: int = 1024) -> np.ndarray:
    """All index pairs (i < j) whose hashes differ in at most `max_distance` bits."""
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    pairs = []
    for start in range(0, len(hashes), chunk):
        block = hashes[start : start + chunk, None] ^ hashes[None, :]
        distance = np.bitwise_count(block)
        rows, cols = np.nonzero(distance <= max_distance)
        rows = rows + start
        keep = rows < cols
        pairs.append(np.stack([rows[keep], cols[keep]], axis=1))
    return np.concatenate(pairs) if pairs else np.empty((0, 2), dtype=np.int64)


def group_near_duplicates(hashes: np.ndarray, max_distance: int = NEAR_DUPLICATE_DISTANCE) -> np.ndarray:
    """Group id per image: connected components of the near-duplicate graph (union-find)."""
    parent = np.arange(len(hashes))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in hamming_pairs(hashes, max_distance):
        root_i, root_j = find(int(i)), find(int(j))
        if root_i != root_j:
            parent[max(root_i, root_j)] = min(root_i, root_j)
    return np.array([find(i) for i in range(len(hashes))])


def split_train_val(
    labels: Sequence[int] | np.ndarray,
    groups: Sequence[int] | np.ndarray,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, group-aware split with a fixed seed (scikit-learn's StratifiedGroupKFold).

    The validation side is one of round(1 / val_fraction) folds, so 0.2 gives exactly a fifth;
    every near-duplicate group lies wholly on one side.
    """
    if not 0.0 < val_fraction < 0.5:
        raise ValueError(f"val_fraction must be in (0, 0.5), got {val_fraction}")
    from sklearn.model_selection import StratifiedGroupKFold

    labels = np.asarray(labels)
    n_splits = max(2, round(1.0 / val_fraction))
    largest = int(np.bincount(labels).max(initial=0)) if labels.size else 0
    if largest < n_splits:  # scikit-learn's own message names neither the fraction nor the photos
        raise DatasetError(
            f"a validation split of 1/{n_splits} (val_fraction {val_fraction}) needs at least {n_splits} photos in "
            f"some class; the largest class has {largest}"
        )
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class" on tiny sets
        train_idx, val_idx = next(splitter.split(np.zeros(len(labels)), labels, np.asarray(groups)))
    return np.sort(train_idx), np.sort(val_idx)


@dataclass(frozen=True)
class SplitRecipe:
    """How the validation split is carved: saved with every checkpoint so it can be rebuilt."""

    val_fraction: float = 0.2
    seed: int = 0
    near_duplicate_distance: int = NEAR_DUPLICATE_DISTANCE

    def __post_init__(self) -> None:  # refused when the recipe is made, not after the images are decoded
        require(
            in_range(self.val_fraction, 0, 0.5, above_low=True, below_high=True),
            f"{{0}} must be in (0, 0.5), got {self.val_fraction}",
            "val_fraction",
        )
        require(
            isinstance(self.near_duplicate_distance, int) and 0 <= self.near_duplicate_distance <= 64,
            f"{{0}} must be a Hamming distance from 0 to 64 bits, got {self.near_duplicate_distance}",
            "near_duplicate_distance",
        )

    @classmethod
    def from_dict(cls, data: dict) -> SplitRecipe:
        return config_from_dict(cls, data)


def make_split(images: ImageSet, recipe: SplitRecipe = SplitRecipe()) -> tuple[ImageSet, ImageSet]:
    """Duplicate-aware stratified train/validation split of a decoded training set."""
    groups = group_near_duplicates(perceptual_hashes(images.images), recipe.near_duplicate_distance)
    train_idx, val_idx = split_train_val(images.labels.numpy(), groups, recipe.val_fraction, recipe.seed)
    return images.subset(train_idx), images.subset(val_idx)


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units (the normalisation constants)."""
    x = images.float().div_(255)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3))
    return [round(v, 4) for v in mean.tolist()], [round(v, 4) for v in std.tolist()]
