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
  heritage train --data data/ahe64 --out runs/a     train from scratch (about 25 min on 2 CPU cores)
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
        same_depth = len(args.widths) == len(model.blocks)  # keep the default blocks when the stage count matches
        blocks = args.blocks or (model.blocks if same_depth else (1,) * len(args.widths))
        model = replace(model, widths=args.widths, blocks=blocks)
    elif args.blocks:
        model = replace(model, blocks=args.blocks)
    if args.plain:
        model = replace(model, residual=False)
    augment = base.augment if not args.no_augment else AugmentConfig(0, False, 0, 0, 0, 0, 0)
    if args.rotation is not None:
        augment = replace(augment, rotation_degrees=args.rotation)
    if args.zoom is not None:
        augment = replace(augment, zoom=args.zoom)
    if args.shift is not None:
        augment = replace(augment, shift=args.shift)
    if args.erase is not None:
        augment = replace(augment, erase=args.erase)
    if args.dropout is not None:
        model = replace(model, dropout=args.dropout)
    return replace(
        base,
        epochs=args.epochs if args.epochs is not None else base.epochs,
        batch_size=args.batch_size or base.batch_size,
        lr=args.lr or base.lr,
        weight_decay=base.weight_decay if args.weight_decay is None else args.weight_decay,
        label_smoothing=base.label_smoothing if args.label_smoothing is None else args.label_smoothing,
        ema_decay=base.ema_decay if args.ema is None else args.ema,
        mixup_alpha=base.mixup_alpha if args.mixup is None else args.mixup,
        cutmix_alpha=base.cutmix_alpha if args.cutmix is None else args.cutmix,
        consistency_weight=base.consistency_weight if args.consistency is None else args.consistency,
        warmup_epochs=base.warmup_epochs if args.warmup is None else args.warmup,
        balanced_loss=args.balanced_loss or base.balanced_loss,
        teachers=tuple(args.teacher),
        distill_weight=base.distill_weight if args.distill_weight is None else args.distill_weight,
        distill_temperature=base.distill_temperature if args.distill_temperature is None else args.distill_temperature,
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
        sync_bn=getattr(args, "sync_bn", False),
        compile=args.compile,
        amp=not args.no_amp,
    )


