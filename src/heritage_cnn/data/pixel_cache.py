"""The decoded pixels of a file list, kept on disk between runs (`load_images(cache_dir=...)`, `--cache-dir`).

Two files under one name: `NAME.safetensors` holds the uint8 pixels, `NAME.json` the paths they were decoded from,
the files that could not be decoded (with why) and the SHA-256 of the pixels. The digest binds the two files
together and to what was written: a pixel file cut short, flipped by the disk, edited, or left from another run
beside this JSON (an interrupted write replaces one of the two) is decoded again and said, never trained on.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch

from heritage_cnn.base.io import atomic_write_json, load_tensors, save_tensors

HEADER_ROOM = 2**16  # bytes of a pixel file beyond its pixels: safetensors' JSON header
LISTED_ROOM = 3 * 2**13  # bytes of the JSON per file at most: a path (4,096 bytes), escaped, and why it failed


def pixels_digest(images: torch.Tensor) -> str:
    """SHA-256 of a uint8 image tensor's bytes, in its (contiguous) order."""
    return hashlib.sha256(images.contiguous().reshape(-1).numpy().tobytes()).hexdigest()


def write_pixels(path: Path, images: torch.Tensor, paths: list[str], failed: list[tuple[str, str]]) -> None:
    """Store the pixels of a decode and the files that could not be decoded (with why), without labels."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_tensors(path.with_suffix(".safetensors"), {"images": images})
        meta = {"paths": paths, "failed": failed, "sha256": pixels_digest(images)}
        atomic_write_json(path.with_suffix(".json"), meta)
    except OSError as error:  # a cache that cannot be written only costs time
        warnings.warn(f"{path}: could not write the image cache ({error})", stacklevel=3)


def read_pixels(
    path: Path, listed: list[str], size: int
) -> tuple[torch.Tensor, list[str], list[tuple[str, str]]] | None:
    """(pixels, paths decoded, files that failed) of the files `listed`, decoded at `size`, from the cache at
    `path`; None, with a warning naming the file, when it holds another file list or does not read back as the
    pixels that were written."""
    tensors_path, meta_path = path.with_suffix(".safetensors"), path.with_suffix(".json")
    if not (tensors_path.exists() and meta_path.exists()):
        return None
    try:
        # read no more than these files' names and pixels can take, whatever the files' sizes claim
        if meta_path.stat().st_size > len(listed) * LISTED_ROOM + HEADER_ROOM:
            raise ValueError(f"{meta_path.name} is larger than the list of these files can be")
        meta = json.loads(meta_path.read_text())
        paths, failed = list(meta["paths"]), [(str(p), str(why)) for p, why in meta["failed"]]
        if sorted([*paths, *(p for p, _ in failed)]) != sorted(listed):
            raise ValueError("another file list")
        if tensors_path.stat().st_size > len(listed) * 3 * size * size + HEADER_ROOM:
            raise ValueError("larger than the pixels of these files can be")
        images = load_tensors(tensors_path)["images"]
        if images.dtype != torch.uint8 or tuple(images.shape) != (len(paths), 3, size, size):
            raise ValueError(f"pixels of another shape ({images.dtype}, {tuple(images.shape)})")
        if "sha256" not in meta:
            raise ValueError("no SHA-256 of the pixels (written by an earlier version)")
        if pixels_digest(images) != meta["sha256"]:
            raise ValueError("the pixels are not the ones written (SHA-256 differs)")
        return images, paths, failed
    except (OSError, ValueError, KeyError, TypeError) as error:
        warnings.warn(f"{path}: ignoring an unreadable image cache ({error})", stacklevel=3)
        return None


__all__ = ["pixels_digest", "read_pixels", "write_pixels"]
