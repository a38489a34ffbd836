"""Evaluating a model on one split of a data folder (`evaluate_on`, `evaluate_split`), and fitting its "none of
these" operating point on its own split (`fit_none_of_these`): both rebuild the model's split from its recipe
(`rebuilt_split`: as its training run drew it, labelled in the model's class order, which for a taught model is not
the folders' alphabetical one) and leave out the photos it trained on.

Messages go through `log` (default `print`) so a caller can silence or capture them; nothing here knows about argparse.

Which images an evaluation scores is the point of this module. `evaluate_on(..., split="auto")` never
silently mixes training images into a figure: it uses the official `test/` folder when there is one, with a
warning that counts any photos in it the model trained on (by the record below); else, when the checkpoint
records the perceptual hashes of the images that trained it (`info["trained_on"]`), every image within that
Hamming distance of a training image is left out and counted (on the training folder this is the validation split again); else it scores every image and
says loudly that it cannot tell trained-on images apart.

Where an evaluation writes is checked before any work (`check_evaluation_paths`, which `heritage evaluate` calls
too): a folder given by the caller (there is no default), outside the data and the negatives, and not a training
run's folder, whose metrics.json holds its epochs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from heritage_cnn.base.io import CheckpointError, inside_problem, output_problem
from heritage_cnn.base.names import first_few, shown
from heritage_cnn.data.folders import (
    DatasetError,
    ImageSet,
    Layout,
    class_folders,
    find_layout,
    folder_classes,
    in_class_order,
    load_images,
    split_folder,
)
from heritage_cnn.inference.evaluate import (
    EVALUATION_FILES,
    Skipped,
    compute_metrics,
    predict_logits,
    remove_stale,
    tell_evaluation,
    trained_on,
    trained_on_mask,
    write_evaluation,
)
from heritage_cnn.inference.openset_eval import (
    OPEN_SET_FILES,
    open_set_section,
    read_negatives,
    scored_logits,
    written_files,
)
from heritage_cnn.inference.openset_fit import (
    DEFAULT_RIDGE,
    DEFAULT_SCORE,
    REJECT_SHARE,
    describe,
    fit_operating_point,
    save_with_point,
)
from heritage_cnn.models.checkpoint import Checkpoint, checkpoint_files, load_checkpoint
from heritage_cnn.models.openset import PENULTIMATE
from heritage_cnn.models.openset_point import CANNOT_REJECT, OperatingPoint, with_override
from heritage_cnn.models.views import TTA_WORDS

if TYPE_CHECKING:
    from heritage_cnn.training.config import TrainConfig

Log = Callable[[str], None]
# what a workflow's `model` may be: a loaded checkpoint, or a pair, run folder or shipped name (None: the default)
Model = str | os.PathLike | Checkpoint | None
SPLITS = ("auto", "test", "val", "unseen", "all")
TTA_LABELS = {mode: "" if mode == "none" else f", TTA ({words})" for mode, words in TTA_WORDS.items()}


def resolve_model(model: Model, device: str = "cpu") -> Checkpoint:
    """The checkpoint a workflow works on: a loaded one as it is, else loaded (once) from `model`."""
    return model if isinstance(model, Checkpoint) else load_checkpoint(model, device=device)


def split_recipe(checkpoint: Checkpoint) -> dict[str, Any] | None:
    """The recipe that rebuilds the model's validation split: its own, or an ensemble's first member's
    (the members share one split; `heritage_cnn.models.checkpoint.save_ensemble` refuses to save members trained on others)."""
    return checkpoint.info.get("recipe") or checkpoint.member(0).info.get("recipe")


def choose_split(layout: Layout, checkpoint: Checkpoint, split: str = "auto") -> str:
    """`auto`: test when the folder has test/, else unseen when the checkpoint records its training images, else all."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if split != "auto":
        return split
    if layout.test is not None:
        return "test"
    return "unseen" if trained_on(checkpoint) is not None else "all"


def run_classes(checkpoint: Checkpoint) -> list[str]:
    """The classes the model's training run split its photos by, in its label order: the model's classes less those
    `heritage teach` added in any generation (`teach_out.taught_chain`)."""
    from heritage_cnn.training.teach_out import taught_chain

    added = {c for record in taught_chain(checkpoint) for c in record.get("classes_added") or [] if isinstance(c, str)}
    return [c for c in checkpoint.classes if c not in added]


