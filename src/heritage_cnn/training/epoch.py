"""One epoch of training steps (`train_one_epoch`) and one validation pass (`validate`): what `loop.train` repeats.

As in torchvision's reference script, the epoch takes the network, the loss, the optimizer and the data; the
pieces are built once per run by `loop` and described by the dataclasses below.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from heritage_cnn.data.augment import AugmentConfig, augment_batch
from heritage_cnn.data.folders import ImageSet
from heritage_cnn.inference.evaluate import predict_logits
from heritage_cnn.training.distributed import Ranks, check_replicas_agree, replicas_check_wanted
from heritage_cnn.training.losses import NonFiniteLossError, TrainingLoss
from heritage_cnn.training.optim import Optimizer, Schedule


@dataclass
class Network:
    """The network under training, and how a step runs it."""

    model: torch.nn.Module  # the network whose weights are trained
    runner: torch.nn.Module  # what the steps run: the model itself, or its DDP / compiled wrapper
    normalise: Callable[[torch.Tensor], torch.Tensor]  # [0, 1] pixels -> the network's input
    ema: torch.nn.Module | None  # the weight average, updated after every step
    scaler: torch.amp.GradScaler  # loss scaling, on for float16 autocast only
    amp: tuple[bool, torch.dtype]  # autocast on?, its dtype
    device: torch.device
    ranks: Ranks  # this process's place in a torchrun job: its share of each batch


@dataclass
class TrainingData:
    """The training set on the device, and how an epoch cuts it into batches."""

    images: torch.Tensor  # uint8, the whole training set
    labels: torch.Tensor
    batch_size: int
    augment: AugmentConfig
    steps_per_epoch: int  # the ragged last batch is dropped
    outliers: torch.Tensor | None = None  # uint8 photos of none of the classes (outlier exposure), or None

    @classmethod
    def on_device(
        cls,
        train_set: ImageSet,
        outliers: torch.Tensor | None,
        batch_size: int,
        augment: AugmentConfig,
        steps_per_epoch: int,
        device: torch.device,
    ) -> TrainingData:
        """The whole uint8 training set (and outliers) on the device; on a GPU copied once from pinned memory."""
        pinned = device.type == "cuda"

        def placed(images: torch.Tensor) -> torch.Tensor:
            return (images.pin_memory() if pinned else images).to(device, non_blocking=pinned)

        return cls(
            placed(train_set.images),
            train_set.labels.to(device),
            batch_size,
            augment,
            steps_per_epoch,
            None if outliers is None else placed(outliers),
        )


def fresh_sums() -> dict[str, float]:
    """An epoch's running sums before its first step (saved as they are in the resume state)."""
    return {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}


@dataclass
class Epoch:
    """What one epoch adds: its place, its randomness, the step it starts at and its running sums."""

    index: int  # from 0
    epochs: int  # in the run
    order: torch.Tensor  # the batch order over the training set, the same on every rank
    augment_generator: torch.Generator
    first_step: int = 0  # inside the epoch, when a run resumes there
    partial: dict[str, float] = field(default_factory=fresh_sums)  # loss_sum, correct, seen (and seconds)
    stop: Callable[[int, int], bool] = lambda epoch, step: False  # polled after every step
    progress: bool = False  # a progress bar on a terminal


def diverged(what: str, saved: bool) -> NonFiniteLossError:
    """The error of a run whose loss became NaN or infinite (`what`: where), saying whether a checkpoint was
    `saved` before it (an epoch had ended, or the run resumed from one)."""
    kept = "The last good checkpoint is kept" if saved else "No checkpoint was written: no epoch had ended"
    return NonFiniteLossError(f"{what}: training diverged; try a lower --lr. {kept}")


