"""See inside the network: feature maps, kernels and deconvnet projections (the figures of `heritage visualize`).

Feature maps and projections are the rectified outputs of conv layers, named as in `deconvnet`:
`stage1.block1.conv` (conv -> BN -> ReLU), `stageN.block1.conv1` (inside a residual block, after relu1),
`stageN.block1.conv2` (the block's output: relu2 of branch + shortcut).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import matplotlib
import numpy as np
import torch

from heritage_cnn.base.figures import PERCENTILE, draw_box, mosaic, new_figure, save_figure, signed_to_rgb
from heritage_cnn.base.names import NAME_MAX, portable_name, shown
from heritage_cnn.data.decode import IMAGE_SIZE, decode_image, try_decode
from heritage_cnn.data.folders import DatasetError, find_layout, list_images, load_images
from heritage_cnn.inside import deconvnet
from heritage_cnn.inside.guards import one_network
from heritage_cnn.models.checkpoint import Checkpoint
from heritage_cnn.models.network import conv_layers

# The names of the figures the report shows by name (`write_kernels`, `write_deconv`); the rest it finds by pattern
FIRST_KERNELS_FILE, CONTACT_SHEET_FILE = "kernels_layer1.png", "deconv_contact_sheet.png"

# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def load_photo(path: str | os.PathLike) -> torch.Tensor:
    """One photo of any size or format as a (1, 3, 64, 64) uint8 tensor, resized exactly as for prediction."""
    return torch.from_numpy(decode_image(path)).permute(2, 0, 1).unsqueeze(0).contiguous()


def _file_name(layer: str) -> str:
    return layer.replace(".", "_")


def photo_figure_name(prefix: str, image: str | os.PathLike, suffix: str = "") -> str:
    """`<prefix>_<photo's file name><suffix>.png`, a valid name (`portable_name`): the whole file name, so that
    `a.jpg` and `a.png` get figures of their own; a long name is cut, never `prefix` or `suffix`."""
    tail = f"{suffix}.png"
    name = portable_name(Path(image).name)
    room = NAME_MAX - len(f"{prefix}_{tail}".encode())
    return f"{prefix}_{name.encode()[:room].decode('utf-8', 'ignore')}{tail}"  # cut on a character boundary


# --------------------------------------------------------------------------------------------
# Feature maps
# --------------------------------------------------------------------------------------------


def feature_maps(checkpoint: Checkpoint, photo: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
    """Rectified activations (C, h, w) of each layer for one uint8 photo (1, 3, H, W), keyed by the names given:
    conv layers, blocks or stages, as `deconvnet.resolve_layer` takes them."""
    one_network(checkpoint)
    model = checkpoint.model
    if not layers:
        raise ValueError("no layers to show feature maps of; name at least one (deconvnet.deconv_layers lists them)")
    resolved = {name: deconvnet.resolve_layer(model, name, "to show feature maps of") for name in layers}
    kept: dict[str, torch.Tensor] = {}
    last = max(resolved.values(), key=deconvnet.deconv_layers(model).index)
    with torch.no_grad():  # forward_to runs the network in eval mode
        deconvnet.forward_to(model, checkpoint.normalise(photo), last, keep=kept)
    return {name: kept[layer][0] for name, layer in resolved.items()}


def plot_feature_maps(
    photo: torch.Tensor, maps: torch.Tensor, layer: str, output: str, path: Path, large: bool = False
) -> Path:
    """A grid of one layer's activation maps, strongest mean first, one colour scale; the input beside it.
    `output`: what the maps are (`deconvnet.layer_output`), for the title."""
    order = maps.mean(dim=(1, 2)).argsort(descending=True)
    tiles = maps[order].numpy()
    columns = math.ceil(math.sqrt(len(tiles) * 1.5))
    sheet = mosaic(tiles, columns)
    size = 12 if large else 8
    fig, (ax_in, ax_maps) = new_figure(
        1, 2, figsize=(size * 1.35, size * sheet.shape[0] / sheet.shape[1] + 1), width_ratios=[1, 3.5]
    )
    ax_in.imshow(photo[0].permute(1, 2, 0).numpy())
    ax_in.set_title("input (64x64, as predicted)")
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")
    image = ax_maps.imshow(sheet, cmap=cmap, vmin=0, vmax=max(float(tiles.max()), 1e-8), interpolation="nearest")
    if large:  # label each map with its channel number
        h, w = tiles.shape[1:]
        for i, channel in enumerate(order.tolist()):
            r, c = divmod(i, columns)
            ax_maps.text(c * (w + 1) + 1, r * (h + 1) + 1, str(channel), color="white", fontsize=7, va="top")
    fig.colorbar(image, ax=ax_maps, fraction=0.03, pad=0.02, label="activation (after ReLU)")
    ax_maps.set_title(
        f"{layer}: {len(tiles)} feature maps, {tiles.shape[1]}x{tiles.shape[2]}, {output}\n"
        "ordered by mean activation, shared colour scale"
    )
    for ax in (ax_in, ax_maps):
        ax.axis("off")
    return save_figure(fig, path)


def write_feature_maps(
    checkpoint: Checkpoint, image: str | os.PathLike, out: str | os.PathLike, layers: list[str] | None = None
) -> list[Path]:
    """One figure per layer, `feature_maps_<photo>_<layer>.png`; the first layer gets a large one,
    `feature_maps_<photo>_layer1.png`."""
    one_network(checkpoint)
    out = Path(out)
    all_layers = deconvnet.deconv_layers(checkpoint.model)
    if layers:
        layers = [deconvnet.resolve_layer(checkpoint.model, name, "to show feature maps of") for name in layers]
    else:
        layers = all_layers
    photo = load_photo(image)
    maps = feature_maps(checkpoint, photo, layers)
    paths = []
    for name, activation in maps.items():
        first = name == all_layers[0]
        path = out / photo_figure_name("feature_maps", image, "_layer1" if first else f"_{_file_name(name)}")
        output = deconvnet.layer_output(checkpoint.model, name)
        paths.append(plot_feature_maps(photo, activation, name, output, path, large=first))
    return paths


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------


def plot_first_layer_kernels(weight: torch.Tensor, path: Path, title: str = "") -> Path:
    """First-layer filters (C, 3, k, k) as RGB tiles, each normalised by its own largest weight, zero grey."""
    tiles = np.stack([signed_to_rgb(w) for w in weight.detach().numpy()])
    columns = math.ceil(math.sqrt(len(tiles)))
    fig, ax = new_figure(figsize=(6, 6))
    ax.imshow(mosaic(tiles, columns, fill=1.0), interpolation="nearest")
    ax.set_title(title or f"first-layer filters: {len(tiles)} x {weight.shape[2]}x{weight.shape[3]} RGB (grey = 0)")
    ax.axis("off")
    return save_figure(fig, path)


def plot_strongest_slices(weight: torch.Tensor, layer: str, path: Path) -> Path:
    """A deeper layer (C_out, C_in, k, k): each filter's strongest input-channel slice (largest L2 norm)."""
    w = weight.detach()
    strongest = w.flatten(2).norm(dim=2).argmax(dim=1)
    slices = w[torch.arange(len(w)), strongest].numpy()
    scale = np.abs(slices).reshape(len(slices), -1).max(1).reshape(-1, 1, 1)
    tiles = slices / np.where(scale > 0, scale, 1)
    columns = math.ceil(math.sqrt(len(tiles) * 1.5))
    fig, ax = new_figure(figsize=(8, 8 * math.ceil(len(tiles) / columns) / columns + 0.6))
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="white")
    ax.imshow(mosaic(tiles, columns), cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    ax.set_title(
        f"{layer}: strongest input-channel slice of each of {len(tiles)} filters "
        f"({w.shape[1]} input channels, {w.shape[2]}x{w.shape[3]}), each scaled to its largest weight; red > 0 > blue"
    )
    ax.axis("off")
    return save_figure(fig, path)


def write_kernels(checkpoint: Checkpoint, out: str | os.PathLike) -> list[Path]:
    """kernels_layer1.png (RGB) and one strongest-slice grid per deeper conv layer (1x1 shortcuts left out)."""
    one_network(checkpoint)
    out = Path(out)
    convs = {name: conv for name, conv in conv_layers(checkpoint.model).items() if conv.kernel_size != (1, 1)}
    names = list(convs)
    paths = [plot_first_layer_kernels(convs[names[0]].weight, out / FIRST_KERNELS_FILE)]
    for name in names[1:]:
        paths.append(plot_strongest_slices(convs[name].weight, name, out / f"kernels_{_file_name(name)}.png"))
    return paths


# --------------------------------------------------------------------------------------------
# Deconvnet figures
# --------------------------------------------------------------------------------------------


def _crop(images: np.ndarray, box: tuple[int, int, int, int], fill: float) -> np.ndarray:
    """Crop (..., H, W) arrays to a box that may reach outside them, padding with `fill`."""
    top, left, bottom, right = box
    h, w = images.shape[-2:]
    margin = max(0, -top, -left, bottom - h, right - w)
    pad = [(0, 0)] * (images.ndim - 2) + [(margin, margin), (margin, margin)]
    padded = np.pad(images, pad, constant_values=fill)
    return padded[..., top + margin : bottom + margin, left + margin : right + margin]


def deconv_tiles(
    checkpoint: Checkpoint, images: torch.Tensor, top: deconvnet.TopActivations, channels: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Projections and image patches, each cropped to the unit's receptive field: two (K, k, s, s, 3) arrays."""
    one_network(checkpoint)
    projections = deconvnet.project_top(checkpoint.model, images, checkpoint.normalise, top, channels).numpy()
    k = top.values.shape[1]
    proj_tiles, patch_tiles = [], []
    for i, channel in enumerate(channels):
        for j in range(k):
            row, col = top.positions[channel, j].tolist()
            box = deconvnet.receptive_field(checkpoint.model, top.layer, row, col)
            proj_tiles.append(signed_to_rgb(_crop(projections[i, j], box, 0.0), PERCENTILE))
            if top.images[channel, j] >= 0 and top.values[channel, j] > 0:
                patch = images[top.images[channel, j]].numpy().astype(np.float32) / 255
            else:
                patch = np.full((3, *images.shape[-2:]), 1.0, dtype=np.float32)  # no such unit: blank
            patch_tiles.append(_crop(patch, box, 0.5).transpose(1, 2, 0))
    shape = (len(channels), k, *proj_tiles[0].shape)
    return np.stack(proj_tiles).reshape(shape), np.stack(patch_tiles).reshape(shape)


def _pairs(projections: np.ndarray, patches: np.ndarray | None, columns: int) -> np.ndarray:
    """One channel's k tiles as a mosaic; with patches, each photo patch directly left of its projection."""
    if patches is None:
        return mosaic(projections, columns, pad=2, fill=1.0)
    gap = np.ones((*projections.shape[:2], 1, 3), dtype=np.float32)
    return mosaic(np.concatenate([patches, gap, projections], axis=2), columns, pad=3, fill=1.0)


def plot_deconv_sheet(
    projections: np.ndarray,
    patches: np.ndarray | None,
    top: deconvnet.TopActivations,
    channels: list[int],
    path: Path,
    title: str,
) -> Path:
    """Zeiler & Fergus Fig. 2: per channel its top-k units, each cropped to its receptive field and enlarged,
    the photo patch beside its projection.

    With `patches=None`, projections only (a figure without dataset pixels).
    """
    k = projections.shape[1]
    side = math.ceil(math.sqrt(k))
    per_row = 4 if patches is None else 2
    rows = math.ceil(len(channels) / per_row)
    inch = 4.2 if patches is None else 6.5  # a 22 px window becomes ~80 screen px
    fig, axes = new_figure(rows, per_row, figsize=(inch * per_row, inch * rows * (1 if patches is None else 0.55)))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, i, channel in zip(np.atleast_1d(axes).ravel(), range(len(channels)), channels, strict=False):
        block = _pairs(projections[i], None if patches is None else patches[i], side)
        ax.imshow(block, interpolation="nearest")
        ax.set_title(f"channel {channel} (top {float(top.values[channel, 0]):.2f})", fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_contact_sheet(
    sheets: dict[str, tuple[np.ndarray, deconvnet.TopActivations, list[int]]], path: Path, title: str
) -> Path:
    """Projections only: per layer (row), the strongest activation's projection of each shown channel."""
    width = max(len(channels) for _, _, channels in sheets.values())
    fig, axes = new_figure(len(sheets), 1, figsize=(min(1.1 * width, 20), 1.8 * len(sheets) + 0.6), squeeze=False)
    for ax, (layer, (projections, _, channels)) in zip(axes[:, 0], sheets.items(), strict=True):
        ax.imshow(mosaic(projections[:, 0], width, pad=2, fill=1.0), interpolation="nearest")
        ax.set_title(f"{layer}: channels {', '.join(map(str, channels))}", fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


def write_deconv(
    checkpoint: Checkpoint,
    images: torch.Tensor,
    layers: list[str],
    out: str | os.PathLike,
    channels: list[int] | None = None,
    top_channels: int = 16,
    k: int = 9,
    source: str = "",
    progress: bool = False,
) -> list[Path]:
    """Scan the images once per layer, project the top-k of the chosen channels, write the figures.

    Per layer: `deconv_<layer>.png` (projections + patches) and `deconv_<layer>_projections.png`
    (projections only); then `deconv_contact_sheet.png`, every layer's strongest projections.
    """
    one_network(checkpoint)
    out = Path(out)
    model = checkpoint.model
    paths, sheets = [], {}
    # `stage2` and `stage2.block1.conv2` are one layer: its figures once
    for name in dict.fromkeys(deconvnet.resolve_layer(model, layer) for layer in layers):
        top = deconvnet.scan_top_activations(model, images, checkpoint.normalise, name, k=k, progress=progress)
        count = top.values.shape[0]
        chosen = channels if channels is not None else top.strongest_channels(top_channels)
        bad = [c for c in chosen if not 0 <= c < count]
        if bad:
            raise ValueError(f"{name} has channels 0..{count - 1}; no channel {bad[0]}")
        projections, patches = deconv_tiles(checkpoint, images, top, chosen)
        what = f"{name}: top {k} activations over {len(images)} images{source}; deconvnet projections"
        paths.append(plot_deconv_sheet(projections, patches, top, chosen, out / f"deconv_{_file_name(name)}.png", what))
        paths.append(
            plot_deconv_sheet(
                projections, None, top, chosen, out / f"deconv_{_file_name(name)}_projections.png", what + " only"
            )
        )
        sheets[name] = (projections, top, chosen)
    paths.append(plot_contact_sheet(sheets, out / CONTACT_SHEET_FILE, "strongest projection per channel"))
    return paths


def describe_unit(
    layer: str,
    channel: int,
    row: int,
    col: int,
    box: tuple[int, int, int, int],
    size: tuple[int, int],
    side: int = IMAGE_SIZE,
) -> str:
    """A unit in words, its place on its own map (`size`) and on the photo (`box`, clipped to the `side` px photo):
    "stage 3 (stage3.block1.conv2), channel 12:\nat (4, 5) of its 8x8 map; sees 22x22 px\nphoto rows 20-41, cols 28-49"."""
    stage = layer.split(".")[0].removeprefix("stage")
    height, width = box[2] - box[0], box[3] - box[1]
    top, left, bottom, right = max(box[0], 0), max(box[1], 0), min(box[2], side), min(box[3], side)
    return (
        f"stage {stage} ({layer}), channel {channel}:\nat ({row}, {col}) of its {size[0]}x{size[1]} map; "
        f"sees {height}x{width} px\nphoto rows {top}-{bottom - 1}, cols {left}-{right - 1}"
    )


def write_deconv_photo(
    checkpoint: Checkpoint, image: str | os.PathLike, out: str | os.PathLike, layers: list[str] | None = None
) -> Path:
    """`deconv_image_<photo>.png`: for one photo, per layer (`layers`, default all): the strongest unit's window
    outlined on the photo, and beside it (same scale, same window) its deconvnet projection alone, the unit
    described in words."""
    one_network(checkpoint)
    model = checkpoint.model
    if layers:
        layers = list(dict.fromkeys(deconvnet.resolve_layer(model, name) for name in layers))
    else:
        layers = deconvnet.deconv_layers(model)
    photo = load_photo(image)
    rgb = photo[0].permute(1, 2, 0).numpy()
    x = checkpoint.normalise(photo)
    fig, axes = new_figure(2, len(layers), figsize=(3.0 * max(len(layers), 2), 6.6), squeeze=False)
    for column, name in enumerate(layers):
        with torch.no_grad():
            activation, _ = deconvnet.forward_to(model, x, name)
        h, w = activation.shape[2:]
        flat = int(activation[0].flatten().argmax())
        channel, row, col = flat // (h * w), (flat % (h * w)) // w, flat % w
        projection = deconvnet.project(model, x, name, torch.tensor([channel]), torch.tensor([[row, col]]))
        box = deconvnet.receptive_field(model, name, row, col)
        top, bottom = axes[0, column], axes[1, column]
        top.imshow(rgb, interpolation="nearest")
        draw_box(top, box)
        top.set_title(describe_unit(name, channel, row, col, box, (h, w), rgb.shape[0]), fontsize=7.5)
        bottom.imshow(signed_to_rgb(projection[0].numpy(), PERCENTILE), interpolation="nearest")
        draw_box(bottom, box)
        bottom.set_title(f"its projection (activation {float(activation[0, channel, row, col]):.2f})", fontsize=7.5)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(
        f"{shown(Path(image).name)}: the strongest unit of {'each layer' if len(layers) > 1 else 'the layer'}; "
        "top: the window it sees on the photo, "
        f"bottom: what it responded to there (deconvnet projection, grey = 0, clipped at the {PERCENTILE:g}th "
        "percentile)",
        fontsize=9,
    )
    fig.tight_layout(h_pad=2.0, rect=(0, 0, 1, 0.96))  # the top strip for the suptitle: three-line titles reach it
    return save_figure(fig, Path(out) / photo_figure_name("deconv_image", image))


class Sample(NamedTuple):
    """Decoded training images of a data folder (`sample_images`)."""

    images: torch.Tensor  # (N, 3, 64, 64) uint8
    total: int  # the image files the sample was drawn from (without a limit: every file found)
    skipped: list[tuple[str, str]]  # (path, why) of each file found unusable: never in `images`


def sample_images(
    data: str | os.PathLike, classes: list[str], limit: int | None = None, seed: int = 0, progress: bool = True
) -> Sample:
    """Every training image of a data folder, or a seeded random `limit` of them; unreadable files are skipped and
    listed, and further files drawn in their place, so that the sample holds `limit` images when the folder has
    that many readable ones. `progress`: a bar while every image is decoded (no `limit`)."""
    folder = find_layout(data).train
    if limit is None:
        loaded = load_images(folder, classes=classes, progress=progress)
        return Sample(loaded.images, len(loaded) + len(loaded.skipped), list(loaded.skipped))
    listing = list_images(folder, classes)
    files, skipped = listing.files, list(listing.skipped)
    order = np.random.default_rng(seed).permutation(len(files)).tolist()
    kept: dict[int, np.ndarray] = {}
    tried = 0
    with ThreadPoolExecutor(max_workers=4) as pool:
        while len(kept) < limit and tried < len(order):
            batch = order[tried : tried + limit - len(kept)]  # as many as are still missing, in the seeded order
            tried += len(batch)
            for i, item in zip(batch, pool.map(lambda i: try_decode(files[i]), batch), strict=True):
                if isinstance(item, str):
                    skipped.append((str(files[i]), item))
                else:
                    kept[i] = item
    if not kept:  # every file tried failed to decode: the first of those is named (the listing's own come before)
        first = skipped[len(listing.skipped)][0]
        raise DatasetError(f"{folder}: none of the {tried} image files tried could be read (first: {first})")
    arrays = [kept[i] for i in sorted(kept)]
    return Sample(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous(), len(files), skipped)


__all__ = [
    "CONTACT_SHEET_FILE",
    "FIRST_KERNELS_FILE",
    "Sample",
    "feature_maps",
    "load_photo",
    "photo_figure_name",
    "sample_images",
    "write_deconv",
    "write_deconv_photo",
    "write_feature_maps",
    "write_kernels",
]