def rebuilt_split(
    checkpoint: Checkpoint, data: str | os.PathLike, layout: Layout | None = None
) -> tuple[ImageSet, ImageSet, int]:
    """The photos of `data` on each side of the model's recorded split, (training, validation), labelled in the
    model's class order, and the split's seed. The split is drawn as the training run drew it, over the run's own
    classes (`run_classes`) with the run's labels, whatever order the model lists its classes in (a taught model
    appends its own after them) and whatever class folders a teach added beside them: the photos of a taught class
    are on the training side when the model learned them (by its `trained_on` record), else on the validation side.
    Each side's `skipped` lists the folder's files that could not be read (the split was drawn without them)."""
    from heritage_cnn.training.config import TrainConfig
    from heritage_cnn.training.prepare import prepare_data

    recipe = split_recipe(checkpoint)
    if not recipe:
        raise CheckpointError(f"{checkpoint.path}: has no training recipe, so its split cannot be rebuilt")
    config = TrainConfig.from_dict({**recipe, "data": str(data), "out": "-", "progress": False})
    folder = split_folder(layout or find_layout(data), "train")  # `layout`: the caller found it already
    found = folder_classes([path.name for path in class_folders(folder)], checkpoint.classes, folder)
    run = run_classes(checkpoint)
    missing = [name for name in run if name not in found]
    if missing:
        raise DatasetError(
            f"{folder}: no class folder of {', '.join(map(repr, missing))}, which the model's training run split "
            "its photos by: its split cannot be rebuilt from this folder"
        )
    if set(found) == set(run):  # the run's own folders (every model not taught): as the run split them
        every, *sides = prepare_data(config, log=lambda _: None)
        skipped = every.skipped
    else:
        sides, skipped = _split_with_taught(checkpoint, config, folder, run)
    train, val = (in_class_order(side, checkpoint.classes, folder) for side in sides)
    train.skipped, val.skipped = list(skipped), list(skipped)
    return train, val, config.split.seed


def _split_with_taught(
    checkpoint: Checkpoint, config: TrainConfig, folder: Path, run: list[str]
) -> tuple[tuple[ImageSet, ImageSet], list[tuple[str, str]]]:
    """`rebuilt_split` of a folder holding classes a teach added too: the run's photos split as the run split them
    (`prepare.split_as_run`, with the run's class list and labels), the taught classes' photos each on the side the
    model's record says; and the folder's files that could not be read."""
    from heritage_cnn.data.split import joined, of_classes, set_hashes
    from heritage_cnn.training.prepare import split_as_run

    decoded = load_images(folder, cache_dir=config.cache_dir, require_every_class=True)
    set_hashes(decoded)  # on the set `reuse_decoded` shares: hashed once, however often the split is rebuilt
    every = in_class_order(decoded, checkpoint.classes, folder)
    own, ours = of_classes(every, run)
    train, val = (in_class_order(side, checkpoint.classes, folder) for side in split_as_run(own, config, folder)[1:])
    taught = every.subset(np.flatnonzero(~ours))
    seen = trained_on_mask(checkpoint, taught)
    learned = seen[0] if seen is not None else np.ones(len(taught), dtype=bool)  # no record: never validation
    sides = joined(train, taught.subset(np.flatnonzero(learned))), joined(val, taught.subset(np.flatnonzero(~learned)))
    return sides, decoded.skipped


def _validation_images(checkpoint: Checkpoint, data: str, layout: Layout) -> tuple[ImageSet, str]:
    _, images, seed = rebuilt_split(checkpoint, data, layout)
    return images, f"validation split (duplicate-aware, stratified, seed {seed}, {len(images)} images) of {data}"


def _select(
    checkpoint: Checkpoint, data: str, layout: Layout, split: str, progress: bool, log: Log
) -> tuple[ImageSet, str, dict[str, Any]]:
    """The images a split scores, a description for titles, and what was left out or mixed in."""
    if split == "val":
        images, described = _validation_images(checkpoint, data, layout)
        # rebuilt from another copy of the data (fewer photos, other files), the split can hold photos the model
        # trained on: those are left out too, as for --split unseen
        return _unseen(checkpoint, images, described, str(data), log, rebuilt=True)
    folder = split_folder(layout, "test" if split == "test" else "train")
    images = load_images(folder, classes=checkpoint.classes, progress=progress)
    missing = [c for c, n in zip(checkpoint.classes, images.class_counts(), strict=True) if n == 0]
    if missing:
        log(f"note: no images of {len(missing)} model class(es) in the folder: {', '.join(missing)}")
    if split == "unseen":
        return _unseen(checkpoint, images, f"images of {folder} the model did not train on", str(folder), log)
    return _every_image(checkpoint, images, split, data if split == "test" else str(folder), log)


