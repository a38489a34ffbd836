"""What is where in a whole photo: the trained network scanned over overlapping tiles at several scales.

A survey photo is not a 64 px crop of one element: a west front holds a bell tower, stained glass, gargoyles. The
photo is decoded whole (`data.decode.read_whole`: the same checks and errors as every other decode, memory bounded
from the header, and reduced once so that the smallest tile is exactly the network's 64 px: a 12-megapixel photo
becomes 341 x 256 pixels). Square tiles are cut from that image at every scale of `MapConfig.scales`, each resized
down (bicubic, antialiased) to the network's input, never up, and classified in batches by `Classifier.scored`: ten
probabilities and the open-set score per tile, from one forward pass. A tile the score calls "none of these"
contributes to no class. The tiles are combined into one map per class on a grid of cells, and a class whose map
peaks at or above `MapConfig.presence` is listed as an element, with that peak as its confidence and a box around
the peak (photo pixels). `map_elements(classifier, photo)` is the Python API; `heritage map` the command.

The combination rule, and why:
- at one scale, a cell's value for a class is the mean, over the tiles of that scale that cover the cell, of the
  tile's probability for the class (0 for a tile called none). With the stride at half a tile, a cell inside the
  photo is seen by four tiles of each scale (two per axis): an element must be recognised by the tiles that see it
  from different framings, and one stray confident tile among four counts for a quarter;
- across scales, neighbours must agree (`rule="adjacent"`): a place's value is the smaller of two neighbouring
  scales' values (scales 1/sqrt(2) apart), the best pair kept. An element is recognised at the scales that frame it
  as the data set's photos do (one element filling the view), and the next scale frames it nearly as well; a tile's
  quirk (a coarse tile over several elements named after one, a fine one seeing a texture as stained glass) rarely
  survives the change of framing. Other scales, which see only part of it or it among others, do not dilute it.
  `rule="max"`, each scale alone, was the first choice, made by reasoning; on mosaics of the tuning negatives (seed
  1, docs/element_map.md) it listed more false elements in 2 x 2 mosaics (mean F1 0.74 for `fast`, against 0.84);
- the box is drawn on the map that gave the peak: the connected cells around the peak where that map is at least
  half the peak. A coarse tile that sees the whole photo and names one of its elements would otherwise stretch every
  box to the whole photo;
- presence: a peak of at least 0.4, the mean probability of the tiles at both scales of the pair.
A photo smaller than one tile (shorter side under 64 px), too elongated for one, or scanned at scales that all give
tiles under 64 px, gets the whole-photo answer (`Classifier.predict`'s policy: the centre square, enlarged) as its
single tile, and `whole_photo` and `note` say so. Over `MapConfig.max_tiles` tiles, the finest scales are left out
(and a single scale's tiles thinned), counted before any tile is made; `note` names what was left out. The settings
(`MapConfig`) and the tiles (where they lie, how many are kept, cut out) are `inference.tiles`'.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Any

import numpy as np
import torch
from PIL import Image

from heritage_cnn.base.names import json_text, shown
from heritage_cnn.data.decode import ImageError, read_whole
from heritage_cnn.data.resize import fit_square, to_rgb, upright_rgb
from heritage_cnn.inference.classifier import Classifier, Prediction
from heritage_cnn.inference.tiles import CELLS_PER_TILE, MapConfig, Tile, cut_tiles, plan


@dataclass(frozen=True)
class Element:
    """One element found in a photo: its class, the map's peak (its confidence) and where it is (photo pixels)."""

    label: str
    name: str
    confidence: float
    box: tuple[int, int, int, int]  # left, top, right, bottom (right and bottom exclusive)
    peak: tuple[int, int]  # x, y of the peak cell's centre
    tile: int  # the side, in photo pixels, of the tiles whose map gave the peak

    def to_dict(self) -> dict[str, Any]:
        left, top, right, bottom = self.box
        return {
            "label": self.label,
            "name": self.name,
            "confidence": self.confidence,
            "box": {"left": left, "top": top, "right": right, "bottom": bottom},
            "peak": {"x": self.peak[0], "y": self.peak[1]},
            "tile": self.tile,
        }


