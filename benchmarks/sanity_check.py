"""Sanity check of the attribution maps (Adebayo et al. 2018) on the shipped model and real photos.

    python benchmarks/sanity_check.py [--model CKPT] [--data DIR] [--photos 6] [--out benchmarks/out]

Re-initialises the weights from the top down (head.fc2, head.fc1, then each block, last stage first)
and reports, for every method, the Spearman rank correlation between the trained model's map and the
randomised model's map, averaged over one photo from each of the first --photos classes. A method that
explains the network should fall below 0.5 once the network is gone; one that keeps a high
correlation mostly shows the photo's edges (guided backpropagation is known to). Writes
sanity_check.json and sanity_check.md to --out.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from heritage_cnn import explain
from heritage_cnn.checkpoint import load_checkpoint
from heritage_cnn.data import find_layout, list_images
from heritage_cnn.io import atomic_write_json, atomic_write_text
from heritage_cnn.visualize import load_photo

HERE = Path(__file__).resolve().parent
warnings.filterwarnings("ignore", message=".*(backward hooks|required_grads).*")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint (default: the shipped model)")
    parser.add_argument(
        "--data", default=os.environ.get("HERITAGE_DATA") or str(HERE.parents[1] / "shared/datasets/ahe64")
    )
    parser.add_argument("--photos", type=int, default=6, help="one photo from each of the first N classes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(HERE / "out"))
    args = parser.parse_args()
    if not Path(args.data).is_dir():
        sys.exit(f"no data at {args.data}: pass --data or set HERITAGE_DATA")

    checkpoint = load_checkpoint(args.model)
    files = list_images(find_layout(args.data).train, checkpoint.classes)
    paths = [files.files[files.labels.index(c)] for c in range(min(args.photos, len(checkpoint.classes)))]
    trained = explain.captum_ready(checkpoint.model)
    steps = [
        (name, explain.captum_ready(model))
        for name, model in explain.cascading_randomisation(checkpoint.model, args.seed)
    ]

    # correlations[method][step] = list over photos
    correlations = {m: {name: [] for name, _ in steps} for m in explain.METHODS}
    for path in paths:
        x = checkpoint.normalise(load_photo(path))
        with torch.no_grad():
            target = int(trained(x).argmax())
        reference = explain.attribute_all(trained, x, target)
        for name, model in steps:
            maps = explain.attribute_all(model, x, target)
            for method in explain.METHODS:
                correlations[method][name].append(explain.rank_correlation(reference[method], maps[method]))
        print(f"done {path.name}", flush=True)

    names = [name for name, _ in steps]
    table = {m: {n: float(np.mean(v)) for n, v in per_step.items()} for m, per_step in correlations.items()}
    lines = [
        f"Spearman rank correlation, trained vs. randomised map, mean over {len(paths)} photos "
        f"({checkpoint.path}). Columns: re-initialised from the top down to and including that block.\n",
        "| method | " + " | ".join(names) + " | passes (< 0.5 fully randomised) |",
        "|---" * (len(names) + 2) + "|",
    ]
    for method in explain.METHODS:
        final = table[method][names[-1]]
        cells = " | ".join(f"{table[method][n]:.2f}" for n in names)
        lines.append(f"| {explain.LABELS[method]} | {cells} | {'yes' if final < 0.5 else 'NO'} |")
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    atomic_write_json(
        out / "sanity_check.json",
        {
            "model": str(checkpoint.path),
            "photos": [str(p) for p in paths],
            "steps": names,
            "mean": table,
            "per_photo": correlations,
        },
    )
    atomic_write_text(out / "sanity_check.md", text)
    print(text)


if __name__ == "__main__":
    main()
