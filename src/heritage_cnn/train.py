"""The training recipe, every knob named: AdamW, cross-entropy with label smoothing, warm-up + cosine.

Data are decoded once into uint8 tensors and augmented in batches in memory; the network runs in
channels_last. Each epoch's randomness comes from a generator seeded by (seed, epoch), and the
last checkpoint stores the generator state, so `--resume` after an interruption reaches the same
result as an uninterrupted run on the same machine.

Run as `heritage train ...` or `python -m heritage_cnn.train ...`.
"""

from __future__ import annotations

import csv
import io
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from heritage_cnn import __version__
from heritage_cnn.augment import AugmentConfig, augment_batch
from heritage_cnn.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from heritage_cnn.data import (
    ImageSet,
    SplitRecipe,
    channel_stats,
    find_layout,
    load_images,
    make_split,
)
from heritage_cnn.evaluate import predict_logits
from heritage_cnn.io import atomic_path, atomic_write_json, atomic_write_text, load_tensors, read_json, save_tensors
from heritage_cnn.model import HeritageNet, ModelConfig, forward_flops, parameter_count

Log = Callable[[str], None]


@dataclass
class TrainConfig:
    """Everything that defines a training run. Saved as `config.json` in the run folder."""

    data: str
    out: str
    epochs: int = 56  # the deeper stage 4 costs 1.3x per epoch: 56 epochs keep the run under 30 min
    batch_size: int = 32  # small batches: more steps per epoch won 3.5 points in the recipe search
    lr: float = 3e-3  # peak learning rate of AdamW
    weight_decay: float = 0.05  # on conv and linear weights; none on batch norm and biases
    warmup_epochs: float = 1.0  # linear warm-up, then cosine decay to zero
    label_smoothing: float = 0.1
    ema_decay: float = 0.0  # per-step decay of an exponential moving average of the weights; 0 = off
    mixup_alpha: float = 0.0  # MixUp on every batch (torchvision.transforms.v2); 0 = off
    cutmix_alpha: float = 0.0  # CutMix on every batch; with both on, one of the two per batch
    balanced_loss: bool = False  # weight the loss by inverse class frequency (scikit-learn's "balanced")
    consistency_weight: float = 0.0  # two augmented views per image + a Jensen-Shannon term between them; 0 = off
    teachers: tuple[str, ...] = ()  # trained checkpoints or run folders to distil from (knowledge distillation)
    distill_weight: float = 0.5  # share of the distillation term in the loss when there are teachers
    distill_temperature: float = 2.0  # softmax temperature of teachers and student in that term
    seed: int = 0
    split: SplitRecipe = field(default_factory=SplitRecipe)  # 1/5 validation, seed 0, pHash distance 10
    limit_per_class: int | None = None  # use at most this many images per class (quick runs)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # mixed precision: bf16 (fp16 on older GPUs) on CUDA, bf16 on CPUs with native bf16
    sync_bn: bool = False  # synchronised batch norm across processes (distributed runs)
    compile: bool = False  # torch.compile the network (pays off on GPUs and long runs)
    threads: int | None = None  # intra-op threads on CPU (default: all cores)
    cache_dir: str | None = None  # keep decoded images here between runs
    resume: bool = False
    progress: bool = True
    eval_batch_size: int = 64  # small batches keep channels_last inference in cache (900 vs 625 img/s at 256)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 2:
            raise ValueError(f"--batch-size must be at least 2 (batch norm), got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"--lr must be positive, got {self.lr}")
        if self.weight_decay < 0 or not 0 <= self.label_smoothing < 1 or self.warmup_epochs < 0:
            raise ValueError("weight decay, warm-up must be >= 0 and label smoothing in [0, 1)")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"--ema must be in [0, 1), got {self.ema_decay}")
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ValueError("--mixup and --cutmix alphas must be >= 0")
        if self.consistency_weight < 0:
            raise ValueError(f"--consistency must be >= 0, got {self.consistency_weight}")
        if self.consistency_weight and (self.mixup_alpha or self.cutmix_alpha):
            raise ValueError(
                "--consistency compares two views of the same image: it cannot be combined with --mixup/--cutmix"
            )
        object.__setattr__(self, "teachers", tuple(str(t) for t in self.teachers))
        if not 0 <= self.distill_weight <= 1 or not self.distill_temperature > 0:
            raise ValueError("--distill-weight must be in [0, 1] and --distill-temperature positive")
        if self.limit_per_class is not None and self.limit_per_class < 2:
            raise ValueError(f"--limit-per-class must be at least 2, got {self.limit_per_class}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        data["split"] = SplitRecipe(**data.get("split", {}))
        data["model"] = ModelConfig.from_dict(data.get("model", {}))
        data["augment"] = AugmentConfig(**data.get("augment", {}))
        return cls(**data)


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

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


def cpu_has_native_bf16() -> bool:
    """True where oneDNN runs bf16 convolutions in hardware (AVX-512 BF16 / AMX), so autocast pays off."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def mixed_precision(device: torch.device, wanted: bool) -> tuple[bool, torch.dtype]:
    """Whether to autocast, and to which type: bf16 on CPUs with native bf16 (about 1.8x faster here)
    and on recent GPUs, fp16 (with loss scaling) on older GPUs. Evaluation always runs in float32."""
    if not wanted:
        return False, torch.float32
    if device.type == "cuda":
        return True, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return (True, torch.bfloat16) if cpu_has_native_bf16() else (False, torch.float32)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but no CUDA GPU is available")
    return torch.device(name)


def stratified_limit(images: ImageSet, per_class: int, seed: int) -> ImageSet:
    """At most `per_class` images of each class, chosen with a fixed seed."""
    rng = np.random.default_rng(seed)
    labels = images.labels.numpy()
    keep = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(len(images.classes))]
    return images.subset(np.sort(np.concatenate(keep)))


def prepare_data(config: TrainConfig, log: Log = print) -> tuple[ImageSet, ImageSet, ImageSet]:
    """Decode the training folder once; return (all, train, validation)."""
    layout = find_layout(config.data)
    images = load_images(layout.train, cache_dir=config.cache_dir, progress=config.progress)
    if images.skipped:
        log(f"skipped {len(images.skipped)} unreadable file(s); see skipped.json in the run folder")
    if config.limit_per_class:
        images = stratified_limit(images, config.limit_per_class, config.seed)
    train_set, val_set = make_split(images, config.split)
    return images, train_set, val_set


def learning_rate(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Linear warm-up to `peak`, then cosine decay to zero."""
    if warmup_steps and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on conv/linear weights only (not on batch norm or biases)."""
    decay, no_decay = [], []
    for param in model.parameters():
        (decay if param.ndim > 1 else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.999))


def make_ema(model: torch.nn.Module, decay: float) -> torch.nn.Module | None:
    """An exponential moving average of the weights and batch-norm statistics (torch's AveragedModel)."""
    if not decay:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def make_batch_mixer(config: TrainConfig, num_classes: int) -> Callable[..., tuple[torch.Tensor, torch.Tensor]] | None:
    """MixUp and/or CutMix from torchvision.transforms.v2, applied to whole batches (labels become soft)."""
    from torchvision.transforms import v2

    mixers: list[Any] = []
    if config.mixup_alpha:
        mixers.append(v2.MixUp(alpha=config.mixup_alpha, num_classes=num_classes))
    if config.cutmix_alpha:
        mixers.append(v2.CutMix(alpha=config.cutmix_alpha, num_classes=num_classes))
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)


def load_teachers(paths: tuple[str, ...], classes: list[str], device: torch.device) -> list[Checkpoint]:
    """Trained networks to distil from, in eval mode with batch norm folded (they only run forward)."""
    from heritage_cnn.model import fold_batch_norm

    teachers = []
    for path in paths:
        where = Path(path) / "last" if Path(path).is_dir() else Path(path)
        teacher = load_checkpoint(where, device=device)
        if teacher.classes != classes:
            raise ValueError(f"teacher {path}: its classes {teacher.classes} differ from the data's {classes}")
        teacher.model = fold_batch_norm(teacher.model).to(memory_format=torch.channels_last)
        for parameter in teacher.model.parameters():
            parameter.requires_grad_(False)
        teachers.append(teacher)
    return teachers


@torch.no_grad()
def teacher_probabilities(teachers: list[Checkpoint], images: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean softmax (at `temperature`) of the teachers on the very images the student sees: [0, 1] floats,
    normalised with each teacher's own statistics."""
    total = None
    for teacher in teachers:
        x = teacher.normalise(images).contiguous(memory_format=torch.channels_last)
        p = torch.softmax(teacher.model(x).float() / temperature, 1)
        total = p if total is None else total + p
    return total / len(teachers)


def distillation_loss(logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al.'s soft-target term: KL(teachers || student) at `temperature`, times T^2 so that its
    gradient keeps its size when T changes."""
    log_student = F.log_softmax(logits.float() / temperature, 1)
    return F.kl_div(log_student, teacher_probs, reduction="batchmean") * temperature**2


def consistency_loss(logits: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence between the predictions for two views of the same images.

    `logits` holds the first views' rows, then the second views' in the same order. The term pulls
    the two predictions together, so that the network answers the same whatever the crop or mirror
    (what test-time augmentation otherwise buys with extra forward passes). AugMix (Hendrycks et al.
    2020) uses the same divergence over three views.
    """
    first, second = logits.float().chunk(2)
    p, q = first.softmax(1), second.softmax(1)
    middle = ((p + q) / 2).clamp_min(1e-7).log()
    return (F.kl_div(middle, p, reduction="batchmean") + F.kl_div(middle, q, reduction="batchmean")) / 2


# ---- resumable state: optimizer tensors and RNG states as safetensors, the rest as JSON ----


def _save_training_state(
    out: Path,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    state: dict,
    model: torch.nn.Module | None = None,
    ema: torch.nn.Module | None = None,
) -> None:
    """With an EMA the checkpoint holds the average, so the raw weights and the average are kept here too."""
    opt_state = optimizer.state_dict()
    tensors = {"rng.generator": generator.get_state(), "rng.global": torch.get_rng_state()}
    if ema is not None and model is not None:
        tensors.update({f"ema.{k}": v.detach() for k, v in ema.state_dict().items()})
        tensors.update({f"raw.{k}": v.detach() for k, v in model.state_dict().items()})
    layout: dict[str, dict[str, Any]] = {}
    for index, values in opt_state["state"].items():
        layout[str(index)] = {}
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{key}"] = value
                layout[str(index)][key] = "tensor"
            else:
                layout[str(index)][key] = value
    save_tensors(out / "optimizer.safetensors", tensors)
    atomic_write_json(
        out / "state.json", {**state, "optimizer_layout": layout, "param_groups": opt_state["param_groups"]}
    )


def _load_training_state(
    out: Path,
    optimizer: torch.optim.Optimizer,
    model: torch.nn.Module | None = None,
    ema: torch.nn.Module | None = None,
) -> tuple[dict, torch.Tensor, torch.Tensor]:
    state = read_json(out / "state.json")
    tensors = load_tensors(out / "optimizer.safetensors")
    if ema is not None and model is not None:
        ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        model.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("raw.")})
    opt_state: dict[str, Any] = {"state": {}, "param_groups": state.pop("param_groups")}
    for index, values in state.pop("optimizer_layout").items():
        opt_state["state"][int(index)] = {
            key: tensors[f"optim.{index}.{key}"] if value == "tensor" else value for key, value in values.items()
        }
    optimizer.load_state_dict(opt_state)
    return state, tensors["rng.generator"], tensors["rng.global"]


class _StopFlag:
    """SIGINT sets a flag; the loop finishes the current step, writes a checkpoint and stops."""

    def __init__(self) -> None:
        self.stop = False
        self._previous: Any = None

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.stop:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.stop = True
        print("\ninterrupt: finishing this step and writing a checkpoint (Ctrl-C again to abort)", file=sys.stderr)

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _write_history(out: Path, history: list[dict[str, float]]) -> None:
    if not history:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(out / "metrics.csv", buffer.getvalue())
    atomic_write_json(out / "metrics.json", history)


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, values: list[float]) -> list[float]:
        """Add numbers across processes (identity when alone)."""
        if self.world == 1:
            return values
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(tensor)
        return tensor.tolist()


