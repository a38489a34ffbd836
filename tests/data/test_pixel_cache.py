"""The decoded pixels kept on disk: read back only when they are the pixels that were written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from heritage_cnn.base.io import save_tensors
from heritage_cnn.data import folders as data
from heritage_cnn.data import pixel_cache


def _cached(root: Path, cache: Path) -> tuple[data.ImageSet, Path, Path]:
    """Decode `root` into `cache`; the image set and the cache's two files."""
    images = data.load_images(root, cache_dir=cache)
    (tensors,) = cache.glob("pixels-*.safetensors")
    return images, tensors, tensors.with_suffix(".json")


def _decodes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record every photo decoded from now on."""
    seen: list[Path] = []
    real = data.try_decode
    monkeypatch.setattr(data, "try_decode", lambda path, size: seen.append(path) or real(path, size))
    return seen


def test_a_flipped_pixel_byte_is_decoded_again(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One byte of the pixels changed on disk (a bad sector, an edit) was trained on: nothing checked the pixels."""
    first, tensors, _ = _cached(synthetic_root, tmp_path)
    raw = bytearray(tensors.read_bytes())
    raw[-1] ^= 0xFF  # the last pixel of the last photo
    tensors.write_bytes(bytes(raw))
    seen = _decodes(monkeypatch)
    with pytest.warns(UserWarning, match="SHA-256 differs"):
        again = data.load_images(synthetic_root, cache_dir=tmp_path)
    assert len(seen) == len(first.paths) and torch.equal(again.images, first.images)


def test_pixels_of_another_write_beside_this_list_are_decoded_again(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The two files are written one after the other: pixels of the right shape that are not the listed photos'
    (here the photos in reverse order) are found by the digest, not used."""
    first, tensors, _ = _cached(synthetic_root, tmp_path)
    save_tensors(tensors, {"images": first.images.flip(0)})
    seen = _decodes(monkeypatch)
    with pytest.warns(UserWarning, match="SHA-256 differs"):
        again = data.load_images(synthetic_root, cache_dir=tmp_path)
    assert seen and torch.equal(again.images, first.images)


def test_pixels_of_another_shape_or_type_are_decoded_again(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same bytes read as other pixels (another shape; int8) are not these photos, whatever the digest says."""
    first, tensors, _ = _cached(synthetic_root, tmp_path)
    n = len(first.paths)
    for other in (first.images.reshape(n, 3, 32, 128), first.images.view(torch.int8)):
        save_tensors(tensors, {"images": other})
        _decodes(monkeypatch)
        with pytest.warns(UserWarning, match="pixels of another shape"):
            again = data.load_images(synthetic_root, cache_dir=tmp_path)
        assert again.images.dtype == torch.uint8 and torch.equal(again.images, first.images)


def test_a_cache_larger_than_its_photos_is_not_read(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory stays bounded whatever the file: one larger than the listed photos' pixels can be is never loaded."""
    first, tensors, _ = _cached(synthetic_root, tmp_path)
    with tensors.open("ab") as out:
        out.truncate(tensors.stat().st_size + len(first.paths) * 3 * 64 * 64 + pixel_cache.HEADER_ROOM)

    def never(*args: object) -> None:
        raise AssertionError("an oversized cache file was read")

    monkeypatch.setattr(pixel_cache, "load_tensors", never)
    with pytest.warns(UserWarning, match="larger than the pixels"):
        again = data.load_images(synthetic_root, cache_dir=tmp_path)
    assert torch.equal(again.images, first.images)


def test_a_cache_without_a_digest_is_decoded_again(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, _, meta = _cached(synthetic_root, tmp_path)
    listed = json.loads(meta.read_text())
    del listed["sha256"]
    meta.write_text(json.dumps(listed))
    seen = _decodes(monkeypatch)
    with pytest.warns(UserWarning, match="no SHA-256"):
        data.load_images(synthetic_root, cache_dir=tmp_path)
    assert len(seen) == len(first.paths)


def test_a_file_list_larger_than_its_files_is_not_read(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, _, meta = _cached(synthetic_root, tmp_path)
    with meta.open("ab") as out:
        out.truncate(len(first.paths) * pixel_cache.LISTED_ROOM + pixel_cache.HEADER_ROOM + 1)
    seen = _decodes(monkeypatch)
    with pytest.warns(UserWarning, match="larger than the list of these files"):
        data.load_images(synthetic_root, cache_dir=tmp_path)
    assert len(seen) == len(first.paths)
