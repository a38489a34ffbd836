"""`heritage map`: what is where in whole photos, an element map per photo."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
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
    note_cannot_reject,
    number_in,
    refuse_output,
    say_skipped,
    show_progress,
)


def fractions(text: str) -> tuple[float, ...]:
    """`1,0.5,0.25` -> (1.0, 0.5, 0.25), each in (0, 1], at most `MAX_SCALES` different ones."""
    from heritage_cnn.inference.tiles import MAX_SCALES

    check = number_in(0, 1, above_low=True)
    values = tuple(check(part) for part in text.split(","))
    if len(set(values)) > MAX_SCALES:
        raise argparse.ArgumentTypeError(f"at most {MAX_SCALES} different scales, got {len(set(values))}")
    return values


def figure_names(paths: list[str]) -> list[str]:
    """One valid, distinct PNG name per photo: its file name made portable, `-n` added to a repeated one."""
    from heritage_cnn.base.names import portable_name

    used: set[str] = set()
    names = []
    for path in paths:
        stem, n = Path(path).name + ".map.png", 0
        while (name := portable_name(stem, n)) in used:
            n += 1
        used.add(name)
        names.append(name)
    return names


def places(path: str | os.PathLike) -> set[Path]:
    """Where `path` lies, resolved: its folder's real path with its own name (the entry a write there would replace)
    and, for a link, the file it leads to. `..` and symbolic links hide neither."""
    path = Path(path)
    return {Path(os.path.realpath(path.parent)) / path.name, Path(os.path.realpath(path))}


def refuse_holding(out: str, inputs: Iterable[str | os.PathLike]) -> None:
    """A UsageError naming --out and the input when --out holds (at any depth) one of `inputs`, a photo or a folder:
    a figure could replace a photo there, and the next run would map the figures. An input that does not exist holds
    nothing (`find_inputs` says it is missing)."""
    from heritage_cnn.base.names import shown

    root = Path(os.path.realpath(out))
    for item in inputs:
        if os.path.lexists(item) and any(root in place.parents for place in places(item)):
            kind = "folder" if os.path.isdir(item) else "photo"
            raise UsageError(f"--out {shown(out)}: holds the input {kind} {shown(item)}; write the figures elsewhere")


def refuse_out(out: str | None, inputs: list[str]) -> None:
    """Before any work, a UsageError in one line when --out `out` (None: not given) cannot take the figures: it is an
    input, lies inside an input folder or holds an input (the figures could replace a photo, and the next run would
    map them), a file is in its way, or a folder is where elements.json goes (otherwise found after every photo is
    mapped)."""
    from heritage_cnn.base.io import inside_input, output_problem
    from heritage_cnn.base.names import shown

    if out:
        holder = inside_input(out, inputs)
        if holder is not None:
            where = "inside the input folder" if os.path.isdir(holder) else "is the input"
            raise UsageError(f"--out {shown(out)}: {where} {shown(holder)}; write the figures elsewhere")
        refuse_holding(out, inputs)
    refuse_output(out, "--out")  # after the input checks, which say more when --out is an input photo
    if out:
        path = os.path.join(out, "elements.json")
        problem = output_problem(path, folder=False)
        if problem is not None and os.path.isdir(path):
            problem = f"{shown(path)}: is a folder, where map writes elements.json; move it away, or use another --out"
        if problem is not None:
            raise UsageError(problem)


def cmd_map(args: argparse.Namespace) -> int:
    """Find the elements in whole photos: what is where.

    Each photo is scanned at its own resolution by the network, over overlapping square tiles at several scales
    (sides from its shorter side down to a quarter of it, never under the network's 64 px); tiles the open-set score
    calls "none of these" count for no class. The tiles make one map per class (two neighbouring scales must
    agree), and each class whose map peaks at or above --presence is listed with that peak as its confidence and a
    box around the peak (left, top, right, bottom in the photo's pixels; right and bottom exclusive). A photo
    smaller than one tile gets the whole-photo answer, and says so. Unreadable files are listed and skipped. With
    --out DIR, a figure per photo (the photo with each element's box named, and the ten maps) and
    DIR/elements.json (the JSON, whatever --format says); a figure that cannot be drawn is listed, its photo's map
    is still in elements.json ("figure": null), and the other photos go on.

    Examples:
      heritage map west_front.jpg
      heritage map survey/ --model fast --out maps/ --format json > elements.json
    """
    from heritage_cnn.base.names import shown
    from heritage_cnn.inference.classifier import Classifier
    from heritage_cnn.inference.element_map import format_maps, map_files

    config = map_config(args)
    refuse_out(args.out, args.inputs)
    photos, missing = find_inputs(args.inputs)
    if not photos:
        return 2
    taken: set[Path] = set()  # where the photos lie: no figure is ever written there
    if args.out:
        refuse_holding(args.out, photos)  # a photo found through a link into --out: said before the model is loaded
        taken = set().union(*map(places, photos))
    classifier = Classifier.load(args.model, device_name(args.device), args.tta, none_threshold=args.none_threshold)
    note_cannot_reject(classifier.open_set)
    out = Path(args.out) if args.out else None  # made by the first figure written: none when no photo is read
    names = iter(figure_names([str(p) for p in photos]))
    items = map_files(classifier, photos, config)
    if show_progress(args):
        from tqdm import tqdm

        items = tqdm(items, total=len(photos), desc="map", unit="photo", leave=False)
    maps, skipped, undrawn = [], [], []
    for item, name in zip(items, names, strict=True):
        if isinstance(item, tuple):
            skipped.append(item)
            continue
        if out is not None:  # a figure that cannot be drawn is listed; the photo's map is kept in elements.json
            from heritage_cnn.inference.element_figure import figure_or_reason

            if places(out / name) & taken:  # the last guard: a figure never replaces an input, even through a link
                drawn = f"its figure {shown(out / name)} would replace an input photo"
            else:
                drawn = figure_or_reason(item, out / name)
            if isinstance(drawn, str):
                undrawn.append((item.path, drawn))
            else:
                item.figure = str(drawn)
        maps.append(item)
    if maps:
        text = format_maps(maps, args.format)
        if args.format == "json" and hasattr(sys.stdout, "buffer"):
            sys.stdout.flush()
            sys.stdout.buffer.write((text + "\n").encode("utf-8"))
            sys.stdout.buffer.flush()
        else:
            print(text)
    if out is not None and maps:
        from heritage_cnn.base.io import atomic_write_text

        atomic_write_text(out / "elements.json", format_maps(maps, "json") + "\n")
        for path, reason in undrawn:
            print(f"heritage: no figure for {shown(path)}: {reason}", file=sys.stderr)
        written = f"{len(maps) - len(undrawn)} figure(s)" + (f" ({len(undrawn)} could not be drawn)" if undrawn else "")
        print(f"heritage: {written} and elements.json written to {shown(out)}", file=sys.stderr)
    say_skipped(skipped, len(photos), missing)
    return 0 if maps else 2


def register(commands: argparse._SubParsersAction) -> None:
    from heritage_cnn.inference.tiles import MIN_STRIDE, RULES, MapConfig

    default = MapConfig()
    p = add_command(commands, "map", cmd_map)
    p.add_argument("inputs", nargs="+", metavar="PHOTO_OR_DIR", help="photos, or folders searched recursively")
    add_model(p)
    p.add_argument(
        "--out",
        metavar="DIR",
        help="write a figure per photo (<photo name>.map.png) and elements.json into DIR (neither inside an input "
        "folder nor holding an input)",
    )
    p.add_argument("--format", choices=["table", "json"], default="table", help="output format (default table)")
    p.add_argument(
        "--scales",
        type=fractions,
        help="tile sides as fractions of the photo's shorter side (default "
        f"{','.join(f'{s:g}' for s in default.scales)}); sides under the network's input are skipped",
    )
    p.add_argument(
        "--stride",
        type=number_in(MIN_STRIDE, 1),
        help=f"step between tiles, as a fraction of their side, from {MIN_STRIDE:g} (one cell of the map at the "
        f"smallest tile) to 1 (default {default.stride:g}); when the scales would take over {default.max_tiles} "
        "tiles, the finest are left out and the note says so",
    )
    add_presence(p)
    p.add_argument(
        "--rule",
        choices=RULES,
        help=f"how scales combine: adjacent (two neighbouring scales must agree) or max (each alone) (default "
        f"{default.rule})",
    )
    add_none_threshold(p)
    add_tta(p)
    add_device(p)
