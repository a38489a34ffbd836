"""Options shared by several commands, each declared once: argument types, `--model`, `--member`, `--data`, `--out`,
`--device`, `--tta`, `--channels`, `--seed`, `--presence`, `-q`, and the one help layout of every command."""

from __future__ import annotations

import argparse
import inspect
import math
import os
import sys
from collections.abc import Callable
from typing import Any

from heritage_cnn.base.checks import SEED_MAX, in_range

DEVICES = ("auto", "cpu", "cuda")
MODEL_HELP = (
    "checkpoint (.safetensors with its .json, one network or an ensemble), run folder (its last checkpoint), or a "
    "shipped model: default (the ensemble; also what no --model means) or fast (one network distilled from it)"
)


class UsageError(Exception):
    """A user mistake worth one line, not a traceback."""


def formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=36)


def add_command(
    commands: argparse._SubParsersAction,
    name: str,
    func: Callable[[argparse.Namespace], int] | None = None,
    help: str = "",
    description: str = "",
) -> argparse.ArgumentParser:
    """A subcommand with the shared help layout and -q/--quiet; its help, description and examples are the
    docstring of `func` (first line; paragraphs; an `Examples:` block), so each is written once, beside the code."""
    epilog = None
    if func is not None and func.__doc__:
        first, _, rest = inspect.cleandoc(func.__doc__).partition("\n")
        help = help or first.rstrip(".")[:1].lower() + first.rstrip(".")[1:]
        text, _, examples = rest.partition("\nExample")
        description = description or text.strip()
        if examples:
            epilog = "example" + examples.strip()
    parser = commands.add_parser(name, help=help, description=description, epilog=epilog, formatter_class=formatter)
    if func is not None:
        parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
        parser.set_defaults(func=func, parser=parser)  # `parser`: the command's own, to say what it does not take
    return parser


