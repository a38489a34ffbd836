"""`heritage teach`: a new model from a trained one, new classes and corrections, in seconds on two cores.

Every network of the model keeps its convolutional layers frozen; its head is fitted again on their features
(`teach_fit`, where the two fits and their reasons are; docs/teach.md, where the benchmarks that chose them are):

- **with `--data`** (the photos the parent trained on, found by its `trained_on` record; its validation photos set
  the none-of-these threshold again): both fully connected layers, on the pooled features of the replayed photos
  (as is and mirrored) and of the taught ones, distilled towards the parent on the replayed ones. The penultimate
  features change, so the none-of-these record is fitted again by the rule every trained model's is
  (`openset_fit.fit_operating_point`);
- **without**: the last layer only, on the penultimate features, the known classes replayed as samples of the
  Gaussians of the parent's none-of-these statistics. The new classes are sampled the same way around their photos'
  mean, and the taught photos' own features are left out unless some carry a known class (corrections): a layer
  fitted on real features of the new class against samples of the known ones can learn "real or sampled" and call
  every real photo the new class (an earlier version did). The known rows are frozen when nothing taught is of a
  known class. The none-of-these record keeps its threshold and whitening; each new class adds its mean.

With `--data`, what the taught heads cost the known classes is measured on the parent's validation photos, and
bounded where asked (`--max-known-loss`: the new classes' logits lowered until the known classes lose no more).

Each taught photo is seen in `VIEWS` views. The taught model records its parent (resolved path, generation and own
validation figure, which the taught model does not carry as its own: `teach_out.own_info`), the classes it added, and
the SHA-256, class and kind of every photo it learned from (`taught` in its JSON); its `trained_on` adds their
perceptual hashes, so that the next teach finds photos already learned. The parent is only read; where
the taught model is written is checked before any work and again before it is written (`teach_out`).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch import nn

from heritage_cnn.base.io import CheckpointError
from heritage_cnn.base.names import first_few
from heritage_cnn.data.folders import DatasetError, ImageSet
from heritage_cnn.data.split import NEAR_DUPLICATE_DISTANCE, perceptual_hashes, set_hashes
from heritage_cnn.inference.classifier import Classifier, network_features
from heritage_cnn.inference.evaluate import near_any, trained_on
from heritage_cnn.inference.openset_fit import DEFAULT_RIDGE, fit_operating_point
from heritage_cnn.inference.teach_photos import MIN_NEW_PHOTOS, TeachPhotos
from heritage_cnn.models.checkpoint import Checkpoint, save_checkpoint, save_ensemble
from heritage_cnn.models.ensemble import Ensemble, networks
from heritage_cnn.models.openset import PENULTIMATE, POOLED, MahalanobisStats
from heritage_cnn.models.openset_point import OperatingPoint, network_id
from heritage_cnn.training.teach_cache import cached_features
from heritage_cnn.training.teach_fit import (
    FitConfig,
    KnownCost,
    fit_hidden_and_last,
    fit_last_layer,
    gaussian,
    imprint,
    known_cost,
    offset_for_cost,
)
from heritage_cnn.training.teach_out import check_cache_dir, own_info, parent_record, teach_files

Log = Callable[[str], None]
VIEWS = ("identity", "mirror", "turn+10", "turn-10")  # the views of each taught photo: the training's flips, rotations


@dataclass
class TeachResult:
    path: Path
    classes: list[str]
    added: list[str]
    per_class: dict[str, int]
    replay: str
    seconds: float
    skipped_known: list[tuple[str, str]] = field(default_factory=list)
    cost: KnownCost | None = None  # on the parent's validation photos, with --data
    learned: TeachPhotos | None = None  # the photos learned from: those given less `skipped_known`


def views(images: torch.Tensor) -> torch.Tensor:
    """The VIEWS of uint8 photos (N, 3, S, S), view-major: (len(VIEWS) * N, 3, S, S)."""
    return torch.cat([images, images.flip(3), TF.rotate(images, 10.0), TF.rotate(images, -10.0)])


def known_already(
    photos: TeachPhotos, hashes: np.ndarray, parent: Checkpoint
) -> tuple[TeachPhotos, np.ndarray, list[tuple[str, str]]]:
    """The photos not in the parent's training data (its `trained_on` perceptual hashes, taught photos included)
    with their perceptual `hashes`, and the others with why."""
    record = trained_on(parent)
    if record is None or not len(photos):
        return photos, hashes, []
    known, distance = record
    seen = near_any(hashes, known, distance)
    # a hash match says "looks like", not "is": a flat sky or wall can match an unrelated photo's hash
    reason = (
        f"looks like a photo of the model's training data (perceptual hashes within {distance} bits): not learned again"
    )
    skipped = [(photos.paths[i], reason) for i in np.flatnonzero(seen)]
    return photos.subset([i for i in range(len(photos)) if not seen[i]]), hashes[~seen], skipped


def replay_split(images: ImageSet, parent: Checkpoint) -> tuple[ImageSet, ImageSet | None]:
    """A data folder's photos the parent trained on (its `trained_on` record: the same perceptual hash), to replay,
    and the others, its validation photos, where the none-of-these threshold is set again and what teaching costs the
    known classes is measured; all of them and None when the parent keeps no record."""
    record = trained_on(parent)
    if record is None:
        return images, None
    keep = near_any(set_hashes(images), record[0], 0)
    return images.subset(np.flatnonzero(keep)), images.subset(np.flatnonzero(~keep))


def _class_ids(names: list[str], classes: list[str]) -> torch.Tensor:
    return torch.tensor([classes.index(n) for n in names], dtype=torch.long)


def _replay_labels(data: ImageSet, classes: list[str], where: str) -> torch.Tensor:
    """The replayed photos' labels as the model's class indices; every class of the model must have photos there,
    or the fit would unlearn it (a class taught earlier: its photos belong in --data too)."""
    unknown = [c for c in data.classes if c not in classes]
    if unknown:
        raise DatasetError(f"{where}: class folder(s) {', '.join(unknown)} are not classes of the model")
    labels = torch.tensor([classes.index(data.classes[i]) for i in data.labels.tolist()], dtype=torch.long)
    missing = [c for k, c in enumerate(classes) if not (labels == k).any()]
    if missing:
        raise DatasetError(
            f"{where}: no photo the model trained on in class(es) {', '.join(missing)}; replaying without them "
            "would unlearn them: add the photos it learned them from, as class folders"
        )
    return labels


def _stats(parent: Checkpoint) -> tuple[MahalanobisStats, ...]:
    point = parent.open_set
    return point.stats if point is not None and point.layer == PENULTIMATE else ()


def _new_means(features: torch.Tensor, labels: torch.Tensor, known: int, total: int) -> torch.Tensor:
    """The mean feature (K, D) of each new class (known .. total - 1) among `features` (N, D)."""
    return torch.stack([features[labels == k].mean(0) for k in range(known, total)]) if total > known else features[:0]


def _last_layers(
    parent: Checkpoint, photos: TeachPhotos, classes: list[str], config: FitConfig
) -> tuple[list[tuple[nn.Linear | None, nn.Linear]], list[torch.Tensor]]:
    """Without replay photos: each network's new `head.fc2` (fc1 unchanged: None), on Gaussian replay; and the
    new classes' mean penultimate features per network."""
    stats = _stats(parent)
    if not stats:
        raise CheckpointError(
            f"{parent.path}: the model carries no class statistics to stand in for its training photos; give the "
            "photos it trained on with --data"
        )
    known, n = len(parent.classes), len(photos)
    labels = _class_ids(photos.labels, classes)
    taught = network_features(Classifier(parent, bf16=False, tta="none"), views(photos.images))  # view-major
    generator = torch.Generator().manual_seed(config.seed)
    fit_known = bool((labels < known).any())
    heads, new_means = [], []
    for m, net in enumerate(networks(parent.model)):
        means = _new_means(taught[m, :n], labels, known, len(classes))
        features = gaussian(stats[m], torch.cat([stats[m].means, means]), config.samples_per_class, generator)
        targets = torch.arange(len(classes)).repeat_interleave(config.samples_per_class)
        if fit_known:  # corrections: real features of known classes, so the fit cannot learn "real" (above)
            features = torch.cat([features, taught[m]])
            targets = torch.cat([targets, labels.repeat(len(VIEWS))])
        rows = imprint(net.head.fc2, means, stats[m].means)
        heads.append((None, fit_last_layer(net.head.fc2, features, targets, rows, fit_known, config)))
        new_means.append(means)
    return heads, new_means


