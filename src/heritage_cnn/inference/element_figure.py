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


# The figure's shape is bounded whatever the photo's: its width is fixed (10 in at `figures.DPI`), and the photo panel
# is drawn as if the photo were at most TALLEST times as high as wide, so a figure is at most about 1200 x 3100 px
# (10 classes). A photo more elongated than STRETCH (1:8 or 8:1) is shown stretched to that aspect, and the title says
# so: a 50 x 20,000 px strip would otherwise be a line a few pixels wide, or, drawn at its own aspect, a figure of
# 1200 x 500,000 px (22.7 GB to render).
TALLEST = 2.5
STRETCH = 8.0
TITLE_CHARACTERS = 160  # a longer file name is shortened in the middle: the title never widens the figure


def _ratio(aspect: float) -> str:
    """A photo's aspect (height / width) as width:height, "1:400" or "400:1"; from 1000:1 on in whole numbers,
    "64000:1", never in powers of ten ("1e+03:1")."""
    value = aspect if aspect >= 1 else 1 / aspect
    text = f"{value:.3g}"
    if "e" in text:  # three significant digits no longer fit without an exponent
        text = str(round(value))
    return f"1:{text}" if aspect >= 1 else f"{text}:1"


def _title(emap: ElementMap, aspect: float, shown_aspect: float) -> str:
    found = ", ".join(e.name for e in emap.elements) or "no element found"
    name = shown(emap.path) if emap.path else "photo"
    if len(name) > TITLE_CHARACTERS:
        name = name[: TITLE_CHARACTERS // 2 - 1] + "..." + name[-(TITLE_CHARACTERS // 2 - 2) :]
    lines = [f"{name} ({emap.width}x{emap.height}): {found}"]
    if shown_aspect != aspect:
        lines.append(f"shown stretched to {_ratio(shown_aspect)} (the photo is {_ratio(aspect)})")
    return "\n".join(lines + ([emap.note] if emap.note else []))


def draw_element_map(emap: ElementMap, path: str | os.PathLike) -> Path:
    """Write the figure of one photo's element map as a PNG (atomically): the reduced photo with the elements'
    boxes, then one map per class on the same scale (0 to 1), each titled with its peak. The figure's size is
    bounded whatever the photo's aspect (`TALLEST`, `STRETCH`)."""
    photo = emap.preview
    h, w = photo.shape[:2]
    sx, sy = w / emap.width, h / emap.height  # preview pixels per photo pixel
    columns = 5
    rows = -(-len(emap.classes) // columns)
    aspect = h / w
    shown_aspect = min(max(aspect, 1 / STRETCH), STRETCH)
    stretch = shown_aspect / aspect  # imshow's aspect: 1 (square pixels) unless the photo is too elongated
    drawn = min(aspect, TALLEST)  # the panel's shape
    said = 0.5 if stretch != 1 else 0  # room for the title's line saying so
    fig = Figure(figsize=(10, 10 * drawn * 0.6 + 2.2 * rows * max(drawn, 0.3) + said))
    grid = fig.add_gridspec(1 + rows, columns, height_ratios=[3 * max(drawn, 0.3) * columns / 3] + [1] * rows)
    ax = fig.add_subplot(grid[0, :])
    ax.imshow(photo, aspect=stretch)
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
    ax.set_title(_title(emap, aspect, shown_aspect), fontsize=9)
    ax.axis("off")
    for c, name in enumerate(emap.names):
        ax = fig.add_subplot(grid[1 + c // columns, c % columns])
        heat = emap.maps[c]
        ax.imshow(np.clip(heat, 0, 1), cmap="inferno", vmin=0, vmax=1, interpolation="nearest", aspect=stretch)
        ax.set_title(f"{name} {float(heat.max()):.2f}", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, path)


def figure_or_reason(emap: ElementMap, path: str | os.PathLike) -> Path | str:
    """`draw_element_map`, or why this photo's figure could not be drawn or written, in one line: any failure of
    matplotlib, Pillow or the write (MemoryError included) is this photo's, and a run over many photos goes on."""
    try:
        return draw_element_map(emap, path)
    except MemoryError:
        return "not enough memory to draw its figure"
    except Exception as error:  # whatever matplotlib raises on one photo, the others are still drawn
        text = str(error).strip().splitlines()
        detail = text[0][:160] if text else ""
        return f"its figure could not be drawn ({type(error).__name__}{': ' + detail if detail else ''})"


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


__all__ = ["HEAT_OPACITY", "LAYER_LONGEST", "STRETCH", "TALLEST", "draw_element_map", "figure_or_reason", "map_layers"]
