"""`heritage data download | check | none-fit`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from heritage_cnn.cli.options import (
    UsageError,
    add_command,
    add_device,
    add_model,
    data_folder,
    device_name,
    int_in,
    load_model,
    mark_output,
    number_in,
)

if TYPE_CHECKING:
    from heritage_cnn.models.checkpoint import Checkpoint


def cmd_data_download(args: argparse.Namespace) -> int:
    """Fetch the Kaggle dataset with kagglehub.

    Fetch the Architectural Heritage Elements Image64 dataset from Kaggle (kagglehub).

    Example:
      heritage data download --dest data/ahe64
    """
    from heritage_cnn.data.check import download_dataset

    root = download_dataset(args.dest)
    print(f"dataset ready in {root}\nnext: heritage data check {root}   or   export HERITAGE_DATA={root}")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    """Counts, unreadable files, modes, sizes, duplicates.

    Images per class and split, unreadable files, image modes and sizes, byte-identical duplicates (and those with
    conflicting labels), near-duplicates across splits (perceptual hash).

    Example:
      heritage data check data/ahe64 --json check.json
    """
    from heritage_cnn.base.io import atomic_write_json
    from heritage_cnn.base.names import shown
    from heritage_cnn.data.check import check_dataset, format_report

    report = check_dataset(data_folder(args.dir, "DIR"), args.near_duplicate_distance)
    if args.format == "json":
        from heritage_cnn.base.names import json_text

        print(json_text(report))
    else:
        print(format_report(report))
    if args.json:
        atomic_write_json(args.json, report)
        if args.format != "json":
            print(f"\nJSON written to {shown(args.json)}")
    return 0


def cmd_data_none_fit(args: argparse.Namespace) -> int:
    """Fit a model's "none of these" threshold on its data; write it as a new checkpoint.

    Fit the open-set score that lets a model say "none of these" (a photo of none of its classes) and its
    threshold, and write the model with them as a new checkpoint pair at --out (the model's own files are never
    written). The split is the one the model records (as `heritage evaluate --split val` rebuilds it): the class
    statistics (which a Mahalanobis score reads and `heritage teach` replays) come from its training photos, the
    threshold calls --reject-share of its validation photos "none" (default 0.03, docs/open_set.md's operating
    point). The command is recorded in the checkpoint. --data must be the folder the model was trained on: a folder
    whose rebuilt split trains on photos the model did not train on (by the perceptual hashes its checkpoint
    records) is refused, and validation photos it trained on are left out of the threshold's photos. Files that
    cannot be read are skipped and named on stderr.

    Examples:
      heritage data none-fit --model runs/a --data data/ahe64 --out runs/a/none
      heritage data none-fit --model default --data data/ahe64 --score mahalanobis --ridge 1e-4 --out /tmp/default
    """
    from heritage_cnn.apps.evaluation import fit_none_of_these
    from heritage_cnn.cli.evaluate import name_skipped
    from heritage_cnn.data.folders import reuse_decoded
    from heritage_cnn.inference.openset_fit import default_score
    from heritage_cnn.models.openset import SingularCovariance

    data = data_folder(args.data)
    checkpoint = load_model(args, device_name(args.device))
    score = args.score or default_score(checkpoint)
    # recorded in the checkpoint with every setting spelled out, the data and output folders as placeholders
    settings = f"--layer {args.layer} --ridge {args.ridge:g} "
    command = (
        f"heritage data none-fit --model {args.model or 'default'} --data DATA --out OUT --score {score} "
        f"{settings}--reject-share {args.reject_share:g}"
    )
    with reuse_decoded():  # the folder is decoded and split once, for the check and for the fit
        _check_fit_folder(checkpoint, data, args.out)
        try:
            fit_none_of_these(
                checkpoint,
                data,
                args.out,
                score,
                args.layer,
                args.ridge,
                args.reject_share,
                command,
                name_skipped=name_skipped,  # on stderr, as evaluate names them
            )
        except SingularCovariance as error:  # known only once the features are in: said as the flag's problem
            raise UsageError(f"--ridge {args.ridge:g}: {error.problem}") from None
    return 0


def _check_fit_folder(checkpoint: Checkpoint, data: str, out: str) -> None:
    """Before any fitting: the output is new, and `data` is the folder the model trained on (its rebuilt split's
    training side is among the photos it records), so that the class statistics describe photos it trained on."""
    from heritage_cnn.apps.evaluation import rebuilt_split, split_recipe
    from heritage_cnn.inference.openset_fit import check_trained_on
    from heritage_cnn.models.checkpoint import checkpoint_files

    existing = [path for path in checkpoint_files(out) if path.exists()]
    if existing:
        raise UsageError(f"--out {out}: {existing[0]} already exists; the fitted model is written as a new checkpoint")
    if not split_recipe(checkpoint):
        return  # the fit says the split cannot be rebuilt
    train_set, _, _ = rebuilt_split(checkpoint, data)  # labelled in the model's class order, whatever its order
    if not check_trained_on(checkpoint, train_set, f"--data {data}"):
        print(f"note: {checkpoint.path} does not record which photos trained it: --data cannot be checked against them")


def register(commands: argparse._SubParsersAction) -> None:
    from heritage_cnn.data.split import HASH_BITS, NEAR_DUPLICATE_DISTANCE

    group = add_command(
        commands, "data", help="download or check a dataset", description="Download or check a dataset."
    )
    actions = group.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = add_command(actions, "download", cmd_data_download)
    p.add_argument("--dest", default="data/ahe64", help="where to put it (default data/ahe64)")
    mark_output(p, "dest", "--dest")
    p = add_command(actions, "check", cmd_data_check)
    p.add_argument("dir", nargs="?", metavar="DIR", help="data folder (default $HERITAGE_DATA)")
    p.add_argument("--format", choices=["table", "json"], default="table", help="what to print (default table)")
    p.add_argument("--json", help="also write the JSON report to this file")
    mark_output(p, "json", "--json", "file")
    p.add_argument(
        "--near-duplicate-distance",
        type=int_in(0, HASH_BITS, f"a distance between {HASH_BITS}-bit hashes is 0 to {HASH_BITS}"),
        default=NEAR_DUPLICATE_DISTANCE,
        help="max Hamming distance of perceptual hashes (default %(default)s)",
    )
    _register_none_fit(actions)


def _register_none_fit(actions: argparse._SubParsersAction) -> None:
    from heritage_cnn.inference.openset_fit import DEFAULT_RIDGE, DEFAULT_SCORE, OUTLIER_EXPOSED_SCORE, REJECT_SHARE
    from heritage_cnn.models.openset_point import LAYERS, SCORES

    p = add_command(actions, "none-fit", cmd_data_none_fit)
    add_model(p)
    p.add_argument("--data", help="the data folder the model was trained on (default $HERITAGE_DATA)")
    p.add_argument("--out", required=True, help="the new checkpoint to write (a stem: OUT.safetensors + OUT.json)")
    mark_output(p, "out", "--out", "stem")
    p.add_argument(
        "--score",
        choices=SCORES,
        default=None,
        help=f"the open-set score: energy or max_softmax (from the logits), or mahalanobis (the distance to the "
        f"nearest class mean of the features at --layer) (default {DEFAULT_SCORE}; {OUTLIER_EXPOSED_SCORE} for a "
        "model trained with --outliers)",
    )
    p.add_argument(
        "--layer",
        choices=LAYERS,
        default=LAYERS[0],
        help="the class statistics' features: whose input (default %(default)s); every score carries them, "
        "`heritage teach` replays them",
    )
    p.add_argument(
        "--ridge",
        type=number_in(0),
        default=DEFAULT_RIDGE,
        help="the class statistics: added to the covariance's diagonal, relative to its mean (default %(default)g)",
    )
    p.add_argument(
        "--reject-share",
        type=number_in(0, 1, below_high=True),
        default=REJECT_SHARE,
        help="the share of validation photos the threshold calls none at most, below 1 (default %(default)g)",
    )
    add_device(p)
