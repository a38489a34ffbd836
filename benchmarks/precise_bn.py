"""Precise batch norm on trained runs: each run's final weights with every batch norm's statistics recomputed as an
exact average over its training split's photos (not augmented), against the statistics training left behind.

    python benchmarks/precise_bn.py RUN [RUN ...] [--batch-size 256]
    python benchmarks/precise_bn.py fast default --data DATA      the shipped models (the default split of DATA)

Reads each run folder's config.json (its data and split) and last.safetensors; writes nothing. Validation accuracy
is on the run's own duplicate-aware validation split, float32, one view, as `heritage demo` reads it. The rule this
answers: benchmarks/recipes.md, "The stem's order and the last epochs' batch-norm statistics".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch.optim.swa_utils import update_bn

from heritage_cnn.data.folders import reuse_decoded
from heritage_cnn.models.checkpoint import Checkpoint, load_checkpoint
from heritage_cnn.training.config import TrainConfig
from heritage_cnn.training.prepare import prepare_data


def batches(checkpoint: Checkpoint, images: torch.Tensor, size: int) -> list[torch.Tensor]:
    return [checkpoint.normalise(images[i : i + size]) for i in range(0, len(images), size)]


@torch.no_grad()
def accuracy(checkpoint: Checkpoint, images: torch.Tensor, labels: torch.Tensor, size: int) -> float:
    checkpoint.model.eval()
    predicted = torch.cat([checkpoint.model(x).argmax(1) for x in batches(checkpoint, images, size)])
    return (predicted == labels).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders, or the names of shipped models")
    parser.add_argument("--data", help="the data folder of shipped models (run folders name their own)")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    changes = []
    print("| run | validation accuracy, as trained | with precise batch norm | change |\n|---|---|---|---|")
    for name in args.runs:
        run = Path(name)
        if run.is_dir():
            config = TrainConfig.from_dict(json.loads((run / "config.json").read_text(encoding="utf-8")))
            checkpoint = load_checkpoint(run / "last.safetensors")
        else:  # a shipped model: trained on the default split of the data set's training folder
            config, checkpoint = TrainConfig(data=args.data, out="-"), load_checkpoint(name)
        _, train_set, val_set = prepare_data(config, log=lambda _: None)
        before = accuracy(checkpoint, val_set.images, val_set.labels, args.batch_size)
        update_bn(batches(checkpoint, train_set.images, args.batch_size), checkpoint.model)
        after = accuracy(checkpoint, val_set.images, val_set.labels, args.batch_size)
        changes.append(after - before)
        print(f"| {run.name} | {before:.4f} | {after:.4f} | {100 * (after - before):+.2f} pt |", flush=True)
    print(f"mean change {100 * sum(changes) / len(changes):+.2f} pt, smallest {100 * min(changes):+.2f} pt")


if __name__ == "__main__":
    with reuse_decoded():  # runs of one split: the folder decoded and split once
        main()
