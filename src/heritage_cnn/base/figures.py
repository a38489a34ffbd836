"""The one figure module every tool draws with: atomic PNG saves, PNG data URLs, mosaics, colour maps, overlays, boxes.

One home for the plumbing, so that every figure is written the same safe way (a temporary file renamed
into place: a crash never leaves half a PNG) and every map is coloured by the same rules (signed maps
grey at zero, heat maps clipped at a high percentile so that one hot pixel does not wash out the rest).
"""

from __future__ import annotations

import base64
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle

from heritage_cnn.base.io import atomic_path

DPI = 120
PERCENTILE = 99.0  # maps are clipped at this percentile of |map| before display


def new_figure(rows: int = 1, columns: int = 1, figsize: tuple[float, float] | None = None, **subplots: Any) -> Any:
    """(figure, axes): a figure made without pyplot and its grid of axes (`Figure.subplots`' arguments and return).

    Outside pyplot, a figure belongs to no backend and no global list: importing this package leaves a notebook's
    backend as it was, nothing needs closing, and threads (the web server's) may draw at once. Matplotlib's own
    advice for figures made in a server: https://matplotlib.org/stable/gallery/user_interfaces/web_application_server_sgskip.html
    """
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(rows, columns, **subplots)


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = DPI) -> Path:
    """Write a matplotlib figure as PNG atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    return path


def save_png(image: torch.Tensor | np.ndarray, path: str | os.PathLike) -> Path:
    """One image, (3, H, W) tensor or (H, W, 3) array in [0, 1], as a PNG at its own size, atomically."""
    from PIL import Image

    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().permute(1, 2, 0).numpy()
    array = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
    return path


def png_data_url(image: np.ndarray | str | os.PathLike) -> str:
    """A PNG as a `data:` URL, so that one JSON answer or one HTML page holds its images: an (H, W, 3) or (H, W, 4)
    uint8 or [0, 1] float array is encoded; a path is a PNG file, embedded as it is."""
    if isinstance(image, np.ndarray):
        from PIL import Image

        if image.dtype != np.uint8:
            image = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        data = buffer.getvalue()
    else:
        data = Path(image).read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def mosaic(tiles: np.ndarray, columns: int, pad: int = 1, fill: float = np.nan) -> np.ndarray:
    """(N, h, w[, 3]) tiles -> one image, `columns` tiles per row, separated by `pad` pixels of `fill`."""
    n, h, w = tiles.shape[:3]
    rows = math.ceil(n / columns)
    shape = (rows * (h + pad) - pad, columns * (w + pad) - pad, *tiles.shape[3:])
    out = np.full(shape, fill, dtype=np.float32)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        out[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = tile
    return out


def image_grid(
    images: torch.Tensor, titles: Sequence[str], columns: int, path: str | os.PathLike, captions: Sequence[str] = ()
) -> Path:
    """A figure of (N, 3, H, W) images in [0, 1], `columns` wide, a title above and an optional caption below."""
    rows = math.ceil(len(images) / columns)
    fig, axes = new_figure(rows, columns, figsize=(1.45 * columns, 1.65 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i].permute(1, 2, 0).numpy(), interpolation="lanczos")
            ax.set_title(titles[i], fontsize=8)
            if captions:
                ax.text(0.5, -0.08, captions[i], transform=ax.transAxes, ha="center", va="top", fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def clip_limit(heat: np.ndarray, percentile: float = PERCENTILE) -> float:
    """The display limit of a map: the `percentile` of |map| (never 0, so a blank map still draws)."""
    return max(float(np.percentile(np.abs(heat), percentile)), 1e-12)


def clip_percentile(heat: np.ndarray, percentile: float = PERCENTILE) -> np.ndarray:
    """The map with |values| above the `percentile` of |map| set to that limit (sign kept)."""
    limit = clip_limit(heat, percentile)
    return np.clip(heat, -limit, limit)


def signed_to_rgb(x: np.ndarray, percentile: float = 100.0) -> np.ndarray:
    """A signed (3, h, w) array as an (h, w, 3) RGB image: zero is grey, +-limit are the extremes.

    The limit is the `percentile` of |x| (100: its largest magnitude, exact; 99: legible when a few
    pixels dominate)."""
    scale = clip_limit(x, percentile) if np.abs(x).max() > 0 else 0.0
    x = x / (2 * scale) if scale > 0 else x
    return np.clip(x + 0.5, 0, 1).transpose(1, 2, 0)


def overlay(
    ax: Axes,
    photo: np.ndarray,
    heat: np.ndarray,
    signed: bool = False,
    alpha: float = 0.55,
    percentile: float = PERCENTILE,
    label: str = "",
) -> AxesImage:
    """A map over a photo, clipped at `percentile` of |map|, with a colour bar.

    Signed maps use a diverging map centred on zero (red > 0 > blue), others `inferno` from zero."""
    ax.imshow(photo)
    limit = clip_limit(heat, percentile)
    if signed:
        shown = ax.imshow(np.clip(heat, -limit, limit), cmap="RdBu_r", vmin=-limit, vmax=limit, alpha=alpha)
    else:
        shown = ax.imshow(np.clip(heat, 0, limit), cmap="inferno", vmin=0, vmax=limit, alpha=alpha)
    bar = ax.figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)
    bar.ax.tick_params(labelsize=6)
    bar.formatter.set_powerlimits((-2, 3))
    if label:
        bar.set_label(label, fontsize=6)
    ax.axis("off")
    return shown


def draw_box(ax: Axes, box: tuple[int, int, int, int], colour: str = "#00e5ff", width: float = 1.5) -> Rectangle:
    """Outline a receptive field (top, left, bottom, right; bottom/right exclusive, in image pixels).

    The box is clipped to the image it is drawn on (a window reaching over the edge is padding there)."""
    top, left, bottom, right = box
    image = ax.get_images()[0].get_array() if ax.get_images() else None
    if image is not None:
        h, w = image.shape[:2]
        top, left, bottom, right = max(top, 0), max(left, 0), min(bottom, h), min(right, w)
    # pixel i covers [i - 0.5, i + 0.5] in imshow's coordinates
    rect = Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False, edgecolor=colour, lw=width)
    ax.add_patch(rect)
    return rect


__all__ = [
    "DPI",
    "PERCENTILE",
    "clip_limit",
    "clip_percentile",
    "draw_box",
    "image_grid",
    "mosaic",
    "overlay",
    "png_data_url",
    "save_figure",
    "save_png",
    "signed_to_rgb",
]