def _every_image(
    checkpoint: Checkpoint, images: ImageSet, split: str, where: str, log: Log
) -> tuple[ImageSet, str, dict]:
    """Every image of test/ (`split` "test") or of the training folder ("all"), those the model trained on counted
    and warned about, by its record (test/ may hold copies of training photos); --split all without a record warns
    that they cannot be told apart (test/ is meant to hold none: a note)."""
    seen = trained_on_mask(checkpoint, images)
    described = f"test split of {where}" if split == "test" else f"all of {where}"
    if seen is None:
        if split == "all":
            log(
                f"WARNING: {checkpoint.path} does not record which images trained it, so trained-on images cannot be "
                f"told apart: the figure below may include them and overstate accuracy"
            )
        else:
            log(f"note: {checkpoint.path} does not record which images trained it: test/ cannot be checked for them")
        return images, f"{described} ({len(images)} images)", {"trained_on_known": False}
    count = int(seen[0].sum())
    if count:
        what = "--split all" if split == "all" else "the test split"
        log(f"warning: {what} includes {count} of {len(images)} images the model {seen[1]}")
    extra = {"trained_on_known": True, "trained_on_included": {"count": count, "reason": seen[1]}}
    trained = f", {count} trained on" if count or split == "all" else ""
    return images, f"{described} ({len(images)} images{trained})", extra


def _unseen(
    checkpoint: Checkpoint, images: ImageSet, described: str, where: str, log: Log, rebuilt: bool = False
) -> tuple[ImageSet, str, dict]:
    """`images` less those the model trained on; with no record, all of them (a rebuilt split silently, since it
    was drawn to leave the training photos out; any other folder with a warning)."""
    seen = trained_on_mask(checkpoint, images)
    if seen is None:
        if not rebuilt:
            log(
                f"WARNING: {checkpoint.path} does not record which images trained it, so trained-on images cannot "
                f"be told apart: the figure below may include them and overstate accuracy"
            )
        if rebuilt:
            return images, described, {}
        return images, f"all of {where} ({len(images)} images)", {"trained_on_known": False}
    mask, reason = seen
    count = int(mask.sum())
    if count == len(images):
        raise ValueError(
            f"{where}: all {count} images were {reason}: nothing unseen to evaluate (--split all scores them)"
        )
    if count or not rebuilt:
        log(f"excluded {count} of {len(images)} images: {reason}")
    kept = images.subset(np.flatnonzero(~mask))
    kept.skipped = images.skipped
    extra = {"trained_on_known": True, "excluded": {"count": count, "of": len(images), "reason": reason}}
    return kept, (described if rebuilt and not count else f"{described} ({len(kept)} of {len(images)})"), extra


def _named(option: str, flags: bool) -> str:
    """A path's name in a message: the CLI's option (--out) or the function's parameter (out)."""
    return f"--{option}" if flags else option


def check_input_paths(
    data: str | os.PathLike, out: str | os.PathLike, negatives: str | os.PathLike | None = None, flags: bool = False
) -> None:
    """Before anything is read or written: `out` a folder that can be made, outside the data and the negatives (its
    figures would be read as their photos next time), and `negatives` a folder of photos that are not the data
    set's (`openset_eval.check_negatives`). A ValueError in one line; `flags`: the paths named as the CLI's options
    (--out), else as parameters."""
    from heritage_cnn.inference.openset_eval import check_negatives

    def named(option: str) -> str:
        return _named(option, flags)

    problem = output_problem(out, flag=named("out"))
    if problem is not None:
        raise ValueError(problem)
    for option, given in (("data", data), ("negatives", negatives)):
        problem = None if given is None else inside_problem(out, given, named("out"), named(option))
        if problem is not None:
            raise ValueError(problem)
    if negatives is not None:
        check_negatives(negatives, data, f"{named('negatives')} {negatives}")


