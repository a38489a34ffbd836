"""Time per training step of the default network for each optimizer, interleaved in one process so that the ratio
holds on a machine whose speed drifts (the recipe log converts epochs into the default's time with it).

    python benchmarks/step_time.py [--batch-size 32] [--rounds 4] [--steps 25]

A step is what `heritage train` does per batch: batched augmentation, bf16 autocast forward where the CPU has
native bf16, cross-entropy, backward, optimizer step. Prints milliseconds per step and each optimizer's time
relative to AdamW. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from heritage_cnn.augment import AugmentConfig, augment_batch
from heritage_cnn.devices import mixed_precision
from heritage_cnn.model import build_model
from heritage_cnn.recipe import OPTIMIZERS, TrainConfig, make_optimizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds per optimizer")
    parser.add_argument("--steps", type=int, default=25, help="steps per round")
    args = parser.parse_args()
    torch.manual_seed(0)
    use_amp, amp_dtype = mixed_precision(torch.device("cpu"), True)
    images = torch.randint(0, 256, (args.batch_size, 3, 64, 64), dtype=torch.uint8)
    labels = torch.randint(0, 10, (args.batch_size,))
    generator = torch.Generator().manual_seed(0)
    runs = {}
    for name in OPTIMIZERS:
        model = build_model().to(memory_format=torch.channels_last)
        config = TrainConfig(data="-", out="-", optimizer=name, lr=0.05 if name == "sgd" else TrainConfig.lr)
        runs[name] = (model, make_optimizer(model, config))

    def steps(name: str, count: int) -> float:
        model, optimizer = runs[name]
        start = time.perf_counter()
        for _ in range(count):
            x = augment_batch(images, AugmentConfig(), generator).sub_(0.5).div_(0.25)
            with torch.autocast("cpu", dtype=amp_dtype, enabled=use_amp):
                loss = F.cross_entropy(model(x.contiguous(memory_format=torch.channels_last)), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss.item()
        return (time.perf_counter() - start) / count * 1000

    for name in runs:  # warm-up
        steps(name, 3)
    timings: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name in runs:
            timings[name].append(steps(name, args.steps))
    adamw = sum(timings["adamw"])
    print(f"batch {args.batch_size}, {torch.get_num_threads()} threads, {args.rounds} x {args.steps} steps each:")
    for name, values in timings.items():
        print(
            f"  {name:6s} {sum(values) / len(values):6.1f} ms per step "
            f"(rounds: {', '.join(f'{v:.0f}' for v in values)}), {sum(values) / adamw:.2f}x AdamW"
        )


if __name__ == "__main__":
    main()
