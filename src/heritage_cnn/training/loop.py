"""Training a run: `train` sets it up (or resumes it), runs its epochs and writes the run folder.

Laid out as torchvision's reference script, in three parts read top to bottom: the set-up (`_set_up`, with
`_resume`), the session (`_session`, the epoch loop), and the end of each epoch (`_end_epoch`: validation,
history, checkpoints, resume state). The recipe is `TrainConfig`'s (Muon on the hidden filters by default), the
steps and validation are in `epoch`, the objective in `losses`, the optimizer, its schedule and the weight
average in `optim`, the resume state in `state`, distributed set-up in `distributed`.

Data are decoded once into uint8 tensors and augmented in batches in memory; the network runs in
channels_last. Each epoch's randomness comes from a generator seeded by (seed, epoch), and the
resume state stores the generator state, so `--resume` after an interruption reaches the same
result as an uninterrupted run on the same machine.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from heritage_cnn.base.devices import mixed_precision
from heritage_cnn.base.io import atomic_write_json, folder_lock
from heritage_cnn.data.folders import ImageSet, channel_stats, find_layout
from heritage_cnn.inference.openset_fit import fit_for_run
from heritage_cnn.models.checkpoint import Checkpoint, save_checkpoint
from heritage_cnn.models.network import HeritageNet, forward_flops, parameter_count
from heritage_cnn.training import preflight
from heritage_cnn.training import state as trainstate
from heritage_cnn.training.config import Log, TrainConfig
from heritage_cnn.training.distributed import Ranks, init_distributed, run_on_main
from heritage_cnn.training.epoch import (
    Epoch,
    Network,
    TrainingData,
    diverged,
    fresh_sums,
    precise_batch_norm,
    train_one_epoch,
    validate,
)
from heritage_cnn.training.losses import TrainingLoss, check_teacher_classes, load_teachers
from heritage_cnn.training.optim import Optimizer, Schedule, make_ema, make_optimizer
from heritage_cnn.training.prepare import check_class_folders, load_outliers, prepare_data, relabel_record
from heritage_cnn.training.resume_checks import check_same_data, run_config, split_record


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
    # the saved network's validation where it differs from the last epoch's (`--bn-statistics precise`)
    validation: dict[str, float] = field(default_factory=dict)

    @property
    def final(self) -> dict[str, float]:
        """The last epoch's row, with the saved network's validation."""
        return (self.history[-1] if self.history else {}) | self.validation


@dataclass
class Run:
    """A run in the folder this process holds: what its epochs take, and where it stands."""

    out: Path
    config: TrainConfig
    all_images: ImageSet
    train_set: ImageSet
    val_set: ImageSet
    network: Network
    loss: TrainingLoss
    optimizer: Optimizer
    schedule: Schedule
    data: TrainingData
    checkpoint: Checkpoint  # what is saved: the weight average when there is one, else the model
    flops: int
    record: dict[str, Any]  # the provenance every checkpoint records (rank 0 only)
    history: list[dict[str, float]] = field(default_factory=list)
    best_acc: float = -1.0
    start_epoch: int = 0
    start_step: int = 0  # inside start_epoch, when the run resumes there
    partial: dict[str, float] = field(default_factory=fresh_sums)  # the current epoch's running sums
    rng_states: tuple[torch.Tensor, torch.Tensor] | None = None  # (epoch generator, global) at start_step

    def save(self, name: str) -> None:
        """The user-facing checkpoint pair `name`.safetensors / .json."""
        self.checkpoint.info = trainstate.checkpoint_info(
            self.config, self.history, len(self.train_set), len(self.val_set), self.flops, self.record
        )
        save_checkpoint(self.out / name, self.checkpoint)

    def save_last(self, epoch: int, step: int, generator: torch.Generator) -> None:
        """The resume state first (one atomic file), then last.*: a kill between the two leaves a whole resume
        state, and `_resume` writes last.* again from it."""
        if not self.network.ranks.main:
            return
        state = {
            "epoch": epoch,
            "step": step,
            "partial": self.partial,
            "history": self.history,
            "best_val_accuracy": self.best_acc,
            "outliers_sha256": self.record.get("outliers", {}).get("sha256"),
            "processes": self.network.ranks.world,  # what --resume compares its own count with (`run_config`)
        }
        trainstate.save_resume_state(self.out, self.network.model, self.network.ema, self.optimizer, generator, state)
        self.save("last")


def train(config: TrainConfig, log: Log = print, should_stop: Callable[[int, int], bool] | None = None) -> TrainResult:
    """Train a network from scratch (or resume one) and write the run folder.

    `should_stop(epoch, step)` is polled after every step like Ctrl-C is (tests use it to interrupt).
    The caller's thread count and random generators are restored on return or error: a library call leaves no
    global state behind.
    """
    threads = torch.get_num_threads()
    try:
        return _train(config, log, should_stop)
    finally:
        torch.set_num_threads(threads)


def _train(config: TrainConfig, log: Log, should_stop: Callable[[int, int], bool] | None) -> TrainResult:
    started = time.perf_counter()
    out = Path(config.out)
    preflight.check_outputs(config)
    preflight.check_outliers(config)
    if config.threads:
        torch.set_num_threads(config.threads)
    ranks, device = init_distributed(config.device, config.threads)
    if not ranks.main:  # only rank 0 logs and writes files
        log = _silent
    if config.batch_size % ranks.world:
        raise ValueError(f"--batch-size {config.batch_size} must be divisible by the {ranks.world} processes")
    # a run folder is made only for data that can train: a mistyped --data, or one class, leaves nothing
    check_class_folders(find_layout(config.data).train)
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []  # the run records a fresh run wrote (`_write_run_record`)
    with contextlib.ExitStack() as held, trainstate.caller_random_state(device):

        def claim() -> None:  # rank 0 holds the folder for them all
            held.enter_context(folder_lock(out, trainstate.RUN_LOCK, "trained into"))
            trainstate.claim_run_folder(out, config.resume, config.overwrite)

        run_on_main(ranks, claim)  # a folder in use, or holding another run, ends every process
        try:
            return _train_into(out, config, ranks, device, log, should_stop, started, written)
        except BaseException:
            if ranks.main:  # failed before its first checkpoint: the same command can be run again
                trainstate.abandon_run_folder(out, written, made)
            raise


def _train_into(
    out: Path,
    config: TrainConfig,
    ranks: Ranks,
    device: torch.device,
    log: Log,
    should_stop: Callable[[int, int], bool] | None,
    started: float,
    written: list[str],
) -> TrainResult:
    """train() in a run folder this process holds; `written` gathers the run records a fresh run writes."""
    run = _set_up(out, config, ranks, device, log, written)
    interrupted = _session(run, log, should_stop)
    validation = _precise_statistics(run, log) if config.bn_statistics == "precise" and not interrupted else {}
    if ranks.main and not interrupted:  # "none of these": the last weights' operating point, fitted on this split
        fit_for_run(run.checkpoint, run.train_set, run.val_set, log, save=lambda: run.save("last"))
    return TrainResult(
        out,
        out / "last.safetensors",
        run.history,
        run.train_set.classes,
        len(run.train_set),
        len(run.val_set),
        run.all_images.skipped,
        time.perf_counter() - started,
        interrupted,
        ranks,
        validation,
    )


# ----------------------------------------------------------------------------------------------------------------
# Set-up and resume
# ----------------------------------------------------------------------------------------------------------------


def _set_up(out: Path, config: TrainConfig, ranks: Ranks, device: torch.device, log: Log, written: list[str]) -> Run:
    """Decode the data and build the network, its optimizer and its loss; restore the state of a resumed run."""
    trainstate.seed_globals(config.seed, device)  # the network's initial weights
    config, resuming = run_config(out, config, log, ranks.world)
    teachers = load_teachers(config.teachers, device)  # a wrong path fails now, not after decoding the photos
    all_images, train_set, val_set = prepare_data(config, log)
    outliers, outlier_record, outliers_skipped = load_outliers(config, train_set.images.shape[-1], log)
    classes = train_set.classes
    mean, std = channel_stats(train_set.images)
    preflight.note_batch(config, len(train_set), log)
    preflight.note_split(config, log)
    preflight.check_checkpoint_loads(config, classes, mean, std, train_set.images.shape[-1], out / "last.json")

    def record() -> None:  # checked before the run folder is written again: a refusal leaves it as it was
        if resuming:
            check_same_data(out, config, train_set, val_set, outlier_record)
        skipped = all_images.skipped + outliers_skipped
        if config.overwrite and not resuming:  # the earlier run goes only now, once this one has passed its checks
            trainstate.remove_run_files(out)
        _write_run_record(out, config, skipped, train_set, val_set, [] if resuming else written)

    run_on_main(ranks, record)  # rank 0 writes; what it refuses, or fails to write, ends every process
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
    model, optimizer, runner = _placed(model, config, ranks, device)
    steps_per_epoch = max(1, len(train_set) // config.batch_size)  # drop the ragged last batch
    ema = make_ema(model, config.ema_decay)
    check_teacher_classes(config.teachers, teachers, classes)
    if teachers:
        log(
            f"distilling from {len(teachers)} teacher(s) (weight {config.distill_weight:g}, "
            f"temperature {config.distill_temperature:g}): {', '.join(config.teachers)}"
        )
    checkpoint = Checkpoint(ema.module if ema is not None else model, classes, mean, std, info={})
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    run = Run(
        out=out,
        config=config,
        all_images=all_images,
        train_set=train_set,
        val_set=val_set,
        network=Network(model, runner, checkpoint.normalise, ema, scaler, (use_amp, amp_dtype), device, ranks),
        loss=TrainingLoss.for_run(config, train_set.labels, len(classes), teachers, device),
        optimizer=optimizer,
        schedule=Schedule.for_run(config, steps_per_epoch),
        data=TrainingData.on_device(train_set, outliers, config.batch_size, config.augment, steps_per_epoch, device),
        checkpoint=checkpoint,
        flops=flops,
        record=trainstate.provenance(train_set, device, amp_dtype if use_amp else None, ranks.world)
        | relabel_record(config, all_images)
        | outlier_record
        if ranks.main
        else {},
    )
    if resuming:
        _resume(run, log)
    return run


def _write_run_record(
    out: Path,
    config: TrainConfig,
    skipped: list[tuple[str, str]],
    train_set: ImageSet,
    val_set: ImageSet,
    written: list[str],
) -> None:
    """config.json, skipped.json and split.json: what the run trains on, written before its first step; each name
    added to `written` once it is."""
    for name, record in (
        (trainstate.CONFIG_FILE, config.with_absolute_paths().to_dict()),  # resumable from anywhere
        (trainstate.SKIPPED_FILE, [{"path": p, "reason": r} for p, r in skipped]),
        (trainstate.SPLIT_FILE, split_record(config, train_set, val_set)),
    ):
        atomic_write_json(out / name, record)
        written.append(name)


def _placed(
    model: torch.nn.Module, config: TrainConfig, ranks: Ranks, device: torch.device
) -> tuple[torch.nn.Module, Optimizer, torch.nn.Module]:
    """(the model on its device, its optimizer, what the steps run: DDP across processes, compiled if asked)."""
    if config.sync_bn and ranks.world > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device=device, memory_format=torch.channels_last)
    optimizer = make_optimizer(model, config)
    runner: torch.nn.Module = model
    if ranks.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        runner = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        runner = torch.compile(runner)
    return model, optimizer, runner


def _resume(run: Run, log: Log) -> None:
    """Restore the weights, average and optimizer of the run's resume state, and where it stopped."""
    network = run.network
    state, generator_state, global_state = trainstate.load_resume_state(
        run.out, run.optimizer, network.model, network.ema
    )
    run.history, run.best_acc = state["history"], state["best_val_accuracy"]
    run.start_epoch, run.start_step, run.partial = state["epoch"], state["step"], state["partial"]
    run.rng_states = generator_state, global_state
    if network.ranks.main:  # a kill inside the last save may have left last.* a save behind the resume state
        run.save("last")
    log(f"resuming at epoch {run.start_epoch + 1}, step {run.start_step} of {run.data.steps_per_epoch}")


