"""The figure module: atomic saves, percentile clipping, signed maps as colours, receptive-field boxes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from heritage_cnn.base import figures


def test_save_figure_replaces_atomically_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "out" / "figure.png"
    colours = {"red": (255, 0, 0), "blue": (0, 0, 255)}
    for colour in colours:
        fig = Figure(figsize=(1, 1))  # no axes: the canvas alone
        fig.patch.set_facecolor(colour)  # the whole canvas: every pixel of the saved PNG says which figure it is
        figures.save_figure(fig, path)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = np.asarray(Image.open(path).convert("RGB"))
        assert (pixels == colours[colour]).all(), colour  # the second save replaced the first
        assert os.listdir(path.parent) == ["figure.png"]


def test_save_figure_failure_keeps_the_old_file_and_no_temp(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "figure.png"
    path.write_bytes(b"old")
    fig, _ = figures.new_figure()

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(OSError):
        figures.save_figure(fig, path)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["figure.png"]


def test_save_png_writes_the_image_exactly(tmp_path: Path) -> None:
    image = torch.zeros(3, 5, 7)
    image[0, 2, 3] = 1.0
    path = figures.save_png(image, tmp_path / "one.png")
    array = np.asarray(Image.open(path))
    assert array.shape == (5, 7, 3) and array[2, 3].tolist() == [255, 0, 0] and array.sum() == 255
    assert os.listdir(tmp_path) == ["one.png"]


def test_clipping_at_the_percentile() -> None:
    heat = np.arange(1000, dtype=np.float64).reshape(10, 100)
    heat[0, 0] = -1e6  # one outlier would wash out the rest without clipping
    limit = figures.clip_limit(heat, 99)
    assert limit == pytest.approx(np.percentile(np.abs(heat), 99))
    clipped = figures.clip_percentile(heat, 99)
    assert clipped.min() == pytest.approx(-limit) and clipped.max() == pytest.approx(limit)
    assert (clipped[np.abs(heat) < limit] == heat[np.abs(heat) < limit]).all()
    assert figures.clip_limit(np.zeros((3, 3))) > 0  # a blank map still has a scale


def test_signed_to_rgb_is_grey_at_zero_and_scales_by_the_largest_magnitude() -> None:
    assert np.allclose(figures.signed_to_rgb(np.zeros((3, 2, 2))), 0.5)  # a blank map: all grey, no division by 0
    x = np.zeros((3, 2, 2))
    x[0, 0, 0], x[0, 1, 1] = 1.0, -0.5
    rgb = figures.signed_to_rgb(x)
    assert rgb.shape == (2, 2, 3) and rgb[0, 1].tolist() == [0.5, 0.5, 0.5]
    assert rgb[0, 0, 0] == 1.0 and rgb[1, 1, 0] == 0.25
    rgb = figures.signed_to_rgb(np.array([-2.0, 0.0, 1.0]).reshape(3, 1, 1))  # the largest magnitude negative
    assert rgb.reshape(3).tolist() == [0.0, 0.5, 0.75]
    heavy = np.zeros((3, 10, 10))
    heavy[0] = 1.0
    heavy[0, 0, 0] = 100.0  # one outlier: at the 99th percentile it is clipped instead of turning the rest grey
    assert figures.signed_to_rgb(heavy, 99)[0, 0, 0] == 1.0 and figures.signed_to_rgb(heavy, 99)[5, 5, 0] == 1.0
    assert figures.signed_to_rgb(heavy)[5, 5, 0] == pytest.approx(0.505)


def test_receptive_field_box_drawn_where_expected() -> None:
    fig, ax = figures.new_figure()
    ax.imshow(np.zeros((64, 64, 3)))
    rect = figures.draw_box(ax, (10, 20, 32, 42))
    assert rect.get_xy() == (19.5, 9.5) and rect.get_width() == 22 and rect.get_height() == 22
    clipped = figures.draw_box(ax, (-5, 50, 10, 70))  # a window over the edge: clipped to the photo
    assert clipped.get_xy() == (49.5, -0.5) and clipped.get_width() == 14 and clipped.get_height() == 10
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())[..., :3]
    cyan = (pixels[..., 0] < 60) & (pixels[..., 1] > 180) & (pixels[..., 2] > 200)
    assert cyan.any()


def test_mosaic_places_tiles_row_major() -> None:
    tiles = np.stack([np.full((2, 2), i, dtype=np.float32) for i in range(3)])
    out = figures.mosaic(tiles, 2, pad=1, fill=-1)
    assert out.shape == (5, 5) and out[0, 0] == 0 and out[0, 3] == 1 and out[3, 0] == 2 and out[3, 3] == -1


def test_png_data_url_of_an_array_and_of_a_file(tmp_path: Path) -> None:
    import base64
    import io

    rgba = np.zeros((3, 5, 4), np.uint8)
    rgba[1, 2] = (10, 20, 30, 40)
    url = figures.png_data_url(rgba)
    assert url.startswith("data:image/png;base64,")
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    assert decoded.shape == (3, 5, 4) and (decoded == rgba).all()
    floats = figures.png_data_url(np.full((2, 2, 3), 0.5))  # [0, 1] floats are rounded to bytes
    assert np.asarray(Image.open(io.BytesIO(base64.b64decode(floats.split(",", 1)[1])))).max() == 128
    path = tmp_path / "a.png"
    Image.fromarray(rgba).save(path)
    assert figures.png_data_url(path) == "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
