"""Sanity check of the attribution maps (Adebayo et al. 2018) on the shipped model and real photos.

    python benchmarks/sanity_check.py [--model CKPT] [--data DIR] [--per-class 4] [--occlusion-per-class 1]

Re-initialises the weights from the top down (head.fc2, head.fc1, then each block, last stage first)
and scores, for every method and photo, the Spearman rank correlation between the trained model's
map and the randomised model's map (gradient maps: |map| summed over colour channels). A map that is
(nearly) constant scores 1.0, a failure. The rule (heritage_cnn.inside.sanity): a method passes when the
median over photos is below 0.5 once head.fc2 and head.fc1 are both random. Photos: --per-class from
each class of the model's own validation split, rebuilt from the checkpoint's recipe (the training
folder when the checkpoint has none); occlusion, 225 forward passes per map, on the first
--occlusion-per-class of them. Writes sanity_check.json and sanity_check.md to --out.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from datetime import date
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' own modules

from heritage_cnn.base.io import atomic_write_json, atomic_write_text
from heritage_cnn.data.folders import find_layout, load_images
from heritage_cnn.inside import explain, sanity
from heritage_cnn.models.checkpoint import load_checkpoint
from heritage_cnn.training.config import TrainConfig
from heritage_cnn.training.prepare import prepare_data
from run import default_data

HERE = Path(__file__).resolve().parent
warnings.filterwarnings("ignore", message=".*(backward hooks|required_grads|requires_grad).*")


def choose_photos(checkpoint, data: str, per_class: int, seed: int):
    """`per_class` photos of every class from the validation split (or the training folder), seeded."""
    recipe = checkpoint.info.get("recipe")
    if recipe:
        config = TrainConfig.from_dict({**recipe, "data": data, "out": "-", "progress": False})
        _, _, images = prepare_data(config, log=lambda _: None)
        source = (
            f"the model's validation split (rebuilt from its recipe: seed {config.split.seed}, {len(images)} images)"
        )
    else:
        images = load_images(find_layout(data).train, classes=checkpoint.classes, progress=False)
        source = f"the training folder ({len(images)} images; the checkpoint has no recipe to rebuild its split)"
    if images.classes != checkpoint.classes:
        sys.exit(f"{data}: classes {images.classes} differ from the model's {checkpoint.classes}")
    rng = np.random.default_rng(seed)
    labels = images.labels.numpy()
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(len(images.classes))]
    order = [int(picks[rank]) for rank in range(per_class) for picks in chosen if rank < len(picks)]
    return images.subset(order), source  # round-robin: the first photos cover every class once


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint (default: the shipped model)")
    parser.add_argument("--member", type=int, default=0, help="network of an ensemble to look inside (default 0)")
    parser.add_argument("--data", default=default_data())
    parser.add_argument("--per-class", type=int, default=4, help="photos per class (default 4: 40 photos)")
    parser.add_argument("--occlusion-per-class", type=int, default=1, help="of those, how many get occlusion")
    parser.add_argument("--seed", type=int, default=0, help="seed of the photo choice and of the re-initialisation")
    parser.add_argument("--out", default=str(HERE / "out"))
    args = parser.parse_args()
    if not Path(args.data).is_dir():
        sys.exit(f"no data at {args.data}: pass --data or set HERITAGE_DATA")

    started = time.perf_counter()
    checkpoint = load_checkpoint(args.model).member(args.member)
    images, source = choose_photos(checkpoint, args.data, args.per_class, args.seed)
    occlusion_photos = args.occlusion_per_class * len(checkpoint.classes)
    photos = [checkpoint.normalise(images.images[i : i + 1]) for i in range(len(images))]
    with torch.no_grad():
        model = checkpoint.model.eval()
        targets = [int(model(x).argmax()) for x in photos]  # explain the trained model's own prediction
    current = {"photo": 0}

    def explainer(model: torch.nn.Module, x: torch.Tensor, target: int) -> dict[str, torch.Tensor]:
        methods = [m for m in explain.METHODS if m != "occlusion" or current["photo"] < occlusion_photos]
        return {m: explain.attribute(m, model, x, target, channels="sum") for m in methods}

    def on_photo(index: int) -> None:
        current["photo"] = index + 1
        print(f"{index + 1}/{len(photos)} {Path(images.paths[index]).name} ({time.perf_counter() - started:.0f} s)")

    scores = sanity.cascade_scores(explainer, checkpoint.model, photos, targets, args.seed, on_photo)
    summaries = sanity.summarise_scores(scores)
    seconds = time.perf_counter() - started
    steps = list(next(iter(summaries.values())))
    machine = f"{platform.platform()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads"
    command = "python benchmarks/sanity_check.py " + " ".join(sys.argv[1:])
    rule = (
        f"passes: median rho < {sanity.THRESHOLD} once {' and '.join(sanity.TOP_LAYERS)} are re-initialised "
        f"(a (nearly) constant map scores {sanity.FAILED:.0f}, a failure)"
    )
    lines = [
        f"Spearman rank correlation, trained vs. randomised map, per photo: median [25th-75th percentile] over "
        f"{len(photos)} photos ({args.per_class} per class) from {source}; occlusion on the first "
        f"{occlusion_photos}. Model {checkpoint.path}. Columns: re-initialised from the top down to and including "
        f"that block. Gradient maps compared as |map| summed over colour channels. {rule}. "
        f"`{command.strip()}`, {date.today()}, {machine}, {seconds / 60:.1f} min.\n",
        "| method | photos | " + " | ".join(steps) + " | passes |",
        "|---" * (len(steps) + 3) + "|",
    ]
    for method, per_step in summaries.items():
        cells = " | ".join(per_step[s].cell() for s in steps)
        passes = "yes" if sanity.verdict(per_step) else "**NO**"
        lines.append(f"| {explain.LABELS[method]} | {per_step[steps[0]].photos} | {cells} | {passes} |")
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    atomic_write_json(
        out / "sanity_check.json",
        {
            "model": str(checkpoint.path),
            "source": source,
            "photos": images.paths,
            "targets": targets,
            "occlusion_photos": occlusion_photos,
            "steps": steps,
            "rule": rule,
            "summary": {
                m: {s: {**vars(v), "passes": v.passes} for s, v in per_step.items()}
                for m, per_step in summaries.items()
            },
            "passes": {m: sanity.verdict(per_step) for m, per_step in summaries.items()},
            "per_photo": {m: {s: [[v, why] for v, why in pairs] for s, pairs in p.items()} for m, p in scores.items()},
            "seconds": round(seconds, 1),
            "machine": machine,
            "date": str(date.today()),
        },
    )
    atomic_write_text(out / "sanity_check.md", text)
    print(text)


if __name__ == "__main__":
    main()
