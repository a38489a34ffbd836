"""Reading what the negative set's packages hold (benchmarks/package_readers.py): licences and jigzo's puzzle files."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import package_readers


def test_licences_are_read_from_dep5_files_and_wheel_metadata() -> None:
    copyright_text = (
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: *\nCopyright: someone\nLicense: GPL-2+\n\n"
        "Files: 16.04/Kleiber_by_X.jpg\n nature/*.jpg\nCopyright: X\nLicense: CC-BY-SA-3.0\n\n"
        "Files: debian/*\nLicense: Expat\n\nLicense: GPL-2+\n text of the licence\n"
    )
    assert package_readers.dep5_licence(copyright_text, "usr/share/backgrounds/Kleiber_by_X.jpg") == "CC-BY-SA-3.0"
    assert package_readers.dep5_licence(copyright_text, "usr/share/backgrounds/mate/nature/Aqua.jpg") == "CC-BY-SA-3.0"
    assert package_readers.dep5_licence(copyright_text, "usr/share/backgrounds/other.png") == "GPL-2+"
    assert package_readers.wheel_licence("Name: a\nLicense-Expression: BSD-3-Clause\n\nbody") == "BSD-3-Clause"
    dep5_field = "Name: b\nLicense: Files: *\n         Copyright: team\n         License: BSD-3-Clause\n\nbody"
    assert package_readers.wheel_licence(dep5_field) == "BSD-3-Clause"


def test_a_jigzo_puzzle_gives_the_picture_box_of_its_atlas() -> None:
    atlas = Image.new("RGB", (100, 80), "black")
    atlas.paste(Image.new("RGB", (40, 30), "red"), (0, 0))
    data = io_bytes(atlas)
    mapping = b"#texture map\ncrop000 1 2 3 4\nimage 0 0 40 30 1 1    \n"
    thumb = b"not a picture"
    pzl = b"PzlF\n0.1\nx-2x2\nhttp://example.invalid/\n"
    for name, body in (("x-2x2.map", mapping), ("x-2x2-t.jpg", thumb), ("x-2x2.jpg", data)):
        pzl += f"{name}\n{len(body)}\n".encode() + body
    picture = package_readers.pzl_picture(pzl)
    assert picture.size == (38, 28) and picture.getpixel((19, 14))[0] > 200
    with pytest.raises(ValueError, match="jigzo"):
        package_readers.pzl_members(b"PNG\n")


def io_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()