def init_distributed(device_name: str, threads: int | None) -> tuple[Ranks, torch.device]:
    """Join the torchrun job described by the environment (WORLD_SIZE, RANK, ...), if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks(), pick_device(device_name)
    import torch.distributed as dist

    ranks = Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    device = pick_device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(ranks.local_rank)
        device = torch.device("cuda", ranks.local_rank)
    elif not threads:  # share the cores of this machine between its processes
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // per_node))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return ranks, device


def _check_replicas_agree(model: torch.nn.Module, ranks: Ranks) -> None:
    """Debug check (HERITAGE_CHECK_REPLICAS=1): every process holds the same weights after a step."""
    import torch.distributed as dist

    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().cpu().view(1)
    gathered = [torch.zeros(1, dtype=torch.float64) for _ in range(ranks.world)]
    dist.all_gather(gathered, checksum)
    if any(not torch.allclose(g, gathered[0], rtol=1e-9, atol=1e-9) for g in gathered):
        raise RuntimeError(f"replicas disagree after a step: {[float(g) for g in gathered]}")


def train(config: TrainConfig, log: Log = print, should_stop: Callable[[int, int], bool] | None = None) -> TrainResult:
    """Train a network from scratch (or resume one) and write the run folder.

    `should_stop(epoch, step)` is polled after every step like Ctrl-C is (tests use it to interrupt).
    """
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
    if ranks.main:
        for stale in out.glob(".*.tmp"):  # half-written files of a killed run; the real files are intact
            stale.unlink(missing_ok=True)
    torch.manual_seed(config.seed)

    resuming = config.resume and (out / "state.json").exists()
    if config.resume and not resuming:
        log(f"--resume: no earlier run in {out}, starting from scratch")
    if resuming:  # the run folder's own config wins, so a resumed run is the same run
        saved = TrainConfig.from_dict(read_json(out / "config.json"))
        config = replace(saved, resume=True, progress=config.progress, device=config.device, threads=config.threads)
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
    model_config = replace(config.model, num_classes=len(classes))
    model = HeritageNet(model_config)
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
    network: torch.nn.Module = model  # what the steps run: the model itself, or its DDP wrapper
    if ranks.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        network = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        network = torch.compile(network)
    check_replicas = ranks.world > 1 and os.environ.get("HERITAGE_CHECK_REPLICAS") == "1"

    steps_per_epoch = max(1, len(train_set) // config.batch_size)  # drop the ragged last batch
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)

    ema = make_ema(model, config.ema_decay)
    mixer = make_batch_mixer(config, len(classes))
    teachers = load_teachers(config.teachers, classes, device)
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
    if resuming:
        restored = load_checkpoint(out / "last", device=device)
        model.load_state_dict(restored.model.state_dict())
        state, generator_state, global_state = _load_training_state(out, optimizer, model, ema)
        history, best_acc = state["history"], state["best_val_accuracy"]
        start_epoch, start_step, partial = state["epoch"], state["step"], state["partial"]
        log(f"resuming at epoch {start_epoch + 1}, step {start_step} of {steps_per_epoch}")

    # The whole uint8 training set lives on the device; on a GPU it is copied once from pinned memory.
    pinned = device.type == "cuda"
    images = (train_set.images.pin_memory() if pinned else train_set.images).to(device, non_blocking=pinned)
    labels = train_set.labels.to(device)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    normalise = checkpoint.normalise
    class_weights = None
    if config.balanced_loss:
        from sklearn.utils.class_weight import compute_class_weight

        present = train_set.labels.numpy()
        weights = compute_class_weight("balanced", classes=np.arange(len(classes)), y=present)
        class_weights = torch.tensor(weights, dtype=torch.float32, device=device)

    def save_last(epoch: int, step: int, generator: torch.Generator) -> None:
        if not ranks.main:
            return
        checkpoint.info = _info(config, history, len(train_set), len(val_set), flops)
        save_checkpoint(out / "last", checkpoint)
        _save_training_state(
            out,
            optimizer,
            generator,
            {"epoch": epoch, "step": step, "partial": partial, "history": history, "best_val_accuracy": best_acc},
            model,
            ema,
        )

    interrupted = False
    with _StopFlag() as flag:
        for epoch in range(start_epoch, config.epochs):
            epoch_seed = config.seed * 1_000_003 + epoch
            generator = torch.Generator(device=device).manual_seed(epoch_seed)
            order = torch.randperm(len(train_set), generator=generator, device=device)  # the same on every rank
            torch.manual_seed(epoch_seed + 7919 * ranks.rank)  # dropout
            augment_generator = generator  # rank 0 continues the stream; other ranks get their own
            if ranks.rank:
                augment_generator = torch.Generator(device=device).manual_seed(epoch_seed * 7919 + ranks.rank)
            first_step = 0
            if epoch == start_epoch and start_step:  # resume inside an epoch: replay its RNG state
                first_step = start_step
                generator.set_state(generator_state)
                torch.set_rng_state(global_state)
            else:
                partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
            model.train()
            bar = _progress(range(first_step, steps_per_epoch), config.progress, f"epoch {epoch + 1}/{config.epochs}")
            tick = time.perf_counter()
            for step in bar:
                index = order[step * config.batch_size : (step + 1) * config.batch_size][ranks.rank :: ranks.world]
                batch = images[index]
                pixels = augment_batch(batch, config.augment, augment_generator)  # [0, 1]
                y = target = labels[index]
                if config.consistency_weight:  # a second, independently augmented view of the same images
                    second = augment_batch(batch, config.augment, augment_generator)
                    pixels, target = torch.cat([pixels, second]), torch.cat([y, y])
                if mixer is not None:  # on pixels (normalising is affine, so the same as mixing after it)
                    pixels, target = mixer(pixels, y)
                x = normalise(pixels).contiguous(memory_format=torch.channels_last)
                lr = learning_rate(epoch * steps_per_epoch + step, total_steps, warmup_steps, config.lr)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    logits = network(x)
                    loss = F.cross_entropy(
                        logits.float(), target, weight=class_weights, label_smoothing=config.label_smoothing
                    )
                    if teachers:  # the teachers see the same augmented (and mixed) images
                        soft = teacher_probabilities(teachers, pixels, config.distill_temperature)
                        kd = distillation_loss(logits, soft, config.distill_temperature)
                        loss = (1 - config.distill_weight) * loss + config.distill_weight * kd
                    if config.consistency_weight:
                        loss = loss + config.consistency_weight * consistency_loss(logits)
                        logits = logits[: len(y)]  # the training accuracy counts each image once
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                if ema is not None:
                    ema.update_parameters(model)
                if check_replicas:
                    _check_replicas_agree(model, ranks)
                partial["loss_sum"] += loss.item() * len(y)
                partial["correct"] += int((logits.argmax(1) == y).sum())
                partial["seen"] += len(y)
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(
                        loss=f"{partial['loss_sum'] / partial['seen']:.3f}",
                        acc=f"{partial['correct'] / partial['seen']:.3f}",
                    )
                if should_stop is not None and should_stop(epoch, step):
                    flag.stop = True
                if flag.stop and step + 1 < steps_per_epoch and ranks.world == 1:  # distributed: at epoch end
                    partial["seconds"] += time.perf_counter() - tick
                    save_last(epoch, step + 1, generator)
                    log(f"stopped at epoch {epoch + 1}, step {step + 1}; continue with --resume")
                    interrupted = True
                    break
            if interrupted:
                break
            train_seconds = partial["seconds"] + time.perf_counter() - tick
            shard = slice(ranks.rank, None, ranks.world)  # each process validates its share
            judged = checkpoint.model  # the network that is saved: the moving average when there is one
            val_logits = predict_logits(judged, val_set.images[shard], normalise, config.eval_batch_size, device)
            val_labels = val_set.labels[shard].to(val_logits.device)
            raw_correct = float((val_logits.argmax(1) == val_labels).sum())
            judge_raw = ema is not None and ((epoch + 1) % 5 == 0 or epoch + 1 == config.epochs)
            if judge_raw:  # every 5th epoch, also judge the raw weights, to show what the average adds
                raw_logits = predict_logits(model, val_set.images[shard], normalise, config.eval_batch_size, device)
                raw_correct = float((raw_logits.argmax(1) == val_labels).sum())
            loss_sum, correct, seen, val_loss_sum, val_correct, val_seen, raw_correct, stop = ranks.sum(
                [
                    partial["loss_sum"],
                    partial["correct"],
                    partial["seen"],
                    float(F.cross_entropy(val_logits, val_labels, reduction="sum")),
                    float((val_logits.argmax(1) == val_labels).sum()),
                    len(val_labels),
                    raw_correct,
                    float(flag.stop),
                ]
            )
            flag.stop = stop > 0
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
                checkpoint.info = _info(config, history, len(train_set), len(val_set), flops)
                save_checkpoint(out / "best", checkpoint)
            save_last(epoch + 1, 0, generator)
            if ranks.main:
                _write_history(out, history)
                _plot_curves(out, history)
            if flag.stop:
                log(f"stopped after epoch {epoch + 1}; continue with --resume")
                interrupted = epoch + 1 < config.epochs
                break

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
    )


def _silent(message: str) -> None:
    """The log of processes other than rank 0."""


def _info(config: TrainConfig, history: list[dict[str, float]], n_train: int, n_val: int, flops: int) -> dict[str, Any]:
    return {
        "trained_with": f"heritage-cnn {__version__}, torch {torch.__version__}",
        "seed": config.seed,
        "split": {**asdict(config.split), "train": n_train, "val": n_val},
        "recipe": {
            k: v for k, v in config.to_dict().items() if k not in {"data", "out", "resume", "progress", "cache_dir"}
        },
        "epochs_trained": len(history),
        "validation": history[-1] if history else {},
        "history": history,
        "forward_mflop": round(flops / 1e6, 2),
    }


def _progress(iterable: range, enabled: bool, desc: str) -> Any:
    if not enabled or not sys.stderr.isatty():
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, unit="batch", leave=False, dynamic_ncols=True)


def _plot_curves(out: Path, history: list[dict[str, float]]) -> None:
    from heritage_cnn.report import plot_training_curves

    with atomic_path(out / "curves.png") as tmp:
        plot_training_curves(history, tmp)


def main(argv: list[str] | None = None) -> int:
    """`python -m heritage_cnn.train` is `heritage train`."""
    from heritage_cnn.cli import main as cli_main

    try:
        return cli_main(["train", *(argv if argv is not None else sys.argv[1:])])
    finally:
        leave_process_group()


def leave_process_group() -> None:
    """Tear down the torchrun job's process group, if any: left to interpreter exit, gloo's threads can
    abort the process ("terminate called without an active exception") after a finished run."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())
