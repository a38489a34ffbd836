"""The validation split: stratified and duplicate-aware.

Photos whose perceptual hashes are near each other stay on the same side, because the dataset holds
near-copies (re-uploads, crops, the same dome twice) that would otherwise inflate validation accuracy.
`SplitRecipe` is saved with every checkpoint, so that the split can be rebuilt exactly.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from heritage_cnn.base.checks import config_from_dict, in_range, require
from heritage_cnn.data.folders import DatasetError, ImageSet

# Default near-duplicate threshold: Hamming distance between 64-bit perceptual hashes. At 10 on the
# AHE64 train split, 213 photos fall in groups of 2-4 (re-uploads, crops, the same dome twice); false
# matches only make a group larger, which costs nothing, while a missed copy inflates validation.
NEAR_DUPLICATE_DISTANCE = 10
HASH_BITS = 64  # imagehash.phash at its default size: 8 x 8 DCT coefficients, one bit each


def perceptual_hashes(images: torch.Tensor) -> np.ndarray:
    """64-bit DCT perceptual hash (imagehash.phash) of each uint8 image, as uint64."""
    import imagehash

    out = np.empty(len(images), dtype=np.uint64)
    array = images.permute(0, 2, 3, 1).numpy()
    for i, pixels in enumerate(array):
        bits = imagehash.phash(Image.fromarray(pixels)).hash.flatten()
        out[i] = np.packbits(bits).view(">u8")[0]
    return out


def set_hashes(images: ImageSet) -> np.ndarray:
    """`perceptual_hashes` of a decoded set, computed once per ImageSet and kept on it (subsets take theirs)."""
    if images.hashes is None:
        images.hashes = perceptual_hashes(images.images)
    return images.hashes


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


def folds(val_fraction: float) -> int:
    """k of the k-fold split whose one fold is the validation side: round(1 / val_fraction), so that 0.2 is exactly
    a fifth; any other share is rounded to 1/k (0.3 to a third, 0.4 and 0.45 to a half)."""
    return max(2, round(1.0 / val_fraction))


def split_train_val(
    labels: Sequence[int] | np.ndarray,
    groups: Sequence[int] | np.ndarray,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, group-aware split with a fixed seed (scikit-learn's StratifiedGroupKFold).

    The validation side is one of `folds(val_fraction)` folds, so 0.2 gives exactly a fifth;
    every near-duplicate group lies wholly on one side.
    """
    if not 0.0 < val_fraction <= 0.5:
        raise ValueError(f"val_fraction must be in (0, 0.5], got {val_fraction}")
    from sklearn.model_selection import StratifiedGroupKFold

    labels = np.asarray(labels)
    n_splits = folds(val_fraction)
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
        # up to a half, the share of the coarsest split (2 folds), which 0.4 and 0.45 were already rounded to
        require(
            in_range(self.val_fraction, 0, 0.5, above_low=True),
            f"{{0}} must be in (0, 0.5], got {self.val_fraction}",
            "val_fraction",
        )
        require(
            isinstance(self.near_duplicate_distance, int) and 0 <= self.near_duplicate_distance <= HASH_BITS,
            f"{{0}} must be a Hamming distance from 0 to {HASH_BITS} bits, got {self.near_duplicate_distance}",
            "near_duplicate_distance",
        )

    @property
    def folds(self) -> int:
        """k: the validation side is 1/k of the photos (`folds`)."""
        return folds(self.val_fraction)

    def rounding(self) -> str | None:
        """What the share taken is, where it is not `val_fraction` itself (0.45: a half); None where it is."""
        k = self.folds
        if math.isclose(self.val_fraction * k, 1.0):
            return None
        return (
            f"validation: 1 fold in {k} ({100 / k:.0f} %) of a stratified group {k}-fold split: --val-fraction "
            f"{self.val_fraction:g} is rounded to 1/k, k = round(1 / {self.val_fraction:g})"
        )

    @classmethod
    def from_dict(cls, data: dict) -> SplitRecipe:
        return config_from_dict(cls, data)


def of_classes(images: ImageSet, classes: list[str]) -> tuple[ImageSet, np.ndarray]:
    """The photos of `classes` (some of `images.classes`), labelled by that list, and which of `images` they are: a
    taught model's training run split the photos of its own classes only, labelled by its own class list."""
    wanted = np.isin(images.labels.numpy(), [images.classes.index(name) for name in classes])
    kept = images.subset(np.flatnonzero(wanted))
    kept.labels = torch.tensor([classes.index(images.classes[k]) for k in kept.labels.tolist()], dtype=torch.long)
    kept.classes = list(classes)
    return kept, wanted


def joined(first: ImageSet, second: ImageSet) -> ImageSet:
    """The photos of two sets labelled by the same classes, the first set's first (with their hashes, if both have
    them)."""
    hashes = None if first.hashes is None or second.hashes is None else np.concatenate([first.hashes, second.hashes])
    images, labels = torch.cat([first.images, second.images]), torch.cat([first.labels, second.labels])
    return ImageSet(images, labels, [*first.paths, *second.paths], first.classes, hashes=hashes)


def make_split(images: ImageSet, recipe: SplitRecipe = SplitRecipe()) -> tuple[ImageSet, ImageSet]:
    """Duplicate-aware stratified train/validation split of a decoded training set."""
    groups = group_near_duplicates(set_hashes(images), recipe.near_duplicate_distance)
    train_idx, val_idx = split_train_val(images.labels.numpy(), groups, recipe.val_fraction, recipe.seed)
    return images.subset(train_idx), images.subset(val_idx)
