"""The `heritage` command: one subcommand per job, each with its own --help and an example."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from heritage_cnn import __version__
from heritage_cnn.data import NEAR_DUPLICATE_DISTANCE

EPILOG = """\
examples:
  heritage data download --dest data/ahe64          fetch the Kaggle dataset
  heritage data check data/ahe64                    counts, bad files, duplicates
  heritage train --data data/ahe64 --out runs/a     train from scratch (about 18 min on 2 CPU cores)
  heritage evaluate --model runs/a/last.safetensors --data data/ahe64 --split val --out runs/a/eval
  heritage demo --data data/ahe64                   the whole pipeline, figures in runs/demo

The data folder is either <root>/<class>/<image> or the Kaggle layout <root>/train/<class>/<image>
(+ optional <root>/test/). $HERITAGE_DATA is used when --data is not given.
"""


class UsageError(Exception):
    """A user mistake worth one line, not a traceback."""


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=36)


def _data_arg(value: str | None) -> str:
    data = value or os.environ.get("HERITAGE_DATA")
    if not data:
        raise UsageError(
            "no data folder: pass --data DIR or set HERITAGE_DATA (get the data with `heritage data download --dest DIR`)"
        )
    return data


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def cmd_data_download(args: argparse.Namespace) -> int:
    from heritage_cnn.datacheck import download_dataset

    root = download_dataset(args.dest)
    print(f"dataset ready in {root}\nnext: heritage data check {root}   or   export HERITAGE_DATA={root}")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from heritage_cnn.datacheck import check_dataset, format_report
    from heritage_cnn.io import atomic_write_json

    report = check_dataset(_data_arg(args.dir), args.near_duplicate_distance)
    if args.format == "json":
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(format_report(report))
    if args.json:
        atomic_write_json(args.json, report)
        if args.format != "json":
            print(f"\nJSON written to {args.json}")
    return 0


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------


def _train_config(args: argparse.Namespace, data: str, out: str) -> Any:
    from heritage_cnn.augment import AugmentConfig
    from heritage_cnn.data import SplitRecipe
    from heritage_cnn.model import ModelConfig
    from heritage_cnn.train import TrainConfig

    base = TrainConfig(data=data, out=out)
    model = base.model
    if args.widths:
        model = replace(model, widths=args.widths, blocks=args.blocks or (1,) * len(args.widths))
    elif args.blocks:
        model = replace(model, blocks=args.blocks)
    if args.plain:
        model = replace(model, residual=False)
    augment = base.augment if not args.no_augment else AugmentConfig(0, False, 0, 0, 0, 0, 0)
    if args.rotation is not None:
        augment = replace(augment, rotation_degrees=args.rotation)
    return replace(
        base,
        epochs=args.epochs if args.epochs is not None else base.epochs,
        batch_size=args.batch_size or base.batch_size,
        lr=args.lr or base.lr,
        weight_decay=base.weight_decay if args.weight_decay is None else args.weight_decay,
        label_smoothing=base.label_smoothing if args.label_smoothing is None else args.label_smoothing,
        seed=args.seed,
        split=SplitRecipe(
            val_fraction=args.val_fraction or base.split.val_fraction,
            seed=args.split_seed if args.split_seed is not None else base.split.seed,
            near_duplicate_distance=base.split.near_duplicate_distance,
        ),
        limit_per_class=args.limit_per_class,
        model=ModelConfig.from_dict(model.to_dict()),
        augment=augment,
        device=args.device,
        threads=args.threads,
        cache_dir=args.cache_dir,
        resume=getattr(args, "resume", False),
    )


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("recipe (defaults are the shipped model's recipe)")
    group.add_argument("--epochs", type=int, help="passes over the training split (default 30)")
    group.add_argument("--batch-size", type=_positive_int, help="images per step (default 128)")
    group.add_argument("--lr", type=float, help="peak AdamW learning rate (default 3e-3)")
    group.add_argument("--weight-decay", type=float, help="AdamW weight decay on weights (default 0.05)")
    group.add_argument("--label-smoothing", type=float, help="cross-entropy label smoothing (default 0.1)")
    group.add_argument("--seed", type=int, default=0, help="seed of initialisation, order and augmentation (default 0)")
    group.add_argument(
        "--val-fraction", type=float, help="validation share, 1/k of a stratified group k-fold (default 0.2)"
    )
    group.add_argument("--split-seed", type=int, help="seed of the validation split (default 0)")
    group.add_argument("--limit-per-class", type=_positive_int, help="at most N images per class (quick runs)")
    group.add_argument("--widths", type=_int_list, help="channels per stage, e.g. 24,48,96,192")
    group.add_argument("--blocks", type=_int_list, help="conv blocks per stage, e.g. 1,1,1,1")
    group.add_argument("--plain", action="store_true", help="no residual connections")
    group.add_argument("--rotation", type=float, help="max random rotation in degrees (default 15)")
    group.add_argument("--no-augment", action="store_true", help="switch augmentation off (for comparisons)")
    group.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    group.add_argument("--threads", type=_positive_int, help="CPU threads (default: all cores)")
    group.add_argument("--cache-dir", help="keep decoded images here between runs")


def cmd_train(args: argparse.Namespace) -> int:
    from heritage_cnn.train import train

    config = _train_config(args, _data_arg(args.data), args.out)
    result = train(config)
    final = result.final
    print(
        f"done in {result.seconds / 60:.1f} min: validation accuracy {final.get('val_accuracy', float('nan')):.4f} "
        f"({result.val_size} images, duplicate-aware split)"
        + (" [interrupted: run again with --resume]" if result.interrupted else "")
    )
    print(f"checkpoint: {result.checkpoint}\ncurves:     {result.out / 'curves.png'}")
    return 130 if result.interrupted else 0


# --------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------


def evaluate_on(model_path: str | None, data: str, split: str, out: str, tta: bool = False) -> dict[str, Any]:
    """Evaluate a checkpoint on one split of a data folder; write the figures; return the metrics."""
    import torch

    from heritage_cnn.checkpoint import load_checkpoint
    from heritage_cnn.data import find_layout, load_images, split_folder
    from heritage_cnn.evaluate import compute_metrics, predict_logits, write_evaluation
    from heritage_cnn.train import TrainConfig, prepare_data

    layout = find_layout(data)
    checkpoint = load_checkpoint(model_path)
    if split == "auto":
        split = "test" if layout.test is not None else "all"
    if split == "val":
        recipe = checkpoint.info.get("recipe")
        if not recipe:
            raise UsageError(f"{checkpoint.path}: has no training recipe, so its validation split cannot be rebuilt")
        config = TrainConfig.from_dict({**recipe, "data": data, "out": "-", "progress": False})
        _, _, images = prepare_data(config, log=lambda _: None)
        if images.classes != checkpoint.classes:
            raise UsageError(f"{data}: classes {images.classes} differ from the model's {checkpoint.classes}")
        described = (
            f"validation split (duplicate-aware, stratified, seed {config.split.seed}, {len(images)} images) of {data}"
        )
    else:
        folder = split_folder(layout, "test") if split == "test" else layout.train
        images = load_images(folder, classes=checkpoint.classes, progress=True)
        described = (
            f"{split} split of {data} ({len(images)} images)"
            if split == "test"
            else f"all of {folder} ({len(images)} images)"
        )
        missing = [c for c, n in zip(checkpoint.classes, images.class_counts(), strict=True) if n == 0]
        if missing:
            print(f"note: no images of {len(missing)} model class(es) in the folder: {', '.join(missing)}")
    logits = predict_logits(checkpoint.model, images.images, checkpoint.normalise, tta=tta)
    probabilities = torch.softmax(logits, 1).numpy()
    metrics = compute_metrics(images.labels.numpy(), probabilities, checkpoint.display_names)
    title = f"{Path(str(checkpoint.path)).name} on the {described}" + (", TTA (image + mirror)" if tta else "")
    extra = {
        "model": str(checkpoint.path),
        "data": str(data),
        "split": split,
        "tta": tta,
        "skipped": [{"path": p, "reason": r} for p, r in images.skipped],
    }
    paths = write_evaluation(
        out, metrics, checkpoint.display_names, title, extra, images.images, probabilities, images.labels.numpy()
    )
    print(
        f"{split}: accuracy {metrics['accuracy']['value']:.4f} (95% CI {metrics['accuracy']['ci95'][0]:.4f}-"
        f"{metrics['accuracy']['ci95'][1]:.4f}), macro F1 {metrics['macro_f1']['value']:.4f}, "
        f"{metrics['n_images']} images{', TTA' if tta else ''}"
    )
    if images.skipped:
        print(f"skipped {len(images.skipped)} unreadable file(s): listed in {paths['metrics_json']}")
    print(f"figures: {out}/ (confusion_matrix.png, errors.png, calibration.png, metrics.md)")
    return metrics


def cmd_evaluate(args: argparse.Namespace) -> int:
    evaluate_on(args.model, _data_arg(args.data), args.split, args.out, args.tta)
    return 0


# --------------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from heritage_cnn.datacheck import check_dataset, format_report
    from heritage_cnn.io import atomic_write_json
    from heritage_cnn.train import train

    data = _data_arg(args.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print("== 1/3 data check")
    report = check_dataset(data)
    atomic_write_json(out / "data_check.json", report)
    print(format_report(report))
    if args.no_train:
        model_path = None
        print("\n== 2/3 training skipped (--no-train): using the model shipped with the package")
    else:
        print(f"\n== 2/3 train with the default recipe -> {out / 'train'}")
        config = _train_config(args, data, str(out / "train"))
        result = train(replace(config, resume=True))
        if result.interrupted:
            print("interrupted: run the same command again to resume")
            return 130
        model_path = str(result.checkpoint)
    print("\n== 3/3 evaluate")
    evaluate_on(model_path, data, "val", str(out / "eval-val"))
    from heritage_cnn.data import find_layout

    if find_layout(data).test is not None:
        evaluate_on(model_path, data, "test", str(out / "eval-test"))
    for step in _demo_tool_steps():
        step(model_path, data, out)
    print(f"\ndemo finished in {(time.perf_counter() - started) / 60:.1f} min; everything is in {out.resolve()}")
    return 0


def _demo_tool_steps() -> list[Any]:
    """Figure-making steps of the demo defined beside their code: `demo_step(model_path, data, out)`."""
    return []


# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="heritage",
        description="Recognise elements of architectural heritage in photos with a CNN trained from scratch.",
        epilog=EPILOG,
        formatter_class=_formatter,
    )
    parser.add_argument("--version", action="version", version=f"heritage-cnn {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data = commands.add_parser(
        "data",
        help="download or check a dataset",
        description="Download or check a dataset.",
        formatter_class=_formatter,
    )
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = data_commands.add_parser(
        "download",
        help="fetch the Kaggle dataset with kagglehub",
        description="Fetch the Architectural Heritage Elements Image64 dataset from Kaggle (kagglehub).",
        epilog="example:\n  heritage data download --dest data/ahe64",
        formatter_class=_formatter,
    )
    p.add_argument("--dest", default="data/ahe64", help="where to put it (default data/ahe64)")
    p.set_defaults(func=cmd_data_download)
    p = data_commands.add_parser(
        "check",
        help="counts, unreadable files, modes, sizes, duplicates",
        description="Images per class and split, unreadable files, image modes and sizes, byte-identical "
        "duplicates (and those with conflicting labels), near-duplicates across splits (perceptual hash).",
        epilog="example:\n  heritage data check data/ahe64 --json check.json",
        formatter_class=_formatter,
    )
    p.add_argument("dir", nargs="?", help="data folder (default $HERITAGE_DATA)")
    p.add_argument("--format", choices=["table", "json"], default="table", help="what to print (default table)")
    p.add_argument("--json", help="also write the JSON report to this file")
    p.add_argument(
        "--near-duplicate-distance",
        type=int,
        default=NEAR_DUPLICATE_DISTANCE,
        help="max Hamming distance of perceptual hashes (default %(default)s)",
    )
    p.set_defaults(func=cmd_data_check)

    p = commands.add_parser(
        "train",
        help="train a network from scratch",
        description="Train a CNN from scratch on a class-folder dataset, validating on a duplicate-aware "
        "stratified split every epoch. Writes checkpoints (safetensors + JSON), metrics.csv/json and curves.png.",
        epilog="examples:\n  heritage train --data data/ahe64 --out runs/a\n"
        "  heritage train --data data/ahe64 --out runs/a --resume     continue an interrupted run\n"
        "  heritage train --data data/ahe64 --out runs/quick --epochs 3 --limit-per-class 100",
        formatter_class=_formatter,
    )
    p.add_argument("--data", help="data folder (default $HERITAGE_DATA)")
    p.add_argument("--out", required=True, help="run folder for checkpoints, metrics and figures")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    _add_train_options(p)
    p.set_defaults(func=cmd_train)

    p = commands.add_parser(
        "evaluate",
        help="accuracy, per-class P/R/F1, confusion matrix",
        description="Evaluate a checkpoint on a labelled folder: accuracy, top-3, balanced accuracy, per-class "
        "precision/recall/F1 with bootstrap confidence intervals, and the confusion matrix (PNG + CSV).",
        epilog="examples:\n  heritage evaluate --data data/ahe64 --split val --out runs/eval\n"
        "  heritage evaluate --model runs/a/last.safetensors --data my_photos --out runs/mine",
        formatter_class=_formatter,
    )
    p.add_argument("--model", help="checkpoint (.safetensors with its .json); default: the shipped model")
    p.add_argument("--data", help="data folder (default $HERITAGE_DATA)")
    p.add_argument(
        "--split",
        choices=["auto", "val", "test", "all"],
        default="auto",
        help="val: the model's own validation split; test: DIR/test; all: every image (default: test if present, else all)",
    )
    p.add_argument("--tta", action="store_true", help="average the logits of each image and its mirror image")
    p.add_argument("--out", required=True, help="folder for metrics.json/md and confusion_matrix.png/csv")
    p.set_defaults(func=cmd_evaluate)

    p = commands.add_parser(
        "demo",
        help="the whole pipeline: check, train, evaluate",
        description="Check the data, train with the default recipe (or reuse the shipped model), evaluate on "
        "the validation split (and test/ when present) and write every figure to one folder. Re-running "
        "resumes an interrupted training.",
        epilog="examples:\n  heritage demo --data data/ahe64\n  heritage demo --data data/ahe64 --no-train",
        formatter_class=_formatter,
    )
    p.add_argument("--data", help="data folder (default $HERITAGE_DATA)")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--no-train", action="store_true", help="use the shipped model instead of training")
    _add_train_options(p)
    p.set_defaults(func=cmd_demo)

    visualize = commands.add_parser(
        "visualize",
        help="look inside the network: feature maps, kernels, deconvnet, unit images",
        description="Look inside a trained network.",
        formatter_class=_formatter,
    )
    visualize_commands = visualize.add_subparsers(dest="visualize_command", metavar="WHAT", required=True)
    _register_tool_commands(commands, visualize_commands)
    return parser


def _register_tool_commands(commands: argparse._SubParsersAction, visualize_commands: argparse._SubParsersAction) -> None:
    """Commands defined beside their code: each module's `register_cli(commands, visualize_commands)`."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `heritage` command; errors the user can fix are one line, exit 2."""
    from heritage_cnn.data import DatasetError, ImageError
    from heritage_cnn.datacheck import DownloadError
    from heritage_cnn.io import CheckpointError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UsageError, DatasetError, ImageError, CheckpointError, DownloadError, ValueError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        print(f"heritage: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("heritage: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
