"""`heritage data download | check`."""

from __future__ import annotations

import argparse

from heritage_cnn.cli.options import add_command, data_folder, int_in


def cmd_data_download(args: argparse.Namespace) -> int:
    """Fetch the Kaggle dataset with kagglehub.

    Fetch the Architectural Heritage Elements Image64 dataset from Kaggle (kagglehub).

    Example:
      heritage data download --dest data/ahe64
    """
    from heritage_cnn.datacheck import download_dataset

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
    from heritage_cnn.datacheck import check_dataset, format_report
    from heritage_cnn.io import atomic_write_json
    from heritage_cnn.names import shown

    report = check_dataset(data_folder(args.dir), args.near_duplicate_distance)
    if args.format == "json":
        from heritage_cnn.names import json_text

        print(json_text(report))
    else:
        print(format_report(report))
    if args.json:
        atomic_write_json(args.json, report)
        if args.format != "json":
            print(f"\nJSON written to {shown(args.json)}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    from heritage_cnn.split import HASH_BITS, NEAR_DUPLICATE_DISTANCE

    group = add_command(
        commands, "data", help="download or check a dataset", description="Download or check a dataset."
    )
    actions = group.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = add_command(actions, "download", cmd_data_download)
    p.add_argument("--dest", default="data/ahe64", help="where to put it (default data/ahe64)")
    p = add_command(actions, "check", cmd_data_check)
    p.add_argument("dir", nargs="?", help="data folder (default $HERITAGE_DATA)")
    p.add_argument("--format", choices=["table", "json"], default="table", help="what to print (default table)")
    p.add_argument("--json", help="also write the JSON report to this file")
    p.add_argument(
        "--near-duplicate-distance",
        type=int_in(0, HASH_BITS, f"a distance between {HASH_BITS}-bit hashes is 0 to {HASH_BITS}"),
        default=NEAR_DUPLICATE_DISTANCE,
        help="max Hamming distance of perceptual hashes (default %(default)s)",
    )
