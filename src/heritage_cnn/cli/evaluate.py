"""`heritage evaluate | report | demo`: thin shells over `heritage_cnn.apps.evaluation` (evaluate) and
`heritage_cnn.apps.pipeline` (report, demo)."""

from __future__ import annotations

import argparse

from heritage_cnn.cli.options import (
    UsageError,
    add_command,
    add_data,
    add_device,
    add_member,
    add_model,
    add_none_threshold,
    add_out,
    add_tta,
    data_folder,
    device_name,
    load_model,
    say_skipped,
    show_progress,
)


def name_skipped(path: str, reason: str) -> None:
    """A file an evaluation could not read (of --data or --negatives), named on stderr as every command names them."""
    say_skipped([(path, reason)], 1)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Accuracy, per-class P/R/F1, confusion matrix.

    Evaluate a checkpoint on a labelled folder: accuracy, top-3, balanced accuracy, per-class precision/recall/F1
    with bootstrap confidence intervals, and the confusion matrix (PNG + CSV). Macro averages are over the classes
    among the true labels or the predictions (metrics.json: macro_classes); a class with no photos shows "–".

    Which images are scored (--split auto): the folder's test/ when it has one (Kaggle layout), every photo of it,
    with a warning that counts those the model trained on (copies or near-duplicates of its training photos, by the
    record in the checkpoint); else the images the model did not train on, when the checkpoint records its training
    images (each image within the split's perceptual-hash distance of one is left out and counted); else every
    image, with a warning.

    Files that cannot be read (of --data or --negatives) are skipped, named on stderr and listed in metrics.json
    (skipped, negatives_skipped). Files an earlier evaluation wrote into --out that this one does not write (the
    none-of-these figures of a run with --negatives, say) are removed, so the folder describes one evaluation.

    None of these: for a model with a none-of-these threshold, the open-set score's histogram on the scored photos
    (open_set_scores.png), the share of them called none and the accuracy on the rest (open_set.md, metrics.json);
    with --negatives DIR (photos of none of its classes) also their histogram, the ROC and AUROC (open_set_roc.png) and
    the share of them still filed into a class.

    Examples:
      heritage evaluate --data data/ahe64 --out runs/eval
      heritage evaluate --model runs/a --data data/ahe64 --split val --out runs/a/eval
      heritage evaluate --data data/ahe64 --split val --negatives data/negatives/reporting --out runs/none
      heritage evaluate --model runs/a/last.safetensors --data my_photos --out runs/mine
    """
    from heritage_cnn.apps.evaluation import check_evaluation_paths, evaluate_on

    data = data_folder(args.data)
    check_evaluation_paths(data, args.out, args.negatives, flags=True)  # before the model is loaded
    checkpoint = load_model(args, device_name(args.device))
    evaluate_on(
        checkpoint,
        data,
        args.split,
        args.out,
        args.tta,
        progress=show_progress(args),
        none_threshold=args.none_threshold,
        negatives=args.negatives,
        name_skipped=name_skipped,
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """One self-contained HTML page with every figure.

    Evaluate a model, make every figure (curves, confusion matrix, errors, calibration, feature maps, kernels,
    deconvnet, attributions, class images) and gather them, images embedded, in one index.html that opens offline.

    Example:
      heritage report --data data/ahe64 --out report/
    """
    from heritage_cnn.apps.evaluation import check_input_paths
    from heritage_cnn.apps.pipeline import run_report

    data = data_folder(args.data)
    check_input_paths(data, args.out, args.negatives, flags=True)
    checkpoint = load_model(args)
    page = run_report(
        checkpoint,
        data,
        args.out,
        show_progress(args),
        member=args.member,
        negatives=args.negatives,
        name_skipped=name_skipped,
    )
    print(f"report: {page.resolve()}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The whole pipeline: check, train, evaluate.

    Check the data, train a network with the quick recipe (a residual block per stage at widths 16-128, 13
    epochs, batch-norm statistics recomputed at the end: a first look in minutes; `--recipe full` trains `heritage train`'s default recipe instead), evaluate it
    beside the shipped model on the validation split (and test/ when present), look inside, draw the classes and
    write every figure and a one-page report to one folder. Re-running resumes an interrupted training.

    Examples:
      heritage demo --data data/ahe64
      heritage demo --data data/ahe64 --recipe full
      heritage demo --data data/ahe64 --no-train
    """
    from dataclasses import replace
    from pathlib import Path

    from heritage_cnn.apps.pipeline import demo_out_problem, run_demo
    from heritage_cnn.apps.steps import demo_run_folder
    from heritage_cnn.base.devices import keep_freed_memory
    from heritage_cnn.cli.recipe import new_config

    data = data_folder(args.data)
    problem = demo_out_problem(args.out)  # never among the user's photos: a later sort would read the figures
    if problem:
        raise UsageError(problem)
    config = None
    if not args.no_train:
        keep_freed_memory()
        run = Path(args.out) / demo_run_folder(args.recipe)
        config = replace(new_config(args, data, str(run)), progress=show_progress(args))
    return 0 if run_demo(data, args.out, config) is not None else 130


def add_negatives(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--negatives",
        metavar="DIR",
        help="a folder of photos of none of the model's classes (searched recursively): the none-of-these section "
        "adds their scores, the ROC and AUROC (needs a model with a none-of-these threshold)",
    )


def register(commands: argparse._SubParsersAction) -> None:
    from heritage_cnn.cli.recipe import add_preset_option, add_recipe_options

    p = add_command(commands, "evaluate", cmd_evaluate)
    add_model(p)
    add_data(p)
    p.add_argument(
        "--split",
        choices=["auto", "test", "val", "unseen", "all"],
        default="auto",
        help="test: DIR/test (a warning counts any photos the model trained on); val: the model's own validation "
        "split, rebuilt from its recipe; unseen: the images it did not train on; all: every image, trained-on ones "
        "included (a warning counts them); default auto: test, else unseen, else all",
    )
    add_tta(p)
    add_device(p)
    add_none_threshold(p)
    add_negatives(p)
    add_out(p, "folder for metrics.json/md and confusion_matrix.png/csv")

    p = add_command(commands, "report", cmd_report)
    add_model(p)
    add_member(p, what="the sections that look inside show (evaluation and the element map use the whole model)")
    add_data(p)
    add_negatives(p)
    add_out(p, "folder for index.html and the figures")

    p = add_command(commands, "demo", cmd_demo)
    add_data(p)
    add_out(p, "output folder", default="runs/demo")
    p.add_argument("--no-train", action="store_true", help="use the shipped model instead of training")
    first_look = "quick"  # minutes, on any CPU (training/recipes.py)
    add_preset_option(p, default=first_look)
    add_recipe_options(p, first_look)
