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
The policy (`resize.py`): EXIF orientation honoured, any mode to 8-bit RGB, shorter side scaled to `size`
(bicubic, antialiased), centre square kept. `read_whole` keeps the whole photo instead (the element map scans it), reduced
within a pixel budget, with the same checks and errors.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

from heritage_cnn.data import pillow_limits
from heritage_cnn.data.resize import REDUCING_GAP, RESIZE_BUDGET, eight_bit, fit_square, to_rgb

IMAGE_SIZE = 64
# Raised with every change here that changes the pixels some file decodes to: decoded images kept on disk
# (`folders.py`'s cache, keyed on it) are then decoded again, never served as the earlier decoder gave them.
DECODE_REVISION = 2
# Photo files of survey disks that Pillow cannot decode (HEIC, the iPhone's default): looked for all the same
# (`folders.IMAGE_EXTENSIONS`), so that each is skipped and listed with what to do, never passed over without a word
UNDECODED_PHOTOS = frozenset({".heic", ".heif"})
# ISO base media file brands of HEIF images (its `ftyp` box; AVIF's `avif` brand is decoded), known by content
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})


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


# The file each thread is decoding: Pillow's warnings (a corrupt EXIF block, whose orientation is then ignored) name
# none, and the command line names it for them (`reading_now`)
_reading = threading.local()


def reading_now() -> str | None:
    """The name of the file this thread is decoding, None outside a decode."""
    return getattr(_reading, "name", None)


@contextmanager
def _naming(name: str) -> Iterator[None]:
    """Within the block this thread decodes the file `name` (`reading_now`)."""
    _reading.name = name
    try:
        yield
    finally:
        _reading.name = None  # a warning outside a decode is about no file


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
        with pillow_limits.held(), _naming(name), stream, Image.open(stream) as image:  # the decoder's limits
            kind = image.format
            return use(image, name)
    except ImageError:
        raise
    except Image.DecompressionBombError as error:  # over twice the limit, refused by Pillow: our words, our limit
        raise ImageTooLarge(
            f"{name}: image too large to decode safely ({_declared(error)}over the limit of {pillow_limits.MAX_IMAGE_PIXELS})"
        ) from None
    except Image.UnidentifiedImageError:
        if (len(source) if is_bytes else _size_or_zero(source)) == 0:
            raise ImageError(f"{name}: empty file (0 bytes)") from None
        if _is_heif(source[:12] if is_bytes else _first_bytes(source, 12)):
            raise ImageError(
                f"{name}: a HEIC/HEIF photo, which Pillow cannot decode: convert it to JPEG first"
            ) from None
        raise ImageError(f"{name}: not a recognised image format") from None
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


def _is_heif(head: bytes) -> bool:
    """Whether a file's first 12 bytes are a HEIF `ftyp` box (size, `ftyp`, major brand)."""
    return head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS


def _first_bytes(path: str | os.PathLike, count: int) -> bytes:
    try:
        with open_regular(path) as handle:
            return handle.read(count)
    except (OSError, ImageError):
        return b""


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
        with (
            pillow_limits.held(),
            _naming(os.fsdecode(path)),
            open_regular(path) as stream,
            Image.open(stream) as image,
        ):
            return image.mode, image.size
    except Exception:  # any unreadable header: the decoding pass says why
        return None
