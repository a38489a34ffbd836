"""A JPEG whose header declares more pixels than its bytes can hold (a corrupt frame header, a file cut short) is
refused: libjpeg decodes it without an error, as flat grey, which would be classified like a photo."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import draw
from heritage_cnn.data.decode import ImageError, decode_image, read_whole


def _jpeg(pixels: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", **options)
    return buffer.getvalue()


def _declaring(data: bytes, width: int, height: int) -> bytes:
    """`data` with its frame header (SOF) patched to declare width x height; its coded blocks stay as they were."""
    patched, at = bytearray(data), 2
    while patched[at + 1] not in (0xC0, 0xC2):
        at += 2 + int.from_bytes(patched[at + 2 : at + 4], "big")
    patched[at + 5 : at + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(patched)


@pytest.mark.parametrize("progressive", [False, True])
def test_a_frame_header_declaring_more_than_the_bytes_hold_is_refused(progressive: bool, tmp_path: Path) -> None:
    photo = _jpeg(draw(3, np.random.default_rng(0)), quality=90, progressive=progressive)
    path = tmp_path / "patched.jpg"
    path.write_bytes(_declaring(photo, 11000, 10000))  # 110 MP in a few kB: needs 214,843 bytes at the least
    for read in (lambda source: decode_image(source), lambda source: read_whole(source, 256)):
        for source in (path, path.read_bytes()):
            with pytest.raises(ImageError, match=r"corrupt or truncated JPEG \(its header declares 11000x10000 pixels"):
                read(source)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_the_smallest_honest_jpegs_of_a_large_size_still_decode(mode: str) -> None:
    """Flat, quality 1, optimised Huffman tables, progressive: the fewest bytes libjpeg writes for 2000 x 1500 (about
    three times the bound, one bit per block of the full-resolution component), and it is read."""
    flat = np.full((1500, 2000) if mode == "L" else (1500, 2000, 3), 97, dtype=np.uint8)
    data = _jpeg(flat, quality=1, optimize=True, progressive=True)
    assert len(data) >= 2000 * 1500 // 512
    assert decode_image(data).std() < 1 and read_whole(data, 256).width == 2000
