"""Converting 16-bit, 32-bit, float and 1-bit images to 8-bit costs memory in proportion to the 8-bit result, never a
float64 copy of the whole image (a 118.8 MP float TIFF of 829 KB once took 3.9 GB to predict), and gives the pixels
the whole-image conversion gave; a photo decoded whole holds at most its pixel budget, a strip 1 px wide too."""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from heritage_cnn.data import decode, resize
from heritage_cnn.data.decode import read_image, read_whole

SRC = str(Path(decode.__file__).resolve().parents[2])


def whole_image_grey(image: Image.Image) -> np.ndarray:
    """The conversion as it was: the whole image as float64 (integers for 16-bit), scaled, rounded, clipped."""
    if image.mode.startswith("I;16"):
        return ((np.asarray(image).astype(np.uint32) * 2 + 257) // 514).astype(np.uint8)
    array = np.asarray(image).astype(np.float64)
    peak = array.max(initial=0)
    if image.mode == "F" and 0 < peak <= 1:
        array = array * 255.0
    elif peak > 255:
        array = array * (255.0 / peak)
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def images(width: int, height: int) -> dict[str, Image.Image]:
    """Float in [0, 1], float beyond 255 and negative, 32-bit, 16-bit: each scaled its own way."""
    rng = np.random.default_rng(width * height)
    unit = rng.random((height, width), dtype=np.float32)
    unit[0, :3] = (0.5 / 255, 1.5 / 255, 2.5 / 255)  # values that round half to even
    return {
        "F unit": Image.fromarray(unit, mode="F"),
        "F wide": Image.fromarray((unit * 70_000 - 500).astype(np.float32), mode="F"),
        "F levels": Image.fromarray(np.round(unit * 255).astype(np.float32), mode="F"),
        "I": Image.fromarray((rng.integers(-1000, 900_000, (height, width))).astype(np.int32), mode="I"),
        "I;16": Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16)),
    }


@pytest.mark.parametrize("strip", [1 << 18, 1000, 1])
@pytest.mark.parametrize("kind", ["F unit", "F wide", "F levels", "I", "I;16"])
def test_the_same_pixels_as_the_whole_image_conversion(monkeypatch: pytest.MonkeyPatch, kind: str, strip: int) -> None:
    """Strips of any height (one row, a few rows, the whole image) give exactly the whole image's pixels: the same
    float64 arithmetic per pixel, scaled by the whole image's peak."""
    monkeypatch.setattr(resize, "STRIP_PIXELS", strip, raising=False)
    image = images(123, 77)[kind]
    expected = whole_image_grey(image)
    assert np.array_equal(np.asarray(resize.to_rgb(image)), np.repeat(expected[..., None], 3, axis=2))