def train_one_epoch(
    network: Network,
    loss: TrainingLoss,
    optimizer: Optimizer,
    schedule: Schedule,
    data: TrainingData,
    epoch: Epoch,
) -> tuple[float, int | None]:
    """Run the steps of one epoch from `epoch.first_step`, adding loss and accuracy to `epoch.partial`.

    Returns (the last learning rate, the step count where `epoch.stop(epoch, step)` asked to stop or None).
    Raises NonFiniteLossError as soon as a loss is NaN or infinite, before anything is written."""
    ranks, partial = network.ranks, epoch.partial
    use_amp, amp_dtype = network.amp
    check_replicas = replicas_check_wanted(ranks)
    network.model.train()
    steps = range(epoch.first_step, data.steps_per_epoch)
    bar = _progress(steps, epoch.progress, f"epoch {epoch.index + 1}/{epoch.epochs}")
    lr = schedule.peak
    for step in bar:
        index = epoch.order[step * data.batch_size : (step + 1) * data.batch_size][ranks.rank :: ranks.world]
        batch, y = data.images[index], data.labels[index]
        pixels = augment_batch(batch, data.augment, epoch.augment_generator)  # [0, 1]
        if loss.views == 2:  # a second, independently augmented view of the same images
            pixels = torch.cat([pixels, augment_batch(batch, data.augment, epoch.augment_generator)])
        pixels, target = loss.targets(pixels, y)
        seen, outliers = pixels, 0
        if data.outliers is not None:  # as many as the step's photos, drawn and augmented by the epoch's generator
            outliers, pool = len(y), data.outliers
            drawn = torch.randint(len(pool), (outliers,), generator=epoch.augment_generator, device=pool.device)
            seen = torch.cat([pixels, augment_batch(pool[drawn], data.augment, epoch.augment_generator)])
        x = network.normalise(seen).contiguous(memory_format=torch.channels_last)
        lr = schedule(epoch.index * data.steps_per_epoch + step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(network.device.type, dtype=amp_dtype, enabled=use_amp):
            logits = network.runner(x)
            value, logits = loss(logits, target, pixels, len(y), outliers)
        optimizer.zero_grad(set_to_none=True)
        network.scaler.scale(value).backward()
        network.scaler.step(optimizer)
        network.scaler.update()
        if network.ema is not None:
            network.ema.update_parameters(network.model)
        if check_replicas:
            check_replicas_agree(network.model, ranks)
        _add_step(partial, value.item(), logits, y, lr, epoch, step)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(
                loss=f"{partial['loss_sum'] / partial['seen']:.3f}", acc=f"{partial['correct'] / partial['seen']:.3f}"
            )
        stopping = epoch.stop(epoch.index, step) and step + 1 < data.steps_per_epoch
        if stopping and ranks.world == 1:  # distributed runs stop at the end of an epoch, all ranks together
            return lr, step + 1
    return lr, None


def _add_step(
    partial: dict[str, float], value: float, logits: torch.Tensor, y: torch.Tensor, lr: float, epoch: Epoch, step: int
) -> None:
    """Add a step's loss and correct answers to the epoch's sums; `value` is the step's one sync point (`.item()`),
    so the loss is checked here, for free."""
    if not math.isfinite(value):
        raise diverged(
            f"the training loss became {value} at epoch {epoch.index + 1}, step {step + 1} (learning rate {lr:.3g})",
            saved=epoch.index > 0 or epoch.first_step > 0,
        )
    partial["loss_sum"] += value * len(y)
    partial["correct"] += int((logits.argmax(1) == y).sum())
    partial["seen"] += len(y)


def validate(
    network: Network, judged: torch.nn.Module, val_set: ImageSet, batch_size: int, judge_raw: bool
) -> tuple[list[float], torch.Tensor, torch.Tensor]:
    """Each process validates its share: (loss sum, correct, count, raw-weights correct), the logits, the labels.

    `judged` is the network that is saved (the moving average when there is one); with `judge_raw`
    the raw weights are judged too, to show what the average adds."""
    ranks, normalise, device = network.ranks, network.normalise, network.device
    shard = slice(ranks.rank, None, ranks.world)
    val_logits = predict_logits(judged, val_set.images[shard], normalise, batch_size, device)
    val_labels = val_set.labels[shard].to(val_logits.device)
    raw_correct = float((val_logits.argmax(1) == val_labels).sum())
    if judge_raw:
        raw_logits = predict_logits(network.model, val_set.images[shard], normalise, batch_size, device)
        raw_correct = float((raw_logits.argmax(1) == val_labels).sum())
    sums = [
        float(F.cross_entropy(val_logits, val_labels, reduction="sum")),
        float((val_logits.argmax(1) == val_labels).sum()),
        len(val_labels),
        raw_correct,
    ]
    return sums, val_logits, val_labels


@torch.no_grad()
def precise_batch_norm(
    model: torch.nn.Module,
    images: torch.Tensor,
    normalise: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int,
    device: torch.device,
    outliers: torch.Tensor | None = None,
) -> None:
    """Every batch norm's statistics in `model` recomputed over `images` (uint8, not augmented) as the average of
    their batches' statistics (`torch.optim.swa_utils.update_bn`; Wu & Johnson 2021, "precise BN"), in float32.
    With `outliers` (a run with `--outliers`) each batch holds as many of them as photos, in order, as training's
    batches did: statistics of the photos alone would normalise every layer differently from how it was trained
    (docs/open_set.md, "Outlier exposure from the first step, measured"). Every process of a distributed run
    computes the same statistics over all the images."""
    from torch.optim.swa_utils import update_bn

    def batches() -> Iterator[torch.Tensor]:
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size].to(device)
            if outliers is not None:
                drawn = torch.arange(start, start + len(batch), device=outliers.device) % len(outliers)
                batch = torch.cat([batch, outliers[drawn].to(device)])
            yield normalise(batch)

    update_bn(batches(), model)


def _progress(iterable: range, enabled: bool, desc: str) -> Any:
    if not enabled or not sys.stderr.isatty():
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, unit="batch", leave=False, dynamic_ncols=True)


__all__ = [
    "Epoch",
    "Network",
    "TrainingData",
    "diverged",
    "fresh_sums",
    "precise_batch_norm",
    "train_one_epoch",
    "validate",
]