def check_evaluation_paths(
    data: str | os.PathLike, out: str | os.PathLike, negatives: str | os.PathLike | None = None, flags: bool = False
) -> None:
    """`check_input_paths`, and `out` not a training run's folder (trained weights, or a metrics.json of epochs): the
    evaluation's metrics.json would replace the run's, and its figures would mix with the run's files."""
    from heritage_cnn.training.state import CHECKPOINT_FILES, METRICS_JSON

    check_input_paths(data, out, negatives, flags)
    found = [name for name in CHECKPOINT_FILES if (Path(out) / name).exists()]
    if not found and _holds_epochs(Path(out) / METRICS_JSON):
        found = [METRICS_JSON]
    if found:
        raise ValueError(
            f"{_named('out', flags)} {out}: a training run's folder (it holds {first_few(found)}); its "
            f"metrics.json would be replaced: write the evaluation elsewhere, {Path(out) / 'eval'} say"
        )


def _holds_epochs(path: Path) -> bool:
    """Whether `path` is a training run's metrics.json (a list of epochs; an evaluation's is one object)."""
    try:
        return isinstance(json.loads(path.read_text(encoding="utf-8")), list)
    except (OSError, ValueError):
        return False


def evaluate_on(
    model: Model,
    data: str | os.PathLike,
    split: str = "auto",
    out: str | os.PathLike | None = None,
    tta: str | None = None,
    device: str = "cpu",
    progress: bool = False,
    log: Log = print,
    none_threshold: float | None = None,
    negatives: str | os.PathLike | None = None,
    name_skipped: Skipped | None = None,
) -> dict[str, Any]:
    """Evaluate a model on one split of a data folder, write the figures to the folder `out` (required: outside the
    data and the negatives, not a training run's folder: `check_evaluation_paths`), return the metrics.

    `model`: a loaded `Checkpoint`, or a checkpoint pair, run folder or shipped name (None: the shipped
    default) loaded on `device`. `tta`: the test-time views ("none", "flip", "multi"); None, the model's own
    (`Checkpoint.views`), so that the figures are those of the model as `heritage predict` uses it.

    Splits: test (DIR/test), val (the model's own validation split, rebuilt from its recipe), unseen
    (the folder's images that did not train the model), all (every image, trained-on ones counted),
    auto (test, else unseen, else all; see the module's docstring).

    A model with a "none of these" operating point (its threshold, or `none_threshold`) also gets the open-set
    section (`heritage_cnn.inference.openset_eval`), with the ROC against `negatives`, a folder of photos of none of
    its classes.

    Each file of the data or of `negatives` that could not be read is skipped, listed in metrics.json (`skipped`,
    `negatives_skipped`) and named: to `name_skipped(path, reason)`, by default in a line through `log`. Files of
    an earlier evaluation in `out` that this one did not write (its open-set figures, say) are removed.
    """
    check_evaluation_paths(data, _required(out), negatives)
    checkpoint = resolve_model(model, device)
    layout = find_layout(data)
    return evaluate_split(
        checkpoint, str(data), layout, split, out, tta, progress, log, none_threshold, negatives, name_skipped
    )


def _operating_point(
    checkpoint: Checkpoint, none_threshold: float | None, negatives: str | os.PathLike | None, log: Log
) -> OperatingPoint | None:
    """The "none of these" operating point an evaluation uses (`none_threshold` replacing the model's threshold)."""
    point = with_override(checkpoint.open_set, none_threshold, checkpoint.path)
    if point is None and negatives is not None:
        raise ValueError(f"--negatives: {checkpoint.path} has no none-of-these score to tell them apart with")
    if point is None:
        log(f"note: {CANNOT_REJECT}")
    return point


def _required(out: str | os.PathLike | None) -> str | os.PathLike:
    """The output folder an evaluation was given: there is no default (the current folder would be a surprise)."""
    if out is None:
        raise ValueError("out: give the folder the evaluation writes its figures and metrics.json into")
    return out


