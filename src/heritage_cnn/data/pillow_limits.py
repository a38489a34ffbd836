"""Pillow's process-wide settings, held to the decoder's own while it decodes, and the caller's otherwise.

Pillow keeps its decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`) and whether a truncated file loads as half a
photo (`ImageFile.LOAD_TRUNCATED_IMAGES`) in module globals. Code that imports this package sets them as it likes
(`MAX_IMAGE_PIXELS = None` and `LOAD_TRUNCATED_IMAGES = True` are common in notebooks); with those, every photo was
refused with a TypeError, and a truncated JPEG decoded without a word, grey below the cut. So the decoder holds
them (`held()`) while any decode runs, in any thread, and gives the caller's values back when the last one ends (a
value the caller set meanwhile stays theirs); outside a decode the caller's settings are as they set them.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image, ImageFile

# The decoder's decompression-bomb guard: a survey photo from a 100 MP camera passes, a PNG that declares a
# gigapixel canvas to exhaust memory does not.
MAX_IMAGE_PIXELS = 120_000_000

# Between its limit and twice it Pillow only warns, and the decoder refuses those on the header itself. Filtered
# once here, for the process: warnings.catch_warnings() is not thread-safe, and files are decoded in threads.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

_lock = threading.Lock()
_decoding = 0  # decodes running now, in all threads
_callers: tuple[int | None, bool] = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)


@contextmanager
def held() -> Iterator[None]:
    """Within the block Pillow refuses images over MAX_IMAGE_PIXELS and raises on a truncated file, whatever the
    process set; the first decode to start keeps the caller's values and the last to end restores them."""
    global _decoding, _callers
    with _lock:
        if _decoding == 0:
            _callers = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
        _decoding += 1
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = MAX_IMAGE_PIXELS, False
    try:
        yield
    finally:
        with _lock:
            _decoding -= 1
            if _decoding == 0:  # each the caller's again, unless the caller set it meanwhile: theirs stays
                if Image.MAX_IMAGE_PIXELS == MAX_IMAGE_PIXELS:
                    Image.MAX_IMAGE_PIXELS = _callers[0]
                if ImageFile.LOAD_TRUNCATED_IMAGES is False:
                    ImageFile.LOAD_TRUNCATED_IMAGES = _callers[1]


__all__ = ["MAX_IMAGE_PIXELS", "held"]