def _add_tta_option(parser: argparse.ArgumentParser) -> None:
    """Test-time augmentation flags (two flags, not `--tta [MODE]`, which would swallow a photo's path)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--tta",
        action="store_const",
        const="flip",
        default="none",
        help="average the logits of each photo and its mirror image (2x the cost)",
    )
    group.add_argument(
        "--tta-multi",
        dest="tta",
        action="store_const",
        const="multi",
        help="average 7 views: the photo, its mirror, four small shifts, a slight zoom (7x the cost)",
    )


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("recipe (defaults are the shipped model's recipe)")
    from heritage_cnn.augment import AugmentConfig
    from heritage_cnn.model import ModelConfig
    from heritage_cnn.train import TrainConfig

    d, a, m = TrainConfig(data="", out=""), AugmentConfig(), ModelConfig()
    group.add_argument("--epochs", type=int, help=f"passes over the training split (default {d.epochs})")
    group.add_argument("--batch-size", type=_positive_int, help=f"images per step (default {d.batch_size})")
    group.add_argument("--lr", type=float, help=f"peak AdamW learning rate (default {d.lr:g})")
    group.add_argument(
        "--warmup", type=float, help=f"epochs of linear warm-up before the cosine (default {d.warmup_epochs:g})"
    )
    group.add_argument("--weight-decay", type=float, help=f"AdamW weight decay on weights (default {d.weight_decay:g})")
    group.add_argument(
        "--label-smoothing", type=float, help=f"cross-entropy label smoothing (default {d.label_smoothing:g})"
    )
    group.add_argument(
        "--ema",
        type=float,
        help=f"per-step decay of a weight average that is validated and saved, e.g. 0.998 (default {d.ema_decay:g}: off)",
    )
    group.add_argument("--mixup", type=float, help=f"MixUp alpha, 0 = off (default {d.mixup_alpha:g})")
    group.add_argument("--cutmix", type=float, help=f"CutMix alpha, 0 = off (default {d.cutmix_alpha:g})")
    group.add_argument(
        "--consistency",
        type=float,
        help="weight of a Jensen-Shannon term between two augmented views of each image (each step then runs "
        f"2x --batch-size images; AugMix uses 12); 0 = off (default {d.consistency_weight:g})",
    )
    group.add_argument(
        "--balanced-loss",
        action="store_true",
        help="weight the loss by inverse class frequency (small classes count more)",
    )
    group.add_argument(
        "--dropout", type=float, help=f"dropout before each fully connected layer (default {m.dropout:g})"
    )
    group.add_argument(
        "--teacher",
        action="append",
        default=[],
        metavar="RUN",
        help="distil from this trained run folder or checkpoint (repeat for an ensemble)",
    )
    group.add_argument(
        "--distill-weight",
        type=float,
        help=f"share of the teachers' soft targets in the loss (default {d.distill_weight:g})",
    )
    group.add_argument(
        "--distill-temperature",
        type=float,
        help=f"softmax temperature of the distillation term (default {d.distill_temperature:g})",
    )
    group.add_argument("--seed", type=int, default=0, help="seed of initialisation, order and augmentation (default 0)")
    group.add_argument(
        "--val-fraction", type=float, help="validation share, 1/k of a stratified group k-fold (default 0.2)"
    )
    group.add_argument("--split-seed", type=int, help="seed of the validation split (default 0)")
    group.add_argument("--limit-per-class", type=_positive_int, help="at most N images per class (quick runs)")
    group.add_argument("--widths", type=_int_list, help="channels per stage (default 24,48,96,192)")
    group.add_argument(
        "--blocks", type=_int_list, help="conv blocks per stage (default 1,1,1,2; 1 each with other --widths lengths)"
    )
    group.add_argument("--plain", action="store_true", help="no residual connections")
    group.add_argument(
        "--rotation", type=float, help=f"max random rotation in degrees (default {a.rotation_degrees:g})"
    )
    group.add_argument("--zoom", type=float, help=f"random zoom range, scale in [1/(1+z), 1+z] (default {a.zoom:g})")
    group.add_argument("--shift", type=float, help=f"random shift, fraction of the side (default {a.shift:g})")
    group.add_argument(
        "--erase", type=float, help=f"probability of random erasing of a rectangle per image (default {a.erase:g})"
    )
    group.add_argument("--no-augment", action="store_true", help="switch augmentation off (for comparisons)")
    group.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    group.add_argument("--threads", type=_positive_int, help="CPU threads (default: all cores)")
    group.add_argument("--cache-dir", help="keep decoded images here between runs")
    group.add_argument("--compile", action="store_true", help="torch.compile the network (GPU, long runs)")
    group.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA (it is on by default)")


def _launch_torchrun(nproc: int, argv: list[str]) -> int:
    """`heritage train --nproc N ...` is `torchrun --standalone --nproc_per_node=N -m heritage_cnn.train ...`."""
    import subprocess

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    print("running: torchrun " + " ".join([*command[4:], "-m", "heritage_cnn.train", *argv]), flush=True)
    return subprocess.call([*command, "-m", "heritage_cnn.train", *argv])


def cmd_train(args: argparse.Namespace) -> int:
    from heritage_cnn.train import train

    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        if (args.batch_size or 128) % args.nproc:
            raise UsageError(f"--batch-size {args.batch_size or 128} must be divisible by the {args.nproc} processes")
        argv = list(args.argv)
        index = argv.index("--nproc")
        del argv[index : index + 2]
        return _launch_torchrun(args.nproc, argv)

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


def evaluate_on(model_path: str | None, data: str, split: str, out: str, tta: str = "none") -> dict[str, Any]:
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
    tta_label = {"none": "", "flip": ", TTA (image + mirror)", "multi": ", TTA (7 views: mirror, shifts, zoom)"}[tta]
    title = f"{Path(str(checkpoint.path)).name} on the {described}{tta_label}"
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
        f"{metrics['n_images']} images{tta_label}"
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
    if find_layout_test(data):
        evaluate_on(model_path, data, "test", str(out / "eval-test"))
    for step in _demo_tool_steps():
        step(model_path, data, out)
    from heritage_cnn.report import build_html_report

    page = build_html_report(out, out / "index.html", title=f"heritage-cnn demo on {data}")
    print(f"\nreport: {page.resolve()}")
    print(f"demo finished in {(time.perf_counter() - started) / 60:.1f} min; everything is in {out.resolve()}")
    return 0


# --------------------------------------------------------------------------------------------
# predict and sort
# --------------------------------------------------------------------------------------------


def cmd_predict(args: argparse.Namespace) -> int:
    from heritage_cnn.predict import Classifier, find_photos, format_predictions, printable

    photos, missing = find_photos(args.inputs)
    for path, reason in missing:
        print(f"heritage: {path}: {reason}", file=sys.stderr)
    if not photos:
        raise UsageError("no photos found in " + ", ".join(args.inputs))
    classifier = Classifier.load(args.model, tta=args.tta)
    predictions, skipped = [], []
    for item in classifier.predict_files(photos, top=args.top):
        (skipped if isinstance(item, tuple) else predictions).append(item)
    if predictions:
        print(format_predictions(predictions, args.format))
    for path, reason in skipped:
        print(f"heritage: skipped {printable(path)}: {reason}", file=sys.stderr)
    if skipped:
        print(f"heritage: {len(skipped)} of {len(photos)} file(s) could not be read", file=sys.stderr)
    return 0 if predictions else 2


def cmd_sort(args: argparse.Namespace) -> int:
    from heritage_cnn.predict import Classifier
    from heritage_cnn.sort import sort_photos

    summary = sort_photos(
        Classifier.load(args.model, tta=args.tta), args.in_dir, args.out, args.min_confidence, args.mode
    )
    print(summary.describe(args.min_confidence))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Make every figure for one model and gather them into one self-contained HTML page."""
    from heritage_cnn.checkpoint import load_checkpoint
    from heritage_cnn.datacheck import check_dataset
    from heritage_cnn.io import atomic_path, atomic_write_json
    from heritage_cnn.report import build_html_report, plot_training_curves

    data, out = _data_arg(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = load_checkpoint(args.model)
    atomic_write_json(out / "data_check.json", check_dataset(data))
    history = checkpoint.info.get("history")
    if history:
        with atomic_path(out / "train" / "curves.png") as tmp:
            plot_training_curves(history, tmp)
    split = "val" if checkpoint.info.get("recipe") else "all"
    evaluate_on(args.model, data, split, str(out / "eval-val"))
    if split == "val" and find_layout_test(data):
        evaluate_on(args.model, data, "test", str(out / "eval-test"))
    for step in _demo_tool_steps():
        step(args.model, data, out)
    page = build_html_report(
        out, out / "index.html", title=f"heritage-cnn report: {Path(str(checkpoint.path)).name} on {data}"
    )
    print(f"report: {page.resolve()}")
    return 0


def find_layout_test(data: str) -> bool:
    from heritage_cnn.data import find_layout

    return find_layout(data).test is not None


def _demo_tool_steps() -> list[Any]:
    """Figure-making steps of the demo defined beside their code: `demo_step(model_path, data, out)`."""
    from heritage_cnn import synthesis, visualize

    return [visualize.demo_step, synthesis.demo_step]


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
        "  heritage train --data data/ahe64 --out runs/quick --epochs 3 --limit-per-class 100\n"
        "  heritage train --data data/ahe64 --out runs/ddp --nproc 2        data-parallel, 2 processes\n"
        "  torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\\n"
        "      -m heritage_cnn.train --data data/ahe64 --out runs/multi   several machines",
        formatter_class=_formatter,
    )
    p.add_argument("--data", help="data folder (default $HERITAGE_DATA)")
    p.add_argument("--out", required=True, help="run folder for checkpoints, metrics and figures")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.add_argument(
        "--nproc", type=_positive_int, default=1, help="processes for distributed data-parallel training (torchrun)"
    )
    p.add_argument("--sync-bn", action="store_true", help="synchronised batch norm across processes")
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
    _add_tta_option(p)
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

    p = commands.add_parser(
        "predict",
        help="classify photos",
        description="Classify photos of any size and common format (JPEG, PNG, WebP, TIFF, BMP, GIF). Each is "
        "decoded as in training: EXIF orientation honoured, converted to RGB, shorter side scaled to 64 px, "
        "centre square cropped. Unreadable files are listed and skipped.",
        epilog="examples:\n  heritage predict photo.jpg\n  heritage predict survey/ --top 5 --format csv > predictions.csv",
        formatter_class=_formatter,
    )
    p.add_argument("inputs", nargs="+", metavar="PHOTO_OR_DIR", help="photos, or folders searched recursively")
    p.add_argument("--model", help="checkpoint (default: the shipped model)")
    p.add_argument("--top", type=_positive_int, default=3, help="how many classes to list (default 3)")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table", help="output format (default table)")
    _add_tta_option(p)
    p.set_defaults(func=cmd_predict)

    p = commands.add_parser(
        "sort",
        help="copy a survey folder's photos into one folder per class",
        description="Copy (never move, never delete) each photo below IN_DIR into OUT_DIR/<class>/, or "
        "OUT_DIR/_uncertain/ below the confidence threshold, and write OUT_DIR/manifest.csv. Safe to run again: "
        "photos already sorted are skipped, names never overwrite each other. One sort at a time per OUT_DIR: a "
        "second one exits 2 at once, naming the process that holds OUT_DIR/.heritage-sort.lock.",
        epilog="example:\n  heritage sort survey_2026/ --out sorted/ --min-confidence 0.7",
        formatter_class=_formatter,
    )
    p.add_argument("in_dir", metavar="IN_DIR", help="folder of photos (searched recursively; only read)")
    p.add_argument("--out", required=True, help="output folder (must not be inside IN_DIR)")
    p.add_argument("--model", help="checkpoint (default: the shipped model)")
    p.add_argument(
        "--min-confidence", type=float, default=0.6, help="below this, photos go to _uncertain/ (default 0.6)"
    )
    p.add_argument(
        "--mode",
        choices=["copy", "link"],
        default="copy",
        help="copy files, or make hard links (never symbolic links); where a hard link is impossible (another "
        "file system) the photo is copied and the summary counts it (default copy)",
    )
    _add_tta_option(p)
    p.set_defaults(func=cmd_sort)

    p = commands.add_parser(
        "report",
        help="one self-contained HTML page with every figure",
        description="Evaluate a model, make every figure (curves, confusion matrix, errors, calibration, feature "
        "maps, kernels, deconvnet, attributions, class images) and gather them, images embedded, in one "
        "index.html that opens offline.",
        epilog="example:\n  heritage report --data data/ahe64 --out report/",
        formatter_class=_formatter,
    )
    p.add_argument("--model", help="checkpoint (default: the shipped model)")
    p.add_argument("--data", help="data folder (default $HERITAGE_DATA)")
    p.add_argument("--out", required=True, help="folder for index.html and the figures")
    p.set_defaults(func=cmd_report)

    visualize = commands.add_parser(
        "visualize",
        help="look inside the network: feature maps, kernels, deconvnet, unit images",
        description="Look inside a trained network.",
        formatter_class=_formatter,
    )
    visualize_commands = visualize.add_subparsers(dest="visualize_command", metavar="WHAT", required=True)
    _register_tool_commands(commands, visualize_commands)
    return parser


def _register_tool_commands(
    commands: argparse._SubParsersAction, visualize_commands: argparse._SubParsersAction
) -> None:
    """Commands defined beside their code: each module's `register_cli(commands, visualize_commands)`."""
    from heritage_cnn import explain, visualize

    visualize.register_cli(commands, visualize_commands)
    explain.register_cli(commands, visualize_commands)
    from heritage_cnn import synthesis

    synthesis.register_cli(commands, visualize_commands)
    from heritage_cnn import serve

    serve.register_cli(commands, visualize_commands)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `heritage` command; errors the user can fix are one line, exit 2."""
    from heritage_cnn.data import DatasetError, ImageError
    from heritage_cnn.datacheck import DownloadError
    from heritage_cnn.io import CheckpointError

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv[1:]  # the subcommand's own arguments (relaunching under torchrun needs them)
    try:
        return int(args.func(args) or 0)
    except (UsageError, DatasetError, ImageError, CheckpointError, DownloadError, ValueError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        print(f"heritage: error: {message}", file=sys.stderr)
        return 2
    except OSError as error:  # a read-only or full disk, a missing folder: name the file, no traceback
        where = f"{error.filename}: " if error.filename else ""
        print(f"heritage: error: {where}{error.strerror or error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("heritage: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
