"""Fitting a model's "none of these" operating point (`heritage_cnn.models.openset_point`) from its own photos.

The rule is docs/open_set.md's: Mahalanobis statistics on the penultimate features (`head.fc2`'s input) of the
photos the model trained on, then the threshold at the 3rd percentile of the score on its validation photos, so
that at most 3 % of photos of the ten are called "none" (the validation photos are the only photos of the ten the
model has not seen; they set the threshold); and the noise check's threshold just below the least correlated of those
photos (`openset_point.NOISE_MARGIN`), so that it calls none of them noise. `fit_operating_point` does it for a loaded checkpoint and two sets of
photos; `heritage train` calls it at the end of a run (`fit_for_run`), `heritage data none-fit` on any checkpoint
and a data folder (`evaluation.fit_none_of_these`). Every pass goes through `Classifier`, as predictions do (batch
norm folded, the model's own test-time views), in float32 on every CPU and GPU (no bf16 autocast, no TF32): the same
model gets the same statistics and threshold on an AVX2 CPU, on one with bf16 in hardware and on a GPU, and
`heritage evaluate` (float32) reports the share the fit chose. A device that predicts in bf16 or TF32 computes the
scores to within that rounding of those.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from heritage_cnn.data.folders import ImageSet
from heritage_cnn.data.split import set_hashes
from heritage_cnn.inference.classifier import Classifier, network_features
from heritage_cnn.inference.evaluate import near_any, trained_on
from heritage_cnn.models.checkpoint import Checkpoint, save_checkpoint, save_ensemble
from heritage_cnn.models.ensemble import Ensemble
from heritage_cnn.models.openset import PENULTIMATE, mahalanobis_fit, neighbour_correlation
from heritage_cnn.models.openset_point import NOISE_MARGIN, SCORES, OperatingPoint, network_id

# The score of every fit when none is given, the shipped models' included: energy holds on both kinds of negatives,
# far (the tuning photos) and near (architecture the network was not taught), where Mahalanobis distance on the
# hidden layer leads on the first by a little and is near chance on the second (docs/open_set.md, "One score for
# near and far negatives").
DEFAULT_SCORE = "energy"
# ... except for a network trained with outliers (`heritage train --outliers`): the outlier loss answers them with a
# flat softmax at a level it leaves free, so their energies pile up at one value on either side of the threshold,
# while a flat answer's maximum softmax is 1/K whatever its level (docs/open_set.md, "Outlier exposure from the first
# step, measured")
OUTLIER_EXPOSED_SCORE = "max_softmax"
# The ridge of the class statistics when none is given: the one docs/open_set.md's first rule chose for a Mahalanobis
# score on the tuning negatives for `fast`, the default architecture trained alone, which is what `heritage train`
# makes (the shipped three-network `default` carries 1e-4, its own pick).
DEFAULT_RIDGE = 1e-2
REJECT_SHARE = 0.03  # the share of validation photos the threshold may call "none" at most


def reject_threshold(scores: np.ndarray, share: float = REJECT_SHARE) -> tuple[float, int]:
    """The threshold below which `floor(share * N)` of the N scores fall (fewer only where scores tie at the
    boundary), and how many that is. It lies halfway between the last score called "none" and the first one kept,
    so a recomputation that moves a score by rounding (another batch size, another CPU's float32 kernels) does
    not move the boundary photo across it."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    if len(ordered) == 0:
        raise ValueError("no validation photos to set the none-of-these threshold on")
    if not 0 <= share < 1:
        raise ValueError(f"the share of photos called none must be from 0 to below 1, got {share}")
    k = math.floor(share * len(ordered))  # the photos called "none": ordered[:k]
    below_all = ordered[0] - 1e-6 * max(1.0, abs(ordered[0]))
    threshold = (ordered[k - 1] + ordered[k]) / 2 if k else below_all
    return float(threshold), int((ordered < threshold).sum())


@contextmanager
def full_float32() -> Iterator[None]:
    """cuDNN's convolutions in float32 rather than TF32, PyTorch's default on recent GPUs: a fit on a GPU then scores
    as the CPU's float32 does (the shipped `fast` on an H200, 2026-12-04: scores 2.8 units from the CPU's with TF32,
    0.002 without, against thresholds of about -1,400). Process-wide while it lasts, restored after."""
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = before


def fit_operating_point(
    checkpoint: Checkpoint,
    train: ImageSet,
    val_images: torch.Tensor,
    score: str = DEFAULT_SCORE,
    layer: str = PENULTIMATE,
    ridge: float = DEFAULT_RIDGE,
    reject_share: float = REJECT_SHARE,
    command: str | None = None,
    train_features: torch.Tensor | None = None,
) -> OperatingPoint:
    """The operating point of `checkpoint`: class statistics (one per network, at `layer`) fitted on `train`'s photos
    and labels, which a Mahalanobis score reads and every record carries for `heritage teach`; then the threshold
    that calls `reject_share` of `val_images` (uint8, N x 3 x H x W) "none". `train_features`: those photos' inputs
    to `layer` (networks, N, D) where the caller has them already, as `network_features` computes them."""
    if score not in SCORES:
        raise ValueError(f"unknown open-set score {score!r}: choose {', '.join(SCORES)}")
    classifier = Classifier(checkpoint, bf16=False)  # float32: the same fit on every CPU (the module's docstring)
    with full_float32():
        features = network_features(classifier, train.images, layer) if train_features is None else train_features
        if features.shape[:2] != (checkpoint.member_count, len(train)):
            raise ValueError(
                f"train_features: {tuple(features.shape)} for {len(train)} photos of {checkpoint.member_count} network(s)"
            )
        count = len(checkpoint.classes)
        stats = tuple(mahalanobis_fit(f, train.labels, num_classes=count, ridge=ridge) for f in features)
        point = OperatingPoint(score, 0.0, layer, float(ridge), reject_share, stats=stats)
        classifier.open_set = point
        _, scores = classifier.scored(val_images)
    threshold, rejected = reject_threshold(scores.numpy(), reject_share)
    noise_threshold = float(neighbour_correlation(val_images).min()) - NOISE_MARGIN
    fitted_on = {
        "train_photos": len(train),
        # the data folder's unreadable files, named when they were skipped (a subset, as a run's split, has none)
        **({"skipped_files": len(train.skipped)} if train.skipped else {}),
        "val_photos": len(val_images),
        "val_called_none": rejected,
        "val_called_none_share": rejected / len(val_images),
        "views": classifier.tta,
        "autocast": "bfloat16" if classifier.bf16 else "none",
        "network": network_id(checkpoint.model.state_dict()),
    }
    return replace(point, threshold=threshold, noise_threshold=noise_threshold, fitted_on=fitted_on, command=command)


def check_trained_on(checkpoint: Checkpoint, train: ImageSet, where: str) -> bool:
    """Refuse (ValueError naming `where`, the --data folder) a split whose training side holds photos the model
    did not train on (by its `trained_on` record, near-duplicates as the record counts them): its class statistics
    would describe photos it never saw, and its validation side would hold photos it did (`heritage data none-fit`
    on a folder other than the one the model trained on). False when the model keeps no record to check against."""
    record = trained_on(checkpoint)
    if record is None:
        return False
    reference, distance = record
    unseen = int((~near_any(set_hashes(train), reference, distance)).sum())
    if unseen:
        raise ValueError(
            f"{where}: {unseen} of the {len(train)} photos its rebuilt split trains on did not train {checkpoint.path} "
            f"(it trained on {len(reference)}): not the folder the model was trained on; give --data that folder"
        )
    return True


def default_score(checkpoint: Checkpoint) -> str:
    """The score a fit uses when none is given: OUTLIER_EXPOSED_SCORE for a model whose networks were trained with
    outliers (every one of them), DEFAULT_SCORE otherwise."""
    members = [checkpoint.member(i).info for i in range(checkpoint.member_count)]
    exposed = all(info.get("outliers") for info in members)
    return OUTLIER_EXPOSED_SCORE if exposed else DEFAULT_SCORE


def fit_for_run(
    checkpoint: Checkpoint, train: ImageSet, val: ImageSet, log: Callable[[str], None], save: Callable[[], None]
) -> OperatingPoint | None:
    """`heritage train`'s last step: the default rule (`default_score`) on the run's own split, set as
    `checkpoint.open_set` and written with `save()`; None (and a line saying why) when the split cannot set it (no
    validation photo, a class without training photos), and the checkpoint stays as it is."""
    try:
        point = fit_operating_point(
            checkpoint, train, val.images, default_score(checkpoint), command="heritage train (its last step)"
        )
    except ValueError as error:
        log(f"no none-of-these threshold for this run: {error}")
        return None
    checkpoint.open_set = point
    save()
    log(describe(point))
    return point


def describe(point: OperatingPoint) -> str:
    """One line: the score, the threshold and what it was fitted on."""
    fitted = point.fitted_on
    ridge = f" (ridge {point.ridge:g})" if point.reads_statistics else ""
    what = "statistics" if point.reads_statistics else "class statistics (for heritage teach)"
    on = f"; {what} from {fitted['train_photos']} training photos" if fitted.get("train_photos") else ""
    noise = "" if point.noise_threshold is None else f", or noise below {point.noise_threshold:.4f} pixel correlation,"
    return (
        f"none of these: {point.name}{ridge} below {point.threshold:.6g}{noise} calls {fitted['val_called_none']} of "
        f"{fitted['val_photos']} validation photos none ({fitted['val_called_none_share']:.2%}){on}"
    )


def save_with_point(checkpoint: Checkpoint, point: OperatingPoint, out: str | os.PathLike) -> Path:
    """Write `checkpoint` with `point` as a new pair at `out` (atomic halves; an ensemble stays an ensemble, its
    members' weights and records unchanged); returns the weights path."""
    if isinstance(checkpoint.model, Ensemble):
        members = [checkpoint.member(i) for i in range(checkpoint.member_count)]
        return save_ensemble(out, members, views=checkpoint.views, open_set=point)
    return save_checkpoint(out, replace(checkpoint, open_set=point))


__all__ = [
    "DEFAULT_RIDGE",
    "REJECT_SHARE",
    "check_trained_on",
    "describe",
    "fit_for_run",
    "fit_operating_point",
    "full_float32",
    "reject_threshold",
    "save_with_point",
]
