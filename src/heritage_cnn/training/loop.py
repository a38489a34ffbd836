"""The training recipe, every knob named: AdamW, cross-entropy with label smoothing, warm-up + cosine.

Laid out as torchvision's reference script: `train_one_epoch` runs the steps, `validate` judges the
network, and `train` wires data, model, optimizer and checkpoints together. Distributed set-up lives
in `distributed`, the loss terms in `losses`, the resume state in `trainstate`.

Data are decoded once into uint8 tensors and augmented in batches in memory; the network runs in
channels_last. Each epoch's randomness comes from a generator seeded by (seed, epoch), and the
resume state stores the generator state, so `--resume` after an interruption reaches the same
result as an uninterrupted run on the same machine.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from heritage_cnn.base.devices import mixed_precision
from heritage_cnn.base.io import atomic_write_json, folder_lock, read_json
from heritage_cnn.data.augment import augment_batch
from heritage_cnn.data.folders import ImageSet, channel_stats
from heritage_cnn.inference.evaluate import predict_logits
from heritage_cnn.inference.openset_fit import fit_for_run
from heritage_cnn.models.checkpoint import Checkpoint, save_checkpoint
from heritage_cnn.models.network import HeritageNet, forward_flops, parameter_count
from heritage_cnn.training import state as trainstate
from heritage_cnn.training.distributed import (
    Ranks,
    check_replicas_agree,
    init_distributed,
    replicas_check_wanted,
)
from heritage_cnn.training.losses import (
    NonFiniteLossError,
    TrainingLoss,
    balanced_class_weights,
    check_teacher_classes,
    load_teachers,
)
from heritage_cnn.training.optim import Optimizer
from heritage_cnn.training.recipe import (
    RUNTIME_FIELDS,
    Log,
    TrainConfig,
    learning_rate,
    make_batch_mixer,
    make_ema,
    make_optimizer,
    prepare_data,
)


@dataclass
class TrainResult:
    out: Path
    checkpoint: Path
    history: list[dict[str, float]]
    classes: list[str]
    train_size: int
    val_size: int
    skipped: list[tuple[str, str]]
    seconds: float
    interrupted: bool = False
    # this process's place in a torchrun job: who reports, who must end hard
    ranks: Ranks = field(default_factory=Ranks)

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


@dataclass
class Session:
    """The pieces a training step touches, built once by `train` and handed to `train_one_epoch`."""

    config: TrainConfig
    model: torch.nn.Module  # the network whose weights are trained
    network: torch.nn.Module  # what the steps run: the model itself, or its DDP / compiled wrapper
    optimizer: Optimizer
    scaler: torch.amp.GradScaler
    criterion: TrainingLoss
    normalise: Callable[[torch.Tensor], torch.Tensor]
    ema: torch.nn.Module | None
    mixer: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None
    ranks: Ranks
    device: torch.device
    amp: tuple[bool, torch.dtype]
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int


def train_one_epoch(
    s: Session,
    images: torch.Tensor,
    labels: torch.Tensor,
    epoch: int,
    order: torch.Tensor,
    augment_generator: torch.Generator,
    first_step: int,
    partial: dict[str, float],
    stop: Callable[[int, int], bool],
) -> tuple[float, int | None]:
    """Run the steps of one epoch from `first_step`, adding loss and accuracy to `partial`.

    Returns (the last learning rate, the step count where `stop(epoch, step)` asked to stop or None).
    Raises NonFiniteLossError as soon as a loss is NaN or infinite, before anything is written."""
    config, ranks = s.config, s.ranks
    use_amp, amp_dtype = s.amp
    check_replicas = replicas_check_wanted(ranks)
    s.model.train()
    bar = _progress(range(first_step, s.steps_per_epoch), config.progress, f"epoch {epoch + 1}/{config.epochs}")
    lr = config.lr
    for step in bar:
        index = order[step * config.batch_size : (step + 1) * config.batch_size][ranks.rank :: ranks.world]
        batch = images[index]
        pixels = augment_batch(batch, config.augment, augment_generator)  # [0, 1]
        y = target = labels[index]
        if config.consistency_weight:  # a second, independently augmented view of the same images
            second = augment_batch(batch, config.augment, augment_generator)
            pixels, target = torch.cat([pixels, second]), torch.cat([y, y])
        if s.mixer is not None:  # on pixels (normalising is affine, so the same as mixing after it)
            pixels, target = s.mixer(pixels, y)
        x = s.normalise(pixels).contiguous(memory_format=torch.channels_last)
        lr = learning_rate(epoch * s.steps_per_epoch + step, s.total_steps, s.warmup_steps, config.lr)
        for group in s.optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(s.device.type, dtype=amp_dtype, enabled=use_amp):
            logits = s.network(x)
            loss, logits = s.criterion(logits, target, pixels, len(y))
        s.optimizer.zero_grad(set_to_none=True)
        s.scaler.scale(loss).backward()
        s.scaler.step(s.optimizer)
        s.scaler.update()
        if s.ema is not None:
            s.ema.update_parameters(s.model)
        if check_replicas:
            check_replicas_agree(s.model, ranks)
        value = loss.item()  # the step's one sync point: check it here, for free
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"the training loss became {value} at epoch {epoch + 1}, step {step + 1} (learning rate "
                f"{lr:.3g}): training diverged; try a lower --lr. The last good checkpoint is kept"
            )
        partial["loss_sum"] += value * len(y)
        partial["correct"] += int((logits.argmax(1) == y).sum())
        partial["seen"] += len(y)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(
                loss=f"{partial['loss_sum'] / partial['seen']:.3f}",
                acc=f"{partial['correct'] / partial['seen']:.3f}",
            )
        if stop(epoch, step) and step + 1 < s.steps_per_epoch and ranks.world == 1:  # distributed: at epoch end
            return lr, step + 1
    return lr, None


def validate(
    s: Session, judged: torch.nn.Module, val_set: ImageSet, judge_raw: bool
) -> tuple[list[float], torch.Tensor, torch.Tensor]:
    """Each process validates its share: (loss sum, correct, count, raw-weights correct), the logits, the labels.

    `judged` is the network that is saved (the moving average when there is one); with `judge_raw`
    the raw weights are judged too, to show what the average adds."""
    config, ranks = s.config, s.ranks
    shard = slice(ranks.rank, None, ranks.world)
    val_logits = predict_logits(judged, val_set.images[shard], s.normalise, config.eval_batch_size, s.device)
    val_labels = val_set.labels[shard].to(val_logits.device)
    raw_correct = float((val_logits.argmax(1) == val_labels).sum())
    if judge_raw:
        raw_logits = predict_logits(s.model, val_set.images[shard], s.normalise, config.eval_batch_size, s.device)
        raw_correct = float((raw_logits.argmax(1) == val_labels).sum())
    sums = [
        float(F.cross_entropy(val_logits, val_labels, reduction="sum")),
        float((val_logits.argmax(1) == val_labels).sum()),
        len(val_labels),
        raw_correct,
    ]
    return sums, val_logits, val_labels


def train(config: TrainConfig, log: Log = print, should_stop: Callable[[int, int], bool] | None = None) -> TrainResult:
    """Train a network from scratch (or resume one) and write the run folder.

    `should_stop(epoch, step)` is polled after every step like Ctrl-C is (tests use it to interrupt).
    The caller's thread count is restored on return: a library call leaves no global state behind.
    """
    threads = torch.get_num_threads()
    try:
        return _train(config, log, should_stop)
    finally:
        torch.set_num_threads(threads)


def _train(config: TrainConfig, log: Log, should_stop: Callable[[int, int], bool] | None) -> TrainResult:
    started = time.perf_counter()
    out = Path(config.out)
    if config.threads:
        torch.set_num_threads(config.threads)
    ranks, device = init_distributed(config.device, config.threads)
    if not ranks.main:  # only rank 0 logs and writes files
        log = _silent
    if config.batch_size % ranks.world:
        raise ValueError(f"--batch-size {config.batch_size} must be divisible by the {ranks.world} processes")
    out.mkdir(parents=True, exist_ok=True)
    if not ranks.main:  # rank 0 holds the folder for them all
        return _train_into(out, config, ranks, device, log, should_stop, started)
    with folder_lock(out, trainstate.RUN_LOCK, "trained into"):
        trainstate.claim_run_folder(out, config.resume, config.overwrite)
        return _train_into(out, config, ranks, device, log, should_stop, started)


def _train_into(
    out: Path,
    config: TrainConfig,
    ranks: Ranks,
    device: torch.device,
    log: Log,
    should_stop: Callable[[int, int], bool] | None,
    started: float,
) -> TrainResult:
    """train() in a run folder this process holds."""
    torch.manual_seed(config.seed)

    resuming = config.resume and trainstate.has_resume_state(out)
    if config.resume and not resuming:
        log(f"--resume: no earlier run in {out}, starting from scratch")
    if resuming:  # a resumed run is the same run: a changed recipe is refused, runtime settings may change
        saved = TrainConfig.from_dict(read_json(out / "config.json"))
        changed = config.recipe_differences(saved)
        if changed:
            raise ValueError(f"{out}: --resume with a recipe other than the run's: {'; '.join(changed)}")
        config = replace(saved, **{k: getattr(config, k) for k in RUNTIME_FIELDS if k != "out"})
    teachers = load_teachers(config.teachers, device)  # a wrong path fails now, not after decoding the photos
    all_images, train_set, val_set = prepare_data(config, log)
    if ranks.main:
        atomic_write_json(out / "config.json", config.to_dict())
        atomic_write_json(out / "skipped.json", [{"path": p, "reason": r} for p, r in all_images.skipped])
        atomic_write_json(
            out / "split.json",
            {"recipe": asdict(config.split), "train": len(train_set), "val": len(val_set), "val_paths": val_set.paths},
        )
    classes = train_set.classes
    mean, std = channel_stats(train_set.images)
    model = HeritageNet(replace(config.model, num_classes=len(classes)))
    flops = forward_flops(model)
    use_amp, amp_dtype = mixed_precision(device, config.amp)
    log(
        f"data: {len(train_set)} train / {len(val_set)} validation images (duplicate-aware stratified split, "
        f"seed {config.split.seed}), {len(classes)} classes; model: {parameter_count(model) / 1e6:.2f} M parameters, "
        f"{flops / 1e6:.0f} MFLOP per image; device: {device}"
        + (f" ({amp_dtype} autocast)" if use_amp else "")
        + (f", {ranks.world} processes" if ranks.world > 1 else "")
    )
    if config.sync_bn and ranks.world > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device=device, memory_format=torch.channels_last)
    optimizer = make_optimizer(model, config)
    network: torch.nn.Module = model
    if ranks.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        network = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        network = torch.compile(network)

    steps_per_epoch = max(1, len(train_set) // config.batch_size)  # drop the ragged last batch
    ema = make_ema(model, config.ema_decay)
    mixer = make_batch_mixer(config, len(classes))
    check_teacher_classes(config.teachers, teachers, classes)
    if teachers:
        log(
            f"distilling from {len(teachers)} teacher(s) (weight {config.distill_weight:g}, "
            f"temperature {config.distill_temperature:g}): {', '.join(config.teachers)}"
        )
    checkpoint = Checkpoint(ema.module if ema is not None else model, classes, mean, std, info={})
    history: list[dict[str, float]] = []
    start_epoch, start_step, best_acc = 0, 0, -1.0
    partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
    generator_state = global_state = None
    record = trainstate.provenance(train_set, device, amp_dtype if use_amp else None) if ranks.main else {}

    def save(name: str) -> None:
        checkpoint.info = trainstate.checkpoint_info(config, history, len(train_set), len(val_set), flops, record)
        save_checkpoint(out / name, checkpoint)

    if resuming:
        state, generator_state, global_state = trainstate.load_resume_state(out, optimizer, model, ema)
        history, best_acc = state["history"], state["best_val_accuracy"]
        start_epoch, start_step, partial = state["epoch"], state["step"], state["partial"]
        if ranks.main:  # a kill inside the last save may have left last.* a save behind the resume state
            save("last")
        log(f"resuming at epoch {start_epoch + 1}, step {start_step} of {steps_per_epoch}")

    def save_last(epoch: int, step: int, generator: torch.Generator) -> None:
        """The resume state first (one atomic file), then the user-facing pair."""
        if not ranks.main:
            return
        state = {"epoch": epoch, "step": step, "partial": partial, "history": history, "best_val_accuracy": best_acc}
        trainstate.save_resume_state(out, model, ema, optimizer, generator, state)
        trainstate.pause_for_tests("between the resume state and last.*")
        save("last")

    # The whole uint8 training set lives on the device; on a GPU it is copied once from pinned memory.
    pinned = device.type == "cuda"
    images = (train_set.images.pin_memory() if pinned else train_set.images).to(device, non_blocking=pinned)
    labels = train_set.labels.to(device)
    session = Session(
        config=config,
        model=model,
        network=network,
        optimizer=optimizer,
        scaler=torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16),
        criterion=TrainingLoss(
            label_smoothing=config.label_smoothing,
            class_weights=balanced_class_weights(train_set.labels, len(classes), device)
            if config.balanced_loss
            else None,
            teachers=teachers,
            distill_weight=config.distill_weight,
            distill_temperature=config.distill_temperature,
            consistency_weight=config.consistency_weight,
        ),
        normalise=checkpoint.normalise,
        ema=ema,
        mixer=mixer,
        ranks=ranks,
        device=device,
        amp=(use_amp, amp_dtype),
        steps_per_epoch=steps_per_epoch,
        total_steps=steps_per_epoch * config.epochs,
        warmup_steps=round(config.warmup_epochs * steps_per_epoch),
    )

    interrupted = False
    with trainstate.StopFlag() as flag:

        def stop(epoch: int, step: int) -> bool:
            if should_stop is not None and should_stop(epoch, step):
                flag.stop = True
            return flag.stop

        for epoch in range(start_epoch, config.epochs):
            generator, order, augment_generator = trainstate.epoch_randomness(
                config, epoch, len(train_set), ranks, device
            )
            first_step = 0
            if epoch == start_epoch and start_step:  # resume inside an epoch: replay its RNG state
                first_step = start_step
                generator.set_state(generator_state)
                torch.set_rng_state(global_state)
            else:
                partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
            tick = time.perf_counter()
            lr, stopped_at = train_one_epoch(
                session, images, labels, epoch, order, augment_generator, first_step, partial, stop
            )
            if stopped_at is not None:
                partial["seconds"] += time.perf_counter() - tick
                save_last(epoch, stopped_at, generator)
                log(f"stopped at epoch {epoch + 1}, step {stopped_at}; continue with --resume")
                interrupted = True
                break
            train_seconds = partial["seconds"] + time.perf_counter() - tick
            judge_raw = ema is not None and ((epoch + 1) % 5 == 0 or epoch + 1 == config.epochs)
            val_sums, _, _ = validate(session, checkpoint.model, val_set, judge_raw)
            loss_sum, correct, seen, val_loss_sum, val_correct, val_seen, raw_correct, stopping = ranks.sum(
                [partial["loss_sum"], partial["correct"], partial["seen"], *val_sums, float(flag.stop)]
            )
            flag.stop = stopping > 0
            if not math.isfinite(loss_sum + val_loss_sum):  # another process diverged, or the last step did
                raise NonFiniteLossError(
                    f"the loss became non-finite in epoch {epoch + 1}: training diverged; try a lower --lr. "
                    "The last good checkpoint is kept"
                )
            row = {
                "epoch": epoch + 1,
                "lr": lr,
                "train_loss": loss_sum / seen,
                "train_accuracy": correct / seen,
                "val_loss": val_loss_sum / val_seen,
                "val_accuracy": val_correct / val_seen,
                **({"raw_val_accuracy": raw_correct / val_seen if judge_raw else None} if ema is not None else {}),
                "epoch_seconds": train_seconds,
                "train_images_per_second": seen / max(train_seconds, 1e-9),
            }
            history.append(row)
            log(
                f"epoch {epoch + 1}/{config.epochs}  train loss {row['train_loss']:.3f} acc {row['train_accuracy']:.3f}  "
                f"val loss {row['val_loss']:.3f} acc {row['val_accuracy']:.4f}"
                + (f" (raw weights {row['raw_val_accuracy']:.4f})" if judge_raw else "")
                + "  "
                f"{row['train_images_per_second']:.0f} img/s  {train_seconds:.0f}s"
            )
            if row["val_accuracy"] > best_acc and ranks.main:
                best_acc = row["val_accuracy"]
                save("best")
            save_last(epoch + 1, 0, generator)
            if ranks.main:
                trainstate.write_history(out, history)
                trainstate.plot_curves(out, history)
            if flag.stop:
                log(f"stopped after epoch {epoch + 1}; continue with --resume")
                interrupted = epoch + 1 < config.epochs
                break

    if ranks.main and not interrupted:  # "none of these": the last weights' operating point, fitted on this split
        fit_for_run(checkpoint, train_set, val_set, log, save=lambda: save("last"))
    return TrainResult(
        out,
        out / "last.safetensors",
        history,
        classes,
        len(train_set),
        len(val_set),
        all_images.skipped,
        time.perf_counter() - started,
        interrupted,
        ranks,
    )


def _silent(message: str) -> None:
    """The log of processes other than rank 0."""


def _progress(iterable: range, enabled: bool, desc: str) -> Any:
    if not enabled or not sys.stderr.isatty():
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, unit="batch", leave=False, dynamic_ncols=True)


__all__ = ["TrainResult", "train", "train_one_epoch", "validate"]
