"""What `train` refuses before it trains, each in one line naming the flag or file: outputs that would land in the
data (the run folder, the decoded-image cache), a batch larger than the training set, and a network whose checkpoint
could not be loaded. The data folder's own refusals are `prepare.check_class_folders`, the run folder's
`state.claim_run_folder`."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from heritage_cnn.base.io import CheckpointError, inside_input, output_problem
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
        if inside_input(config.cache_dir, [config.data]) is not None:
            raise ValueError(
                f"--cache-dir {config.cache_dir}: inside the data folder {config.data}; keep the cache elsewhere"
            )


def check_batch(config: TrainConfig, train_size: int, resuming: bool, log: Log) -> None:
    """A batch larger than the training set is refused for a new run, as the project refuses other settings the
    data or the job cannot meet (a --batch-size the processes do not divide): every step would take the whole set,
    while config.json and every checkpoint recorded the batch asked for, and the learning rate was chosen for it. A
    resumed run that began so (before this refusal) goes on as it began, and says so."""
    if config.batch_size <= train_size:
        return
    if resuming:
        log(
            f"note: --batch-size {config.batch_size} is more than the {train_size} training photos: each step takes all"
        )
        return
    raise ValueError(
        f"--batch-size {config.batch_size}: more than the {train_size} training photos of {config.data}; give "
        f"--batch-size {train_size} or less"
    )


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


__all__ = ["check_batch", "check_checkpoint_loads", "check_outputs"]
