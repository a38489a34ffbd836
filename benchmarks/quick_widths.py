"""Training images per second of the quick network at two widths, float32, interleaved in one process (the recipe
log's "The quick recipe on an AVX2 CPU").

    python benchmarks/quick_widths.py [--steps 20] [--rounds 3] [--threads 1]

A step is `heritage train`'s own (`train_one_epoch`: batched augmentation, forward, cross-entropy with label
smoothing, backward, AdamW), on one batch of 32 random photos, in float32 whatever the CPU (what an AVX2 CPU
runs). Prints the best round of each network and the time ratio. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import time

import torch

from heritage_cnn.models.network import ModelConfig, build_model
from heritage_cnn.training.config import TrainConfig
from heritage_cnn.training.epoch import Epoch, TrainingData, train_one_epoch
from step_time import peak_rate_step

NETWORKS = {
    "24-48-96-192 (the quick network before)": ModelConfig(blocks=(1, 1, 1, 1)),
    "16-32-64-128 (the quick network now)": ModelConfig(widths=(16, 32, 64, 128), blocks=(1, 1, 1, 1)),
}
BATCH = 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = torch.randint(0, 256, (BATCH, 3, 64, 64), dtype=torch.uint8)
    labels = torch.randint(0, 10, (BATCH,))
    order = torch.arange(BATCH).repeat(args.steps)
    generator = torch.Generator().manual_seed(0)
    config = TrainConfig(data="-", out="-", optimizer="adamw", batch_size=BATCH, amp=False, progress=False)
    runs = {
        name: peak_rate_step(build_model(c).to(memory_format=torch.channels_last), config)
        for name, c in NETWORKS.items()
    }
    data = TrainingData(images, labels, BATCH, config.augment, args.steps)

    def seconds_per_image(name: str) -> float:
        start = time.perf_counter()
        train_one_epoch(*runs[name], data, Epoch(0, 1, order, generator))
        return (time.perf_counter() - start) / (args.steps * BATCH)

    for name in runs:  # warm-up
        seconds_per_image(name)
    best = {name: min(seconds_per_image(name) for _ in range(args.rounds)) for name in runs}
    first = next(iter(best.values()))
    print(f"{args.threads} thread(s), batch {BATCH}, best of {args.rounds} rounds of {args.steps} steps:")
    for name, value in best.items():
        print(f"  {name:42s} {1 / value:6.0f} img/s, {value / first:.2f}x the first")


if __name__ == "__main__":
    main()
