"""`heritage teach`: a new model from a trained one, new classes and corrections, in seconds on two cores.

The method (docs/teach.md, where the benchmark that chose it is): every network keeps all its layers but the last,
`head.fc2`, frozen, so its penultimate features (`head.fc2`'s input) and with them the none-of-these statistics stay
valid. Each network's `head.fc2` is fitted again on those features:

1. **Imprinting** (Qi et al., CVPR 2018): a new class's row starts as its photos' mean feature, centred on the known
   classes' means and scaled to the known rows' mean norm, its bias the known rows' mean bias.
2. **A short fit of the head** (full-batch Adam, class-balanced cross-entropy) on features of the taught photos
   (each in `VIEWS` views: as is, mirrored, turned a little) and of **replay** for the known classes:
   - with `--data` (the parent's training folder), the real features of its photos;
   - without, samples of each class's Gaussian in the parent's none-of-these statistics (class means, shared
     covariance). Then the new classes are sampled the same way around their photos' mean, and the taught photos'
     own features are left out of the fit unless some carry a known class (corrections): a head fitted on real
     features of the new class against Gaussian samples of the known ones learns "real or sampled", and calls every
     real photo the new class (measured: docs/teach.md).
   The known classes' rows are held near the parent's by an L2 pull (`ANCHOR`), and not fitted at all when nothing
   taught is of a known class: then the known classes keep their every answer among themselves.
3. **The none-of-these record** keeps its threshold and whitening; each new class adds its photos' mean feature as
   a class mean, so that a photo of it is "one of the classes".

The taught model records its parent (path and generation), the classes it added, and the SHA-256, class and kind
of every photo it learned from (`taught` in its JSON); its `trained_on` adds their perceptual hashes, so that the
next teach finds photos already learned. The parent is only read.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch import nn

from heritage_cnn.base.io import CheckpointError
from heritage_cnn.data.folders import DatasetError, ImageSet
from heritage_cnn.data.split import NEAR_DUPLICATE_DISTANCE, perceptual_hashes
from heritage_cnn.inference.classifier import Classifier, network_features
from heritage_cnn.inference.evaluate import near_any, trained_on
from heritage_cnn.inference.teach_photos import MIN_NEW_PHOTOS, TeachPhotos
from heritage_cnn.models.checkpoint import Checkpoint, checkpoint_files, save_checkpoint, save_ensemble
from heritage_cnn.models.ensemble import Ensemble, networks
from heritage_cnn.models.openset import PENULTIMATE, MahalanobisStats
from heritage_cnn.models.openset_point import OperatingPoint, network_id

Log = Callable[[str], None]
VIEWS = ("identity", "mirror", "turn+10", "turn-10")  # the views of each taught photo: the training's flips, rotations
SAMPLES_PER_CLASS = 512  # Gaussian replay features per class without --data
ANCHOR = 1e-2  # L2 pull of the known rows to the parent's, per weight: the known classes barely move (docs/teach.md)
STEPS = 300
LR = 0.01


@dataclass(frozen=True)
class TeachConfig:
    steps: int = STEPS
    lr: float = LR
    anchor: float = ANCHOR
    samples_per_class: int = SAMPLES_PER_CLASS
    seed: int = 0


@dataclass
class TeachResult:
    path: Path
    classes: list[str]
    added: list[str]
    per_class: dict[str, int]
    replay: str
    seconds: float
    skipped_known: list[tuple[str, str]] = field(default_factory=list)


def views(images: torch.Tensor) -> torch.Tensor:
    """The VIEWS of uint8 photos (N, 3, S, S), view-major: (len(VIEWS) * N, 3, S, S)."""
    return torch.cat([images, images.flip(3), TF.rotate(images, 10.0), TF.rotate(images, -10.0)])


def known_already(photos: TeachPhotos, parent: Checkpoint) -> tuple[TeachPhotos, list[tuple[str, str]]]:
    """The photos not in the parent's training data (its `trained_on` perceptual hashes, taught photos included),
    and the others with why."""
    record = trained_on(parent)
    if record is None or not len(photos):
        return photos, []
    hashes, distance = record
    seen = near_any(perceptual_hashes(photos.images), hashes, distance)
    reason = f"already in the model's training data (a perceptual hash within {distance} bits): not learned again"
    skipped = [(photos.paths[i], reason) for i in np.flatnonzero(seen)]
    return photos.subset([i for i in range(len(photos)) if not seen[i]]), skipped


def _gaussian(stats: MahalanobisStats, means: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` samples per row of `means` (C, D) from N(mean, covariance), the covariance the inverse of the
    statistics' precision W W^T: x = mean + W^-T z. (C * count, D)."""
    dim = means.shape[1]
    z = torch.randn(len(means) * count, dim, generator=generator, dtype=torch.float64)
    offsets = torch.linalg.solve_triangular(stats.whitening.double().T, z.T, upper=True).T
    return (means.double().repeat_interleave(count, 0) + offsets).float()


