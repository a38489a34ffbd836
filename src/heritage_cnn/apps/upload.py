"""What an upload to `heritage serve` must pass before it is classified, and how a refusal reaches the client.

- size: the declared Content-Length, then the bytes actually received, are capped (413) before the multipart
  parser spools anything;
- time: a body not received within `total_s` seconds, or pausing longer than `idle_s` between chunks, is a 408;
- type and pixels: `decode_upload` decodes with the one decode path (`decode.read_image`), and `/api/map` with
  `decode.read_whole`, both inside `decoding`: anything Pillow cannot decode is a 415, a header over
  `pillow_limits.MAX_IMAGE_PIXELS` a 413, in the same words.

A refusal for size is answered after the rest of the body has been read and discarded (`RequestBody.drain`, up to
`drain_bytes`; nothing is kept): a server that closes while the client is still sending makes the kernel reset
the connection, and a client that sends its whole body before reading (Python's http.client, most scripts) then
sees "connection reset" instead of the 413. A client that asked `Expect: 100-continue` has sent nothing yet and is
answered at once.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from PIL import ExifTags, Image

from heritage_cnn.data.decode import ImageError, ImageTooLarge, read_image
from heritage_cnn.data.pillow_limits import held

Receive = Callable[[], Awaitable[dict]]
DRAIN_FLOOR_BYTES = 64 * 2**20  # a refused body is drained up to max(4 x the limit, this)
EMPTY = "empty file (0 bytes)"  # the decoder's words for a file of no bytes (`decode.read_image`), as the CLI says it
# PNG chunks that can carry an EXIF orientation after the pixel data, where Pillow finds it only by decoding them
PNG_LATE_EXIF = (b"eXIf", b"Raw profile type exif", b"XML:com.adobe.xmp")
QUARTER_TURNS = (5, 6, 7, 8)  # EXIF orientations that turn the stored image a quarter turn: width and height swap


def drain_bound(max_upload_bytes: int) -> int:
    """How much of a refused body the server reads (and discards) so that the client hears the refusal."""
    return max(4 * max_upload_bytes, DRAIN_FLOOR_BYTES)


class UploadError(Exception):
    """An upload refused with an HTTP status and a one-line message shown in the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class BodyTooLarge(Exception):
    pass


class BodyTooSlow(Exception):
    """The body missed one of its two time limits; the message says which."""


class RequestBody:
    """An ASGI `receive` over the request body, capped at `limit` bytes (chunked bodies too) and in time (`total_s`
    in all, `idle_s` between chunks); it counts what arrived and knows whether the body has ended."""

    def __init__(self, receive: Receive, limit: int, total_s: float, idle_s: float) -> None:
        self.raw, self.limit, self.total_s, self.idle_s = receive, limit, total_s, idle_s
        self.loop = asyncio.get_running_loop()
        self.deadline = self.loop.time() + total_s
        self.received, self.started, self.ended = 0, False, False

    async def _next(self) -> dict:
        self.started = True
        left = self.deadline - self.loop.time()
        try:
            message = await asyncio.wait_for(self.raw(), max(0.0, min(self.idle_s, left)))
        except TimeoutError:
            if left <= self.idle_s:
                raise BodyTooSlow(f"the upload was not received within {self.total_s:g} s") from None
            raise BodyTooSlow(f"the upload paused for more than {self.idle_s:g} s") from None
        self.received += len(message.get("body", b""))
        self.ended = message.get("type") != "http.request" or not message.get("more_body", False)
        return message

    async def receive(self) -> dict:
        message = await self._next()
        if self.received > self.limit:
            raise BodyTooLarge
        return message

    async def drain(self, bound: int, headers: Any) -> bool:
        """Read and discard the rest of the body while the total stays within `bound` bytes and time allows; True
        when the body ended (closing then resets nothing). A client waiting for `100-continue` sends nothing."""
        if not self.started and "100-continue" in headers.get("expect", "").lower():
            return False
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > bound:
            return False  # more than the bound is coming: not worth reading any of it
        while not self.ended and self.received <= bound:
            try:
                await self._next()
            except BodyTooSlow:
                return False
        return self.ended


@contextmanager
def decoding(data: bytes) -> Iterator[None]:
    """Decode an upload inside this block: empty data is a 400 before it starts, and any ImageError from the one
    decode path (`decode.read_image`, `decode.read_whole`) leaves it as the upload's refusal, the same wording for
    every route: a header over the pixel limit a 413, anything else the decoder refuses a 415 with its reason."""
    if not data:
        raise UploadError(400, EMPTY)
    try:
        yield
    except ImageTooLarge as error:
        raise UploadError(
            413, f"{str(error).removeprefix('upload: ')}; this server refuses it (a decompression-bomb guard)"
        ) from None
    except ImageError as error:
        reason = str(error).removeprefix("upload: ")
        if reason == "not a recognised image format":
            reason = (
                "not an image: the content is not JPEG, PNG, WebP, TIFF, BMP or GIF (the file name does not matter)"
            )
        raise UploadError(415, reason) from None


def decode_upload(data: bytes, size: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Uploaded bytes -> (size x size x 3 uint8 photo, what was uploaded); UploadError if it is not a safe image.

    The same decoder as every command (`decode.read_image`): any decoder failure is a 415, a header over
    the pixel limit a 413, and memory stays bounded by the output whatever the header claims.
    """
    with decoding(data):
        decoded = read_image(data, size, name="upload")
        width, height = oriented_size(data)
    info = {"width": width, "height": height, "format": decoded.format, "bytes": len(data)}
    return decoded.pixels, info


def oriented_size(data: bytes) -> tuple[int, int]:
    """The photo's width and height with its EXIF orientation applied, as the decoder applies it: the size `/api/map`
    and `heritage map` report, in whose frame their boxes lie. Read from the header (bytes already decoded once),
    except a PNG whose orientation may follow its pixels."""
    with held(), Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        if image.format == "PNG" and not any(mark in data for mark in PNG_LATE_EXIF):
            return width, height  # no EXIF or XMP anywhere: nothing to orient by
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    return (height, width) if orientation in QUARTER_TURNS else (width, height)
