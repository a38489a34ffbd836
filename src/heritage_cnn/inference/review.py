"""`heritage review`: a queue of photos whose label is likely wrong, by confident learning (docs/review.md).

Every photo of a data folder is decoded once; the model gives each its penultimate features (`network_features`, as
`Classifier` runs the networks); a logistic regression (scikit-learn, standardised features) is fitted five times,
each time leaving one fold of photos out, so that every photo gets class probabilities from a fit that never saw its
label (out-of-fold). Near-duplicate photos (the split's perceptual-hash groups) stay in one fold: a copy with the same
label in another fold would vouch for the label. cleanlab's `find_label_issues` then flags the photos whose given
label disagrees with those probabilities (Northcutt et al.'s confident learning) and ranks them by self-confidence,
the out-of-fold probability of the given label; the queue is the flagged photos in that order, then every other
photo by self-confidence.

A network that trained on these very photos memorised their labels, wrong ones included, so its features make a
wrong label look right and the queue misses some: the honest reviewer is a model trained on other labels. The
summary counts the photos the model trained on (by its `trained_on` record) and says so.
"""

from __future__ import annotations

import math
import numbers
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from heritage_cnn import __version__
from heritage_cnn.base.io import (
    atomic_write_csv,
    atomic_write_json,
    holds_anything,
    inside_input,
    output_problem,
)
from heritage_cnn.base.names import shown
from heritage_cnn.data.folders import DatasetError, ImageSet, display_name, find_layout, load_images, split_folder
from heritage_cnn.data.relabel import COLUMNS as RELABEL_COLUMNS
from heritage_cnn.data.split import NEAR_DUPLICATE_DISTANCE, group_near_duplicates, set_hashes
from heritage_cnn.inference.classifier import Classifier, network_features
from heritage_cnn.inference.evaluate import near_any, trained_on
from heritage_cnn.models.checkpoint import Checkpoint
from heritage_cnn.models.openset import PENULTIMATE

Log = Callable[[str], None]
FOLDS = 5
MIN_PER_CLASS = 2  # a photo's out-of-fold fit must hold another photo of its class
QUEUE_FILE, RELABEL_FILE = "queue.csv", "relabel.csv"  # in the review's folder; `train --relabel` reads the second
TOP = 3  # classes listed per photo in queue.csv
SHEET_COLUMNS, SHEET_ROWS = 8, 5  # photos per contact sheet: 40
QUEUE_FIELDS = [
    "rank",
    "path",
    "given_label",
    "suggested_label",
    "self_confidence",
    *[f"top{k}_{part}" for k in range(1, TOP + 1) for part in ("label", "probability")],
    "flagged",
]
FOLD_SEED_MAX = 2**32 - 1  # scikit-learn's splitter takes a NumPy seed
IN_MEMORY = "an in-memory model (no file)"  # summary.json's `model` for a checkpoint not loaded from a file
MEMORISED = (
    "the model trained on {n} of these {total} photos: it memorised their labels, wrong ones included, so the queue "
    "misses some; a model trained on other labels reviews them honestly"
)


@dataclass
class Review:
    """The queue of one data folder: per photo (in folder order) its given label, out-of-fold probabilities over the
    model's classes, self-confidence and whether cleanlab flags it; `order` is the queue (indices, best suspects
    first)."""

    images: ImageSet
    root: Path  # the class-folder root; queue paths are relative to it
    probabilities: np.ndarray  # (N, C): columns of classes with no photo in the folder are 0
    self_confidence: np.ndarray
    flagged: np.ndarray
    order: np.ndarray
    trained_on: int | None  # photos the model trained on (None: the model keeps no record)
    seconds: dict[str, float]

    @property
    def suggested(self) -> np.ndarray:
        return self.probabilities.argmax(1)

    def relative(self, i: int) -> str:
        return Path(os.path.relpath(self.images.paths[i], self.root)).as_posix()


