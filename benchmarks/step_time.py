"""Time per training step of the default network for each optimizer, interleaved in one process so that the ratio
holds on a machine whose speed drifts (the recipe log converts epochs into the default's time with it).

    python benchmarks/step_time.py [--batch-size 32] [--rounds 4] [--steps 25] [--profile]

A step is `heritage train`'s own (`train_one_epoch`, on a batch of random photos): batched augmentation, bf16
autocast forward where the CPU has native bf16, cross-entropy with label smoothing, backward, optimizer step.
Prints milliseconds per step and each optimizer's time relative to AdamW; with --profile, also where each
optimizer's step spends its time (torch.profiler, self time of each operator, in groups). Run it on a quiet
machine.
"""

from __future__ import annotations

import argparse
import time

import torch

from heritage_cnn.base.devices import mixed_precision
from heritage_cnn.data.decode import IMAGE_SIZE
from heritage_cnn.models.network import build_model
from heritage_cnn.training.config import OPTIMIZERS, TrainConfig
from heritage_cnn.training.distributed import Ranks
from heritage_cnn.training.epoch import Epoch, Network, TrainingData, train_one_epoch
from heritage_cnn.training.losses import TrainingLoss
from heritage_cnn.training.optim import Optimizer, Schedule, make_optimizer

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
    if args.steps < 3 or args.rounds < 1 or args.batch_size < 2:
        parser.error("--steps must be at least 3 (the warm-up's), --rounds at least 1, --batch-size at least 2")
    torch.manual_seed(0)
    images = torch.randint(0, 256, (args.batch_size, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8)
    labels = torch.randint(0, 10, (args.batch_size,))
    order = torch.arange(args.batch_size).repeat(args.steps)  # the same batch every step
    generator = torch.Generator().manual_seed(0)

    data = TrainingData(images, labels, args.batch_size, TrainConfig(data="-", out="-").augment, args.steps)

    def step_of(model: torch.nn.Module, name: str) -> Step:
        lr = 0.05 if name == "sgd" else TrainConfig.lr
        config = TrainConfig(data="-", out="-", optimizer=name, lr=lr, batch_size=args.batch_size, progress=False)
        return peak_rate_step(model, config)

    runs = {name: step_of(build_model().to(memory_format=torch.channels_last), name) for name in OPTIMIZERS}
    if args.stem_nchw:
        model = build_model().to(memory_format=torch.channels_last)
        model.stage1.block1 = StemInNCHW(model.stage1.block1)
        runs["muon, stem NCHW"] = step_of(model, "muon")

    timings = interleaved_ms(runs, data, order, generator, args.steps, args.rounds, warmup=3)
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
                step_ms(runs[name], data, order, generator, args.steps, args.steps)
            print(f"{name}: share of the step's operator time, {args.steps} steps under torch.profiler")
            shares, stem = profile_shares(prof)
            for group, share in shares.items():
                print(f"  {share:6.1%}  {group}")
            print(
                f"  {stem:6.1%}  of all this, on 64 x 64 tensors (augmenting the photos; the stem's conv, BN, ReLU, pool)"
            )


Step = tuple[Network, TrainingLoss, Optimizer, Schedule]  # what `train_one_epoch` takes besides the data and epoch


def step_ms(
    run: Step, data: TrainingData, order: torch.Tensor, generator: torch.Generator, total: int, count: int
) -> float:
    """Milliseconds per step of `run` over the last `count` steps of an epoch of `total` steps."""
    epoch = Epoch(0, 1, order, generator, first_step=total - count)
    start = time.perf_counter()
    train_one_epoch(*run, data, epoch)
    return (time.perf_counter() - start) / count * 1000


def interleaved_ms(
    runs: dict[str, Step],
    data: TrainingData,
    order: torch.Tensor,
    generator: torch.Generator,
    steps: int,
    rounds: int,
    warmup: int,
) -> dict[str, list[float]]:
    """Each run's milliseconds per step in `rounds` rounds of `steps` steps, the runs taking turns after `warmup`
    steps each: the machine's drift over minutes falls on every run alike."""
    for run in runs.values():
        step_ms(run, data, order, generator, steps, warmup)
    timings: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            timings[name].append(step_ms(run, data, order, generator, steps, steps))
    return timings


def peak_rate_step(model: torch.nn.Module, config: TrainConfig) -> Step:
    """What `train` hands `train_one_epoch` for `model`, at the peak learning rate throughout (no warm-up, no
    decay), on the CPU."""
    cpu = torch.device("cpu")
    network = Network(
        model=model,
        runner=model,
        normalise=lambda pixels: pixels.sub(0.5).div(0.25),
        ema=None,
        scaler=torch.amp.GradScaler("cuda", enabled=False),
        amp=mixed_precision(cpu, config.amp),
        device=cpu,
        ranks=Ranks(),
    )
    loss = TrainingLoss(label_smoothing=config.label_smoothing)
    return network, loss, make_optimizer(model, config), Schedule(config.lr, total_steps=10**9, warmup_steps=0)


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