def _both_layers(
    parent: Checkpoint,
    photos: TeachPhotos,
    classes: list[str],
    data: ImageSet,
    config: FitConfig,
    cache_dir: str | os.PathLike | None,
    log: Log,
) -> tuple[list[tuple[nn.Linear | None, nn.Linear]], torch.Tensor]:
    """With replay photos: each network's new `head.fc1` and `head.fc2`, fitted on pooled features; and those
    features of the replayed photos and the taught ones as they are (M, len(data) + len(photos), D), which the
    none-of-these refit reads again (the convolutions do not change). The replayed photos' features are kept in
    `cache_dir` between runs, where one is given (`teach_cache`)."""
    classifier = Classifier(parent, bf16=False, tta="none")
    replay_images = torch.cat([data.images, data.images.flip(3)])
    replayed = cached_features(classifier, replay_images, POOLED, cache_dir, log)
    replayed_labels = _replay_labels(data, parent.classes, "--data").repeat(2)
    taught = network_features(classifier, views(photos.images), POOLED)
    labels = _class_ids(photos.labels, classes).repeat(len(VIEWS))
    added = len(classes) - len(parent.classes)
    heads = [
        fit_hidden_and_last(
            net.head, replayed[m], replayed_labels, taught[m], labels, added, replace(config, seed=config.seed + m)
        )
        for m, net in enumerate(networks(parent.model))
    ]
    return heads, torch.cat([replayed[:, : len(data)], taught[:, : len(photos)]], 1)  # views are view-major


