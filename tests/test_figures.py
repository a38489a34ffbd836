"""The figure module (atomic saves, percentile clipping, receptive-field boxes) and the one class resolver."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from heritage_cnn import figures
from heritage_cnn.labels import resolve_class


def test_save_figure_replaces_atomically_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "out" / "figure.png"
    for colour in ("red", "blue"):
        fig, ax = figures.plt.subplots()
        ax.imshow(np.zeros((4, 4)), cmap="gray")
        ax.set_title(colour)
        figures.save_figure(fig, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(path.parent) == ["figure.png"]


def test_save_figure_failure_keeps_the_old_file_and_no_temp(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "figure.png"
    path.write_bytes(b"old")
    fig, _ = figures.plt.subplots()

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


def test_signed_to_rgb_is_grey_at_zero_and_clips() -> None:
    x = np.zeros((3, 2, 2))
    x[0, 0, 0], x[0, 1, 1] = 1.0, -0.5
    rgb = figures.signed_to_rgb(x)
    assert rgb.shape == (2, 2, 3) and rgb[0, 1].tolist() == [0.5, 0.5, 0.5]
    assert rgb[0, 0, 0] == 1.0 and rgb[1, 1, 0] == 0.25


def test_receptive_field_box_drawn_where_expected() -> None:
    fig, ax = figures.plt.subplots()
    ax.imshow(np.zeros((64, 64, 3)))
    rect = figures.draw_box(ax, (10, 20, 32, 42))
    assert rect.get_xy() == (19.5, 9.5) and rect.get_width() == 22 and rect.get_height() == 22
    clipped = figures.draw_box(ax, (-5, 50, 10, 70))  # a window over the edge: clipped to the photo
    assert clipped.get_xy() == (49.5, -0.5) and clipped.get_width() == 14 and clipped.get_height() == 10
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    cyan = (pixels[..., 0] < 60) & (pixels[..., 1] > 180) & (pixels[..., 2] > 200)
    assert cyan.any()
    figures.plt.close(fig)


def test_mosaic_places_tiles_row_major() -> None:
    tiles = np.stack([np.full((2, 2), i, dtype=np.float32) for i in range(3)])
    out = figures.mosaic(tiles, 2, pad=1, fill=-1)
    assert out.shape == (5, 5) and out[0, 0] == 0 and out[0, 3] == 1 and out[3, 0] == 2 and out[3, 3] == -1


def test_resolve_class_by_index_folder_display_name_and_case() -> None:
    classes = ["altar", "bell_tower", "dome(inner)"]
    assert resolve_class("bell_tower", classes) == 1
    assert resolve_class("bell tower", classes) == 1
    assert resolve_class("Bell Tower", classes) == 1
    assert resolve_class("DOME (INNER)", classes) == 2
    assert resolve_class("dome(inner)", classes) == 2
    assert resolve_class("2", classes) == 2 and resolve_class(0, classes) == 0
    for bad in ("3", "pagoda", "-1"):
        with pytest.raises(ValueError) as error:
            resolve_class(bad, classes)
        message = str(error.value)
        assert "\n" not in message and repr(bad) in message
        assert "altar, bell_tower, dome(inner)" in message and "0-2" in message
