"""Saving drawn classes: one PNG per image, the grid `class_images.png` and `class_images.json`."""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path

from heritage_cnn.base.figures import image_grid, save_png
from heritage_cnn.base.io import atomic_write_json
from heritage_cnn.data.folders import display_name
from heritage_cnn.inside.synthesis.draw import Generated
from heritage_cnn.models.checkpoint import Checkpoint


def _slug(folder: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", display_name(folder).lower()).strip("_")


GRID_ROWS = 16  # samples per class in the grid figure (every image still gets its own PNG)
# The grid's and the JSON's names, which the web page's class images and the report read them by
GRID, MANIFEST = "class_images.png", "class_images.json"


def drawn_by(checkpoint: Checkpoint) -> str:
    """Whose probabilities the JSON records: the networks' that drew (a member's are not the ensemble's)."""
    if checkpoint.index is not None:
        return f"member {checkpoint.index} of the model (one network of its ensemble, --member {checkpoint.index})"
    count = checkpoint.member_count
    return f"the model's {count} networks together (their mean softmax)" if count > 1 else "the model (one network)"


def write_generated(out: str | Path, generated: Generated, checkpoint: Checkpoint, seed: int, n: int) -> Path:
    """One PNG per image, the grid `class_images.png` (a column per class, its first `GRID_ROWS` images: a
    figure of thousands of panels would take minutes and gigabytes) and `class_images.json`, which records what
    reproduces them: the model and its member (`checkpoint.index`), the seed, settings, size and images per class."""
    out = Path(out)
    names = checkpoint.classes
    records = []
    for i, (image, target) in enumerate(zip(generated.images, generated.targets, strict=True)):
        file = f"{_slug(names[target])}_{i % n}.png"
        save_png(image, out / file)
        records.append(
            {
                "file": file,
                "class": names[target],
                "probability": round(generated.probabilities[i], 6),
                "predicted": names[generated.predicted[i]],
            }
        )
    # column per class, row per sample: reorder class-major images to row-major
    k = len(generated.targets) // n
    order = [c * n + r for r in range(min(n, GRID_ROWS)) for c in range(k)]
    image_grid(
        generated.images[order],
        [display_name(names[generated.targets[i]]) if j < k else "" for j, i in enumerate(order)],
        k,
        out / GRID,
        [f"p = {generated.probabilities[i]:.2f}" for i in order],
    )
    atomic_write_json(
        out / MANIFEST,
        {
            "model": str(checkpoint.path),
            "member": checkpoint.index,  # the network of the ensemble at `model` that drew (None: the whole model)
            "probabilities_of": drawn_by(checkpoint),
            "seed": seed,
            "size": int(generated.images.shape[-1]),
            "per_class": n,
            "settings": asdict(generated.settings),
            "seconds": round(generated.seconds, 2),
            "mean_probability": round(sum(generated.probabilities) / len(generated.probabilities), 6),
            "images": records,
        },
    )
    return out / GRID
