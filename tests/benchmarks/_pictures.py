"""A picture the tests of the negative set's builders share: a cut-out stamp of known shape and place."""

from __future__ import annotations

from PIL import Image


def cut_out(name: str, size: tuple[int, int] = (100, 50)) -> Image.Image:
    """A transparent picture holding one opaque pure-red rectangle of 40 x 20, off centre."""
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    image.paste(Image.new("RGBA", (40, 20), (255, 0, 0, 255)), (10 + len(name) % 7, 20))
    return image