# ----------------------------------------------------------------------------------------------------------------
# The session: the epoch loop
# ----------------------------------------------------------------------------------------------------------------


def _session(run: Run, log: Log, should_stop: Callable[[int, int], bool] | None) -> bool:
    """Train the run's remaining epochs; True when it stopped before the last (Ctrl-C, SIGTERM, `should_stop`)."""
    config, network = run.config, run.network
    with trainstate.StopFlag() as flag:

        def stop(epoch: int, step: int) -> bool:
            if should_stop is not None and should_stop(epoch, step):
                flag.stop = True
            return flag.stop

        for index in range(run.start_epoch, config.epochs):
            generator, order, augment_generator = trainstate.epoch_randomness(
                config, index, len(run.train_set), network.ranks, network.device
            )
            epoch = Epoch(index, config.epochs, order, augment_generator, stop=stop, progress=config.progress)
            if index == run.start_epoch and run.rng_states is not None and run.start_step:  # replay its RNG state
                epoch.first_step, epoch.partial = run.start_step, run.partial
                generator.set_state(run.rng_states[0])
                torch.set_rng_state(run.rng_states[1])
            run.partial = epoch.partial
            tick = time.perf_counter()
            lr, stopped_at = train_one_epoch(network, run.loss, run.optimizer, run.schedule, run.data, epoch)
            if stopped_at is not None:
                run.partial["seconds"] += time.perf_counter() - tick
                run.save_last(index, stopped_at, generator)
                log(f"stopped at epoch {index + 1}, step {stopped_at}; continue with --resume")
                return True
            train_seconds = run.partial["seconds"] + time.perf_counter() - tick
            asked = _end_epoch(run, index, lr, train_seconds, generator, flag.stop, log)
            flag.stop = flag.stop or asked  # sticky: a signal that came during validation or saving is kept
            # the processes of a job stop together on what they summed; a lone process on its own flag
            if asked or (flag.stop and network.ranks.world == 1):
                log(f"stopped after epoch {index + 1}; continue with --resume")
                return index + 1 < config.epochs
    return False


