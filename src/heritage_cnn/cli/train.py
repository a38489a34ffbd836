"""`heritage train`: flags from the recipe table, resume, and the torchrun relaunch for --nproc."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import replace

from heritage_cnn.cli.options import (
    UsageError,
    add_command,
    add_data,
    data_folder,
    mark_output,
    positive_int,
    show_progress,
)
from heritage_cnn.cli.recipe import add_preset_option, add_recipe_options, new_config, resume_config


def launch_torchrun(nproc: int, argv: list[str]) -> int:
    """`heritage train --nproc N ...` is `torchrun --standalone --nproc_per_node=N -m heritage_cnn.cli train ...`."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    module = ["-m", "heritage_cnn.cli", "train"]
    print("running: torchrun " + " ".join([*command[4:], *module, *argv]), flush=True)
    return subprocess.call([*command, *module, *argv])


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            out.append(item)
    return out


def cmd_train(args: argparse.Namespace) -> int:
    """Train a network from scratch.

    Train a CNN from scratch on a class-folder dataset, validating on a duplicate-aware stratified split every
    epoch. Writes checkpoints (safetensors + JSON), metrics.csv/json and curves.png. With --resume, the run folder's
    config.json is the recipe: a typed recipe flag (--recipe too) that differs from it is refused, and so are photos
    or a relabel file other than the run's; --threads, --device or --nproc other than the run's are taken, with a
    note that the result is then not bit-identical to an uninterrupted run.

    Examples:
      heritage train --data data/ahe64 --out runs/a
      heritage train --out runs/a --resume                    continue an interrupted run
      heritage train --data data/ahe64 --out runs/a --overwrite   start runs/a again (else refused: it holds a run)
      heritage train --data data/ahe64 --out runs/quick --epochs 3 --limit-per-class 100
      heritage train --data data/ahe64 --out runs/ddp --nproc 2        data-parallel, 2 processes
      torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
            -m heritage_cnn.cli train --data data/ahe64 --out runs/multi   several machines
    """
    from heritage_cnn.base.devices import keep_freed_memory
    from heritage_cnn.training.distributed import leave_process_group
    from heritage_cnn.training.loop import train
    from heritage_cnn.training.state import CURVES_FILE

    keep_freed_memory()
    config = resume_config(args, args.out, args.data) if args.resume else None
    if config is None:
        config = new_config(args, data_folder(args.data), args.out)
    config = replace(config, resume=args.resume, overwrite=args.overwrite, progress=show_progress(args))
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        if config.batch_size % args.nproc:
            raise UsageError(f"--batch-size {config.batch_size} must be divisible by the {args.nproc} processes")
        return launch_torchrun(args.nproc, _without_nproc(args.argv))
    try:
        result = train(config)
    finally:
        leave_process_group()
    code = 130 if result.interrupted else 0
    if result.ranks.main:  # a torchrun job reports once, like its log
        final = result.final
        print(
            f"done in {result.seconds / 60:.1f} min: validation accuracy "
            f"{final.get('val_accuracy', float('nan')):.4f} ({result.val_size} images, duplicate-aware split)"
            + (" [interrupted: run again with --resume]" if result.interrupted else "")
        )
        print(f"checkpoint: {result.checkpoint}\ncurves:     {result.out / CURVES_FILE}")
    if result.ranks.world > 1:
        # Every file is written (atomically) and the process group is gone. Skip the interpreter's teardown, where
        # gloo's threads can still abort a finished worker (SIGABRT, "terminate called without an active
        # exception"), failing a run that succeeded.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def register(commands: argparse._SubParsersAction) -> None:
    p = add_command(commands, "train", cmd_train)
    add_data(p, "data folder (default $HERITAGE_DATA; with --resume, the run's own)")
    p.add_argument("--out", required=True, help="run folder for checkpoints, metrics and figures")
    mark_output(p, "out", "--out")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    again.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in a run folder that holds another run, removing that run's files (without it: refused)",
    )
    p.add_argument(
        "--nproc", type=positive_int, default=1, help="processes for distributed data-parallel training (torchrun)"
    )
    add_preset_option(p, default="full")
    p.set_defaults(recipe=None)  # "full" unless typed: --resume tells a typed --recipe apart (`resume_config`)
    add_recipe_options(p, "full")
