"""Decode one photo, from a file or from bytes, into the network's input: a uint8 size x size x 3 array.

Every command goes through `read_image` (training, data check, evaluate, predict, sort, the server,
visualize, explain), so its promises hold everywhere:
- a path that is not a regular file (a FIFO, a device, a socket, a folder) is refused before it is opened:
  reading a FIFO named photo.jpg would wait forever for a writer;
- any exception from Pillow or one of its decoder plugins (NotImplementedError from a DDS texture,
  struct.error, SyntaxError, MemoryError, ...) becomes an ImageError whose message starts with the file's
  name: the caller skips and lists the file, a long run goes on;
- a JPEG holding fewer bytes than its declared size needs (a corrupt header, a file cut short) is refused: libjpeg
  would decode it without an error, as flat grey;
- memory is bounded by the header: above MAX_IMAGE_PIXELS (`pillow_limits.py`) a file is refused before its pixels are decoded,
  and only the window of the image that lands in the centre square is converted and resized. A 1 x 300,000
  strip therefore costs what a 300,000-pixel photo costs, not a 64 x 19,200,000 intermediate image.
The policy: EXIF orientation honoured, any mode to 8-bit RGB, shorter side scaled to `size` (bicubic,
antialiased), centre square kept. `read_whole` keeps the whole photo instead (the element map scans it), reduced
within a pixel budget, with the same checks and errors.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import stat
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

from heritage_cnn.data import pillow_limits

IMAGE_SIZE = 64
# Raised with every change here that changes the pixels some file decodes to: decoded images kept on disk
# (`folders.py`'s cache, keyed on it) are then decoded again, never served as the earlier decoder gave them.
DECODE_REVISION = 2
MAX_OUTPUT_SIZE = 2048  # the largest square this module produces (a checkpoint asking for more is refused)
REDUCING_GAP = 3.0  # integer box reduction first, then bicubic over the last factor of at least 3
_BICUBIC_SUPPORT = 2.0
# Pixels of the "shorter side scaled to size" image up to which it is made whole and cropped (16 MB of RGB):
# any photo with an aspect ratio under about 1000:1. Beyond, only the window under the square is resized.
RESIZE_BUDGET = 4_000_000
STRIP_PIXELS = 1 << 18  # 16-bit, 32-bit, float and alpha are converted a strip of rows at a time: a few MB of work


class ImageError(ValueError):
    """A file that cannot be used as an image. The message names the file and what is wrong."""


class ImageTooLarge(ImageError):
    """An image whose header declares more pixels than `pillow_limits.MAX_IMAGE_PIXELS` (the server answers 413)."""


@dataclass(frozen=True)
class DecodedImage:
    """A photo at the network's size, and what the file declared."""

    pixels: np.ndarray  # (size, size, 3) uint8
    width: int
    height: int
    format: str | None


# --------------------------------------------------------------------------------------------
# Opening: regular files only
# --------------------------------------------------------------------------------------------