def _precise_statistics(run: Run, log: Log) -> dict[str, float]:
    """`--bn-statistics precise`: the saved network's batch-norm statistics recomputed over the training photos
    once the last epoch is done (again, to the same values, when a finished run is resumed), validated again;
    last.* is written again with the new statistics, recording both accuracies (`bn_statistics`), and metrics.*
    and curves.png add the new one; best.* stays the epoch it was. Returns the saved network's validation (loss, accuracy)."""
    network, batch, before = run.network, run.config.eval_batch_size, run.history[-1]
    photos, outliers = run.train_set.images, run.data.outliers
    precise_batch_norm(run.checkpoint.model, photos, network.normalise, batch, network.device, outliers)
    val_sums, _, _ = validate(network, run.checkpoint.model, run.val_set, batch, judge_raw=False)
    loss_sum, correct, seen, _ = network.ranks.sum(val_sums)
    after = {"val_loss": loss_sum / max(seen, 1), "val_accuracy": correct / max(seen, 1)}
    run.record["bn_statistics"] = {
        "statistics": "precise",
        "photos": len(run.train_set),
        "outliers": 0 if outliers is None else len(photos),  # drawn in order from --outliers, one per photo
        "validation": after,
        "running_statistics_validation": {k: before[k] for k in after},
    }
    if network.ranks.main:
        run.save("last")  # saved as it is validated, whatever the none-of-these fit after it does
        trainstate.write_history(run.out, run.history, after)  # the records say it, beside the running figures
        trainstate.plot_curves(run.out, run.history, after)
    log(
        f"precise batch norm: statistics over {len(photos)} training photos{'' if outliers is None else ' and outliers'}"
        "; validation accuracy "
        f"{before['val_accuracy']:.4f} -> {after['val_accuracy']:.4f}"
    )
    return after