# --------------------------------------------------------------------------------------------
# Argument types
# --------------------------------------------------------------------------------------------


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def int_in(low: int, high: int, meaning: str = "") -> Callable[[str], int]:
    """An argument type: an integer from `low` to `high`; `meaning` says what the range is in the error, e.g.
    "a port is 1 to 65535 (0: any free port)"."""

    def integer(text: str) -> int:
        value = _integer(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{meaning or f'must be {low} to {high}'}, got {value}")
        return value

    return integer


def number_in(
    low: float, high: float = math.inf, *, above_low: bool = False, below_high: bool = False
) -> Callable[[str], float]:
    """An argument type: a finite number from `low` (or above it) up to `high` (or below it). Plain `type=float`
    takes "nan" and "inf", which then pass every `<` check and reach the computation."""

    def number(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not in_range(value, low, high, above_low=above_low, below_high=below_high):
            upper = "" if high == math.inf else f" and {'below' if below_high else 'at most'} {high:g}"
            raise argparse.ArgumentTypeError(
                f"must be a finite number {'above' if above_low else 'at least'} {low:g}{upper}, got {text}"
            )
        return value

    return number


port_number = int_in(0, 65535, "a port is 1 to 65535 (0: any free port)")

seed_number = int_in(0, SEED_MAX, f"a seed is 0 to {SEED_MAX}")


def finite_number(text: str) -> float:
    """Any finite number (an open-set score can be negative): "nan" and "inf" are refused."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def int_list(text: str) -> tuple[int, ...]:
    """`24,48,96` -> (24, 48, 96), every value at least 1."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def channel_list(text: str) -> list[int]:
    """The one channel grammar: `0-7,12` -> [0, 1, ..., 7, 12] (numbers from 0, ranges inclusive)."""
    channels: list[int] = []
    try:
        for part in text.split(","):
            low, dash, high = part.strip().partition("-")
            start, stop = int(low), int(high) if dash else int(low)
            if start > stop:
                raise ValueError
            channels.extend(range(start, stop + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected channels like 0-7,12 (numbers from 0, ranges low-high), got {text!r}"
        ) from None
    return list(dict.fromkeys(channels))


# --------------------------------------------------------------------------------------------
# Shared options
# --------------------------------------------------------------------------------------------


def add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=_model, help=MODEL_HELP)


def _model(text: str) -> str:
    if not text:  # not the current folder taken for a run folder, nor the default
        raise argparse.ArgumentTypeError("empty; give a checkpoint, a run folder, default or fast (or leave it out)")
    return text


def add_member(parser: argparse.ArgumentParser, every_by_default: bool = False, what: str = "to use") -> None:
    """Which network of an ensemble a tool that looks inside a network works on (`every_by_default`: without
    --member the tool uses every network, as `generate` draws for all of them at once; `what`: what it is for)."""
    default = "every network of an ensemble" if every_by_default else "0"
    parser.add_argument(
        "--member",
        type=_member,
        default=None if every_by_default else 0,
        help=f"which network of an ensemble {what}, from 0 (default {default}; a single network has only 0)",
    )


def _member(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def add_data(parser: argparse.ArgumentParser, help: str = "data folder (default $HERITAGE_DATA)") -> None:
    parser.add_argument("--data", help=help)


def add_out(parser: argparse.ArgumentParser, help: str = "output folder", default: str | None = None) -> None:
    if default is None:
        parser.add_argument("--out", required=True, help=help)
    else:
        parser.add_argument("--out", default=default, help=f"{help} (default {default})")
    mark_output(parser, "out", "--out")


def mark_output(parser: argparse.ArgumentParser, dest: str, flag: str, kind: str = "folder") -> None:
    """Declare the option `dest` (typed `flag`) an output "folder", "file" or checkpoint "stem" (OUT writes
    OUT.safetensors + OUT.json; a folder, its last pair): `refuse_outputs` checks it before the command runs, so
    that no command does its work and then fails on a file in the way."""
    outputs = parser.get_default("outputs") or ()
    parser.set_defaults(outputs=(*outputs, (dest, flag, kind)))


_OUTPUT_KINDS = {"folder": "folder", "file": "file's name", "stem": "checkpoint's name (OUT for OUT.safetensors)"}


def refuse_outputs(args: argparse.Namespace) -> None:
    """Before any work: a UsageError naming the file in the way of an output the command declared (`mark_output`)."""
    for dest, flag, kind in getattr(args, "outputs", ()):
        refuse_output(getattr(args, dest, None), flag, kind)


def refuse_output(value: str | None, flag: str, kind: str = "folder") -> None:
    """A UsageError naming the file in the way of the output `value` (None: not given), a `mark_output` kind; for a
    command that says first what is more to the point (`map`: that --out is one of its input photos)."""
    from heritage_cnn.base.io import output_problem

    if value is None:
        return
    if not value:  # "" would write into the current folder, or (a file) nowhere at all
        raise UsageError(f"{flag}: empty; give the output {_OUTPUT_KINDS[kind]}")
    folder = kind == "folder" or (kind == "stem" and (value.endswith(("/", os.sep)) or os.path.isdir(value)))
    problem = output_problem(value, folder, flag)
    if problem is not None:
        raise UsageError(problem)


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", choices=DEVICES, default="auto", help="auto (CUDA when present), cpu or cuda (default auto)"
    )


def add_seed(parser: argparse.ArgumentParser, help: str = "same seed, same result") -> None:
    parser.add_argument("--seed", type=seed_number, default=0, help=f"{help}, 0 to {SEED_MAX} (default 0)")


def add_channels(parser: Any, help: str = "which channels, e.g. 0-7,12 (default all)") -> None:
    parser.add_argument("--channels", type=channel_list, help=help)


def add_tta(parser: argparse.ArgumentParser) -> None:
    """Test-time augmentation flags (flags, not `--tta [MODE]`, which would swallow a photo's path). Without one,
    the model's own views (an ensemble's `views` field; one view for a single network)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--tta",
        action="store_const",
        const="flip",
        help="average the logits of each photo and its mirror image (2x the cost of one view)",
    )
    group.add_argument(
        "--tta-multi",
        dest="tta",
        action="store_const",
        const="multi",
        help="average 7 views: the photo, its mirror, four small shifts, a slight zoom (7x the cost)",
    )
    group.add_argument(
        "--one-view",
        dest="tta",
        action="store_const",
        const="none",
        help="only the photo itself, even for a model shipped with more views (default: the model's own views)",
    )


def add_none_threshold(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--none-threshold",
        type=finite_number,
        metavar="X",
        help="call a photo 'none of these' when its open-set score is below X, instead of the model's own threshold "
        "(the score is the model's, energy for the shipped models, higher for photos more like the ten; `heritage "
        "predict --format json` gives each photo's open_set_score and the none_threshold in use, the model's .json "
        "names the score, open_set.score); refused for a model without a none-of-these record",
    )


def add_presence(parser: argparse.ArgumentParser, needs: str = "") -> None:
    """The element map's presence (`heritage map`, and `predict`/`sort` with `needs`, the flag that turns the map
    on there); `map_config` reads it."""
    from heritage_cnn.inference.tiles import MapConfig

    parser.add_argument(
        "--presence",
        type=number_in(0, 1, above_low=True),
        help=f"list an element whose map peaks at or above this (default {MapConfig().presence:g})"
        + (f"; only with {needs}" if needs else ""),
    )


def map_config(args: argparse.Namespace) -> Any:
    """The element map's `MapConfig`: its defaults, with whichever of --scales, --stride, --presence and --rule the
    command has and the user gave."""
    from dataclasses import replace

    from heritage_cnn.inference.tiles import MapConfig

    changes = {key: getattr(args, key, None) for key in ("scales", "stride", "presence", "rule")}
    return replace(MapConfig(), **{k: v for k, v in changes.items() if v is not None})


def note_cannot_reject(point: object) -> None:
    """Say once, on stderr, that a model without a none-of-these record files every photo into a class."""
    if point is None:
        from heritage_cnn.models.openset_point import CANNOT_REJECT

        print(f"heritage: note: {CANNOT_REJECT}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# Resolving what the options say
# --------------------------------------------------------------------------------------------


def load_model(args: argparse.Namespace, device: str = "cpu") -> Any:
    """The checkpoint --model names (a pair, a run folder or a shipped name; none: the shipped default), loaded
    once: commands hand the loaded Checkpoint to the library."""
    from heritage_cnn.models.checkpoint import load_checkpoint

    return load_checkpoint(args.model, device=device)


def inside_model(args: argparse.Namespace, device: str = "cpu") -> Any:
    """The network a look-inside command works on: member --member of --model (checked before any work);
    the whole model when --member is None."""
    checkpoint = load_model(args, device)
    return checkpoint if args.member is None else checkpoint.member(args.member)


def data_folder(value: str | None, flag: str = "--data") -> str:
    """--data (`flag`: as the command names it), else $HERITAGE_DATA, else a one-line error that says how to get the
    data. An empty value is refused: it is not a folder, and $HERITAGE_DATA in its place would be a surprise."""
    if value == "":
        raise UsageError(f"{flag}: empty; give the data folder (or leave it out for $HERITAGE_DATA)")
    data = value or os.environ.get("HERITAGE_DATA")
    if not data:
        raise UsageError(
            "no data folder: pass --data DIR or set HERITAGE_DATA (get the data with `heritage data download --dest DIR`)"
        )
    return data


def device_name(name: str) -> str:
    """`auto` -> cuda when a GPU is present, else cpu; `cuda` without a GPU is a one-line error."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available (use --device cpu)")
    return name


