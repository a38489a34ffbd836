"""`heritage predict | sort`: classify photos, or copy them into one folder per class."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from heritage_cnn.cli.options import (
    UsageError,
    add_command,
    add_device,
    add_model,
    add_none_threshold,
    add_presence,
    add_tta,
    device_name,
    find_inputs,
    map_config,
    mark_output,
    note_cannot_reject,
    positive_int,
    say_skipped,
    show_progress,
)

FORMATS = {".json": "json", ".csv": "csv", ".txt": "table"}
NAMED = frozenset({".json", ".csv"})  # extensions that name one format; .txt is text, which all three are


def output_format(args: argparse.Namespace) -> str:
    """--format, else the extension of -o/--output, else a table. A --format that -o's .json or .csv contradicts is
    refused (a usage error, exit 2), since the file would be read by its name and fail; a .txt takes any."""
    suffix = Path(args.output).suffix.lower() if args.output else ""
    if args.format:
        if suffix in NAMED and FORMATS[suffix] != args.format:
            raise UsageError(
                f"--format {args.format} contradicts -o {args.output} ({FORMATS[suffix]}): drop one or make them agree"
            )
        return args.format
    if args.output:
        if suffix not in FORMATS:
            raise UsageError(
                f"{args.output}: cannot tell the format from {suffix or 'no extension'}: use .json, .csv, .txt or --format"
            )
        return FORMATS[suffix]
    return "table"


def check_output(output: str, inputs: list[str]) -> None:
    """-o is refused when it is a photo given as input, or has an image's name and is already there or lies in an
    input folder: predictions never replace a photo, nor pass for one on the next run. A CSV or JSON file in the
    survey folder itself (`predict . -o predictions.csv`) is written: it is not read as a photo."""
    from heritage_cnn.base.io import inside_input
    from heritage_cnn.data.folders import IMAGE_EXTENSIONS

    holder = inside_input(output, inputs)
    if holder is not None and not os.path.isdir(holder):
        raise UsageError(f"-o {output}: is the input {holder}; write the predictions elsewhere")
    if Path(output).suffix.lower() in IMAGE_EXTENSIONS:
        if os.path.lexists(output) and not os.path.isdir(output):
            raise UsageError(f"-o {output}: an image file already there; predictions are never written over an image")
        if holder is not None:
            raise UsageError(f"-o {output}: an image's name inside the input folder {holder}; use .csv or .json")


def write_predictions(predictions: list, fmt: str, output: str | None) -> None:
    """The table for people (the terminal's encoding); CSV and JSON as UTF-8 bytes, file names exact
    (`heritage_cnn.base.names`), to `output` or to stdout, so `> file.csv` gives the same bytes as `-o file.csv`."""
    from heritage_cnn.base.names import CSV_ERRORS, shown
    from heritage_cnn.inference.classifier import format_predictions

    text = format_predictions(predictions, fmt)
    ending = "\r\n" if fmt == "csv" else "\n"  # CSV's rows end in CRLF (RFC 4180), the last one too
    data = (text + ending).encode("utf-8", CSV_ERRORS if fmt == "csv" else "strict")
    if output:
        from heritage_cnn.base.io import atomic_write_bytes

        atomic_write_bytes(output, data)
        print(f"{len(predictions)} prediction(s) written to {shown(output)}", file=sys.stderr)
    elif fmt == "table":
        print(text)
    elif hasattr(sys.stdout, "buffer"):
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:  # a text-only stream (redirect_stdout to a StringIO)
        sys.stdout.write(data.decode("utf-8", CSV_ERRORS))


def cmd_predict(args: argparse.Namespace) -> int:
    """Classify photos.

    Classify photos of any size and common format (JPEG, PNG, WebP, TIFF, BMP, GIF). Each is decoded as in training:
    EXIF orientation honoured, converted to RGB, shorter side scaled to 64 px, centre square cropped. Unreadable
    files are listed and skipped. File names that are not UTF-8 are written back exactly: as their bytes in CSV
    (read with errors='surrogateescape'), as \\udcXX escapes in JSON; the table shows them as \\xe9.

    A photo whose open-set score is below the model's none-of-these threshold is "none of these": the table says so,
    with the closest classes beside it; JSON and CSV give `known` (true, false; empty for a model without the
    threshold, which files every photo into a class), `open_set_score` and `none_threshold`, and `label` stays the
    best of the ten.

    With --elements, each photo is also scanned whole by the element map (`heritage map`, the same model) and the
    elements it finds are listed beside the answer, which stays the same: JSON gains `elements` (each label, name,
    confidence, box {left, top, right, bottom} in the photo's pixels, peak, tile), CSV an `elements` column
    (`bell_tower:0.9100:120,0,980,760;gargoyle:0.5512:40,300,260,610`: label, confidence and box per element,
    ";" between elements; "%", ";" and ":" in a label as %25, %3B, %3A; empty when none is found), the table a
    line under each photo. Tiles the open-set score calls none count for no element, so a photo that is "none of
    these" as a whole can still hold elements.

    Examples:
      heritage predict photo.jpg
      heritage predict survey/ --top 5 -o predictions.csv
      heritage predict survey/ --model runs/a --format json > predictions.json
      heritage predict west_front.jpg --elements --presence 0.5
    """
    from heritage_cnn.inference.classifier import Classifier

    if args.presence is not None and not args.elements:
        raise UsageError("--presence is the element map's: add --elements")
    fmt = output_format(args)
    if args.output:
        check_output(args.output, args.inputs)
    photos, missing = find_inputs(args.inputs)
    if not photos:
        return 2
    classifier = Classifier.load(args.model, device_name(args.device), args.tta, none_threshold=args.none_threshold)
    note_cannot_reject(classifier.open_set)
    items = classifier.predict_files(photos, top=args.top)
    if args.elements:
        from heritage_cnn.inference.element_map import with_elements

        items = with_elements(classifier, items, map_config(args))
    if show_progress(args):
        from tqdm import tqdm

        items = tqdm(items, total=len(photos), desc="predict", unit="photo", leave=False)
    predictions, skipped = [], []
    for item in items:
        (skipped if isinstance(item, tuple) else predictions).append(item)
    if predictions:
        write_predictions(predictions, fmt, args.output)
    say_skipped(skipped, len(photos), missing)
    return 0 if predictions else 2


def cmd_sort(args: argparse.Namespace) -> int:
    """Copy a survey folder's photos into one folder per class.

    Copy (never move, never delete) each photo below IN_DIR into OUT_DIR/<class>/, and write OUT_DIR/manifest.csv.
    First a photo that is none of the ten classes (its open-set score below the model's none-of-these threshold, or
    --none-threshold) goes to OUT_DIR/_none/; then one below the confidence threshold goes to OUT_DIR/_uncertain/
    (one of the ten, unsure which). The manifest's `known` column says which photos were called none. Safe to run
    again: a photo the manifest lists is skipped, even if you moved or deleted its copy (your corrections for
    `heritage teach --corrections` stay as you left them), names never overwrite each other, and identical photos
    of one name share one copy. OUT_DIR/sort-settings.json records the model, --min-confidence, the none-of-these
    threshold, the views and --multi; a run with other ones exits 2 naming them (sort into a new --out). One sort
    at a time per OUT_DIR: a second one exits 2 at once, naming the process that holds OUT_DIR/.heritage-sort.lock.
    A copy's name is made valid (UTF-8, no control characters, at most 255 bytes); manifest.csv keeps each source's
    exact path (bytes that are not UTF-8 as they are on disk: read it with errors='surrogateescape').

    With --multi, a photo is filed under every element the element map (`heritage map`) finds in it, one copy or
    hard link in each element's class folder, whatever the whole photo's answer; a photo in which it finds none
    is filed as without --multi (_none/, _uncertain/ or its class). The manifest keeps one row per photo:
    `destination` is its first copy (the most confident element's), `elements` lists the elements
    (label:confidence:left,top,right,bottom, ";" between elements) and `destinations` every copy (";" between
    them; "%", ";" and ":" inside a path or label written %25, %3B, %3A). A folder is sorted one way: --multi into
    a folder sorted without it (or the reverse) exits 2.

    Examples:
      heritage sort survey_2026/ --out sorted/ --min-confidence 0.7
      heritage sort survey_2026/ --out by_element/ --multi --mode link
    """
    from heritage_cnn.inference.classifier import Classifier
    from heritage_cnn.inference.sort import sort_photos

    if args.presence is not None and not args.multi:
        raise UsageError("--presence is the element map's: add --multi")
    classifier = Classifier.load(args.model, device_name(args.device), args.tta, none_threshold=args.none_threshold)
    note_cannot_reject(classifier.open_set)
    summary = sort_photos(
        classifier,
        args.in_dir,
        args.out,
        args.min_confidence,
        args.mode,
        progress=not args.quiet,
        multi=args.multi,
        map_config=map_config(args),
    )
    print(summary.describe(args.min_confidence))
    failed = summary.nothing_sorted(args.in_dir)
    if failed:  # nothing could be sorted: exit 2, as predict and map do
        raise UsageError(failed)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    from heritage_cnn.inference.sort import MIN_CONFIDENCE

    p = add_command(commands, "predict", cmd_predict)
    p.add_argument("inputs", nargs="+", metavar="PHOTO_OR_DIR", help="photos, or folders searched recursively")
    add_model(p)
    p.add_argument("--top", type=positive_int, default=3, help="how many classes to list (default 3)")
    p.add_argument(
        "--format",
        choices=["table", "json", "csv"],
        help="output format (default: from --output's extension, else table; a .json or .csv -o must agree)",
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write the predictions to FILE (.json, .csv or .txt; never an input photo, nor an image's name in an input folder)",
    )
    mark_output(p, "output", "-o", "file")
    p.add_argument(
        "--elements",
        action="store_true",
        help="also list the elements the element map finds in each whole photo (as `heritage map`)",
    )
    add_presence(p, "--elements")
    add_none_threshold(p)
    add_tta(p)
    add_device(p)

    p = add_command(commands, "sort", cmd_sort)
    p.add_argument("in_dir", metavar="IN_DIR", help="folder of photos (searched recursively; only read)")
    p.add_argument("--out", required=True, help="output folder (must not be inside IN_DIR)")
    mark_output(p, "out", "--out")
    add_model(p)
    p.add_argument(
        "--min-confidence",
        type=float,
        default=MIN_CONFIDENCE,
        help=f"below this, photos go to _uncertain/ (default {MIN_CONFIDENCE:g}, as the web page's 'not sure')",
    )
    p.add_argument(
        "--mode",
        choices=["copy", "link"],
        default="copy",
        help="copy files, or make hard links (never symbolic links); where a hard link is impossible (another "
        "file system) the photo is copied and the summary counts it (default copy)",
    )
    p.add_argument(
        "--multi",
        action="store_true",
        help="file each photo under every element the element map finds in it (as `heritage map`); one with none "
        "found as without --multi",
    )
    add_presence(p, "--multi")
    add_none_threshold(p)
    add_tta(p)
    add_device(p)
