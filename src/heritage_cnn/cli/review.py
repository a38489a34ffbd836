"""`heritage review`: a thin shell over `heritage_cnn.inference.review`."""

from __future__ import annotations

import argparse
import os

from heritage_cnn.cli.options import (
    add_command,
    add_device,
    add_model,
    add_seed,
    device_name,
    int_in,
    load_model,
    mark_output,
    say_skipped,
    show_progress,
)


def cmd_review(args: argparse.Namespace) -> int:
    """Rank photos by how likely their label is wrong.

    Confident learning on a data folder (bare class folders, or the Kaggle layout's train/): the model's penultimate
    features of every photo, a logistic regression fitted on all folds but the photo's own (5-fold, near-duplicates
    kept together; --folds) for out-of-fold class probabilities, then cleanlab's find_label_issues, ranked by self-confidence.
    Writes, into a new folder: queue.csv (every photo, likeliest mistakes first), relabel.csv (path,new_label for
    the flagged photos: edit it, then train with --relabel), sheet_NN.png (the flagged photos, given -> suggested)
    and summary.json. The photos are never moved or changed; unreadable ones are skipped and listed.

    A model that trained on these photos memorised their labels, wrong ones included, and misses those: the shipped
    one trained on 8,104 of the 10,130 Kaggle train/ photos and flags none of them (docs/review.md). A model trained
    on other labels is the honest reviewer.

    Examples:
      heritage review data/ahe64 --out runs/review
      heritage review data/ahe64 --model runs/other --out runs/review2   a network trained on other labels
      heritage train --data data/ahe64 --out runs/b --relabel runs/review/relabel.csv   after editing it
    """
    from heritage_cnn.base.names import shown
    from heritage_cnn.inference.review import QUEUE_FILE, run_review

    record = run_review(
        load_model(args, device_name(args.device)),
        args.data,
        args.out,
        folds=args.folds,
        seed=args.seed,
        sheet_photos=args.sheet_photos,
        progress=show_progress(args),
    )
    unread = [(item["path"], item["reason"]) for item in record["skipped"]]
    say_skipped(unread, record["photos"] + len(unread))  # named as every command names them, and in summary.json
    skipped = f", {len(unread)} unreadable files skipped (listed in summary.json)" if unread else ""
    print(
        f"review: {record['flagged']} of {record['photos']} photos flagged as likely mislabelled{skipped} in "
        f"{record['seconds']['total']:.0f} s; queue: {shown(os.path.join(args.out, QUEUE_FILE))}"
    )
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    p = add_command(commands, "review", cmd_review)
    p.add_argument("data", metavar="DATA", help="data folder: <root>/<class>/<image> or the Kaggle layout")
    p.add_argument("--out", required=True, help="new output folder (refused if it holds anything)")
    mark_output(p, "out", "--out")
    add_model(p)
    p.add_argument(
        "--folds",
        type=int_in(2, 20),
        default=5,
        help="cross-validation folds for out-of-fold probabilities (default 5)",
    )
    p.add_argument(
        "--sheet-photos",
        type=int_in(0, 10_000),
        default=120,
        help="flagged photos shown on the contact sheets, 40 a sheet (default 120)",
    )
    add_seed(p, "seed of the folds")
    add_device(p)
