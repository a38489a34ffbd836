"""The recipe of a training run: every knob named in `TrainConfig`, and the pieces it builds -
the data split, Muon and AdamW, warm-up + cosine, the weight average, MixUp/CutMix.

`TrainConfig` is saved as `config.json` in the run folder; `--resume` refuses a config whose
recipe fields differ from it (runtime fields such as the device may change).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from heritage_cnn.base.checks import ConfigError, in_range, require
from heritage_cnn.data.augment import AugmentConfig
from heritage_cnn.data.folders import DatasetError, ImageSet, find_layout, folder_key, load_images
from heritage_cnn.data.split import SplitRecipe, make_split
from heritage_cnn.models.network import ModelConfig
from heritage_cnn.training.optim import Optimizer, muon_with_adamw

Log = Callable[[str], None]
# How a run is run, not what it trains: free to differ on --resume.
RUNTIME_FIELDS = ("out", "device", "threads", "progress", "cache_dir", "resume", "overwrite")


OPTIMIZERS = ("adamw", "sgd", "muon")


@dataclass
class TrainConfig:
    """Everything that defines a training run. Saved as `config.json` in the run folder."""

    data: str
    out: str
    epochs: int = 45  # a Muon step costs ~1.2 AdamW steps: 45 Muon epochs take the time of the 56 AdamW ones before
    batch_size: int = 32  # small batches: more steps per epoch won 3.5 points in the recipe search
    optimizer: str = "muon"  # muon (hidden filters; AdamW for the rest) | adamw | sgd (Nesterov momentum 0.9)
    lr: float = 3e-3  # peak learning rate (AdamW's scale, which Muon's update matches; SGD wants about 0.05-0.2)
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
    overwrite: bool = False  # a fresh run into a folder holding another run replaces it (else refused)
    progress: bool = True
    eval_batch_size: int = 64  # small batches keep channels_last inference in cache (900 vs 625 img/s at 256)

    def __post_init__(self) -> None:
        require(
            isinstance(self.epochs, int) and self.epochs >= 1, f"{{0}} must be at least 1, got {self.epochs}", "epochs"
        )
        require(
            isinstance(self.batch_size, int) and self.batch_size >= 2,
            f"{{0}} must be at least 2 (batch norm), got {self.batch_size}",
            "batch_size",
        )
        require(
            self.optimizer in OPTIMIZERS,
            f"{{0}} must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}",
            "optimizer",
        )
        require(
            self.optimizer != "muon" or sum(self.model.blocks) > 1,
            "{0} muon (the default) needs a network with more than one convolution (it updates the ones after the "
            "stem): add {0} adamw",
            "optimizer",
        )
        require(in_range(self.lr, 0, above_low=True), f"{{0}} must be a positive finite number, got {self.lr}", "lr")
        for name in ("weight_decay", "warmup_epochs", "mixup_alpha", "cutmix_alpha", "consistency_weight"):
            value = getattr(self, name)
            require(in_range(value, 0), f"{{0}} must be a finite number >= 0, got {value}", name)
        require(
            in_range(self.label_smoothing, 0, 1, below_high=True),
            f"{{0}} must be in [0, 1), got {self.label_smoothing}",
            "label_smoothing",
        )
        require(
            in_range(self.ema_decay, 0, 1, below_high=True),
            f"{{0}} must be in [0, 1), got {self.ema_decay}",
            "ema_decay",
        )
        require(
            not (self.consistency_weight and (self.mixup_alpha or self.cutmix_alpha)),
            "{0} compares two views of the same image: it cannot be combined with {1}/{2}",
            "consistency_weight",
            "mixup_alpha",
            "cutmix_alpha",
        )
        object.__setattr__(self, "teachers", tuple(str(t) for t in self.teachers))
        require(
            in_range(self.distill_weight, 0, 1), f"{{0}} must be in [0, 1], got {self.distill_weight}", "distill_weight"
        )
        require(
            in_range(self.distill_temperature, 0, above_low=True),
            f"{{0}} must be a positive finite number, got {self.distill_temperature}",
            "distill_temperature",
        )
        require(not (self.resume and self.overwrite), "{0} and {1} exclude each other", "resume", "overwrite")
        require(
            self.limit_per_class is None or (isinstance(self.limit_per_class, int) and self.limit_per_class >= 2),
            f"{{0}} must be at least 2, got {self.limit_per_class}",
            "limit_per_class",
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def recipe_differences(self, saved: TrainConfig) -> list[str]:
        """'field: saved value -> this value' for every recipe field that differs (runtime fields may)."""
        mine, theirs = _flat(self.to_dict()), _flat(saved.to_dict())
        if Path(self.data).resolve() == Path(saved.data).resolve():
            mine["data"] = theirs["data"]  # the same folder, spelled another way
        return [
            f"{key}: {theirs.get(key)!r} in the run, {mine.get(key)!r} now"
            for key in sorted(set(mine) | set(theirs))
            if key not in RUNTIME_FIELDS and mine.get(key) != theirs.get(key)
        ]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        data.setdefault("optimizer", "adamw")  # saved before the field existed: every such run trained with AdamW
        for name, make in (
            ("split", SplitRecipe.from_dict),
            ("model", ModelConfig.from_dict),
            ("augment", AugmentConfig.from_dict),
        ):
            try:
                data[name] = make(data.get(name, {}))
            except ConfigError as error:
                raise error.within(name) from None
        return cls(**data)


# Named starting points of a run; typed flags apply on top. "full" is TrainConfig's defaults. "adamw" is the
# previous default recipe and the recipe of every shipped network (each records its command in the package):
# Muon won on six seeds of six in the same time (benchmarks/recipes.md, "Muon becomes the default"). "quick" is
# `heritage demo`'s first look at the whole pipeline: a residual block per stage at widths 16-128 (98 MFLOP, under
# half the default widths' 213) and 14 AdamW epochs, so that the demo fits ten minutes on two cores of a CPU
# without bf16 (an AVX2 CPU trains in float32, about half the speed of an Intel Xeon's bf16); the recipe log's
# "The quick recipe on an AVX2 CPU" gives its accuracy against the wider network's.
PRESETS: dict[str, dict[str, Any]] = {
    "full": {},
    "adamw": {"optimizer": "adamw", "epochs": 56},
    "quick": {"optimizer": "adamw", "epochs": 14, "model": {"widths": (16, 32, 64, 128), "blocks": (1, 1, 1, 1)}},
}


def preset_config(name: str, data: str, out: str) -> TrainConfig:
    """TrainConfig for a named preset (PRESETS); a ValueError lists the names."""
    if name not in PRESETS:
        raise ValueError(f"unknown recipe {name!r}; the recipes are: {', '.join(PRESETS)}")
    values = TrainConfig(data=data, out=out).to_dict()
    for key, value in PRESETS[name].items():
        values[key] = {**values[key], **value} if isinstance(value, dict) else value
    return TrainConfig.from_dict(values)


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"widths": ...}} -> {"model.widths": ...}, tuples as lists (as JSON gives them back)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def stratified_limit(images: ImageSet, per_class: int, seed: int) -> ImageSet:
    """At most `per_class` images of each class, chosen with a fixed seed."""
    rng = np.random.default_rng(seed)
    labels = images.labels.numpy()
    keep = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(len(images.classes))]
    return images.subset(np.sort(np.concatenate(keep)))


# The last folder prepared in this process: `heritage demo` trains, then rebuilds the same validation split for each
# model it evaluates, and a decode and split of the Kaggle folder costs about 17 s on two cores. Keyed by the folder's
# file list (paths, sizes, modification times) and the split's recipe; one entry, so memory stays one folder's.
_LAST_PREPARED: dict[str, tuple[ImageSet, ImageSet, ImageSet]] = {}


def prepare_data(config: TrainConfig, log: Log = print) -> tuple[ImageSet, ImageSet, ImageSet]:
    """Decode the training folder once; return (all, train, validation)."""
    layout = find_layout(config.data)
    limit = (config.limit_per_class, config.seed) if config.limit_per_class else None
    key = f"{folder_key(layout.train)} {asdict(config.split)} {limit}"
    if key not in _LAST_PREPARED:
        _LAST_PREPARED.clear()
        _LAST_PREPARED[key] = _decode_and_split(config, layout.train)
    images, train_set, val_set = _LAST_PREPARED[key]
    for path, reason in images.skipped[:10]:
        log(f"skipped {os.fsencode(path).decode('utf-8', 'replace')}: {reason}")
    if images.skipped:
        log(
            f"skipped {len(images.skipped)} unreadable file(s) or folder(s); all listed in skipped.json in the run folder"
        )
    return images, train_set, val_set


def _decode_and_split(config: TrainConfig, folder: Path) -> tuple[ImageSet, ImageSet, ImageSet]:
    images = load_images(folder, cache_dir=config.cache_dir, progress=config.progress, require_every_class=True)
    skipped = images.skipped
    if config.limit_per_class:
        images = stratified_limit(images, config.limit_per_class, config.seed)
        images.skipped = skipped
    try:
        train_set, val_set = make_split(images, config.split)
    except DatasetError as error:
        raise DatasetError(f"{folder}: {error}") from None
    return images, train_set, val_set


def learning_rate(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Linear warm-up to `peak`, then cosine decay to zero."""
    if warmup_steps and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> Optimizer:
    """AdamW, Nesterov SGD, or Muon on the hidden filters with AdamW on the rest (heritage_cnn.training.optim); weight
    decay on conv/linear weights only (not on batch norm or biases)."""
    decay, no_decay = [], []
    for param in model.parameters():
        (decay if param.ndim > 1 else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True)
    if config.optimizer == "muon":
        return muon_with_adamw(model, config.lr, config.weight_decay)
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