def whole_image_rgb(image: Image.Image) -> Image.Image:
    """`to_rgb` as it was: every conversion made on the whole image at once."""
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        return Image.fromarray(whole_image_grey(image), mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


@pytest.mark.parametrize("mode", ["F", "I", "I;16", "1", "L", "LA", "RGBA", "P", "P transparent", "CMYK"])
def test_read_image_and_read_whole_give_the_same_pixels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """Through the file paths too: grey images are resized as one channel now, and made RGB after, which gives the
    pixels resizing them as RGB gave (Pillow filters each channel alike); alpha is laid on white a strip at a time."""
    monkeypatch.setattr(resize, "STRIP_PIXELS", 5000, raising=False)
    rng = np.random.default_rng(7)
    if mode in ("F", "I", "I;16"):
        image = images(301, 203)[{"F": "F wide", "I": "I", "I;16": "I;16"}[mode]]
    else:
        image = Image.fromarray(rng.integers(0, 256, (203, 301, 4), dtype=np.uint8), mode="RGBA")
        image = image.convert("RGB" if mode.startswith("P") else mode.split()[0])  # RGBA to P keeps the alpha
        image = image.convert("P") if mode.startswith("P") else image
    path = tmp_path / ("photo.tif" if mode in ("F", "I", "CMYK") else "photo.png")
    image.save(path, **({"transparency": 7} if mode == "P transparent" else {}))
    with Image.open(path) as opened:
        assert opened.mode == mode.split()[0] and ("transparency" in opened.info) == (mode == "P transparent")
        old = whole_image_rgb(opened)
    resized = old.resize((95, 64), Image.Resampling.BICUBIC, reducing_gap=resize.REDUCING_GAP)
    assert np.array_equal(read_image(path).pixels, np.asarray(resized.crop((15, 0, 79, 64))))
    whole = old.resize((149, 101), Image.Resampling.BICUBIC, reducing_gap=resize.REDUCING_GAP)
    assert np.array_equal(read_whole(path, 101).pixels, np.asarray(whole))


@pytest.mark.parametrize("mode", ["F", "I", "I;16"])
def test_the_conversion_never_copies_the_whole_image_at_high_precision(mode: str) -> None:
    """3000 x 3000 pixels: the whole image as float64 is 72 MB, and the conversion used to make four such copies
    (as uint32, three of 36 MB, for 16-bit). Now: the 9 MB result, and a few MB for a strip of rows at a time."""
    image = images(3000, 3000)[{"F": "F wide", "I": "I", "I;16": "I;16"}[mode]]
    tracemalloc.start()
    try:
        grey = resize.to_rgb(image)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert grey.size == (3000, 3000)
    assert peak < 3000 * 3000 * 2, f"{peak / 1e6:.0f} MB"  # the 8-bit result, and under as much again


MEASURE = """
import re, sys
from heritage_cnn.data.decode import read_image
def high_water():  # this process's peak RSS in KB (ru_maxrss would be the parent's: it outlives exec)
    with open("/proc/self/status") as status:
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", status.read())[1])
before = high_water()
for path in sys.argv[1:]:
    assert read_image(path).pixels.shape == (64, 64, 3)
print((high_water() - before) // 1024)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak RSS from /proc")
@pytest.mark.parametrize("mode", ["F", "1"])
def test_a_large_float_or_one_bit_file_costs_about_its_8_bit_size(tmp_path: Path, mode: str) -> None:
    """A 24 MP float TIFF (96 MB as Pillow holds it) peaked at about 650 MB above the interpreter; a 1-bit PNG of
    24 MP at about 100 MB (made RGB whole, 4 bytes a pixel). Now: the file's own pixels and a grey image."""
    path = tmp_path / ("float.tif" if mode == "F" else "bits.png")
    if mode == "F":
        Image.new("F", (6000, 4000), 0.5).save(path, compression="tiff_adobe_deflate")
    else:
        Image.new("1", (6000, 4000), 1).save(path)
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    assert result.returncode == 0, result.stderr
    held = 24 * (4 if mode == "F" else 1)  # MB: the decoded file, as Pillow holds it
    assert int(result.stdout) < held + 24 + 40  # and the 8-bit grey image, and some slack


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak RSS from /proc")
def test_thin_images_stay_small_in_memory(tmp_path: Path) -> None:
    """A 664-byte 1 x 300,000 PNG used to peak at 6.7 GB (64 x 19.2M before the crop)."""
    paths = [tmp_path / "tall.png", tmp_path / "wide.png"]
    Image.new("L", (1, 300_000), 90).save(paths[0])
    Image.new("RGB", (300_000, 1), (9, 90, 200)).save(paths[1])
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) < 200  # MB above the interpreter's own peak


@pytest.mark.parametrize("kind", ["PNG", "JPEG"])
@pytest.mark.parametrize("size,shape", [((1, 5000), (1000, 1)), ((5000, 1), (1, 1000)), ((2, 5000), (1000, 1))])
def test_a_strip_is_reduced_within_the_pixel_budget(
    tmp_path: Path, kind: str, size: tuple[int, int], shape: tuple[int, int]
) -> None:
    """Reduced to the budget, a strip's short side would be under 1 px: it stays 1 px, and its long side is cut
    further, so the budget holds (a 1 x 20,000,000 PNG came back 8.9 megapixels against 4 million, and a 1 x 119 MP
    one failed as "not enough memory" where predict read it)."""
    path = tmp_path / f"strip.{kind.lower()}"
    Image.new("L", size, 100).save(path, format=kind)
    decoded = read_whole(path, 256, max_pixels=1000)
    assert decoded.pixels.shape == (*shape, 3) and (decoded.width, decoded.height) == size