def _with_heads(model: nn.Module, heads: list[tuple[nn.Linear | None, nn.Linear]]) -> nn.Module:
    """A copy of `model` whose networks' heads have the new `fc1` (None: unchanged) and `fc2`."""
    model = copy.deepcopy(model)
    for net, (fc1, fc2) in zip(networks(model), heads, strict=True):
        if fc1 is not None:
            net.head.fc1 = fc1
        net.head.fc2 = fc2
        net.config = replace(net.config, num_classes=fc2.out_features)
    return model.eval()


@torch.no_grad()
def _as_stored(model: nn.Module) -> None:
    """Round an ensemble's weights to the float16 its file stores, so that the none-of-these record is fitted for
    the weights as saved (the parent's are float16 already: unchanged)."""
    for tensor in model.state_dict().values():
        if tensor.is_floating_point():
            tensor.copy_(tensor.half().float())


def _refitted_point(
    parent: Checkpoint,
    child: Checkpoint,
    photos: TeachPhotos,
    classes: list[str],
    data: ImageSet,
    held_out: ImageSet | None,
    log: Log,
    pooled: torch.Tensor,
) -> OperatingPoint | None:
    """The none-of-these record fitted again for the new head, by the parent's rule (score, layer, ridge, share):
    the statistics on its training photos and the taught ones (from their `pooled` features through the new head),
    the threshold on its validation photos."""
    point = parent.open_set
    if point is None:
        return None
    if held_out is None or not len(held_out):
        log("no none-of-these threshold: --data holds none of the model's validation photos to set it on")
        return None
    images = torch.cat([data.images, photos.images])
    labels = torch.cat([_replay_labels(data, parent.classes, "--data"), _class_ids(photos.labels, classes)])
    train = ImageSet(images, labels, [*data.paths, *photos.paths], classes)
    ridge = point.ridge if point.ridge is not None else DEFAULT_RIDGE
    command = "heritage teach --data: fitted again on the parent's training photos and the taught ones"
    layer = point.layer or PENULTIMATE
    with torch.no_grad():
        features = (
            torch.stack([torch.relu(net.head.fc1(f)) for net, f in zip(networks(child.model), pooled, strict=True)])
            if layer == PENULTIMATE
            else pooled
        )
    return fit_operating_point(
        child, train, held_out.images, point.score, layer, ridge, point.reject_share, command, train_features=features
    )


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