@dataclass
class ElementMap:
    """The elements of one photo and the per-class maps they come from; `to_dict()` is the JSON schema."""

    path: str | None
    width: int  # the photo's own size (after EXIF orientation)
    height: int
    elements: tuple[Element, ...]
    classes: list[str]
    names: list[str]
    maps: np.ndarray  # (classes, rows, columns) float32 in [0, 1], one cell = `cell` photo pixels
    cell: tuple[float, float]  # (width, height) of a cell in photo pixels
    tiles: int
    tile_sides: tuple[int, ...]  # in photo pixels, largest first
    known_tiles: int | None  # tiles called one of the ten (the score, and not noise); None: the model cannot tell
    none_threshold: float | None
    whole_photo: bool = False
    note: str | None = None
    preview: np.ndarray = field(default=None, repr=False)  # the reduced photo the tiles were cut from
    figure: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "width": self.width,
            "height": self.height,
            "elements": [e.to_dict() for e in self.elements],
            "whole_photo": self.whole_photo,
            "note": self.note,
            "tiles": self.tiles,
            "tile_sides": list(self.tile_sides),
            "known_tiles": self.known_tiles,
            "none_threshold": self.none_threshold,
            "figure": self.figure,
        }


def _cells(start: float, stop: float, cell: float) -> slice:
    """The cells whose centres lie in [start, stop)."""
    return slice(max(0, math.ceil(start / cell - 0.5)), max(0, math.ceil(stop / cell - 0.5)))


def combine(tiles: list[Tile], evidence: np.ndarray, grid: tuple[int, int], cell: float, scales: int) -> np.ndarray:
    """Per-scale maps (scales, classes, rows, columns): at each cell the mean evidence (tiles x classes) of the tiles
    of that scale that cover it (0 where none does)."""
    sums = np.zeros((scales, evidence.shape[1], *grid), dtype=np.float64)
    counts = np.zeros((scales, 1, *grid), dtype=np.float64)
    for t, row in zip(tiles, evidence, strict=True):
        ys, xs = _cells(t.top, t.top + t.side, cell), _cells(t.left, t.left + t.side, cell)
        sums[t.scale, :, ys, xs] += row[:, None, None]
        counts[t.scale, :, ys, xs] += 1
    return (sums / np.maximum(counts, 1)).astype(np.float32)


def agreeing_maps(per_scale: np.ndarray, used: list[int], rule: str) -> tuple[np.ndarray, list[int]]:
    """The maps an element may peak on, and the finest scale of each. "adjacent": for each pair of neighbouring
    scales, the smaller of their two maps (an element must be recognised at two framings); "max": each scale's own
    map. A photo scanned at one scale only has that scale's map."""
    if rule == "max" or len(used) == 1:
        return per_scale[used], list(used)
    pairs = list(pairwise(used))
    return np.stack([np.minimum(per_scale[a], per_scale[b]) for a, b in pairs]), [b for _, b in pairs]


def find_elements(maps: np.ndarray, presence: float) -> list[tuple[int, float, tuple[int, int, int, int], int]]:
    """(class, peak, box in cells as left, top, right, bottom, index of the map) for each class whose maps (K,
    classes, rows, columns) peak at or above `presence`, most confident first. The box: the connected cells around
    the peak where the map that gave the peak is at least half the peak."""
    from scipy import ndimage

    found = []
    best = maps.max(0)
    for c in range(best.shape[0]):
        peak = float(best[c].max())
        if peak < presence:
            continue
        y, x = np.unravel_index(int(best[c].argmax()), best[c].shape)
        k = int(maps[:, c, y, x].argmax())
        regions, _ = ndimage.label(maps[k, c] >= peak / 2)
        rows, cols = np.nonzero(regions == regions[y, x])
        found.append((c, peak, (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1), k))
    return sorted(found, key=lambda f: -f[1])


