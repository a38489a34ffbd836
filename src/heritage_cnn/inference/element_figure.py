"""The figure of an element map: the photo with each element's box outlined and named, and the ten class maps; and
the same as layers for a web page (`map_layers`: the photo and one transparent heat map per class, as PNGs)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from heritage_cnn.base.figures import draw_box, png_data_url, save_figure
from heritage_cnn.base.names import shown
from heritage_cnn.inference.element_map import ElementMap

COLOURS = ("#00e5ff", "#ffd400", "#ff4fd8", "#7cff4f", "#ff8a00", "#4f8aff", "#ff4f4f", "#ffffff", "#b04fff", "#4fffc4")


def draw_element_map(emap: ElementMap, path: str | os.PathLike) -> Path:
    """Write the figure of one photo's element map as a PNG (atomically): the reduced photo with the elements'
    boxes, then one map per class on the same scale (0 to 1), each titled with its peak."""
    photo = emap.preview
    h, w = photo.shape[:2]
    sx, sy = w / emap.width, h / emap.height  # preview pixels per photo pixel
    columns = 5
    rows = -(-len(emap.classes) // columns)
    aspect = h / w
    fig = Figure(figsize=(10, 10 * aspect * 0.6 + 2.2 * rows * max(aspect, 0.3)))
    grid = fig.add_gridspec(1 + rows, columns, height_ratios=[3 * max(aspect, 0.3) * columns / 3] + [1] * rows)
    ax = fig.add_subplot(grid[0, :])
    ax.imshow(photo)
    placed: list[tuple[float, float]] = []
    line = h / 30  # a label's height in preview pixels, about
    for element in emap.elements:
        left, top, right, bottom = element.box
        colour = COLOURS[emap.classes.index(element.label) % len(COLOURS)]
        box = (round(top * sy), round(left * sx), round(bottom * sy), round(right * sx))
        draw_box(ax, box, colour=colour, width=2.0)
        label = f"{element.name} {element.confidence:.2f}"
        style = {"facecolor": colour, "alpha": 0.85, "pad": 1.5, "lw": 0}
        x, y = max(box[1], 0) + 2, max(box[0], 0) + 2
        while any(abs(x - u) < w / 6 and abs(y - v) < line for u, v in placed):  # labels never on top of each other
            y += line
        placed.append((x, y))
        ax.text(x, y, label, color="black", fontsize=8, va="top", bbox=style)
    found = ", ".join(e.name for e in emap.elements) or "no element found"
    title = f"{shown(emap.path) if emap.path else 'photo'} ({emap.width}x{emap.height}): {found}"
    ax.set_title(title + (f"\n{emap.note}" if emap.note else ""), fontsize=9)
    ax.axis("off")
    for c, name in enumerate(emap.names):
        ax = fig.add_subplot(grid[1 + c // columns, c % columns])
        heat = emap.maps[c]
        ax.imshow(np.clip(heat, 0, 1), cmap="inferno", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{name} {float(heat.max()):.2f}", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, path)


LAYER_LONGEST = 640  # the photo layer's longest side in pixels: a page's width; the map is coarser still
HEAT_OPACITY = 0.8  # a heat layer's opacity at 1; at 0 it is transparent, so the photo shows where nothing was found


def map_layers(emap: ElementMap, longest: int = LAYER_LONGEST) -> dict[str, Any]:
    """An element map as layers for a page, as PNG `data:` URLs: `photo`, the photo the tiles were cut from (at
    most `longest` px on its longer side), and `heat`, per class label, its map coloured as the figure's (inferno,
    0 to 1) with an opacity that grows with the value, one pixel per cell; `extent`, where the maps lie in photo
    pixels (left, top, right, bottom: the grid of cells can pass the right and bottom edges by under a cell)."""
    photo = emap.preview
    h, w = photo.shape[:2]
    if max(h, w) > longest:
        scale = longest / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        photo = np.asarray(Image.fromarray(photo).resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0))
    colours = matplotlib.colormaps["inferno"]
    heat = {}
    for label, values in zip(emap.classes, emap.maps, strict=True):
        values = np.clip(values, 0, 1)
        rgba = colours(values)
        rgba[..., 3] = HEAT_OPACITY * values
        heat[label] = png_data_url(rgba)
    rows, columns = emap.maps.shape[1:]
    extent = {"left": 0.0, "top": 0.0, "right": columns * emap.cell[0], "bottom": rows * emap.cell[1]}
    return {"photo": png_data_url(photo), "heat": heat, "extent": extent}


__all__ = ["HEAT_OPACITY", "LAYER_LONGEST", "draw_element_map", "map_layers"]
