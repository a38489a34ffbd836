"""What the scripts that train a variant of `heritage train` for the recipe log share (`whiten_stem.py`,
`progressive_resize.py`): the arguments that name the run, and one timed call of `heritage_cnn.training.loop.train`."""

from __future__ import annotations

import argparse
import time
from typing import Any

import heritage_cnn.training.loop as training
from heritage_cnn.training.config import TrainConfig
from heritage_cnn.training.recipes import RECIPES

LOGGED = RECIPES["adamw"]  # the default recipe when these scripts' rows were logged


def variant_parser(doc: str | None) -> argparse.ArgumentParser:
    """--data, --out, --epochs (the logged recipe's by default), --seed, --resume; each script adds its own."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=LOGGED["epochs"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="go on with an interrupted run in --out")
    return parser


def train_timed(args: argparse.Namespace, **recipe: Any) -> None:
    """Train the run the arguments name, with `recipe`'s fields on top of the logged recipe; print the wall time."""
    recipe.setdefault("optimizer", LOGGED["optimizer"])
    config = TrainConfig(
        data=args.data, out=args.out, epochs=args.epochs, seed=args.seed, resume=args.resume, progress=False, **recipe
    )
    start = time.perf_counter()
    training.train(config)
    print(f"wall time: {time.perf_counter() - start:.1f} s")
