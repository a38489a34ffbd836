"""Pillow's globals are the decoder's while it decodes and the caller's otherwise (`data/pillow_limits.py`)."""

from __future__ import annotations

import io
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from conftest import draw
from heritage_cnn.data import pillow_limits
from heritage_cnn.data.decode import ImageTooLarge, decode_image, image_header, try_decode


@pytest.fixture
def caller_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """What notebooks commonly set: no bomb limit, truncated files loaded."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)


def _jpeg(tmp_path: Path, cut: bool) -> Path:
    data = io.BytesIO()
    Image.fromarray(draw(3, np.random.default_rng(0))).save(data, format="JPEG", quality=95)
    path = tmp_path / ("cut.jpg" if cut else "whole.jpg")
    path.write_bytes(data.getvalue()[: len(data.getvalue()) // 2] if cut else data.getvalue())
    return path


@pytest.mark.usefixtures("caller_settings")
def test_a_truncated_jpeg_is_refused_whatever_the_caller_set(tmp_path: Path) -> None:
    """With LOAD_TRUNCATED_IMAGES set by the caller the lower half of a cut JPEG was decoded as grey, silently."""
    assert try_decode(_jpeg(tmp_path, cut=True)).startswith("corrupt or truncated image (image file is truncated")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True and Image.MAX_IMAGE_PIXELS is None  # the caller's, given back


@pytest.mark.usefixtures("caller_settings")
def test_no_bomb_limit_set_by_the_caller_keeps_the_decoders(tmp_path: Path) -> None:
    """With MAX_IMAGE_PIXELS = None every photo was refused ("TypeError: '>' not supported"); an image over the
    decoder's limit is still refused on its header, in the decoder's words."""
    assert decode_image(_jpeg(tmp_path, cut=False)).shape == (64, 64, 3)
    assert image_header(_jpeg(tmp_path, cut=False)) == ("RGB", (64, 64))
    Image.new("L", (200, 100)).save(tmp_path / "big.png")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pillow_limits, "MAX_IMAGE_PIXELS", 10_000)
        with pytest.raises(ImageTooLarge, match=r"200x100 = 20000 pixels, over the limit of 10000\)"):
            decode_image(tmp_path / "big.png")
    assert Image.MAX_IMAGE_PIXELS is None


@pytest.mark.usefixtures("caller_settings")
def test_decodes_in_threads_hold_the_limits_and_give_them_back(tmp_path: Path) -> None:
    """Whichever thread ends last restores the caller's values; none decodes the cut file while another ends."""
    whole, cut = _jpeg(tmp_path, cut=False), _jpeg(tmp_path, cut=True)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(try_decode, [whole, cut] * 50))
    assert all(isinstance(r, np.ndarray) for r in results[::2]) and all(isinstance(r, str) for r in results[1::2])
    assert pillow_limits._decoding == 0
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True and Image.MAX_IMAGE_PIXELS is None


def test_importing_the_package_leaves_pillow_as_it_was() -> None:
    """Importing the decoder used to set Pillow's limits for the whole process."""
    code = (
        "from PIL import Image, ImageFile; before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES); "
        "import heritage_cnn.data.folders, heritage_cnn.inference.classifier; "
        "assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == before, before"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.usefixtures("caller_settings")
def test_a_setting_the_caller_makes_during_a_decode_stays() -> None:
    """The last decode to end wrote back the values the first had kept, over the ones the caller set meanwhile."""
    with pillow_limits.held():
        assert Image.MAX_IMAGE_PIXELS == pillow_limits.MAX_IMAGE_PIXELS and ImageFile.LOAD_TRUNCATED_IMAGES is False
        Image.MAX_IMAGE_PIXELS = 5_000_000  # the caller's thread, while another decodes
    assert Image.MAX_IMAGE_PIXELS == 5_000_000  # theirs, not the None kept when the decode began
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # untouched meanwhile: the caller's again
