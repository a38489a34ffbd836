"""Progressive resizing (fast.ai's lever for fast training), measured for the recipe log: the default recipe with
its first epochs trained on photos shrunk to a smaller side (antialiased, after the usual augmentation) and its
last epochs at 64 px; validation is always at 64 px.

    python benchmarks/progressive_resize.py --data DATA --out runs/search/p44-40x36 \
        --epochs 44 --low-res-epochs 36 --low-res-size 40 --seed 0

It is a benchmark, not a `heritage train` flag, because it did not pay on this data (benchmarks/recipes.md,
"The default recipe in half the time"); the script keeps that row reproducible. It wraps two functions for the run
(the epoch loop as `heritage_cnn.training.loop` calls it, the batch augmentation as `heritage_cnn.training.epoch`
calls it) and checks their signatures first, so a change there fails loudly instead of silently training the plain
recipe. Prints the wall time.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

import heritage_cnn.training.epoch as steps
import heritage_cnn.training.loop as training
from recipe_variant import train_timed, variant_parser


def shrink_early_epochs(low_res_epochs: int, size: int) -> None:
    """From now on, `heritage_cnn.training.loop.train` feeds epochs < `low_res_epochs` at `size` x `size` pixels."""
    epoch_loop, augment = training.train_one_epoch, steps.augment_batch
    epoch_index = list(inspect.signature(epoch_loop).parameters).index("epoch")
    if list(inspect.signature(augment).parameters)[:2] != ["images", "config"]:
        raise RuntimeError("heritage_cnn.data.augment.augment_batch changed its signature; update this benchmark")
    current = {"epoch": 0}

    def tracked_epoch(*args, **kwargs):
        epoch = kwargs["epoch"] if "epoch" in kwargs else args[epoch_index]
        current["epoch"] = epoch.index
        return epoch_loop(*args, **kwargs)

    def shrunk_augment(*args, **kwargs) -> torch.Tensor:
        pixels = augment(*args, **kwargs)
        if current["epoch"] < low_res_epochs:
            pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return pixels

    training.train_one_epoch, steps.augment_batch = tracked_epoch, shrunk_augment


def main() -> None:
    parser = variant_parser(__doc__)
    parser.add_argument("--low-res-epochs", type=int, required=True, help="the first N epochs train at --low-res-size")
    parser.add_argument("--low-res-size", type=int, default=40, help="side in pixels of those epochs' photos")
    args = parser.parse_args()
    if not 0 < args.low_res_epochs < args.epochs or not 8 <= args.low_res_size < 64:
        parser.error("--low-res-epochs must be in [1, --epochs) and --low-res-size in [8, 63]")
    shrink_early_epochs(args.low_res_epochs, args.low_res_size)
    train_timed(args)


if __name__ == "__main__":
    main()
