"""Prediction speed of the shipped model with each test-time augmentation mode (none, flip, multi).

    python benchmarks/bench_tta.py [--model CKPT] [--images 2048]

`Classifier.probabilities` on random 64 px uint8 images (decode excluded), batch 64, best of 3 runs
after a warm-up. The modes average the logits of 1, 2 and 7 views, so their cost is about 1x, 2x, 7x.
"""

from __future__ import annotations

import argparse
import time

import torch

from heritage_cnn.inference.classifier import Classifier
from heritage_cnn.models.views import TTA_MODES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint (default: the shipped model)")
    parser.add_argument("--images", type=int, default=2048)
    args = parser.parse_args()
    images = torch.randint(
        0, 256, (args.images, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    plain = None
    for mode in TTA_MODES:
        classifier = Classifier.load(args.model, tta=mode)
        classifier.probabilities(images[:256])  # warm-up
        best = 0.0
        for _ in range(3):
            started = time.perf_counter()
            classifier.probabilities(images)
            best = max(best, len(images) / (time.perf_counter() - started))
        plain = plain or best
        print(f"{mode:>5}: {best:6.0f} images/s ({plain / best:.1f}x the time of no TTA)", flush=True)


if __name__ == "__main__":
    main()