def find_inputs(inputs: list[str]) -> tuple[list[Any], int]:
    """The photos named or found below `inputs` (`find_photos`) and how many inputs, or folders and links below them
    (a link loop, an unreadable subfolder), could not be looked at, each
    said on stderr. No photos when there are none and the one input given was that one line's (the command then
    exits 2 with nothing more: "no photos found in" would say it twice); a UsageError when there are none otherwise."""
    from pathlib import Path

    from heritage_cnn.base.names import shown
    from heritage_cnn.inference.classifier import find_photos

    photos, missing = find_photos(inputs)
    for path, reason in missing:
        print(f"heritage: {shown(path)}: {reason}", file=sys.stderr)
    said = len(inputs) == 1 and [path for path, _ in missing] == [str(Path(inputs[0]))]
    if not photos and not said:
        raise UsageError("no photos found in " + ", ".join(inputs))
    return photos, len(missing)


def say_skipped(skipped: list[tuple[str, str]], total: int, missing: int = 0) -> None:
    """Each of the `total` files that could not be read, on stderr, then how many they were and how many inputs
    could not be looked at (`find_inputs` said which, before the run); no count when only one file was given, whose
    line already says that nothing could be read."""
    from heritage_cnn.base.names import shown

    for path, reason in skipped:
        print(f"heritage: skipped {shown(path)}: {reason}", file=sys.stderr)
    counts = [f"{len(skipped)} of {total} file(s) could not be read"] if skipped and (total > 1 or missing) else []
    if missing:  # in a long run the count is what matters: the inputs' own lines have scrolled away
        counts.append(f"{missing} input(s) named, or folder(s) or link(s) below them, could not be looked at")
    if counts:
        print(f"heritage: {'; '.join(counts)}", file=sys.stderr)


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars go to a terminal only, and never with -q."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()