def _reduce(image: Image.Image | np.ndarray, shorter: int, max_pixels: int) -> tuple[np.ndarray, int, int]:
    """An in-memory photo reduced as `read_whole` reduces a file (a PIL image turned upright by its EXIF orientation
    first, as a file is)."""
    image = upright_rgb(image) if isinstance(image, Image.Image) else to_rgb(Image.fromarray(np.asarray(image)))
    width, height = image.size
    factor = min(1.0, shorter / min(width, height), math.sqrt(max_pixels / (width * height)))
    target = (max(1, math.floor(width * factor)), max(1, math.floor(height * factor)))
    if target[0] * target[1] > max_pixels:  # a strip's short side clamped up to 1 px: its long side is cut further
        short = min(target)
        target = (short, max_pixels // short) if target[0] == short else (max_pixels // short, short)
    if target != image.size:
        image = image.resize(target, Image.Resampling.BICUBIC, reducing_gap=3.0)
    return np.asarray(image, dtype=np.uint8), width, height


PhotoLike = str | os.PathLike | bytes | Image.Image | np.ndarray


def _load(image: PhotoLike, shorter: int, max_pixels: int):
    """(reduced pixels, the photo's width and height, its path or None); a file or encoded bytes (an upload) go
    through `read_whole`, whose errors name the file ("upload" for bytes)."""
    if isinstance(image, (str, os.PathLike, bytes, bytearray, memoryview)):
        decoded = read_whole(image, shorter, max_pixels)
        path = str(image) if isinstance(image, (str, os.PathLike)) else None
        return decoded.pixels, decoded.width, decoded.height, path
    if isinstance(image, np.ndarray) and (image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3):
        raise ImageError(f"array input must be HxWx3 uint8, got shape {image.shape} dtype {image.dtype}")
    return (*_reduce(image, shorter, max_pixels), None)


def _why_whole(width: int, height: int, scales: tuple[float, ...], size: int) -> str:
    """Why a photo of `width` x `height` got no tile of at least `size` px at any of `scales`."""
    shorter = min(width, height)
    if shorter < size:
        return f"photo smaller than one tile ({width}x{height}, tiles are at least {size} px)"
    if max(scales) * shorter < size - 1e-6:  # the photo's own pixels: even unreduced, the scales are too small
        which = f"scale {max(scales):g} gives" if len(scales) == 1 else f"scales up to {max(scales):g} give"
        return (
            f"{which} tiles under {size} px on this photo ({max(scales) * shorter:.0f} px of its {shorter} px "
            f"shorter side, {width}x{height})"
        )
    return f"photo too elongated for tiles ({width}x{height}, tiles are at least {size} px)"


def map_elements(classifier: Classifier, image: PhotoLike, config: MapConfig | None = None) -> ElementMap:
    """The elements of one photo (a path, the bytes of an encoded image, a PIL image or an HxWx3 uint8 array) and
    their maps; raises ImageError for a file or bytes that cannot be read (`ImageTooLarge` over the pixel limit)."""
    config = config or MapConfig()
    size = classifier.checkpoint.image_size
    pixels, width, height, path = _load(image, config.reduced_shorter(size), config.max_pixels)
    planned = plan(pixels.shape[1], pixels.shape[0], config, size)
    tiles, note, whole_photo = planned.tiles, planned.note(config.max_tiles), not planned.tiles
    if tiles:
        batch = cut_tiles(pixels, tiles, size)
    else:  # the whole-photo answer: the centre square, enlarged, as `predict` sees it, and nothing else of the photo
        shorter = float(min(pixels.shape[:2]))
        tiles = [Tile((pixels.shape[1] - shorter) / 2, (pixels.shape[0] - shorter) / 2, shorter, 0)]
        batch = torch.from_numpy(np.array(fit_square(Image.fromarray(pixels), size))[None]).permute(0, 3, 1, 2)
        note = f"{_why_whole(width, height, config.scales, size)}: the whole photo was classified"
    probabilities, scores = classifier.scored(batch)
    evidence = probabilities.numpy().astype(np.float64)
    point = classifier.open_set
    known = None if scores is None or point is None else point.decide(scores, batch)[0].numpy()  # noise tiles too
    if known is not None:
        evidence = evidence * known[:, None]
    cell = size / CELLS_PER_TILE
    grid = (math.ceil(pixels.shape[0] / cell), math.ceil(pixels.shape[1] / cell))
    if whole_photo:  # its evidence on every cell the centre square touches (a photo under one cell: that cell)
        square = tiles[0]
        per_scale = np.zeros((1, evidence.shape[1], *grid), dtype=np.float32)
        rows = slice(int(square.top // cell), math.ceil((square.top + square.side) / cell))
        columns = slice(int(square.left // cell), math.ceil((square.left + square.side) / cell))
        per_scale[0, :, rows, columns] = evidence[0][:, None, None]
    else:
        per_scale = combine(tiles, evidence, grid, cell, len(config.scales))
    evidence_maps, finest = agreeing_maps(per_scale, sorted({t.scale for t in tiles}), config.rule)
    fx, fy = width / pixels.shape[1], height / pixels.shape[0]  # photo pixels per reduced pixel
    elements = []
    for c, peak, (x0, y0, x1, y1), k in find_elements(evidence_maps, config.presence):
        box = (round(x0 * cell * fx), round(y0 * cell * fy), min(width, round(x1 * cell * fx)))
        box = (*box, min(height, round(y1 * cell * fy)))
        best = evidence_maps[:, c].max(0)
        y, x = np.unravel_index(int(best.argmax()), best.shape)
        centre = (min(width - 1, int((x + 0.5) * cell * fx)), min(height - 1, int((y + 0.5) * cell * fy)))
        if whole_photo:  # the square that was classified and its centre, not the cells it touches
            t = tiles[0]
            box = (round(t.left * fx), round(t.top * fy), round((t.left + t.side) * fx), round((t.top + t.side) * fy))
            centre = (min(width - 1, (box[0] + box[2]) // 2), min(height - 1, (box[1] + box[3]) // 2))
        side = next(t.side for t in tiles if t.scale == finest[k])
        label, name = classifier.classes[c], classifier.checkpoint.display_names[c]
        elements.append(Element(label, name, round(peak, 4), box, centre, round(side * min(fx, fy))))
    sides = tuple(dict.fromkeys(round(t.side * min(fx, fy)) for t in tiles))
    return ElementMap(
        path=path,
        width=width,
        height=height,
        elements=tuple(elements),
        classes=list(classifier.classes),
        names=list(classifier.checkpoint.display_names),
        maps=evidence_maps.max(0),
        cell=(cell * fx, cell * fy),
        tiles=len(tiles),
        tile_sides=sides,
        known_tiles=None if known is None else int(known.sum()),
        none_threshold=None if point is None else float(point.threshold),
        whole_photo=whole_photo,
        note=note,
        preview=pixels,
    )


def map_files(
    classifier: Classifier, paths: Iterable[str | os.PathLike], config: MapConfig | None = None
) -> Iterator[ElementMap | tuple[str, str]]:
    """`map_elements` over files; yields an ElementMap or (path, reason) for a file that could not be read."""
    for path in paths:
        try:
            yield map_elements(classifier, path, config)
        except ImageError as error:
            yield str(path), str(error).removeprefix(f"{os.fsdecode(path)}: ")


def with_elements(
    classifier: Classifier, items: Iterable[Prediction | tuple[str, str]], config: MapConfig | None = None
) -> Iterator[Prediction | tuple[str, str]]:
    """`predict_files`' items, each prediction with the elements the map finds in its whole photo (`elements`);
    the answer itself is unchanged. A photo that decodes at 64 px but not whole becomes (path, reason), as
    `map_files` gives it; (path, reason) items pass through. A prediction without a path (made from an in-memory
    image) has no file to map: ValueError (`map_elements` takes the image itself)."""
    for item in items:
        if isinstance(item, tuple):
            yield item
            continue
        if item.path is None:
            raise ValueError(
                "with_elements: a prediction made from an in-memory image has no file to map; "
                "call map_elements(classifier, image) with the image"
            )
        emap = next(map_files(classifier, [item.path], config))
        yield emap if isinstance(emap, tuple) else replace(item, elements=emap.elements)


def format_maps(maps: list[ElementMap], fmt: str) -> str:
    """Element maps as text: "json" (a list of `to_dict()`, names exact: `base.names.json_text`) or "table" (for
    people: one line per element, names shown safely)."""
    if fmt == "json":
        return json_text([m.to_dict() for m in maps])
    if fmt != "table":
        raise ValueError(f"unknown output format {fmt!r}: choose table or json")
    paths = [shown(m.path) if m.path is not None else "-" for m in maps]
    width = max([len(p) for p in paths] + [4])
    lines = [f"{'path'.ljust(width)}  {'size':>11}  {'element':<16} {'conf':>5}  box (left, top, right, bottom)"]
    for path, m in zip(paths, maps, strict=True):
        size = f"{m.width}x{m.height}"
        if not m.elements:
            lines.append(f"{path.ljust(width)}  {size:>11}  {'no element found':<16} {'-':>5}")
        for e in m.elements:
            lines.append(f"{path.ljust(width)}  {size:>11}  {e.name:<16} {e.confidence:5.2f}  {e.box}")
        if m.note:
            lines.append(f"{''.ljust(width)}  {'':>11}  note: {m.note}")
    return "\n".join(lines)


__all__ = [
    "Element",
    "ElementMap",
    "agreeing_maps",
    "combine",
    "find_elements",
    "format_maps",
    "map_elements",
    "map_files",
    "with_elements",
]