def check_settings(folds: int, seed: int) -> None:
    """`folds` and `seed` as scikit-learn's splitter takes them, refused in one line before any photo is read
    (scikit-learn would refuse them only after every photo's features)."""
    if isinstance(folds, bool) or not isinstance(folds, numbers.Integral) or folds < 2:
        raise ValueError(f"folds must be a whole number of at least 2, got {folds!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= FOLD_SEED_MAX:
        raise ValueError(f"seed must be a whole number from 0 to {FOLD_SEED_MAX}, got {seed!r}")


def check_counts(labels: np.ndarray, classes: list[str], folds: int = FOLDS) -> None:
    """Every class in the folder needs MIN_PER_CLASS photos, and the folder `folds` photos; else a DatasetError that
    says how many are needed."""
    counts = np.bincount(labels, minlength=len(classes))
    short = [f"{classes[c]} has {counts[c]}" for c in range(len(classes)) if 0 < counts[c] < MIN_PER_CLASS]
    if short:
        raise DatasetError(
            f"{folds}-fold review needs at least {MIN_PER_CLASS} photos in every class folder: {'; '.join(short)}"
        )
    if (counts > 0).sum() < 2:
        raise DatasetError("review needs photos of at least 2 classes: a label can only be wrong against another")
    if len(labels) < folds:
        raise DatasetError(f"{folds}-fold review needs at least {folds} photos, got {len(labels)}")


def out_of_fold_probabilities(
    features: np.ndarray, labels: np.ndarray, groups: np.ndarray, folds: int = FOLDS, seed: int = 0
) -> np.ndarray:
    """(N, K) probabilities over the K = labels.max() + 1 classes, each row from a logistic regression fitted on the
    other folds (stratified by label, near-duplicate groups kept whole)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a class with fewer photos than folds is allowed (check_counts' minimum)
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        warnings.filterwarnings("ignore", message=".*number of unique classes.*")
        splits = list(splitter.split(features, labels, groups))
        return cross_val_predict(model, features, labels, cv=splits, method="predict_proba")


def rank_queue(labels: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(self-confidence, flagged, queue order): cleanlab's label issues ranked by self-confidence first, then the
    other photos by self-confidence (lowest first; ties in folder order)."""
    from cleanlab.filter import find_label_issues

    self_confidence = probabilities[np.arange(len(labels)), labels]
    ranked = find_label_issues(labels, probabilities, return_indices_ranked_by="self_confidence")
    flagged = np.zeros(len(labels), dtype=bool)
    flagged[ranked] = True
    rest = np.flatnonzero(~flagged)
    rest = rest[np.argsort(self_confidence[rest], kind="stable")]
    return self_confidence, flagged, np.concatenate([np.asarray(ranked, dtype=np.int64), rest])


def review_images(
    checkpoint: Checkpoint, images: ImageSet, root: Path, folds: int = FOLDS, seed: int = 0, log: Log = print
) -> Review:
    """The queue of `images` (labels in the checkpoint's class order) with `checkpoint`'s features."""
    check_settings(folds, seed)
    labels = images.labels.numpy()
    check_counts(labels, images.classes, folds)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    classifier = Classifier(checkpoint)
    features = network_features(classifier, images.images, PENULTIMATE)  # (M, N, D): members side by side
    features = features.permute(1, 0, 2).reshape(len(images), -1).numpy().astype(np.float64)
    seconds["features"] = time.perf_counter() - start
    start = time.perf_counter()
    hashes = set_hashes(images)
    groups = group_near_duplicates(hashes, NEAR_DUPLICATE_DISTANCE)
    trained_count = _trained_on(checkpoint, hashes)
    seconds["hashes"] = time.perf_counter() - start
    start = time.perf_counter()
    present = np.flatnonzero(np.bincount(labels, minlength=len(images.classes)))
    compact = np.searchsorted(present, labels)  # cleanlab wants labels 0..K-1, every one present
    oof = out_of_fold_probabilities(features, compact, groups, folds, seed)
    seconds["cross_validation"] = time.perf_counter() - start
    start = time.perf_counter()
    self_confidence, flagged, order = rank_queue(compact, oof)
    seconds["cleanlab"] = time.perf_counter() - start
    probabilities = np.zeros((len(images), len(images.classes)))
    probabilities[:, present] = oof
    if trained_count:
        log("note: " + MEMORISED.format(n=trained_count, total=len(images)))
    return Review(images, root, probabilities, self_confidence, flagged, order, trained_count, seconds)


def _trained_on(checkpoint: Checkpoint, hashes: np.ndarray) -> int | None:
    """How many photos lie within the model's record of its training photos (None: no record; an ensemble records
    its members' shared split once, `models.checkpoint.save_ensemble`)."""
    record = trained_on(checkpoint)
    return None if record is None else int(near_any(hashes, *record).sum())


def queue_rows(review: Review) -> list[dict[str, Any]]:
    """queue.csv's rows, in queue order (class folder names exact, probabilities to 4 places)."""
    classes = review.images.classes
    labels = review.images.labels.numpy()
    rows = []
    for rank, i in enumerate(review.order.tolist(), start=1):
        top = np.argsort(-review.probabilities[i], kind="stable")[:TOP]
        row: dict[str, Any] = {
            "rank": rank,
            "path": review.relative(i),
            "given_label": classes[labels[i]],
            "suggested_label": classes[review.suggested[i]],
            "self_confidence": f"{review.self_confidence[i]:.4f}",
        }
        for k, c in enumerate(top, start=1):
            row[f"top{k}_label"] = classes[c]
            row[f"top{k}_probability"] = f"{review.probabilities[i, c]:.4f}"
        rows.append(row | {"flagged": "yes" if review.flagged[i] else "no"})
    return rows


def contact_sheets(review: Review, out: Path, photos: int) -> list[Path]:
    """PNG grids of the first `photos` flagged photos in queue order, each titled `#rank given -> suggested p`."""
    from heritage_cnn.base.figures import new_figure, save_figure

    flagged = [i for i in review.order.tolist() if review.flagged[i]][:photos]
    labels = review.images.labels.numpy()
    per_sheet = SHEET_COLUMNS * SHEET_ROWS
    paths = []
    for sheet in range(math.ceil(len(flagged) / per_sheet)):
        chunk = flagged[sheet * per_sheet : (sheet + 1) * per_sheet]
        rows = math.ceil(len(chunk) / SHEET_COLUMNS)
        fig, axes = new_figure(rows, SHEET_COLUMNS, figsize=(SHEET_COLUMNS * 1.5, rows * 1.75), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for k, i in enumerate(chunk):
            ax = axes.flat[k]
            ax.imshow(review.images.images[i].permute(1, 2, 0).numpy())
            # a caption is for people: a class folder's undecodable bytes or control characters shown, not drawn
            given = shown(display_name(review.images.classes[labels[i]]))
            suggested = shown(display_name(review.images.classes[review.suggested[i]]))
            rank = sheet * per_sheet + k + 1
            p = review.probabilities[i, review.suggested[i]]
            ax.set_title(f"#{rank} {given}\n\u2192 {suggested} {p:.0%}", fontsize=7)
        fig.suptitle("flagged photos: given label \u2192 suggested label (out-of-fold probability)", fontsize=9)
        paths.append(save_figure(fig, out / f"sheet_{sheet + 1:02d}.png"))
    return paths


def summary(review: Review, model: str, settings: dict[str, Any]) -> dict[str, Any]:
    """summary.json: counts per class, the time taken, the model and the settings."""
    classes = review.images.classes
    labels = review.images.labels.numpy()
    per_class = {}
    for c, name in enumerate(classes):
        mine = labels == c
        per_class[name] = {
            "photos": int(mine.sum()),
            "flagged": int((mine & review.flagged).sum()),
            "flagged_suggested_as_this": int(((review.suggested == c) & review.flagged).sum()),
        }
    memorised = MEMORISED.format(n=review.trained_on, total=len(labels)) if review.trained_on else None
    return {
        "data": str(review.root),
        "photos": len(labels),
        "flagged": int(review.flagged.sum()),
        "per_class": per_class,
        "skipped": [{"path": p, "reason": r} for p, r in review.images.skipped],
        "model": model,
        "model_trained_on_photos": review.trained_on,
        "caveat": memorised,
        "settings": settings,
        "seconds": {k: round(v, 2) for k, v in review.seconds.items()},
        "versions": _versions(),
    }


def _versions() -> dict[str, str]:
    import cleanlab
    import sklearn

    return {"heritage_cnn": __version__, "cleanlab": cleanlab.__version__, "scikit-learn": sklearn.__version__}


def check_out_folder(out: str | os.PathLike, data_root: Path) -> Path:
    """The output folder, checked before any photo is read: new or empty, and outside the data folder (a folder there
    would read as a class). Not made: `run_review` makes it once it has something to write, so that a refusal
    leaves no folder behind."""
    problem = output_problem(out)
    if problem is not None:
        raise DatasetError(problem)
    out = Path(out)
    if holds_anything(out):
        raise DatasetError(f"{out}: already exists and is not empty; review writes into a new folder")
    if inside_input(out, [data_root]) is not None:
        raise DatasetError(f"{out}: inside the data folder {data_root}; write the review elsewhere")
    return out


def run_review(
    checkpoint: Checkpoint,
    data: str | os.PathLike,
    out: str | os.PathLike,
    folds: int = FOLDS,
    seed: int = 0,
    sheet_photos: int = 120,
    progress: bool = False,
    log: Log = print,
) -> dict[str, Any]:
    """Review the training photos of `data` (the Kaggle layout's train/, or bare class folders) into the new folder
    `out`: queue.csv, relabel.csv, contact sheets, summary.json. Returns the summary."""
    check_settings(folds, seed)
    start = time.perf_counter()
    layout = find_layout(data)
    root = split_folder(layout, "train")
    out = check_out_folder(out, layout.root)
    images = load_images(root, classes=checkpoint.classes, progress=progress)
    decode = time.perf_counter() - start
    try:  # before the features: a folder too small for the folds is refused at once, named
        check_counts(images.labels.numpy(), images.classes, folds)
    except DatasetError as error:
        raise DatasetError(f"{root}: {error}") from None
    review = review_images(checkpoint, images, root, folds, seed, log)
    review.seconds = {"decode": decode, **review.seconds}
    rows = queue_rows(review)
    out.mkdir(parents=True, exist_ok=True)
    # names exact, as sort writes its CSVs: read back with `CSV_ERRORS` and newline="" (as `train --relabel` reads
    # relabel.csv), a row gives the very path
    atomic_write_csv(out / QUEUE_FILE, QUEUE_FIELDS, rows, line_end="\n")
    path, label = RELABEL_COLUMNS  # the file `train --relabel` reads (`data.relabel`)
    relabel = [{path: r["path"], label: r["suggested_label"]} for r in rows if r["flagged"] == "yes"]
    atomic_write_csv(out / RELABEL_FILE, list(RELABEL_COLUMNS), relabel, line_end="\n")
    sheets = contact_sheets(review, out, sheet_photos)
    review.seconds["total"] = time.perf_counter() - start
    settings = {
        "folds": folds,
        "seed": seed,
        "features": f"{PENULTIMATE} input, every network's side by side",
        "classifier": "scikit-learn LogisticRegression on standardised features, StratifiedGroupKFold "
        f"(near-duplicate groups, pHash distance {NEAR_DUPLICATE_DISTANCE})",
        "label_issues": "cleanlab.filter.find_label_issues, ranked by self_confidence",
        "contact_sheets": [p.name for p in sheets],
    }
    model = str(checkpoint.path) if checkpoint.path is not None else IN_MEMORY
    record = summary(review, model, settings)
    atomic_write_json(out / "summary.json", record)
    return record


__all__ = [
    "FOLDS",
    "MIN_PER_CLASS",
    "QUEUE_FIELDS",
    "QUEUE_FILE",
    "RELABEL_FILE",
    "Review",
    "check_counts",
    "check_out_folder",
    "check_settings",
    "contact_sheets",
    "out_of_fold_probabilities",
    "queue_rows",
    "rank_queue",
    "review_images",
    "run_review",
    "summary",
]
