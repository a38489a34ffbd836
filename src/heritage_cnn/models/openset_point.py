"""The "none of these" operating point a model carries: which open-set score, its threshold, what it was fitted on.

A photo is **known** (one of the ten) when its open-set score (`heritage_cnn.models.openset`: higher means more likely one
of the ten) is at or above the threshold and its pixels pass the noise check, and "none of these" otherwise, for one
of two reasons (`NONE_REASONS`): `noise`, checked first, or `score`. The record lives in the checkpoint's JSON
as `open_set`, validated like every other field (a bad value is one line naming the file and `open_set.OPEN_SET`):

- `score`: "energy" (temperature 1), "max_softmax", or "mahalanobis" (minus the smallest squared Mahalanobis
  distance of the input to `layer` to a class mean);
- `layer` ("head.fc2" or "head.fc1") and `ridge`: the class statistics' features and covariance ridge. A Mahalanobis
  score needs them; any other score may carry them too (both or neither), unread by the score, so that `heritage
  teach` can stand them in for the training photos (`training.teach`);
- `threshold`: a finite number; `reject_share`: the share of validation photos it was chosen to call "none" at
  most (0.03: the 3rd percentile);
- `noise_threshold` (optional): the check in front of the score. A photo whose neighbouring pixels correlate less
  (`openset.neighbour_correlation` of the image the network sees) is noise, none of these whatever its score; fitted
  just below the least correlated validation photo, so that the check calls none of them. Without it (every record
  saved before 2026-12-05) the score alone decides;
- `fitted_on`: `train_photos` (the statistics' photos), `skipped_files` (optional: the data folder's files that
  could not be read, left out), `val_photos`, `val_called_none` and its share, `views`
  (the test-time views of the fitting passes), `autocast` (the precision of those passes) and `network`
  (`network_id` of the weights it was fitted for: a checkpoint saved with other weights, a fine-tuned copy say,
  is written without the record rather than with one that no longer fits it);
- `command` (optional): how the record was fitted.

A record's statistics (`openset.MahalanobisStats`: class means and the whitening matrix, float32) are
tensors beside the weights in the same safetensors file, `openset.mahalanobis.means` / `.whitening` for one network
and `members.<i>.openset.mahalanobis.*` for each network of an ensemble, so both halves' `generation` covers them.
For an ensemble the score is the mean of the members' scores, as in `openset.open_set_scores`; with several
test-time views it is the mean over the views. A checkpoint without the record cannot reject.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from heritage_cnn.base.io import CheckpointError
from heritage_cnn.models.ensemble import member_prefix
from heritage_cnn.models.openset import (
    PENULTIMATE,
    POOLED,
    ForwardRecord,
    MahalanobisStats,
    energy,
    forward_with_features,
    max_softmax,
    neighbour_correlation,
    stacked_whitening,
    whitened_distances,
)
from heritage_cnn.models.views import TTA_MODES

CANNOT_REJECT = "this model has no none-of-these threshold: every photo is filed into a class"
SCORES = ("mahalanobis", "energy", "max_softmax")
NOISE, SCORE = "noise", "score"
NONE_REASONS = (NOISE, SCORE)  # why a photo is none of these, in the order they are checked
NOISE_MARGIN = 0.01  # the noise threshold this far below the least correlated validation photo
LAYERS = (PENULTIMATE, POOLED)
OPEN_SET = "open_set"  # the JSON key
TENSOR_PREFIX = "openset.mahalanobis."
_MEMBER_TENSOR = re.compile(r"^members\.\d+\.openset\.")
_COUNTS = ("train_photos", "skipped_files", "val_photos", "val_called_none")
_FITTED_KEYS = {*_COUNTS, "val_called_none_share", "views", "autocast", "network"}
_KEYS = {"score", "layer", "ridge", "threshold", "noise_threshold", "reject_share", "fitted_on", "command"}


@dataclass(frozen=True)
class OperatingPoint:
    """An open-set score and the threshold below which a photo is "none of these"; `stats`: one class statistics
    per network at `layer` (a Mahalanobis score's own; optional for the others), or none."""

    score: str
    threshold: float
    layer: str | None = None
    ridge: float | None = None
    reject_share: float = 0.03
    fitted_on: dict[str, Any] = field(default_factory=dict)
    command: str | None = None
    stats: tuple[MahalanobisStats, ...] = ()
    noise_threshold: float | None = None  # None: no noise check, the score alone decides

    @property
    def reads_statistics(self) -> bool:
        """Whether the score reads the class statistics (Mahalanobis), rather than only carrying them for teach."""
        return self.score == "mahalanobis"

    @property
    def name(self) -> str:
        """The score as docs/open_set.md names it: `mahalanobis[head.fc2]`, `energy`, `max_softmax`."""
        return f"{self.score}[{self.layer}]" if self.reads_statistics else self.score

    def with_threshold(self, threshold: float) -> OperatingPoint:
        return replace(self, threshold=float(threshold))

    def noise(self, images: torch.Tensor) -> torch.Tensor:
        """(N,) bool: the images (N, 3, H, W, uint8, as the network sees them) the noise check calls noise; all
        False without a check."""
        if self.noise_threshold is None:
            return torch.zeros(len(images), dtype=torch.bool)
        return neighbour_correlation(images.cpu()) < self.noise_threshold

    def keeps(self, scores: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """(N,) bool: the photos called one of the ten, from their scores and which of them the check calls noise."""
        return (scores.cpu() >= self.threshold) & ~noise.cpu()

    def decide(self, scores: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, list[str | None]]:
        """Which photos are known (N,) bool, and for each the reason it is none of these (`NONE_REASONS`; None
        when known), from the score of each and the images it was computed on."""
        noise = self.noise(images)
        known = self.keeps(scores, noise)  # the reasons follow from the same comparison, so they never disagree
        reasons = [NOISE if n else None if k else SCORE for n, k in zip(noise.tolist(), known.tolist(), strict=True)]
        return known, reasons

    def to_dict(self) -> dict[str, Any]:
        """The JSON record (the statistics are tensors, `tensors()`)."""
        record: dict[str, Any] = {"score": self.score}
        if self.layer is not None:
            record |= {"layer": self.layer, "ridge": self.ridge}
        record["threshold"] = self.threshold
        if self.noise_threshold is not None:
            record["noise_threshold"] = self.noise_threshold
        record |= {"reject_share": self.reject_share, "fitted_on": dict(self.fitted_on)}
        return record | ({"command": self.command} if self.command else {})

    def tensors(self, ensemble: bool) -> dict[str, torch.Tensor]:
        """The statistics as named float32 tensors, as a checkpoint stores them (per member for an ensemble)."""
        named: dict[str, torch.Tensor] = {}
        for index, stats in enumerate(self.stats):
            prefix = (member_prefix(index) if ensemble else "") + TENSOR_PREFIX
            named |= {k: v.detach().float().cpu().contiguous() for k, v in stats.tensors(prefix).items()}
        return named

    def forward(self, model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward pass of a normalised batch: the model's output (N, C), float32, and the score (N,)."""
        if self.score == "max_softmax":
            output = model(images).float()
            return output, max_softmax(output)
        record = forward_with_features(model, images, (self.layer,) if self.reads_statistics else ())
        # the score in float32 even inside a bf16 autocast: distances of ~1e3 would lose units in bf16 products
        with torch.autocast(images.device.type, enabled=False):
            return record.logits, self._score(record)

    def _score(self, record: ForwardRecord) -> torch.Tensor:
        if self.score == "energy":
            return torch.stack([energy(m) for m in record.member_logits]).mean(0)
        features = record.features[self.layer]  # (networks, N, D)
        if len(self.stats) != len(features):
            raise ValueError(f"{len(self.stats)} Mahalanobis statistics for {len(features)} networks")
        whitening, centres = (t.to(features.device) for t in self._whitened)
        return -whitened_distances(features, whitening, centres).amin(2).mean(0)

    @cached_property
    def _whitened(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked once per point rather than at every batch."""
        return stacked_whitening(self.stats)


def network_id(state: Mapping[str, torch.Tensor]) -> str:
    """A short hash of a network's (or an ensemble's) weights as float32, names and shapes included: which weights
    a record was fitted for. Float32, so that an ensemble's float16-stored weights, loaded, hash as saved."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu()
        tensor = (tensor.float() if tensor.is_floating_point() else tensor).contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def fitted_for(point: OperatingPoint | None, state: Mapping[str, torch.Tensor]) -> OperatingPoint | None:
    """`point` when it was fitted for the weights in `state` (its `fitted_on.network`), else None: what a save
    writes, so that weights changed after the fit are never saved with a threshold and statistics of others."""
    if point is None or point.fitted_on.get("network") != network_id(state):
        return None
    return point


def with_override(point: OperatingPoint | None, threshold: float | None, where: object) -> OperatingPoint | None:
    """The model's point, its score's threshold replaced by `threshold` when one is given (`--none-threshold`; the
    noise check stays as fitted). A model without a record has no score for a threshold to apply to: that is
    refused, not ignored."""
    if threshold is None:
        return point
    if not _finite(threshold):
        raise ValueError(f"--none-threshold must be a finite number, got {threshold!r}")
    if point is None:
        raise ValueError(
            f"--none-threshold: {where} has no none-of-these record (a score and, for Mahalanobis, its statistics) "
            "for a threshold to apply to; fit one with `heritage data none-fit`"
        )
    return point.with_threshold(threshold)


# --------------------------------------------------------------------------------------------
# Reading and checking a record
# --------------------------------------------------------------------------------------------


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_record(raw: object, where: Path) -> None:
    """Refuse a bad `open_set` record in one line naming the file and the field; absent (None) is fine."""

    def fail(name: str, problem: str) -> CheckpointError:
        return CheckpointError(f"{where}: {OPEN_SET}{'.' + name if name else ''}: {problem}")

    if raw is None:
        return
    if not isinstance(raw, dict):
        raise fail("", "must be an object")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise fail("", f"unknown key {unknown[0]!r}")
    score = raw.get("score")
    if score not in SCORES:
        raise fail("score", f"must be one of {', '.join(SCORES)}, got {score!r}")
    if score == "mahalanobis" or "layer" in raw or "ridge" in raw:  # statistics: Mahalanobis needs them, others may
        if raw.get("layer") not in LAYERS:
            raise fail("layer", f"must be one of {', '.join(LAYERS)}, got {raw.get('layer')!r}")
        if not _finite(raw.get("ridge")) or raw["ridge"] < 0:
            raise fail("ridge", f"must be a finite number at least 0, got {raw.get('ridge')!r}")
    threshold = raw.get("threshold")
    if not _finite(threshold):
        raise fail("threshold", f"must be a finite number, got {threshold!r}")
    if score == "max_softmax" and not 0 <= threshold <= 1:
        raise fail("threshold", f"a max_softmax threshold is a probability, 0 to 1, got {threshold!r}")
    noise = raw.get("noise_threshold", 0.0)
    if not _finite(noise) or not -1 <= noise <= 1:
        raise fail("noise_threshold", f"a correlation threshold is a number from -1 to 1, got {noise!r}")
    share = raw.get("reject_share", 0.03)
    if not _finite(share) or not 0 <= share < 1:
        raise fail("reject_share", f"must be a finite number from 0 to below 1, got {share!r}")
    _check_fitted(raw.get("fitted_on", {}), fail)
    command = raw.get("command")
    if command is not None and (not isinstance(command, str) or len(command) > 2000):
        raise fail("command", "must be a string of at most 2000 characters")


def _check_fitted(fitted: object, fail: Any) -> None:
    if not isinstance(fitted, dict):
        raise fail("fitted_on", "must be an object")
    unknown = sorted(set(fitted) - _FITTED_KEYS)
    if unknown:
        raise fail("fitted_on", f"unknown key {unknown[0]!r}")
    for key in _COUNTS:
        if key in fitted and not _count(fitted[key]):
            raise fail(f"fitted_on.{key}", f"must be a whole number at least 0, got {fitted[key]!r}")
    if fitted.get("val_called_none", 0) > fitted.get("val_photos", math.inf):
        raise fail("fitted_on.val_called_none", "is more than fitted_on.val_photos")
    share = fitted.get("val_called_none_share", 0.0)
    if not _finite(share) or not 0 <= share <= 1:
        raise fail("fitted_on.val_called_none_share", f"must be a finite number from 0 to 1, got {share!r}")
    if fitted.get("views", "none") not in TTA_MODES:
        raise fail("fitted_on.views", f"must be one of {', '.join(TTA_MODES)}, got {fitted['views']!r}")
    if not isinstance(fitted.get("autocast", ""), str):
        raise fail("fitted_on.autocast", "must be a string")
    network = fitted.get("network", "0" * 16)
    if not isinstance(network, str) or not re.fullmatch(r"[0-9a-f]{16}", network):
        raise fail("fitted_on.network", f"must be 16 hexadecimal digits, got {network!r}")


def split_tensors(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A checkpoint's tensors as (the network's, the open-set statistics')."""
    ours = {k: v for k, v in state.items() if k.startswith("openset.") or _MEMBER_TENSOR.match(k)}
    return {k: v for k, v in state.items() if k not in ours}, ours


def load_point(
    raw: object,
    tensors: Mapping[str, torch.Tensor],
    networks: Sequence[nn.Module],
    prefixes: Sequence[str],
    num_classes: int,
    where: Path,
) -> OperatingPoint | None:
    """The operating point of a loaded checkpoint: its checked record (None when it has none) and, when it has a
    layer (always for a Mahalanobis score), each network's statistics (named after the network's own `prefixes`),
    checked against the network (shapes, finite float values)."""
    check_record(raw, where.with_suffix(".json"))
    expected = set()
    stats = []
    if isinstance(raw, dict) and "layer" in raw:
        for network, network_prefix in zip(networks, prefixes, strict=True):
            prefix = network_prefix + TENSOR_PREFIX
            width = network.get_submodule(raw["layer"]).in_features
            shapes = {"means": (num_classes, width), "whitening": (width, width)}
            for part, shape in shapes.items():
                _check_tensor(tensors.get(prefix + part), prefix + part, shape, where)
            expected |= {prefix + part for part in shapes}
            stats.append(MahalanobisStats.from_tensors(tensors, prefix))
    extra = sorted(set(tensors) - expected)
    if extra:
        raise CheckpointError(f"{where}: tensor {extra[0]} is not used by the {OPEN_SET} record of {where.stem}.json")
    if raw is None:
        return None
    return OperatingPoint(
        score=raw["score"],
        threshold=float(raw["threshold"]),
        layer=raw.get("layer"),
        ridge=float(raw["ridge"]) if "ridge" in raw else None,
        reject_share=float(raw.get("reject_share", 0.03)),
        fitted_on=dict(raw.get("fitted_on", {})),
        command=raw.get("command"),
        stats=tuple(stats),
        noise_threshold=float(raw["noise_threshold"]) if "noise_threshold" in raw else None,
    )


def _check_tensor(tensor: torch.Tensor | None, name: str, shape: tuple[int, int], where: Path) -> None:
    if tensor is None:
        raise CheckpointError(f"{where}: tensor {name} is missing (the {OPEN_SET} record needs it)")
    if not tensor.is_floating_point():
        raise CheckpointError(f"{where}: tensor {name} is {tensor.dtype}, not floating point")
    if tuple(tensor.shape) != shape:
        raise CheckpointError(f"{where}: tensor {name} has shape {tuple(tensor.shape)}, expected {shape}")
    if not bool(torch.isfinite(tensor).all()):
        raise CheckpointError(f"{where}: tensor {name} holds NaN or infinite values")


__all__ = [
    "CANNOT_REJECT",
    "LAYERS",
    "NOISE",
    "NOISE_MARGIN",
    "NONE_REASONS",
    "OPEN_SET",
    "SCORE",
    "SCORES",
    "OperatingPoint",
    "check_record",
    "fitted_for",
    "load_point",
    "network_id",
    "split_tensors",
    "with_override",
]
