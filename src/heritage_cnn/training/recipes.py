"""The named recipes of `--recipe`: starting points that the typed flags apply on top of.

Each recipe is the fields it changes from `TrainConfig`'s defaults, every value with its reason. The
figures behind the reasons are in benchmarks/recipes.md, in the section each comment names.
"""

from __future__ import annotations

from typing import Any

from heritage_cnn.training.config import TrainConfig

# The default recipe: TrainConfig's own defaults (Muon on the hidden filters), each with its reason beside it there.
FULL: dict[str, Any] = {}

# The recipe of every shipped network: each records its command in the package, and a test rebuilds each one's
# recipe from that command, so this recipe stays as they were trained.
ADAMW: dict[str, Any] = {
    # AdamW on every layer: Muon on the hidden filters beats it on six seeds of six in the same time
    # (benchmarks/recipes.md, "Muon becomes the default")
    "optimizer": "adamw",
    "epochs": 56,  # the length whose time the default's Muon epochs match (the same section)
}

# `heritage demo`'s first look at the whole pipeline: it must fit ten minutes on two cores of a CPU without bf16
# (benchmarks/recipes.md, "The quick recipe on an AVX2 CPU").
QUICK: dict[str, Any] = {
    "optimizer": "adamw",  # Muon's step costs more on this narrow network (the same section)
    # its last epochs swing by a point with the running statistics; recomputed, +1.5 pt on four runs, and 13 epochs
    # keep 87 % on two seeds where 12 and 11 do not (benchmarks/recipes.md, "The stem's order and the last epochs'
    # batch-norm statistics")
    "epochs": 13,
    "bn_statistics": "precise",
    "model": {
        # half the default widths' time per image, at an accuracy within that section's intervals
        "widths": (16, 32, 64, 128),
        # one residual block per stage: depth buys little for its time (benchmarks/recipes.md, "Second screen")
        "blocks": (1, 1, 1, 1),
    },
}

RECIPES: dict[str, dict[str, Any]] = {"full": FULL, "adamw": ADAMW, "quick": QUICK}


def recipe_config(name: str, data: str, out: str) -> TrainConfig:
    """TrainConfig for a named recipe (RECIPES); a ValueError lists the names."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; the recipes are: {', '.join(RECIPES)}")
    values = TrainConfig(data=data, out=out).to_dict()
    for key, value in RECIPES[name].items():
        values[key] = {**values[key], **value} if isinstance(value, dict) else value
    return TrainConfig.from_dict(values)