@torch.no_grad()
def _known_cost(parent: Checkpoint, model: nn.Module, held_out: ImageSet, bound: float | None) -> KnownCost:
    """What the taught `model` costs the known classes on the parent's validation photos (one view, float32, as the
    fits see them), its new classes' logits first lowered, where `bound` asks, until the known classes lose at most
    `bound` points there (the offset added to every network's new biases; an ensemble's rounded to its file's float16
    again). The cost recorded is the final weights'."""
    known = len(parent.classes)
    pooled = network_features(Classifier(parent, bf16=False, tta="none"), held_out.images, POOLED)
    labels = _class_ids([held_out.classes[i] for i in held_out.labels.tolist()], parent.classes)

    def logits(m: nn.Module) -> torch.Tensor:
        return torch.stack(
            [net.head.fc2(torch.relu(net.head.fc1(f))) for net, f in zip(networks(m), pooled, strict=True)]
        )

    before = logits(parent.model)
    if bound is None:
        return known_cost(before, logits(model), labels)
    chosen = offset_for_cost(before, logits(model), labels, bound)
    for net in networks(model):
        net.head.fc2.bias[known:] += chosen.offset
    if isinstance(model, Ensemble):
        _as_stored(model)
    return replace(known_cost(before, logits(model), labels), offset=chosen.offset, bound=bound)


def _record(parent: Checkpoint, photos: TeachPhotos, added: list[str], replay: str, config: FitConfig) -> dict:
    return {
        "parent": parent_record(parent),
        "classes_added": added,
        "replay": replay,
        "method": {"layer": PENULTIMATE, "views": list(VIEWS), **config.__dict__},
        "photos": [
            {"sha256": d, "class": c, "kind": k}
            for d, c, k in zip(photos.digests, photos.labels, photos.kinds, strict=True)
        ],
    }


def _trained_on(parent: Checkpoint, hashes: np.ndarray) -> dict | None:
    """The parent's `trained_on` record with the taught photos' perceptual hashes added."""
    record = trained_on(parent)
    before, distance = record if record is not None else (np.empty(0, dtype=np.uint64), NEAR_DUPLICATE_DISTANCE)
    return {"phash": [f"{int(h):016x}" for h in np.concatenate([before, hashes])], "distance": distance}


def _not_taught(held_out: ImageSet | None, hashes: np.ndarray, log: Log) -> ImageSet | None:
    """The parent's validation photos less those a taught photo repeats (corrections of a sort of them are): the
    threshold and the cost are set on photos the fit did not see."""
    if held_out is None or not len(held_out) or not len(hashes):
        return held_out
    taught = near_any(set_hashes(held_out), hashes, NEAR_DUPLICATE_DISTANCE)
    if taught.any():
        log(
            f"{int(taught.sum())} of the model's {len(held_out)} validation photos are among the photos taught: the "
            f"none-of-these threshold and the cost to the known classes are set on the other {int((~taught).sum())}"
        )
    return held_out.subset(np.flatnonzero(~taught))


def _learnable(parent: Checkpoint, photos: TeachPhotos) -> tuple[TeachPhotos, np.ndarray, list, list[str]]:
    """The photos not yet in the parent's training data, their perceptual hashes, the others with why, and the
    classes they add; a DatasetError when nothing is left or a new class keeps fewer than MIN_NEW_PHOTOS."""
    given = photos
    asked = list(dict.fromkeys(label for label in photos.labels if label not in parent.classes))
    photos, hashes, skipped_known = known_already(photos, perceptual_hashes(photos.images), parent)
    if not len(photos):
        read = first_few(list(dict.fromkeys(given.where(label) for label in given.labels)))
        raise DatasetError(
            f"{read}: nothing to learn from: all {len(given)} photo(s) look like photos the model trained on (its "
            "training data, or photos it was taught already)"
        )
    label_of = dict(zip(given.paths, given.labels, strict=True))
    for name in asked:
        count = photos.labels.count(name)
        if count < MIN_NEW_PHOTOS:
            alike = sum(label_of[path] == name for path, _ in skipped_known)
            raise DatasetError(
                f"{given.where(name)}: {count} photo(s) new to the model ({alike} more look like photos of its "
                f"training data); a new class needs at least {MIN_NEW_PHOTOS}"
            )
    added = list(dict.fromkeys(label for label in photos.labels if label not in parent.classes))
    return photos, hashes, skipped_known, added


