"""Patch-whitening initialisation of the stem (Keller Jordan's airbench), screened for the recipe log's half-time
target. airbench freezes such a layer; here it only initialises the stem, which stays learned, because the mission
shows the stem's filters in `heritage visualize kernels`. The filters are the training patches' leading principal
directions (normalised photos, kernel x kernel patches), each divided by the square root of its variance, and
their negatives.

    python benchmarks/whiten_stem.py --data DATA --out runs/search/f22-muon-whiten --epochs 22 --optimizer muon

It is a benchmark, not a `heritage train` flag, because it did not pay on this data (benchmarks/recipes.md, "The
default recipe in half the time"); the script keeps that row reproducible. It wraps `make_optimizer` and
`channel_stats` of `heritage_cnn.training.loop` for the run and checks their signatures first, so a change there fails
loudly instead of silently training the plain recipe. Prints the wall time.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F

import heritage_cnn.training.loop as training
from heritage_cnn.training.config import OPTIMIZERS, TrainConfig
from recipe_variant import LOGGED, train_timed, variant_parser


def whitening_filters(
    images: torch.Tensor, mean: list[float], std: list[float], kernel: int, count: int
) -> torch.Tensor:
    """`count` filters (count/2 leading principal directions of normalised kernel x kernel patches, each divided
    by the square root of its variance, and their negatives), shaped (count, 3, kernel, kernel)."""
    generator = torch.Generator().manual_seed(0)
    chosen = torch.randperm(len(images), generator=generator)[:2000]
    x = images[chosen].float().div_(255)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    patches = F.unfold(x, kernel).transpose(1, 2).reshape(-1, 3 * kernel * kernel)
    patches = patches[torch.randperm(len(patches), generator=generator)[:200_000]].double()
    covariance = patches.T @ patches / len(patches)
    variances, directions = torch.linalg.eigh(covariance)  # ascending
    half = count // 2
    top = directions[:, -half:].flip(1) / variances[-half:].flip(0).clamp_min(1e-4).sqrt()
    filters = torch.cat([top, -top], dim=1).T
    return filters[:count].float().reshape(count, 3, kernel, kernel)


def whiten_stem_at_start() -> None:
    """From now on, `heritage_cnn.training.loop.train` initialises the stem by patch whitening (after building the network,
    before its optimizer): it wraps `make_optimizer` and `channel_stats`, checking their signatures first."""
    make_optimizer, channel_stats = training.make_optimizer, training.channel_stats
    if list(inspect.signature(make_optimizer).parameters) != ["model", "config"]:
        raise RuntimeError("heritage_cnn.training.optim.make_optimizer changed its signature; update this benchmark")
    if list(inspect.signature(channel_stats).parameters) != ["images"]:
        raise RuntimeError("heritage_cnn.data.folders.channel_stats changed its signature; update this benchmark")
    seen: dict[str, Any] = {}

    def remembered_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
        seen["images"], seen["stats"] = images, channel_stats(images)
        return seen["stats"]

    def whitened_then_optimizer(model: torch.nn.Module, config: TrainConfig) -> Any:
        stem = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))  # a resumed run then reloads it
        filters = whitening_filters(seen["images"], *seen["stats"], stem.kernel_size[0], stem.out_channels)
        with torch.no_grad():
            stem.weight.copy_(filters)
        return make_optimizer(model, config)

    training.make_optimizer, training.channel_stats = whitened_then_optimizer, remembered_stats


def main() -> None:
    parser = variant_parser(__doc__)
    parser.add_argument(
        "--optimizer", choices=OPTIMIZERS, default=LOGGED["optimizer"], help="the rows logged without it: AdamW"
    )
    args = parser.parse_args()
    whiten_stem_at_start()
    train_timed(args, optimizer=args.optimizer)


if __name__ == "__main__":
    main()
