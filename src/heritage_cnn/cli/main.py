"""`main`: the `heritage` command's parser (every group's `register`) and the one place errors become a line and
exit 2."""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
import warnings
from collections.abc import Sequence
from typing import NoReturn

from heritage_cnn import __version__
from heritage_cnn.cli.options import UsageError, formatter, refuse_outputs

EPILOG = """\
examples:
  heritage data download --dest data/ahe64          fetch the Kaggle dataset
  heritage data check data/ahe64                    counts, bad files, duplicates
  heritage train --data data/ahe64 --out runs/a     train from scratch (its time on 2 CPU cores: see the README)
  heritage evaluate --model runs/a --data data/ahe64 --out runs/a/eval    scores unseen photos (warns of any other)
  heritage predict photo.jpg                        classify photos with the shipped model
  heritage map west_front.jpg                       what is where in a whole photo
  heritage demo --data data/ahe64                   the whole pipeline, figures in runs/demo
  heritage review data/ahe64 --out runs/review      photos whose label is likely wrong (cleanlab)
  heritage teach survey/new --out models/ours       new classes (survey/new/<class>/) and corrections, in seconds

The data folder is either <root>/<class>/<image> or the Kaggle layout <root>/train/<class>/<image>
(+ optional <root>/test/, or test/ alone). $HERITAGE_DATA is used when --data is not given.
--model takes a checkpoint (.safetensors) or a run folder everywhere; -q silences progress bars.
"""


# A negative number as a value (`--none-threshold -1e3`): argparse reads `-1` and `-1.5` so, but takes `-1e3` or
# `-1E-2` for an unknown option and says "expected one argument".
NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


class Parser(argparse.ArgumentParser):
    """argparse's parser (every subcommand's too: `add_subparsers` makes them of the same class), reading a negative
    number in exponent notation as a value."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = NEGATIVE_NUMBER  # argparse's own hook for what a negative number looks like

    def error(self, message: str) -> NoReturn:
        """A wrong argument is one line, as every other error of the command line: the usage block argparse prints
        first is what `--help` is for, and on a narrow terminal it pushes the reason out of sight."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from heritage_cnn.cli import data, elements, evaluate, generate, inside, predict, review, serve, teach, train

    parser = Parser(
        prog="heritage",
        description="Recognise elements of architectural heritage in photos with a CNN trained from scratch.",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    parser.add_argument("-V", "--version", action="version", version=f"heritage-cnn {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in (data, train, evaluate, predict, elements, inside, generate, review, teach, serve):
        group.register(commands)
    return parser


def _where(args: argparse.Namespace) -> str:
    """The file a bare KeyError most likely came from: the checkpoint a command loads."""
    if not hasattr(args, "model"):
        return "input"
    if args.model:
        return str(args.model)
    from heritage_cnn.models.checkpoint import default_checkpoint_path

    return str(default_checkpoint_path().with_suffix(".json"))


def _one_line_warning(
    message: Warning | str, category: type[Warning], filename: str = "", *where: object, said: set[str], **more: object
) -> None:
    """A warning on the command line is one sentence for the user: no source file, line number or source line. One
    of Pillow's, which names no photo, is said with the photo being decoded (`decode.reading_now`), once a photo
    (`said`: a command may open a photo twice, to decode it and to read its header)."""
    from heritage_cnn.base.names import shown

    text = str(message).strip()
    if f"{os.sep}PIL{os.sep}" in str(filename):
        from heritage_cnn.data.decode import reading_now

        photo = reading_now()
        text = text if photo is None else f"{photo}: {text}"
        if text in said:
            return
        said.add(text)
    print(f"heritage: warning: {shown(text)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `heritage` command; errors the user can fix are one line, exit 2.

    Warnings are shown as `heritage: warning: <message>` only while a command runs; a library user
    (who never calls `main`) keeps Python's usual warnings."""
    with warnings.catch_warnings():  # restores showwarning on the way out
        warnings.showwarning = functools.partial(_one_line_warning, said=set())
        # Pillow's said for every photo (a damaged EXIF block: its orientation ignored), not once a run; once a photo
        warnings.filterwarnings("always", module="PIL")
        try:
            return _run(argv)
        except KeyboardInterrupt:  # while torch is imported, before `_run` reaches its own handler
            print("heritage: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:  # the reader stopped early (`| head`): nothing is wrong, and no one to tell
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that the flush at exit is quiet too
            return 141  # as a shell reports a command ended by SIGPIPE


def _run(argv: Sequence[str] | None) -> int:
    from heritage_cnn.base.io import CheckpointError
    from heritage_cnn.base.names import shown
    from heritage_cnn.data.check import DownloadError
    from heritage_cnn.data.decode import ImageError
    from heritage_cnn.data.folders import DatasetError

    for stream in (sys.stdout, sys.stderr):  # a name the terminal cannot encode is escaped, never a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the command's parser: its --help lists what it takes, the top level's does not
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.argv = argv[1:]  # the subcommand's own arguments (relaunching under torchrun needs them)
    try:
        refuse_outputs(args)  # every command's output folders and files, before any work
        return int(args.func(args) or 0)
    except KeyError as error:  # a lookup: a sentence from the library, or a bare key missing from a file
        key = error.args[0] if error.args else ""
        message = key if isinstance(key, str) and " " in key else f"{_where(args)}: missing entry {key!r}"
        print(f"heritage: error: {shown(message)}", file=sys.stderr)
        return 2
    except (UsageError, DatasetError, ImageError, CheckpointError, DownloadError, ValueError) as error:
        print(f"heritage: error: {shown(str(error))}", file=sys.stderr)
        return 2
    except BrokenPipeError as error:  # the reader of our output went away (`main` says nothing), or a file's
        if error.filename is None:
            raise
        print(f"heritage: error: {shown(f'{error.filename}: {error.strerror}')}", file=sys.stderr)
        return 2
    except OSError as error:  # a read-only or full disk, a missing folder: name the file, no traceback
        where = f"{error.filename}: " if error.filename else ""
        print(f"heritage: error: {shown(where + str(error.strerror or error))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("heritage: interrupted", file=sys.stderr)
        return 130


__all__ = ["build_parser", "main"]