def imprint(old: nn.Linear, new_means: torch.Tensor, known_means: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows for new classes (weights (K, D), biases (K,)): each mean centred on the known means' average, scaled to
    the known rows' mean norm; the known rows' mean bias."""
    centred = new_means - known_means.mean(0, keepdim=True)
    scale = old.weight.norm(dim=1).mean()
    rows = centred / centred.norm(dim=1, keepdim=True).clamp_min(1e-8) * scale
    return rows, old.bias.mean().expand(len(new_means)).clone()


def fit_head(
    old: nn.Linear,
    features: torch.Tensor,
    labels: torch.Tensor,
    new_rows: tuple[torch.Tensor, torch.Tensor],
    fit_known: bool,
    config: TeachConfig,
) -> nn.Linear:
    """`old` with the new rows added, fitted on (features, labels) by class-balanced cross-entropy; the known rows
    held near `old`'s by `config.anchor`, or frozen when not `fit_known`."""
    known = old.out_features
    w0, b0 = old.weight.detach().float(), old.bias.detach().float()
    weight = torch.cat([w0, new_rows[0].detach().float()]).requires_grad_(True)
    bias = torch.cat([b0, new_rows[1].detach().float()]).requires_grad_(True)
    total = len(w0) + len(new_rows[0])
    counts = torch.bincount(labels, minlength=total).float()
    class_weight = torch.where(counts > 0, counts.sum() / (counts.clamp_min(1) * (counts > 0).sum()), 0.0)
    mask = torch.ones(total, 1)
    if not fit_known:
        mask[:known] = 0
    optimiser = torch.optim.Adam([weight, bias], lr=config.lr)
    for _ in range(config.steps):
        optimiser.zero_grad(set_to_none=True)
        logits = features @ weight.T + bias
        loss = nn.functional.cross_entropy(logits, labels, weight=class_weight)
        if fit_known:
            pull = (weight[:known] - w0).pow(2).sum() + (bias[:known] - b0).pow(2).sum()
            loss = loss + config.anchor * pull
        loss.backward()
        weight.grad.mul_(mask)
        bias.grad.mul_(mask[:, 0])
        optimiser.step()
    head = nn.Linear(old.in_features, total)
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    if not torch.isfinite(head.weight).all() or not torch.isfinite(head.bias).all():
        raise ValueError("the head's fit diverged (non-finite weights); nothing was written")
    return head


def _class_ids(names: list[str], classes: list[str]) -> torch.Tensor:
    return torch.tensor([classes.index(n) for n in names], dtype=torch.long)


def _replay_labels(data: ImageSet, classes: list[str], where: str) -> torch.Tensor:
    unknown = [c for c in data.classes if c not in classes]
    if unknown:
        raise DatasetError(f"{where}: class folder(s) {', '.join(unknown)} are not classes of the model")
    return torch.tensor([classes.index(data.classes[i]) for i in data.labels.tolist()], dtype=torch.long)


def _stats(parent: Checkpoint) -> tuple[MahalanobisStats, ...]:
    point = parent.open_set
    return point.stats if point is not None and point.layer == PENULTIMATE else ()


def _fitted_heads(
    parent: Checkpoint, photos: TeachPhotos, classes: list[str], data: ImageSet | None, config: TeachConfig
) -> tuple[list[nn.Linear], list[torch.Tensor]]:
    """Each network's new `head.fc2` and the new classes' mean features (K, D) per network."""
    known, n = len(parent.classes), len(photos)
    labels = _class_ids(photos.labels, classes)
    classifier = Classifier(parent, bf16=False, tta="none")  # float32: the same model on every CPU
    taught = network_features(classifier, views(photos.images))  # (M, V * N, D), view-major
    stats = _stats(parent)
    replay = replay_labels = None
    if data is not None:
        replay = network_features(classifier, data.images)
        replay_labels = _replay_labels(data, parent.classes, "--data")
    elif not stats:
        raise CheckpointError(
            f"{parent.path}: the model carries no class statistics to stand in for its training photos; give the "
            "photos it trained on with --data"
        )
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    fit_known = bool((labels < known).any())
    heads, new_means = [], []
    for m, net in enumerate(networks(parent.model)):
        plain = taught[m, :n]
        means = (
            torch.stack([plain[labels == k].mean(0) for k in range(known, len(classes))])
            if len(classes) > known
            else plain[:0]
        )
        if replay is not None:
            known_means = torch.stack([replay[m][replay_labels == k].mean(0) for k in range(known)])
            features = torch.cat([replay[m], taught[m]])
            targets = torch.cat([replay_labels, labels.repeat(len(VIEWS))])
        else:
            known_means = stats[m].means
            features = _gaussian(stats[m], torch.cat([known_means, means]), config.samples_per_class, generator)
            targets = torch.arange(len(classes)).repeat_interleave(config.samples_per_class)
            if fit_known:  # corrections: real features of known classes, so the fit cannot learn "real" (above)
                features = torch.cat([features, taught[m]])
                targets = torch.cat([targets, labels.repeat(len(VIEWS))])
        rows = imprint(net.head.fc2, means, known_means)
        heads.append(fit_head(net.head.fc2, features, targets, rows, fit_known, config))
        new_means.append(means)
    return heads, new_means


def _with_heads(model: nn.Module, heads: list[nn.Linear]) -> nn.Module:
    """A copy of `model` whose networks end in `heads`."""
    model = copy.deepcopy(model)
    for net, head in zip(networks(model), heads, strict=True):
        net.head.fc2 = head
        net.config = replace(net.config, num_classes=head.out_features)
    return model.eval()


@torch.no_grad()
def _as_stored(model: nn.Module) -> None:
    """Round an ensemble's weights to the float16 its file stores, so that the none-of-these record is fitted for
    the weights as saved (the parent's are float16 already: unchanged)."""
    for tensor in model.state_dict().values():
        if tensor.is_floating_point():
            tensor.copy_(tensor.half().float())


def _point(
    parent: Checkpoint, model: nn.Module, new_means: list[torch.Tensor], photos: TeachPhotos, classes: list[str]
) -> OperatingPoint | None:
    """The parent's none-of-these record for the taught weights: each new class's mean feature added, at the
    record's own layer (the penultimate one's are `new_means`)."""
    point = parent.open_set
    if point is None:
        return None
    if point.stats and point.layer != PENULTIMATE:
        features = network_features(Classifier(parent, bf16=False, tta="none"), photos.images, point.layer)
        labels = _class_ids(photos.labels, classes)
        new_means = [
            torch.stack([f[labels == k].mean(0) for k in range(len(parent.classes), len(classes))])
            if len(classes) > len(parent.classes)
            else f[:0]
            for f in features
        ]
    stats = tuple(
        MahalanobisStats(torch.cat([s.means, m.float()]), s.whitening)
        for s, m in zip(point.stats, new_means, strict=True)
    )
    fitted = {**point.fitted_on, "network": network_id(model.state_dict())}
    command = "heritage teach: the parent's threshold and whitening, the taught classes' mean features added"
    return replace(point, stats=stats, fitted_on=fitted, command=command)


def _record(parent: Checkpoint, photos: TeachPhotos, added: list[str], replay: str, config: TeachConfig) -> dict:
    from heritage_cnn.base.io import read_json

    generation = None
    if parent.path is not None:
        meta = checkpoint_files(parent.path)[1]
        generation = read_json(meta).get("generation") if meta.exists() else None
    return {
        "parent": {"path": str(parent.path), "generation": generation, "taught": parent.info.get("taught")},
        "classes_added": added,
        "replay": replay,
        "method": {"layer": PENULTIMATE, "views": list(VIEWS), **config.__dict__},
        "photos": [
            {"sha256": d, "class": c, "kind": k}
            for d, c, k in zip(photos.digests, photos.labels, photos.kinds, strict=True)
        ],
    }


def _trained_on(parent: Checkpoint, photos: TeachPhotos) -> dict | None:
    record = trained_on(parent)
    hashes = perceptual_hashes(photos.images)
    before, distance = record if record is not None else (np.empty(0, dtype=np.uint64), NEAR_DUPLICATE_DISTANCE)
    return {"phash": [f"{int(h):016x}" for h in np.concatenate([before, hashes])], "distance": distance}


def teach(
    parent: Checkpoint,
    photos: TeachPhotos,
    out: str | os.PathLike,
    data: ImageSet | None = None,
    config: TeachConfig = TeachConfig(),
    log: Log = print,
) -> TeachResult:
    """Write a taught copy of `parent` at `out` (a new checkpoint pair; never over an existing file): the classes of
    `photos` it does not know added, its known classes refitted to corrections among them (the module's docstring).
    `data`: the parent's training photos, for replay; without it, its none-of-these statistics stand in."""
    started = time.perf_counter()
    weights_path, meta_path = checkpoint_files(out)
    for path in (weights_path, meta_path):
        if path.exists():
            raise CheckpointError(f"{path}: exists; teach never overwrites a model: choose another --out")
    asked = list(dict.fromkeys(label for label in photos.labels if label not in parent.classes))
    photos, skipped_known = known_already(photos, parent)
    if not len(photos):
        raise DatasetError("nothing to learn from: every photo is already in the model's training data")
    added = list(dict.fromkeys(label for label in photos.labels if label not in parent.classes))
    for name in asked:
        count = photos.labels.count(name)
        if count < MIN_NEW_PHOTOS:
            raise DatasetError(
                f"{name}: {count} photo(s) new to the model ({len(skipped_known)} already in its training data); "
                f"a new class needs at least {MIN_NEW_PHOTOS}"
            )
    classes = [*parent.classes, *added]
    replay = f"{len(data)} photos of the data folder" if data is not None else "class statistics"
    heads, new_means = _fitted_heads(parent, photos, classes, data, config)
    ensemble = isinstance(parent.model, Ensemble)
    model = _with_heads(parent.model, heads)
    if ensemble:
        _as_stored(model)
    child = replace(parent, model=model, classes=classes, path=weights_path)
    point = _point(parent, model, new_means, photos, classes)
    info = {
        **parent.info,
        "taught": _record(parent, photos, added, replay, config),
        "trained_on": _trained_on(parent, photos),
    }
    child = replace(child, info=info, open_set=point)
    if ensemble:
        members = [child.member(i) for i in range(child.member_count)]
        for member in members:
            member.info = {**member.info, "trained_on": info["trained_on"], "taught": info["taught"]}
        save_ensemble(weights_path, members, views=parent.views, open_set=point)
    else:
        save_checkpoint(weights_path, child)
    seconds = time.perf_counter() - started
    return TeachResult(weights_path, classes, added, photos.per_class(), replay, seconds, skipped_known)


__all__ = ["VIEWS", "TeachConfig", "TeachResult", "fit_head", "imprint", "known_already", "teach", "views"]
