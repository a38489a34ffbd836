"""What training minimises, as one object built from the config (`TrainingLoss`, timm's "task"): cross-entropy
with label smoothing and optional class weights, on MixUp/CutMix soft targets when those are on, plus optional
distillation from teacher networks and a consistency term between two views of each image."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from heritage_cnn.models.checkpoint import Checkpoint, load_checkpoint
from heritage_cnn.training.config import TrainConfig

Mixer = Callable[..., tuple[torch.Tensor, torch.Tensor]]  # (pixels, labels) -> (mixed pixels, soft targets)


class NonFiniteLossError(ValueError):
    """The loss became NaN or infinite: training diverged (usually a learning rate that is too high)."""


def balanced_class_weights(labels: torch.Tensor, num_classes: int, device: torch.device) -> torch.Tensor:
    """Inverse class frequency, as scikit-learn's "balanced": small classes count more in the loss."""
    from sklearn.utils.class_weight import compute_class_weight

    weights = compute_class_weight("balanced", classes=np.arange(num_classes), y=labels.numpy())
    return torch.tensor(weights, dtype=torch.float32, device=device)


def load_teachers(paths: Sequence[str | os.PathLike], device: torch.device) -> list[Checkpoint]:
    """Trained networks to distil from, in eval mode with batch norm folded (they only run forward). Loaded
    before the photos are decoded, so that a wrong path fails at once; `check_teacher_classes` follows the data."""
    from heritage_cnn.models.network import fold_batch_norm

    teachers = []
    for path in paths:
        teacher = load_checkpoint(path, device=device)
        teacher.model = fold_batch_norm(teacher.model).to(memory_format=torch.channels_last)
        for parameter in teacher.model.parameters():
            parameter.requires_grad_(False)
        teachers.append(teacher)
    return teachers


def check_teacher_classes(paths: Sequence[str | os.PathLike], teachers: list[Checkpoint], classes: list[str]) -> None:
    """A teacher of other classes than the data's is refused by name."""
    for path, teacher in zip(paths, teachers, strict=True):
        if teacher.classes != classes:
            raise ValueError(f"teacher {path}: its classes {teacher.classes} differ from the data's {classes}")


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


def uniform_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Outlier exposure's term: the mean over images of the cross-entropy from the uniform distribution to the
    softmax, -mean_k log p_k. Its least value, log K, is a uniform answer (Hendrycks et al. 2019, eq. 1)."""
    return -logits.float().log_softmax(1).mean(1).mean()


def make_batch_mixer(config: TrainConfig, num_classes: int) -> Mixer | None:
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


@dataclass
class TrainingLoss:
    """The whole training objective. `targets` turns a batch's augmented pixels and labels into what the network
    sees and what it is scored against; the call scores the network's logits inside autocast."""

    label_smoothing: float = 0.0
    class_weights: torch.Tensor | None = None
    teachers: list[Checkpoint] = field(default_factory=list)
    distill_weight: float = 0.5
    distill_temperature: float = 2.0
    consistency_weight: float = 0.0
    mixer: Mixer | None = None
    outlier_weight: float = 0.0  # the outliers' share (TrainConfig.outlier_weight) when a run has outliers

    @classmethod
    def for_run(
        cls,
        config: TrainConfig,
        labels: torch.Tensor,
        num_classes: int,
        teachers: list[Checkpoint],
        device: torch.device,
    ) -> TrainingLoss:
        """The config's objective on a training set of `labels`, distilling from `teachers` (`load_teachers`)."""
        return cls(
            label_smoothing=config.label_smoothing,
            class_weights=balanced_class_weights(labels, num_classes, device) if config.balanced_loss else None,
            teachers=teachers,
            distill_weight=config.distill_weight,
            distill_temperature=config.distill_temperature,
            consistency_weight=config.consistency_weight,
            mixer=make_batch_mixer(config, num_classes),
            outlier_weight=config.outlier_weight if config.outliers else 0.0,
        )

    @property
    def views(self) -> int:
        """Augmented views of each image per step: two for the consistency term, else one."""
        return 2 if self.consistency_weight else 1

    def targets(self, pixels: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the [0, 1] pixels the network sees, its targets) for a batch of `views` x len(labels) images."""
        if self.views == 2:  # the second views' rows follow the first views'
            return pixels, torch.cat([labels, labels])
        if self.mixer is not None:  # on pixels (normalising is affine, so the same as mixing after it)
            return self.mixer(pixels, labels)
        return pixels, labels

    def __call__(
        self, logits: torch.Tensor, target: torch.Tensor, pixels: torch.Tensor, images: int, outliers: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, the logits of each distinct image once) - with two views, the first view's rows. The last
        `outliers` rows of `logits` are photos of none of the classes (`pixels` holds the others only)."""
        outlier_logits = logits[len(logits) - outliers :]
        logits = logits[: len(logits) - outliers]
        loss = F.cross_entropy(logits.float(), target, weight=self.class_weights, label_smoothing=self.label_smoothing)
        if self.teachers:  # the teachers see the same augmented (and mixed) images
            soft = teacher_probabilities(self.teachers, pixels, self.distill_temperature)
            kd = distillation_loss(logits, soft, self.distill_temperature)
            loss = (1 - self.distill_weight) * loss + self.distill_weight * kd
        if self.consistency_weight:
            loss = loss + self.consistency_weight * consistency_loss(logits)
            logits = logits[:images]  # the training accuracy counts each image once
        if outliers:
            loss = loss + self.outlier_weight * uniform_cross_entropy(outlier_logits)
        return loss, logits