# ----------------------------------------------------------------------------------------------------------------
# The end of an epoch
# ----------------------------------------------------------------------------------------------------------------


def _end_epoch(
    run: Run, epoch: int, lr: float, train_seconds: float, generator: torch.Generator, stop_asked: bool, log: Log
) -> bool:
    """Validate, add the epoch's row to the history, then save best.*, the resume state, last.* and the metrics.
    Returns whether any process was asked to stop."""
    config, network = run.config, run.network
    judge_raw = network.ema is not None and ((epoch + 1) % 5 == 0 or epoch + 1 == config.epochs)
    val_sums, _, _ = validate(network, run.checkpoint.model, run.val_set, config.eval_batch_size, judge_raw)
    loss_sum, correct, seen, val_loss_sum, val_correct, val_seen, raw_correct, stopping = network.ranks.sum(
        [run.partial["loss_sum"], run.partial["correct"], run.partial["seen"], *val_sums, float(stop_asked)]
    )
    if not math.isfinite(loss_sum + val_loss_sum):  # another process diverged, or the last step did
        raise diverged(f"the loss became non-finite in epoch {epoch + 1}", saved=epoch > 0 or run.start_step > 0)
    row = {
        "epoch": epoch + 1,
        "lr": lr,
        "train_loss": loss_sum / seen,
        "train_accuracy": correct / seen,
        "val_loss": val_loss_sum / val_seen,
        "val_accuracy": val_correct / val_seen,
        **({"raw_val_accuracy": raw_correct / val_seen if judge_raw else None} if network.ema is not None else {}),
        "epoch_seconds": train_seconds,
        "train_images_per_second": seen / max(train_seconds, 1e-9),
    }
    run.history.append(row)
    log(
        f"epoch {epoch + 1}/{config.epochs}  train loss {row['train_loss']:.3f} acc {row['train_accuracy']:.3f}  "
        f"val loss {row['val_loss']:.3f} acc {row['val_accuracy']:.4f}"
        + (f" (raw weights {row['raw_val_accuracy']:.4f})" if judge_raw else "")
        + "  "
        f"{row['train_images_per_second']:.0f} img/s  {train_seconds:.0f}s"
    )
    if row["val_accuracy"] > run.best_acc and network.ranks.main:
        run.best_acc = row["val_accuracy"]
        run.save("best")
    run.save_last(epoch + 1, 0, generator)
    if network.ranks.main:
        trainstate.write_history(run.out, run.history)
        trainstate.plot_curves(run.out, run.history)
    return stopping > 0


def _silent(message: str) -> None:
    """The log of processes other than rank 0."""


__all__ = ["TrainResult", "train"]