def not_regular_reason(mode: int) -> str | None:
    """Why a file of this `st_mode` is not read as a photo, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a folder, not an image"
    if stat.S_ISFIFO(mode):
        return "is a named pipe (FIFO), not a regular file; not read"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a regular file; not read"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a regular file; not read"
    return "is not a regular file; not read"


def os_reason(error: OSError) -> str:
    if isinstance(error, FileNotFoundError):
        return "file not found"
    if isinstance(error, PermissionError):
        return "permission denied"
    return f"cannot read ({error.strerror or error})"


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """Open a regular file for reading; anything else is refused before it is opened.

    The open is non-blocking and checked again on the descriptor, so a file swapped for a FIFO
    between the two checks is refused too instead of blocking.
    """
    try:
        reason = not_regular_reason(os.stat(path).st_mode)
        if reason is None:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
            try:
                reason = not_regular_reason(os.fstat(fd).st_mode)
                if reason is None:
                    return os.fdopen(fd, "rb")
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
    except OSError as error:
        raise ImageError(f"{os.fsdecode(path)}: {os_reason(error)}") from None
    raise ImageError(f"{os.fsdecode(path)}: {reason}")


def regular_file_sha256(path: str | os.PathLike) -> str | None:
    """The SHA-256 of a regular file's bytes (hex), read in blocks; None for one that cannot be read or is no
    regular file (a FIFO named photo.jpg would block a plain read): the decoding pass lists such files."""
    try:
        with open_regular(path) as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except (OSError, ImageError):
        return None


# --------------------------------------------------------------------------------------------
# Conversion and the resize policy
# --------------------------------------------------------------------------------------------


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


def fit_square(image: Image.Image, size: int = IMAGE_SIZE, peak: float | None = None) -> Image.Image:
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


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0][:160] if text else "") or type(error).__name__


def _declared(error: Image.DecompressionBombError) -> str:
    """The size Pillow's refusal quotes, as "N pixels, " (Pillow 13: "Image size (N pixels) exceeds limit of ...";
    older: "(WxH pixels)"); empty for other wording. Its own limit, twice ours, is never repeated."""
    found = re.search(r"\((?:(\d+)x(\d+)|(\d+)) pixels\)", str(error))
    if found is None:
        return ""
    if found[3] is not None:
        return f"{int(found[3])} pixels, "
    width, height = int(found[1]), int(found[2])
    return f"{width}x{height} = {width * height} pixels, "


def _check_header(image: Image.Image, name: str) -> None:
    """Refuse, before any pixel is decoded, a header that declares too many pixels or none, or a JPEG too short
    for the pixels it declares."""
    width, height, kind = image.width, image.height, image.format
    if width * height > pillow_limits.MAX_IMAGE_PIXELS:
        raise ImageTooLarge(
            f"{name}: image too large to decode safely ({width}x{height} = {width * height} pixels, "
            f"over the limit of {pillow_limits.MAX_IMAGE_PIXELS})"
        )
    if width < 1 or height < 1:
        raise ImageError(f"{name}: {kind} image of {width}x{height} pixels has nothing to show")
    if kind == "JPEG":
        _check_jpeg_length(image, name)


# Frame markers of Huffman-coded JPEGs (baseline, extended, progressive, lossless and their differential forms);
# arithmetic coding (0xC9-0xCB, 0xCD-0xCF) can spend less than a bit on a block, so it has no such bound.
_HUFFMAN_FRAMES = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7})


def _check_jpeg_length(image: Image.Image, name: str) -> None:
    """Refuse a Huffman-coded JPEG holding fewer bytes than its declared size needs: every 8 x 8 block of its
    full-resolution component costs at least one bit (its DC code), so W x H pixels need at least W*H/512 bytes.
    libjpeg decodes such a file (a corrupt header, a file cut off) without an error, as flat grey."""
    stream = image.fp
    if stream is None:
        return
    here = stream.tell()
    try:
        size = stream.seek(0, os.SEEK_END)
        stream.seek(2)  # past the start-of-image marker
        while True:  # the markers before the frame header; anything unexpected is left to the decoder
            marker = stream.read(4)
            if len(marker) < 4 or marker[0] != 0xFF or marker[1] in (0xD8, 0xDA, 0xFF):
                return
            if 0xC0 <= marker[1] <= 0xCF and marker[1] not in (0xC4, 0xC8, 0xCC):
                break
            stream.seek(int.from_bytes(marker[2:4], "big") - 2, os.SEEK_CUR)
    finally:
        stream.seek(here)
    needed = image.width * image.height // 512
    if marker[1] in _HUFFMAN_FRAMES and size < needed:
        raise ImageError(
            f"{name}: corrupt or truncated JPEG (its header declares {image.width}x{image.height} pixels, which "
            f"need at least {needed} bytes; the file holds {size})"
        )


def _decode_open(image: Image.Image, name: str, size: int) -> DecodedImage:
    _check_header(image, name)
    width, height, kind = image.width, image.height, image.format
    image.seek(0)  # first frame of an animated GIF / multi-page TIFF
    image.load()
    ImageOps.exif_transpose(image, in_place=True)
    pixels = np.asarray(fit_square(image, size), dtype=np.uint8).copy()
    return DecodedImage(pixels, width, height, kind)


def _decode_whole(image: Image.Image, name: str, shorter: int, max_pixels: int) -> DecodedImage:
    """The whole photo with its shorter side at most `shorter` px and at most `max_pixels` pixels (never
    enlarged); `width` and `height` are the photo's own, after EXIF orientation."""
    _check_header(image, name)
    kind = image.format
    image.seek(0)
    width, height = image.size
    factor = min(1.0, shorter / min(width, height), math.sqrt(max_pixels / (width * height)))
    target = (max(1, math.floor(width * factor)), max(1, math.floor(height * factor)))
    if target[0] * target[1] > max_pixels:  # a strip's short side clamped up to 1 px: its long side is cut further
        short = min(target)
        target = (short, max_pixels // short) if target[0] == short else (max_pixels // short, short)
    if kind == "JPEG" and factor < 0.5:  # the DCT decodes at 1/2, 1/4 or 1/8 directly, never below the target
        image.draft("RGB", target)
    image.load()
    loaded = image.size
    ImageOps.exif_transpose(image, in_place=True)
    if image.size != loaded:  # rotated a quarter turn: the photo's own axes are the other way round
        width, height, target = height, width, target[::-1]
    image = eight_bit(image)  # a grey image stays one channel while it is resized
    if image.size != target:  # bicubic, antialiased: integer box reduction first, as fit_square does
        image = image.resize(target, Image.Resampling.BICUBIC, reducing_gap=REDUCING_GAP)
    return DecodedImage(np.asarray(to_rgb(image), dtype=np.uint8).copy(), width, height, kind)


def _read(source: str | os.PathLike | bytes, name: str | None, use) -> DecodedImage:
    """Open a file (by path) or bytes, pass the open image to `use(image, name)`; every failure is an ImageError
    that names the file."""
    is_bytes = isinstance(source, (bytes, bytearray, memoryview))
    name = name or ("upload" if is_bytes else os.fsdecode(source))
    if is_bytes and len(source) == 0:
        raise ImageError(f"{name}: empty file (0 bytes)")
    stream = io.BytesIO(source) if is_bytes else open_regular(source)
    kind = None
    try:
        with pillow_limits.held(), stream, Image.open(stream) as image:  # the decoder's limits, whatever the caller's
            kind = image.format
            return use(image, name)
    except ImageError:
        raise
    except Image.DecompressionBombError as error:  # over twice the limit, refused by Pillow: our words, our limit
        raise ImageTooLarge(
            f"{name}: image too large to decode safely ({_declared(error)}over the limit of {pillow_limits.MAX_IMAGE_PIXELS})"
        ) from None
    except Image.UnidentifiedImageError:
        empty = (len(source) if is_bytes else _size_or_zero(source)) == 0
        raise ImageError(f"{name}: {'empty file (0 bytes)' if empty else 'not a recognised image format'}") from None
    except NotImplementedError as error:
        what = f"a {kind} image" if kind else "an image format Pillow recognises"
        raise ImageError(f"{name}: {what} in a variant it cannot decode ({_first_line(error)})") from None
    except MemoryError:
        raise ImageError(f"{name}: not enough memory to decode this image") from None
    except OSError as error:
        raise ImageError(f"{name}: corrupt or truncated image ({_first_line(error)})") from None
    except Exception as error:  # any decoder plugin's failure means the same: this file cannot be used
        raise ImageError(f"{name}: corrupt or truncated image ({type(error).__name__}: {_first_line(error)})") from None


def read_image(source: str | os.PathLike | bytes, size: int = IMAGE_SIZE, name: str | None = None) -> DecodedImage:
    """Decode a file (by path) or bytes (an upload) with the one policy; raise ImageError naming the file.

    `name` is what messages call the input (default: the path, or "upload" for bytes).
    """
    return _read(source, name, lambda image, shown: _decode_open(image, shown, size))


def read_whole(
    source: str | os.PathLike | bytes, shorter: int, max_pixels: int = RESIZE_BUDGET, name: str | None = None
) -> DecodedImage:
    """The whole photo, not a centre square: reduced (never enlarged) so that its shorter side is at most `shorter`
    px and it holds at most `max_pixels` pixels (a panorama is reduced further), with the same checks, errors and
    EXIF orientation as `read_image`. `pixels` is (h, w, 3) uint8; `width` and `height` are the photo's own size.
    The element map scans this image (`heritage_cnn.inference.element_map`)."""
    if shorter < 1 or max_pixels < 1:
        raise ValueError(f"shorter side and pixel budget must be at least 1, got {shorter} and {max_pixels}")
    return _read(source, name, lambda image, shown: _decode_whole(image, shown, shorter, max_pixels))


def _size_or_zero(path: str | os.PathLike) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def decode_image(source: str | os.PathLike | bytes, size: int = IMAGE_SIZE) -> np.ndarray:
    """Decode one photo to a `size`x`size`x3 uint8 array; raise ImageError naming the file."""
    return read_image(source, size).pixels


def try_decode(path: str | os.PathLike, size: int = IMAGE_SIZE) -> np.ndarray | str:
    """The pixels, or the reason (without the file name) the file was skipped; never raises for a bad file."""
    try:
        return decode_image(path, size)
    except ImageError as error:
        return str(error).removeprefix(f"{os.fsdecode(path)}: ")


def image_header(path: str | os.PathLike) -> tuple[str, tuple[int, int]] | None:
    """Mode and size from the header of a regular file (no pixels decoded); None if unreadable."""
    try:
        with pillow_limits.held(), open_regular(path) as stream, Image.open(stream) as image:
            return image.mode, image.size
    except Exception:  # any unreadable header: the decoding pass says why
        return None