def teach(
    parent: Checkpoint,
    photos: TeachPhotos,
    out: str | os.PathLike,
    data: ImageSet | None = None,
    config: FitConfig | None = None,
    log: Log = print,
    held_out: ImageSet | None = None,
    max_known_loss: float | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> TeachResult:
    """Write a taught copy of `parent` at `out` (a new checkpoint pair; never over an existing file): the classes of
    `photos` it does not know added, its known classes refitted to corrections among them (the module's docstring).
    `data`: the parent's training photos, for replay; without it, its none-of-these statistics stand in.
    `held_out`: with `data`, the parent's validation photos, where the none-of-these threshold is set again and the
    cost to the known classes is measured (`TeachResult.cost`); without them the taught model cannot reject (said in
    `log`). `max_known_loss`: the most accuracy points the known classes may lose there; the new classes' logits are
    lowered until they lose no more (needs `held_out` and a class added). `cache_dir`: where the replayed photos'
    features are kept between runs (`teach_cache`)."""
    started = time.perf_counter()
    config = config or FitConfig()
    weights_path, _ = teach_files(out)
    check_cache_dir(cache_dir)
    photos, hashes, skipped_known, added = _learnable(parent, photos)
    held_out = _not_taught(held_out, hashes, log)
    if max_known_loss is not None:
        if data is None or held_out is None or not len(held_out):
            raise ValueError(
                "--max-known-loss measures the known classes on the model's validation photos: give --data, the "
                "folder it trained on (a model that records its training photos), with photos it neither trained on "
                "nor is taught"
            )
        if not added:
            raise ValueError("--max-known-loss bounds what new classes take from the known ones, and none is added")
    classes = [*parent.classes, *added]
    replay = f"{len(data)} photos of the data folder" if data is not None else "class statistics"
    if data is None:
        heads, new_means = _last_layers(parent, photos, classes, config)
    else:
        (heads, pooled), new_means = _both_layers(parent, photos, classes, data, config, cache_dir, log), []
    ensemble = isinstance(parent.model, Ensemble)
    model = _with_heads(parent.model, heads)
    if ensemble:
        _as_stored(model)
    measured = data is not None and held_out is not None and len(held_out) > 0
    cost = _known_cost(parent, model, held_out, max_known_loss) if measured else None
    child = replace(parent, model=model, classes=classes, path=weights_path)
    if data is None:
        point = _point(parent, model, new_means, photos, classes)
    else:
        point = _refitted_point(parent, child, photos, classes, data, held_out, log, pooled)
    record = _record(parent, photos, added, replay, config)
    if cost is not None:
        record["known_cost"] = {**asdict(cost), "loss_points": cost.loss_points, "view": "one view, float32"}
    info = own_info(parent.info) | {"taught": record, "trained_on": _trained_on(parent, hashes)}
    child = replace(child, info=info, open_set=point)
    teach_files(out)  # again: nothing may have appeared there while the heads were fitted
    if ensemble:
        members = [child.member(i) for i in range(child.member_count)]
        for member in members:
            member.info = own_info(member.info) | {"trained_on": info["trained_on"], "taught": info["taught"]}
        save_ensemble(weights_path, members, views=parent.views, open_set=point)
    else:
        save_checkpoint(weights_path, child)
    seconds = time.perf_counter() - started
    return TeachResult(weights_path, classes, added, photos.per_class(), replay, seconds, skipped_known, cost, photos)


__all__ = ["VIEWS", "TeachResult", "known_already", "replay_split", "teach", "views"]
