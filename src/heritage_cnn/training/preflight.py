"""What `train` refuses before it trains, each in one line naming the flag or file: outputs that would land in the
data (the run folder, the decoded-image cache), an --outliers folder that overlaps the data, and a network whose
checkpoint could not be loaded; and the notes on a batch larger than the training set and on a validation share
rounded to 1/k. The data folder's own refusals are `prepare.check_class_folders`, the run folder's
`state.claim_run_folder`."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from heritage_cnn.base.io import CheckpointError, inside_input, output_problem
from heritage_cnn.base.names import is_hidden
from heritage_cnn.data.folders import find_layout
from heritage_cnn.models.metadata import FORMAT, validate_metadata
from heritage_cnn.training.config import Log, TrainConfig
from heritage_cnn.training.teach_out import check_cache_dir


def check_outputs(config: TrainConfig) -> None:
    """Refuse, before anything is created, a run folder or a `cache_dir` that is a file or lies inside the data
    folder: what is written there would become photos of a class (or a class folder) on the next run."""
    out = Path(config.out)
    problem = output_problem(out, flag="--out")
    if problem is not None:
        raise ValueError(problem)
    if inside_input(out, [config.data]) is not None:
        raise ValueError(f"--out {out}: inside the data folder {config.data}; write the run elsewhere")
    if config.cache_dir is not None:
        check_cache_dir(config.cache_dir)
        if inside_input(config.cache_dir, [config.data]) is not None and not _hidden(config.cache_dir, config.data):
            raise ValueError(
                f"--cache-dir {config.cache_dir}: inside the data folder {config.data}; keep the cache elsewhere"
            )


def check_outliers(config: TrainConfig) -> None:
    """Refuse, before any work, an `--outliers` folder that is a folder of the data set's photos (the class-folder
    root, or a Kaggle layout's train/ or test/), lies inside one (a class folder) or holds one: the run would learn to
    answer "none of these" on photos of its own classes, a network that spreads its answer over them, without a word.
    A folder beside them (ahe64/outliers next to ahe64/train) is no photo of theirs, and a hidden folder inside them
    (data/.outliers) neither: the data's walk skips it."""
    if not config.outliers:
        return
    outliers, layout = config.outliers, find_layout(config.data)
    for folder in [layout.train, *([layout.test] if layout.test is not None else [])]:
        if inside_input(outliers, [folder]) is not None and not _hidden(outliers, folder):
            where = "is" if Path(outliers).resolve() == folder.resolve() else "lies inside"
            raise ValueError(
                f"--outliers {outliers}: {where} the data folder {folder}: its photos are of the classes the run "
                "learns, and would be taught as none of them; give a folder of other photos"
            )
        if inside_input(folder, [outliers]) is not None:
            raise ValueError(
                f"--outliers {outliers}: holds the data folder {folder}: photos of the run's classes would be taught "
                "as none of them; give a folder of other photos"
            )


def _hidden(path: str | Path, data: str | Path) -> bool:
    """Whether `path`, inside `data`, lies in a hidden folder there (a name starting with "."), which the data set's
    walk skips: a cache in data/.cache is never read as photos."""
    relative = Path(path).resolve().relative_to(Path(data).resolve())
    return any(is_hidden(part) for part in relative.parts)


def note_batch(config: TrainConfig, train_size: int, log: Log) -> None:
    """Say so when the batch is larger than the training set: each step then takes the whole set, one step an
    epoch, while config.json records the batch asked for (a first try on a few dozen photos is ordinary use, so it
    trains rather than being refused; the same command resumes it)."""
    if config.batch_size > train_size:
        log(
            f"note: --batch-size {config.batch_size} is more than the {train_size} training photos of {config.data}: "
            f"each step takes all {train_size}, one step an epoch"
        )


def note_split(config: TrainConfig, log: Log) -> None:
    """Say the validation share taken where --val-fraction is not one over a whole number: the split is one fold of
    a k-fold, so 0.45 becomes a half (split.json records k)."""
    rounding = config.split.rounding()
    if rounding is not None:
        log(f"note: {rounding}")


def check_checkpoint_loads(
    config: TrainConfig, classes: list[str], mean: list[float], std: list[float], size: int, where: Path
) -> None:
    """Refuse, before the first step, a run whose checkpoint (`where`) the loader would refuse: its classes, its
    normalisation, and a network too deep for the photos (more 2x2 poolings than the image size allows)."""
    meta = {
        "format": FORMAT,
        "classes": classes,
        "normalisation": {"mean": mean, "std": std},
        "image_size": size,
        "model_config": replace(config.model, num_classes=len(classes)).to_dict(),
    }
    try:
        validate_metadata(json.loads(json.dumps(meta)), where)  # as it is read back: tuples as lists
    except CheckpointError as error:
        raise ValueError(
            f"{error}: the checkpoint this run would write could not be loaded; refused before training"
        ) from None


__all__ = ["check_checkpoint_loads", "check_outliers", "check_outputs", "note_batch", "note_split"]
