"""Workflows that chain the tools: the report (`run_report`) and the demo (`run_demo`), each evaluating the model on
its splits (`heritage_cnn.apps.evaluation`) and drawing the figure steps; the model loaded once and passed on.

The `heritage` command and Python users call the same functions; nothing here knows about argparse.
Messages go through `log` (default `print`) so a caller can silence or capture them.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from heritage_cnn.apps.evaluation import Log, Model, evaluate_split, resolve_model, split_recipe
from heritage_cnn.apps.steps import (
    CLASS_IMAGES_FOLDER,
    ELEMENT_MAP_FOLDER,
    FIGURE_STEPS,
    INSIDE_FOLDER,
    REPORT_PAGE,
    SHIPPED_FOLDER,
    TRAIN_FOLDER,
    demo_run_folder,
    eval_folder,
)
from heritage_cnn.base.io import atomic_write_json, inside_problem, output_problem
from heritage_cnn.base.names import is_hidden, shown
from heritage_cnn.data.check import DATA_CHECK_FILE
from heritage_cnn.data.folders import Layout, find_layout, reuse_decoded
from heritage_cnn.inference.evaluate import EVALUATION_FILES, Skipped, remove_stale
from heritage_cnn.inference.openset_eval import OPEN_SET_FILES
from heritage_cnn.models.checkpoint import Checkpoint, load_checkpoint
from heritage_cnn.training.recipes import RECIPES


def _evaluate_splits(
    checkpoint: Checkpoint,
    data: str,
    layout: Layout,
    out: Path,
    progress: bool,
    log: Log,
    negatives: str | None = None,
    name_skipped: Skipped | None = None,
) -> None:
    """The model's validation split (when its recipe and the training folder allow) and the test split; a split
    that an earlier run into `out` evaluated and this one does not loses its files, never shown as this model's.
    Without its own validation split a model is scored on `auto` (unseen or all photos) in eval-val/ all the same:
    its metrics.json records which, and the report names that, not "validation"."""
    common = {"progress": progress, "log": log, "negatives": negatives, "name_skipped": name_skipped}
    if not layout.train.is_dir():  # test/ alone (the Kaggle test split downloaded by itself): the test split only
        log(f"note: {shown(layout.root)} holds test/ alone: no validation split to rebuild; the test split is scored")
    own_val = bool(split_recipe(checkpoint)) and layout.train.is_dir()
    splits = {"val": "val" if own_val else "auto"} if own_val or layout.test is None else {}
    splits |= {"test": "test"} if layout.test is not None else {}
    for folder, how in splits.items():
        evaluate_split(checkpoint, data, layout, how, out / eval_folder(folder), **common)
    for folder in {"val", "test"} - set(splits):
        stale = out / eval_folder(folder)
        if remove_stale(stale, [*EVALUATION_FILES, *OPEN_SET_FILES], []) and not any(stale.iterdir()):
            stale.rmdir()  # emptied here: an empty eval-test/ would still read as a split evaluated


def run_report(
    model: Model,
    data: str,
    out: str | os.PathLike,
    progress: bool = False,
    log: Log = print,
    member: int = 0,
    negatives: str | None = None,
    name_skipped: Skipped | None = None,
) -> Path:
    """Every figure for one model, gathered in one self-contained `out/index.html`; returns its path.
    `model`: a loaded `Checkpoint`, or a checkpoint pair, run folder or shipped name (None: the shipped default).
    The figures from inside the network (and the class images) are those of network `member`; `negatives`: a
    folder of photos of none of its classes for the evaluations' none-of-these section; `name_skipped`: as for
    `evaluate_on`."""
    from heritage_cnn.apps.report import build_html_report, training_history
    from heritage_cnn.data.check import check_dataset
    from heritage_cnn.training.curves import plot_training_curves
    from heritage_cnn.training.state import CURVES_FILE

    out = Path(out)
    checkpoint = resolve_model(model)
    checkpoint.member(member)  # a bad --member fails before any work, and before --out is made
    layout = find_layout(data)
    made = not out.exists()
    try:
        with reuse_decoded():  # the data check and the evaluations read the folder decoded once
            check = check_dataset(data)
            # each evaluation refuses a folder it cannot score (a class folder of the model's split missing) before
            # it writes; the data check is written after them, so that a refused folder leaves no --out behind
            _evaluate_splits(checkpoint, data, layout, out, progress, log, negatives, name_skipped)
            atomic_write_json(out / DATA_CHECK_FILE, check)
    except ValueError:  # a refusal (DatasetError, CheckpointError) by a later split, after an earlier one wrote
        if made:
            shutil.rmtree(out, ignore_errors=True)
        raise
    history = training_history(checkpoint, member)
    if history:
        plot_training_curves(history, out / TRAIN_FOLDER / CURVES_FILE)  # atomic (heritage_cnn.base.figures)
    for step in FIGURE_STEPS:
        step(checkpoint, data, layout, out, log, member=member, progress=progress)
    return build_html_report(out, out / REPORT_PAGE, checkpoint, data=data, member=member)


# What the demo writes into --out (`_demo`, its figure steps, `build_html_report`, the run of each recipe): a
# folder holding only these is a demo's, which a second run reuses (`make demo` into runs/demo, a resumed training)
DEMO_ENTRIES = frozenset(
    {DATA_CHECK_FILE, REPORT_PAGE, eval_folder("val"), eval_folder("test"), SHIPPED_FOLDER, TRAIN_FOLDER}
    | {INSIDE_FOLDER, CLASS_IMAGES_FOLDER, ELEMENT_MAP_FOLDER}
    | {demo_run_folder(name) for name in RECIPES}
)


def demo_out_problem(out: str | os.PathLike, data: str | os.PathLike | None = None) -> str | None:
    """Why the demo must not write into `out` (one line), or None: a file, a folder inside the data folder `data`
    (when given), or a folder holding anything that is not a demo's own (the user's photos, which the figures would
    then lie among and be read with)."""
    folder = Path(out)
    problem = output_problem(folder, flag="--out")
    if problem is None and data is not None:
        problem = inside_problem(out, data, "--out", "--data")
    if problem is not None or not folder.is_dir():
        return problem
    foreign = sorted(p.name for p in folder.iterdir() if p.name not in DEMO_ENTRIES and not is_hidden(p.name))
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        return (
            f"--out {shown(folder)}: holds {foreign[0]!r}{more}, not the demo's; the demo writes into a new folder "
            "or one an earlier demo wrote"
        )
    return None


def run_demo(data: str, out: str | os.PathLike, config: Any | None = None, log: Log = print) -> Path | None:
    """Check the data, train `config` (resuming an interrupted run; None: the shipped model), evaluate, draw.

    Returns the report page, or None when training was interrupted (run it again to resume). The folder is decoded
    once for the check, the training and the evaluations (`reuse_decoded`). An `out` that `demo_out_problem` refuses
    is a ValueError, before anything is read or written.
    """
    problem = demo_out_problem(out, data)
    if problem is not None:
        raise ValueError(problem)
    with reuse_decoded():
        return _demo(data, out, config, log)


def _demo(data: str, out: str | os.PathLike, config: Any | None, log: Log) -> Path | None:
    from heritage_cnn.apps.report import build_html_report
    from heritage_cnn.data.check import check_dataset, format_report
    from heritage_cnn.training.loop import train

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    log("== 1/3 data check")
    report = check_dataset(data)
    atomic_write_json(out / DATA_CHECK_FILE, report)
    log(format_report(report))
    layout = find_layout(data)
    trained: Checkpoint | None = None
    if config is None:
        log("\n== 2/3 training skipped: using the model shipped with the package")
    else:
        log(f"\n== 2/3 train -> {config.out}")
        result = train(replace(config, resume=True), log=log)
        if result.interrupted:
            log("interrupted: run the same command again to resume")
            return None
        trained = load_checkpoint(result.checkpoint)
    log("\n== 3/3 evaluate")
    progress = config is not None and config.progress
    shipped = load_checkpoint(None)
    checkpoint = trained or shipped
    _evaluate_splits(checkpoint, data, layout, out, progress, log)
    if trained is not None:  # the network just trained beside the shipped one, on the same images
        if set(shipped.classes) == set(trained.classes):  # as sets: each evaluation labels by its model's order
            log(f"the shipped model, for comparison (figures in {SHIPPED_FOLDER}/):")
            _evaluate_splits(shipped, data, layout, out / SHIPPED_FOLDER, progress, log)
        else:
            log("the shipped model knows other classes: no comparison")
    for step in FIGURE_STEPS:
        step(checkpoint, data, layout, out, log, progress=progress)
    page = build_html_report(out, out / REPORT_PAGE, checkpoint, data=data)
    log(f"\nreport: {page.resolve()}")
    log(f"demo finished in {(time.perf_counter() - started) / 60:.1f} min; everything is in {out.resolve()}")
    return page
