"""Time a training step of the quick network with its stem's pool last (conv, batch norm, ReLU, then the 2x2
max-pool) against two variants, interleaved in one process: the pool first, before batch norm and ReLU (they then
run on 32 x 32 maps), and the stem without batch norm and ReLU (the most the stem's element-wise work can cost).

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/stem_order.py [--rounds 4] [--steps 40]

A timing only: the variants are not trained here, and moving the pool changes the network (`ModelConfig.stem_pool_first`;
benchmarks/recipes.md, "Where the AVX2 demo's time goes"). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from heritage_cnn.data.decode import IMAGE_SIZE
from heritage_cnn.models.network import build_model
from heritage_cnn.training.config import TrainConfig
from heritage_cnn.training.epoch import TrainingData
from heritage_cnn.training.recipes import QUICK
from step_time import interleaved_ms, peak_rate_step


def variant(kind: str) -> nn.Module:
    """The quick network with its stem in `kind`'s order (the recipe's own choice set aside)."""
    torch.manual_seed(0)
    model = build_model(**{**QUICK["model"], "stem_pool_first": kind == "pool first"})
    if kind == "no stem BN, ReLU":
        model.stage1.block1.bn, model.stage1.block1.relu = nn.Identity(), nn.Identity()
    return model.to(memory_format=torch.channels_last)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    batch = TrainConfig.batch_size
    torch.manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8)
    labels = torch.randint(0, 10, (batch,))
    order = torch.arange(batch).repeat(args.steps)
    generator = torch.Generator().manual_seed(0)
    config = TrainConfig(data="-", out="-", optimizer=QUICK["optimizer"], progress=False)
    data = TrainingData(images, labels, batch, config.augment, args.steps)
    runs = {kind: peak_rate_step(variant(kind), config) for kind in ("pool last", "pool first", "no stem BN, ReLU")}
    timings = interleaved_ms(runs, data, order, generator, args.steps, args.rounds, warmup=5)
    base = sum(timings["pool last"])
    print(f"batch {batch}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}:")
    for kind, values in timings.items():
        rounds = ", ".join(f"{v:.1f}" for v in values)
        print(f"  {kind:18s} {sum(values) / len(values):6.1f} ms per step (rounds {rounds}), {sum(values) / base:.2f}x")


if __name__ == "__main__":
    main()
