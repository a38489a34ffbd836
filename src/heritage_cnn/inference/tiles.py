"""The tiles a photo is scanned with (`element_map`): the scan's settings (`MapConfig`), where the square tiles of each
scale lie on the reduced photo, how many are kept under the tile limit, and the tiles cut out as the network's input.

Pure arithmetic on the reduced photo's size, counted before any tile is made: nothing here classifies. How the tiles'
answers are combined into maps and elements, and why, is `element_map`'s.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from heritage_cnn.base.checks import require
from heritage_cnn.data.decode import IMAGE_SIZE
from heritage_cnn.data.resize import RESIZE_BUDGET

RULES = ("adjacent", "max")
CELLS_PER_TILE = 8  # grid cells along the side of the smallest tile: 4 per stride at a stride of half a tile
# The finest stride: one cell of the map at the smallest tile. A finer step adds tiles (as 1/stride^2) and no detail
# to the map, and soon more tiles than `MapConfig.max_tiles`, which leaves only the coarsest scales scanned.
MIN_STRIDE = 1 / CELLS_PER_TILE
# At most this many scales: each holds a plane of the map's grid (ten classes, float64: 5 MB at the 4-megapixel
# budget), and from the whole side down to a 64 px tile of that budget's 2000 px side is 10 steps of 1/sqrt(2).
MAX_SCALES = 16


@dataclass(frozen=True)
class MapConfig:
    """How a photo is scanned and combined; every field can be overridden (`heritage map --scales ...`)."""

    # Tile sides as fractions of the photo's shorter side. The data set's photos frame one element filling most of
    # the view; in a survey photo an element fills from the whole height to about a quarter of it. Steps of 1/sqrt(2)
    # (half the area) leave no element size more than 19 % from a tile's; below a quarter, an element is a few dozen
    # pixels of the reduced photo and the tile count grows as 1/scale^2 (0.25: 77 tiles of a 4:3 photo, 0.18: 150).
    scales: tuple[float, ...] = (1.0, 0.71, 0.5, 0.35, 0.25)
    # The step between tiles as a fraction of their side: half a tile puts every element at least half inside some
    # tile's centre and lets four tiles per scale vote on each place (`element_map`'s combination rule).
    stride: float = 0.5
    # How scales combine: "adjacent" (a place's value is the smaller of two neighbouring scales' values, the best
    # pair kept: an element framed well by one scale is framed nearly as well by the next, 1/sqrt(2) away, while
    # a tile's quirk rarely survives a change of framing) or "max" (each scale alone, the best kept).
    rule: str = "adjacent"
    # A class is listed when its map peaks at or above this (from 0 to 1): a mean of tile probabilities at two
    # scales at once, so below the 0.5 that one scale alone would need.
    presence: float = 0.4
    # Bounds for panoramas: the reduced photo holds at most `max_pixels` (a 1000:1 strip still yields tiles of its
    # full height), and at most `max_tiles` tiles are scored (the finest scales are dropped first).
    max_pixels: int = RESIZE_BUDGET
    max_tiles: int = 2048

    def __post_init__(self) -> None:
        scales = tuple(float(s) for s in self.scales)
        object.__setattr__(self, "scales", tuple(sorted(set(scales), reverse=True)))
        require(bool(scales) and all(0 < s <= 1 for s in scales), f"{{0}} must be in (0, 1], got {scales}", "scales")
        count = len(self.scales)
        require(count <= MAX_SCALES, f"{{0}}: at most {MAX_SCALES} different scales, got {count}", "scales")
        stride = self.stride
        require(MIN_STRIDE <= stride <= 1, f"{{0}} must be from {MIN_STRIDE:g} to 1, got {stride}", "stride")
        require(0 < self.presence <= 1, f"{{0}} must be in (0, 1], got {self.presence}", "presence")
        require(self.rule in RULES, f"{{0}} must be one of {', '.join(RULES)}, got {self.rule!r}", "rule")
        require(self.max_pixels >= 4096, f"{{0}} must be at least 4096, got {self.max_pixels}", "max_pixels")
        require(self.max_tiles >= 1, f"{{0}} must be at least 1, got {self.max_tiles}", "max_tiles")

    def reduced_shorter(self, tile: int) -> int:
        """The shorter side the photo is reduced to, so that the smallest tile is `tile` px."""
        return math.ceil(tile / min(self.scales) - 1e-9)


@dataclass(frozen=True)
class Tile:
    """A square of the reduced photo: left, top and side in its pixels (floats), and the index of its scale."""

    left: float
    top: float
    side: float
    scale: int


def _count(length: float, side: float, stride: float) -> int:
    """How many tiles `tile_positions` places along an axis, without placing them."""
    return 1 if side >= length else math.ceil((length - side) / stride - 1e-9) + 1


def _position(length: float, side: float, count: int, index: int) -> float:
    """Where tile `index` of `count` starts along an axis: the first at 0, the last ending at `length`."""
    return 0.0 if count == 1 else (length - side) * index / (count - 1)


def tile_positions(length: float, side: float, stride: float) -> list[float]:
    """Where tiles of `side` start along an axis of `length`: the first at 0, the last ending at `length`, evenly
    spaced at most `stride` apart (so the axis is covered with at least the overlap the stride promises)."""
    count = _count(length, side, stride)
    return [_position(length, side, count, i) for i in range(count)]


@dataclass(frozen=True)
class TilePlan:
    """The tiles `plan` keeps, and what the tile limit left out (the map's note says it)."""

    tiles: list[Tile]
    needed: int  # the tiles of every scale with sides of at least the network's input, before the limit
    dropped: tuple[float, ...] = ()  # scales left out by the limit (the finest ones)
    thinned: int = 0  # when the one scale left still had too many: its tile count, of which `max_tiles` were kept
    thinned_scale: float = 1.0

    def note(self, limit: int) -> str | None:
        """What the limit of `limit` tiles left out, in words; None when every planned tile is scored."""
        notes = []
        if self.dropped:
            which = ", ".join(f"{s:g}" for s in self.dropped)
            notes.append(
                f"scale{'s' if len(self.dropped) > 1 else ''} {which} not scanned: all the scales would take "
                f"{self.needed} tiles at this stride, over the limit of {limit} (the finest are left out first)"
            )
        if self.thinned:
            notes.append(
                f"{len(self.tiles)} of the {self.thinned} tiles of scale {self.thinned_scale:g} scored, spread evenly "
                f"(the limit is {limit})"
            )
        return "; ".join(notes) or None


def plan(width: int, height: int, config: MapConfig, tile: int = IMAGE_SIZE) -> TilePlan:
    """The tiles of a reduced photo of `width` x `height`: for each scale whose side is at least `tile` px (never
    enlarged), a grid at `config.stride`; the finest scales are dropped while there are over `config.max_tiles`,
    and a single scale still over it keeps `max_tiles` tiles spread evenly. The grids are counted before any tile
    is made, so time and memory follow the tiles kept, never the tiles a fine stride would ask for."""
    shorter = min(width, height)
    grids = []  # (scale index, side, step, tiles across, tiles down)
    for index, scale in enumerate(config.scales):
        side = scale * shorter
        if side < tile - 1e-6:
            continue
        step = config.stride * side
        grids.append((index, side, step, _count(width, side, step), _count(height, side, step)))
    counts = [across * down for *_, across, down in grids]
    kept = len(grids)
    while kept > 1 and sum(counts[:kept]) > config.max_tiles:
        kept -= 1  # the finest scale: the most tiles
    tiles, thinned, thinned_scale = [], 0, 1.0
    for (index, side, _, across, down), count in zip(grids[:kept], counts, strict=False):
        which: Iterable[int] = range(count)
        if count > config.max_tiles:  # a long panorama at one scale: tiles spread along it evenly
            which = np.linspace(0, count - 1, config.max_tiles).round().astype(int).tolist()
            thinned, thinned_scale = count, config.scales[index]
        for i in which:
            y, x = divmod(i, across)
            tiles.append(Tile(_position(width, side, across, x), _position(height, side, down, y), side, index))
    dropped = tuple(config.scales[index] for index, *_ in grids[kept:])
    return TilePlan(tiles, sum(counts), dropped, thinned, thinned_scale)


def plan_tiles(width: int, height: int, config: MapConfig, tile: int = IMAGE_SIZE) -> list[Tile]:
    """The tiles of `plan` alone."""
    return plan(width, height, config, tile).tiles


def cut_tiles(pixels: np.ndarray, tiles: list[Tile], size: int) -> torch.Tensor:
    """The tiles of an (h, w, 3) uint8 photo as an (N, 3, size, size) uint8 batch, each resized down (bicubic,
    antialiased by Pillow's support scaling) from its exact sub-pixel box."""
    image = Image.fromarray(pixels)
    batch = np.empty((len(tiles), size, size, 3), dtype=np.uint8)
    for i, t in enumerate(tiles):
        box = (t.left, t.top, t.left + t.side, t.top + t.side)
        batch[i] = np.asarray(image.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=None))
    return torch.from_numpy(batch).permute(0, 3, 1, 2)


__all__ = [
    "CELLS_PER_TILE",
    "MAX_SCALES",
    "MIN_STRIDE",
    "RULES",
    "MapConfig",
    "Tile",
    "TilePlan",
    "cut_tiles",
    "plan",
    "plan_tiles",
    "tile_positions",
]
