"""`heritage generate`, and the rendering options it shares with `heritage visualize units`."""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from heritage_cnn.base.io import holds_anything
from heritage_cnn.cli.options import (
    UsageError,
    add_command,
    add_device,
    add_member,
    add_model,
    add_out,
    add_seed,
    device_name,
    inside_model,
    int_in,
    number_in,
    positive_int,
)
from heritage_cnn.data.decode import IMAGE_SIZE

# One run keeps every image it draws in memory (and draws them at ~5 s each on two cores): more than this per
# class is a typo or a job for several runs with different --seed.
MAX_PER_CLASS = 256


def add_render_options(p: argparse.ArgumentParser, steps: str, lr: float, every_member: bool = False) -> None:
    add_model(p)
    add_member(p, every_by_default=every_member)
    p.add_argument(
        "--size",
        type=int,
        choices=[IMAGE_SIZE, 2 * IMAGE_SIZE],
        default=IMAGE_SIZE,
        help=f"image size in pixels (default {IMAGE_SIZE}, the data set's)",
    )
    p.add_argument("--steps", type=positive_int, help=f"optimisation steps (default {steps})")
    p.add_argument("--lr", type=number_in(0, above_low=True), help=f"Adam learning rate (default {lr:g})")
    p.add_argument("--param", choices=["fourier", "pixel"], default="fourier", help="parametrisation (default fourier)")
    add_seed(p, "same seed, same images")
    add_device(p)
    add_out(p)


def render_settings(args: argparse.Namespace, base: Any, **extra: Any) -> Any:
    """`base` with what the command line typed (steps and lr only when given)."""
    typed = {key: getattr(args, key) for key in ("steps", "lr") if getattr(args, key) is not None}
    return replace(base, param=args.param, **typed, **extra)


def load_for_render(args: argparse.Namespace) -> Any:
    return inside_model(args, device_name(args.device))


def cmd_generate(args: argparse.Namespace) -> int:
    """Draw what the network sees in a class (gradient ascent).

    Synthesise images that a trained network classifies as a class: gradient ascent on a Fourier-parametrised image
    with decorrelated colour, random pad/jitter/scale/rotation each step. An ensemble (the shipped default) draws
    with all its networks at once, each seeing the same transformed image (their mean logit is the objective:
    images that networks of other architectures recognise, docs/synthesis.md); `--member N` draws with one.
    Writes, into a new (or empty) folder, one PNG per image, class_images.png (a column per class) and
    class_images.json (each image's probability under the generating model: the member's with --member, which it
    records); the folder appears whole once every file is written, so an interrupted run leaves none.

    Examples:
      heritage generate --all --n 4 --out runs/classes
      heritage generate --class "dome (inner)" --n 8 --size 128 --out runs/domes
    """
    from heritage_cnn.data.labels import resolve_class
    from heritage_cnn.inside.synthesis.draw import ENSEMBLE_SETTINGS, Settings, draw_classes
    from heritage_cnn.inside.synthesis.files import MANIFEST, publish_generated, remove_abandoned

    if args.diversity is not None and args.n < 2:  # typed: it rewards images of one class for differing
        raise UsageError(
            f"--diversity {args.diversity:g}: rewards images of one class for differing from each other, so it needs "
            f"--n 2 or more; with --n {args.n} it would change nothing"
        )
    out = Path(args.out)
    remove_abandoned(Path(os.path.realpath(out)))  # a killed run's temporary folder inside an empty --out is no run
    if out.exists() and (not out.is_dir() or holds_anything(out)):  # before any work, as review: never mix two runs
        raise UsageError(f"--out {out}: already exists and is not empty; generate writes into a new folder")
    checkpoint = load_for_render(args)
    targets = list(range(len(checkpoint.classes))) if args.all else [resolve_class(args.cls, checkpoint.classes)]
    base = ENSEMBLE_SETTINGS if checkpoint.member_count > 1 else Settings()
    settings = render_settings(args, base, diversity=base.diversity if args.diversity is None else args.diversity)
    generated = draw_classes(checkpoint, targets, args.n, args.size, settings, args.seed, progress=not args.quiet)
    grid = publish_generated(args.out, generated, checkpoint, args.seed, args.n)  # whole, or not at all
    mean = sum(generated.probabilities) / len(generated.probabilities)
    who = "generating model" if checkpoint.index is None else f"member {checkpoint.index}"
    print(
        f"{len(generated.images)} images in {generated.seconds:.1f} s, mean probability of the target class "
        f"{mean:.3f} ({who})\ngrid: {grid}\nper image: {Path(args.out) / MANIFEST}"
    )
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    from heritage_cnn.inside.synthesis.draw import ENSEMBLE_SETTINGS, Settings

    p = add_command(commands, "generate", cmd_generate)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--class", dest="cls", help='a class, folder or display name ("dome (inner)")')
    which.add_argument("--all", action="store_true", help="every class")
    p.add_argument(
        "--n", type=int_in(1, MAX_PER_CLASS), default=4, help=f"images per class, 1 to {MAX_PER_CLASS} (default 4)"
    )
    p.add_argument(
        "--diversity",
        type=number_in(0),
        default=None,
        help="reward images of a class for differing (e.g. 0.5; default 0); needs --n 2 or more",
    )
    add_render_options(
        p, f"{Settings.steps}; {ENSEMBLE_SETTINGS.steps} for an ensemble", Settings.lr, every_member=True
    )