def evaluate_split(
    checkpoint: Checkpoint,
    data: str,
    layout: Layout,
    split: str = "auto",
    out: str | os.PathLike | None = None,
    tta: str | None = None,
    progress: bool = False,
    log: Log = print,
    none_threshold: float | None = None,
    negatives: str | os.PathLike | None = None,
    name_skipped: Skipped | None = None,
) -> dict[str, Any]:
    """`evaluate_on` for a loaded model and a data folder whose layout is known; `data` is the folder as the
    caller named it, for the titles and metrics.json. The caller has checked the paths (`check_evaluation_paths`)."""
    out = _required(out)
    point = _operating_point(checkpoint, none_threshold, negatives, log)
    # read before the data is scored: a folder without one readable photo is refused before that work
    negative_photos = None if negatives is None else read_negatives(negatives, checkpoint.image_size)
    tta = checkpoint.views if tta is None else tta
    split = choose_split(layout, checkpoint, split)
    images, described, extra = _select(checkpoint, data, layout, split, progress, log)
    if point is None:
        logits = predict_logits(checkpoint.model, images.images, checkpoint.normalise, tta=tta, progress=progress)
    else:
        logits, scores = scored_logits(checkpoint, point, images.images, tta, progress=progress)
    probabilities = torch.softmax(logits.float(), 1).cpu().numpy()
    labels = images.labels.numpy()
    metrics = compute_metrics(labels, probabilities, checkpoint.display_names)
    title = shown(f"{Path(str(checkpoint.path)).name} on the {described}{TTA_LABELS[tta]}")  # text in figures
    extra = {"model": str(checkpoint.path), "data": data, "split": split, "tta": tta, **extra}
    if point is not None:
        noise, overridden = point.noise(images.images), none_threshold is not None
        extra["open_set"] = open_set_section(
            checkpoint, point, scores, noise, probabilities, labels, out, negative_photos, tta, overridden, log
        )
    extra["skipped"] = [{"path": p, "reason": r} for p, r in images.skipped]
    if negatives is not None:  # beside the data's, where a reader looks for what was skipped
        extra["negatives_skipped"] = extra["open_set"]["negatives"].pop("skipped")
    paths = write_evaluation(out, metrics, checkpoint.display_names, title, extra, images.images, probabilities, labels)
    written = [path.name for path in paths.values()] + written_files(extra.get("open_set"))
    removed = remove_stale(out, [*EVALUATION_FILES, *OPEN_SET_FILES], written)
    tell_evaluation(metrics, extra, Path(out), written, removed, TTA_LABELS[tta], log, name_skipped)
    return metrics


def fit_none_of_these(
    checkpoint: Checkpoint,
    data: str | os.PathLike,
    out: str | os.PathLike,
    score: str = DEFAULT_SCORE,
    layer: str = PENULTIMATE,
    ridge: float = DEFAULT_RIDGE,
    reject_share: float = REJECT_SHARE,
    command: str | None = None,
    log: Log = print,
    name_skipped: Skipped | None = None,
) -> Path:
    """(Re)fit a model's "none of these" operating point on a data folder and write the model with it as a new
    checkpoint at `out` (the model's own files are never written): the class statistics on the photos its recorded
    split trained on, the threshold on its validation photos less any it trained on (as `evaluate --split val`).
    Each file of the folder that could not be read is left out and named, as an evaluation names them: to
    `name_skipped(path, reason)`, by default in a line through `log`; then counted."""
    existing = [path for path in checkpoint_files(out) if path.exists()]
    if existing:
        raise ValueError(f"{existing[0]}: already exists; the fitted model is written as a new checkpoint")
    train_set, val_set, _ = rebuilt_split(checkpoint, data)
    name = name_skipped or (lambda path, reason: log(f"skipped {shown(path)}: {reason}"))
    for path, reason in train_set.skipped:
        name(path, reason)
    if train_set.skipped:
        log(f"skipped {len(train_set.skipped)} unreadable file(s) of {shown(data)}: left out of the fit")
    val, _, _ = _unseen(checkpoint, val_set, "validation split", str(data), log, rebuilt=True)
    log(f"fitting on {len(train_set)} training and {len(val)} validation photos of {data}")
    point = fit_operating_point(checkpoint, train_set, val.images, score, layer, ridge, reject_share, command)
    weights = save_with_point(checkpoint, point, out)
    load_checkpoint(weights)  # the pair just written must load: a write that cannot be read back fails here
    log(describe(point))
    log("written: " + " + ".join(shown(path) for path in checkpoint_files(weights)))  # both, folder and all
    return weights
