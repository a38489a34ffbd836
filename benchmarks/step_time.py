"""Time per training step of the default network for each optimizer, interleaved in one process so that the ratio
holds on a machine whose speed drifts (the recipe log converts epochs into the default's time with it).

    python benchmarks/step_time.py [--batch-size 32] [--rounds 4] [--steps 25] [--profile]

A step is what `heritage train` does per batch: batched augmentation, bf16 autocast forward where the CPU has
native bf16, cross-entropy, backward, optimizer step. Prints milliseconds per step and each optimizer's time
relative to AdamW; with --profile, also where each optimizer's step spends its time (torch.profiler, self time
of each operator, in groups). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
import torch.nn.functional as F

from heritage_cnn.augment import AugmentConfig, augment_batch
from heritage_cnn.decode import IMAGE_SIZE
from heritage_cnn.devices import mixed_precision
from heritage_cnn.model import build_model
from heritage_cnn.recipe import OPTIMIZERS, TrainConfig, make_optimizer

# operator -> group, for --profile; an operator not named here counts as "other"
GROUPS = {
    "aten::mkldnn_convolution": "convolution",
    "aten::convolution_backward": "convolution",
    "aten::native_batch_norm": "batch norm",
    "aten::native_batch_norm_backward": "batch norm",
    "aten::max_pool2d_with_indices": "max-pool",
    "aten::max_pool2d_with_indices_backward": "max-pool",
    "aten::clamp_min_": "ReLU",
    "aten::threshold_backward": "ReLU",
    "aten::mm": "matrix products (Muon's Newton-Schulz, the head)",
    "aten::addmm": "matrix products (Muon's Newton-Schulz, the head)",
}
FULL_SIZE = (IMAGE_SIZE, IMAGE_SIZE)  # the photos and the stem's maps: every operator on them is also counted apart


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds per optimizer")
    parser.add_argument("--steps", type=int, default=25, help="steps per round")
    parser.add_argument("--profile", action="store_true", help="also show where each optimizer's step goes")
    parser.add_argument(
        "--stem-nchw",
        action="store_true",
        help="also time Muon with the stem's convolution, batch norm and ReLU in NCHW layout (the pool and the rest "
        "stay channels_last): oneDNN's channels_last batch norm is slow on 24 channels at 64 x 64",
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    use_amp, amp_dtype = mixed_precision(torch.device("cpu"), True)
    images = torch.randint(0, 256, (args.batch_size, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8)
    labels = torch.randint(0, 10, (args.batch_size,))
    generator = torch.Generator().manual_seed(0)

    def with_optimizer(model: torch.nn.Module, name: str) -> tuple[torch.nn.Module, Any]:
        config = TrainConfig(data="-", out="-", optimizer=name, lr=0.05 if name == "sgd" else TrainConfig.lr)
        return model, make_optimizer(model, config)

    runs = {name: with_optimizer(build_model().to(memory_format=torch.channels_last), name) for name in OPTIMIZERS}
    if args.stem_nchw:
        model = build_model().to(memory_format=torch.channels_last)
        model.stage1.block1 = StemInNCHW(model.stage1.block1)
        runs["muon, stem NCHW"] = with_optimizer(model, "muon")

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
            f"  {name:15s} {sum(values) / len(values):6.1f} ms per step "
            f"(rounds: {', '.join(f'{v:.0f}' for v in values)}), {sum(values) / adamw:.2f}x AdamW"
        )
    if args.profile:
        for name in runs:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
                steps(name, args.steps)
            print(f"{name}: share of the step's operator time, {args.steps} steps under torch.profiler")
            shares, stem = profile_shares(prof)
            for group, share in shares.items():
                print(f"  {share:6.1%}  {group}")
            print(
                f"  {stem:6.1%}  of all this, on 64 x 64 tensors (augmenting the photos; the stem's conv, BN, ReLU, pool)"
            )


class StemInNCHW(torch.nn.Module):
    """Runs the wrapped block on an NCHW copy of its input and hands its output back as channels_last."""

    def __init__(self, block: torch.nn.Module) -> None:
        super().__init__()
        self.block = block.to(memory_format=torch.contiguous_format)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x.contiguous()).contiguous(memory_format=torch.channels_last)


def profile_shares(prof: torch.profiler.profile) -> tuple[dict[str, float], float]:
    """Self time of each group of operators (GROUPS) as a share of all operators' self time, largest first, and
    the share of the operators whose first input is a full-size (64 x 64) tensor: the photos' augmentation and the
    stem, where the cost of the full resolution shows."""
    events = prof.key_averages(group_by_input_shape=True)
    total = sum(event.self_cpu_time_total for event in events)
    shares: dict[str, float] = {}
    stem = 0.0
    for event in events:
        group = GROUPS.get(event.key, "other")
        shares[group] = shares.get(group, 0.0) + event.self_cpu_time_total / total
        shapes = event.input_shapes
        if shapes and len(shapes[0]) == 4 and tuple(shapes[0][2:]) == FULL_SIZE:
            stem += event.self_cpu_time_total / total
    return dict(sorted(shares.items(), key=lambda item: -item[1])), stem


if __name__ == "__main__":
    main()
