"""The one resize policy: any mode to 8-bit RGB, EXIF orientation honoured, the shorter side scaled to `size`
(bicubic, antialiased) and the centre square kept (`fit_square`), with memory bounded by the output: beyond a
pixel budget only the window under the square is converted and resized. Decoding a file is `decode.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

MAX_OUTPUT_SIZE = 2048  # the largest square this module produces (a checkpoint asking for more is refused)
REDUCING_GAP = 3.0  # integer box reduction first, then bicubic over the last factor of at least 3
_BICUBIC_SUPPORT = 2.0
# Pixels of the "shorter side scaled to size" image up to which it is made whole and cropped (16 MB of RGB):
# any photo with an aspect ratio under about 1000:1. Beyond, only the window under the square is resized.
RESIZE_BUDGET = 4_000_000
STRIP_PIXELS = 1 << 18  # 16-bit, 32-bit, float and alpha are converted a strip of rows at a time: a few MB of work


def _strips(image: Image.Image) -> list[tuple[int, int, int, int]]:
    """The image's boxes of `STRIP_PIXELS` or so, whole rows each, top to bottom."""
    width, height = image.size
    rows = max(1, STRIP_PIXELS // max(1, width))
    return [(0, top, width, min(height, top + rows)) for top in range(0, height, rows)]


def _grey_strip(values: np.ndarray, mode: str, peak: float) -> np.ndarray:
    """One strip of a 16-bit, 32-bit or float image as 8-bit grey (`to_rgb`'s arithmetic)."""
    if mode.startswith("I;16"):  # round(v / 257) in integers
        return ((values.astype(np.uint32) * 2 + 257) // 514).astype(np.uint8)
    array = values.astype(np.float64)  # the strip's only copy: scaled, rounded and clipped in place
    if mode == "F" and 0 < peak <= 1:  # float pixels in [0, 1], their usual scale: black on 0-255
        array *= 255.0
    elif peak > 255:
        array *= 255.0 / peak
    return np.clip(np.rint(array, out=array), 0, 255, out=array).astype(np.uint8)


def _to_grey(image: Image.Image, peak: float | None) -> Image.Image:
    """A 16-bit, 32-bit or float image as "L", converted a strip of rows at a time: the whole image is never
    copied as float64 (118.8 MP of "F" once took 3.2 GB to convert; now its 8-bit result and a few MB)."""
    strips = _strips(image)
    if not image.mode.startswith("I;16") and peak is None:  # as np.asarray(image).max(initial=0): NaN if any is
        peak = np.array([np.asarray(image.crop(box)).max(initial=0) for box in strips], dtype=np.float64).max(initial=0)
    grey = np.empty((image.height, image.width), dtype=np.uint8)
    for box in strips:
        grey[box[1] : box[3]] = _grey_strip(np.asarray(image.crop(box)), image.mode, peak)
    return Image.fromarray(grey, mode="L")


def _on_white(image: Image.Image) -> Image.Image:
    """An image with alpha (or a transparent palette colour) laid on white, as RGB, a strip of rows at a time."""
    result = Image.new("RGB", image.size)
    for box in _strips(image):
        rgba = image.crop(box).convert("RGBA")
        result.paste(Image.alpha_composite(Image.new("RGBA", rgba.size, (255,) * 4), rgba).convert("RGB"), box[:2])
    return result


def eight_bit(image: Image.Image, peak: float | None = None) -> Image.Image:
    """`to_rgb`'s pixels, but a grey image ("1", "L", 16-bit, "I", "F") stays one channel ("L"): resized as "L" then
    made RGB, it gives the same pixels as resized as RGB, at a third of the memory. Anything else is RGB. 16-bit,
    32-bit, float and alpha are converted a strip of rows at a time (`STRIP_PIXELS`): the memory is the result's and
    a few MB, never a float64 copy of the whole image."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _to_grey(image, peak)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        return _on_white(image)
    if mode in ("L", "RGB"):
        return image
    return image.convert("L" if mode == "1" else "RGB")


def to_rgb(image: Image.Image, peak: float | None = None) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: 16-bit is scaled (not clipped), float in [0, 1] too, alpha is laid on white.

    `peak` is the largest value of a 32-bit ("I") or float ("F") image when `image` is a window of it,
    so that the window is scaled as the whole image would be. Those and alpha are converted in strips (`eight_bit`).
    """
    image = eight_bit(image, peak)
    return image.convert("RGB") if image.mode == "L" else image


def upright_rgb(image: Image.Image) -> Image.Image:
    """An image already open (a PIL image a caller holds) as its file is decoded: turned upright by its EXIF
    orientation, then 8-bit RGB (`to_rgb`). The caller's image is left as it is."""
    return to_rgb(ImageOps.exif_transpose(image))


@dataclass(frozen=True)
class _Axis:
    """One axis of the resize, restricted to the output window: source pixels [start, stop) are reduced
    by `factor`, and the bicubic filter reads the reduced window between `box0` and `box1`."""

    start: int
    stop: int
    factor: int
    box0: float
    box1: float


def _axis(length: int, scaled: int, offset: int, size: int) -> _Axis:
    """Replicates Pillow's resize(scaled, BICUBIC, reducing_gap=3) of a whole axis, for the output pixels
    [offset, offset + size) only: the same reduction blocks and the same filter centres."""
    factor = int(length / scaled / REDUCING_GAP) or 1
    reduced = math.ceil(length / factor)
    scale = length / factor / scaled  # reduced pixels per output pixel
    support = _BICUBIC_SUPPORT * max(scale, 1.0)
    lo = max(0, math.floor(offset * scale - support) - 1)
    hi = min(reduced, math.ceil((offset + size) * scale + support) + 1)
    box0 = offset * scale - lo
    return _Axis(lo * factor, min(length, hi * factor), factor, box0, box0 + size * scale)


def fit_square(image: Image.Image, size: int, peak: float | None = None) -> Image.Image:
    """The resize policy, the same for training, evaluation and prediction; returns an RGB image.

    Scale the shorter side to `size` (bicubic, antialiased), then crop the centre square. Photos of any
    aspect ratio keep their proportions; a border strip of the longer side is lost. Only the source
    window under the square is converted and resized: the same pixels as resizing the whole image and
    cropping, at the memory cost of the output.
    """
    if not 1 <= size <= MAX_OUTPUT_SIZE:
        raise ValueError(f"image size must be between 1 and {MAX_OUTPUT_SIZE} pixels, got {size}")
    width, height = image.size
    if (width, height) == (size, size):
        return to_rgb(image, peak)
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    x = _axis(width, new_w, (new_w - size) // 2, size)
    y = _axis(height, new_h, (new_h - size) // 2, size)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    if new_w * new_h <= RESIZE_BUDGET:  # every ordinary photo: resize whole, crop (Pillow picks the pass order)
        image = eight_bit(image, peak).resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=REDUCING_GAP)
        return to_rgb(image.crop((left, top, left + size, top + size)))
    # A strip: only the window under the square, reduced and filtered as the whole would be, one axis at a time.
    x, y = _axis(width, new_w, left, size), _axis(height, new_h, top, size)
    if image.mode in ("I", "F") and peak is None:
        peak = image.getextrema()[1]
    window = eight_bit(image.crop((x.start, y.start, x.stop, y.stop)), peak)
    if x.factor > 1 or y.factor > 1:
        window = window.reduce((x.factor, y.factor))
    window = window.resize((size, window.height), Image.Resampling.BICUBIC, box=(x.box0, 0, x.box1, window.height))
    return to_rgb(window.resize((size, size), Image.Resampling.BICUBIC, box=(0, y.box0, size, y.box1)))
