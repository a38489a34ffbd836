"""File names in outputs: any name the file system allows, written back exactly or shown safely.

On Linux a file name is bytes; Python gives names that are not UTF-8 (an old camera's Latin-1
`caf\\xe9.jpg`) as `str` with each undecodable byte as a lone surrogate (U+DC80-U+DCFF, PEP 383
"surrogateescape"). Such a `str` cannot be encoded as UTF-8 as it is, so every output picks one of:

- exact (CSV: predict's, sort's manifest.csv and skipped.csv): UTF-8 text whose undecodable name bytes are
  written as they are on disk (`CSV_ERRORS`); reading with `open(..., encoding="utf-8",
  errors="surrogateescape", newline="")` gives back the exact path;
- exact (JSON, every file and answer): each undecodable byte as the escape `\\udcXX` (`json_text`), which
  Python's `json` reads back as the same `str`, so `os.fsencode(path)` gives the bytes; the file stays
  valid UTF-8 and other names are written as they are;
- shown (the terminal, HTML, Markdown, figure titles): `shown(path)`, undecodable bytes as `\\xe9` and control
  characters (a newline in a name) escaped, so a name never breaks a line or a table; invisible characters too
  (a zero-width space, a right-to-left override), so that no name looks like another or reorders its line. In a
  Markdown table, every cell also goes through `markdown_cell`, so that a `|` in a name (`nave|aisle`) is text.

And which names every listing passes over: a hidden one (`is_hidden`), so a cache, a lock or a tool's own folder
kept beside the photos is never read as a photo, a class or a user's file.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CSV_ERRORS = "surrogateescape"  # the errors handler of every CSV the tool writes and reads
NAME_MAX = 255  # bytes in one file name on Linux file systems
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")  # lone: an undecodable byte of a name is U+DC80-U+DCFF
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_NOT_ASCII = re.compile(r"[^\x00-\x7f]")
HIDDEN_CATEGORIES = ("Cc", "Cf", "Zl", "Zp")  # control, format (zero-width, bidi), line and paragraph separators


def shown(path: str | os.PathLike) -> str:
    """`path` for people: undecodable bytes as `\\xe9`, control characters as `\\n` or `\\x1b`, other invisible
    ones (`HIDDEN_CATEGORIES`) as `\\u200b`; always encodable."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    text = _CONTROL.sub(lambda m: _ESCAPES.get(m.group(), f"\\x{ord(m.group()):02x}"), text)
    return _NOT_ASCII.sub(_visible, text)


def _visible(match: re.Match) -> str:
    """A character beyond ASCII as it is, or escaped (`\\u202e`) when it shows nothing of its own."""
    char = match.group()
    if unicodedata.category(char) not in HIDDEN_CATEGORIES:
        return char
    return f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}"


def markdown_cell(value: object) -> str:
    """`value` as the text of one cell of a Markdown table (metrics.md, open_set.md): `shown`, and `\\` and `|`
    escaped with a backslash, since GitHub-flavoured Markdown ends a cell at any `|` not escaped (a class
    `nave|aisle` would shift every column after it) and a backslash of the name's own must not escape what follows."""
    return shown(str(value)).replace("\\", "\\\\").replace("|", "\\|")


def is_hidden(name: str) -> bool:
    """Whether a file or folder name is hidden, as Unix tools treat it (it starts with "."): the walks for photos,
    the listings of class folders and the checks of an output folder all pass over it."""
    return name.startswith(".")


def visible_subfolders(folder: str | os.PathLike) -> list[Path]:
    """The folders directly in `folder` whose names are not hidden, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_dir() and not is_hidden(p.name))


def json_text(obj: Any, indent: int | None = 2) -> str:
    """`obj` as JSON that is valid UTF-8 whatever file names it holds: a name's undecodable bytes become the
    escapes `\\udcXX`, which `json.loads` turns back into the same `str` (the lone surrogates of PEP 383)."""
    text = json.dumps(obj, indent=indent, ensure_ascii=False)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def portable_name(name: str, n: int = 0) -> str:
    """A valid name for a copy of the file `name`, with `-n` before the suffix when n > 0: UTF-8, no control
    characters (each undecodable byte or control character becomes `_`), at most NAME_MAX bytes."""
    clean = _CONTROL.sub("_", _SURROGATE.sub("_", name))
    stem, dot, suffix = clean.rpartition(".") if "." in clean.lstrip(".") else (clean, "", "")
    tail = f"{'-' + str(n) if n else ''}{dot}{suffix}"
    room = NAME_MAX - len(tail.encode())
    stem = stem.encode()[: max(room, 1)].decode("utf-8", "ignore")  # cut on a character boundary
    return (stem or "_") + tail


# A list in one CSV cell (predict's and sort's `elements`, sort's `destinations`): items joined by ";", each item's
# fields by ":". Inside a field, "%", ";" and ":" are written as %25, %3B and %3A, so any class name or path can be
# a field and percent-decoding (`urllib.parse.unquote`, or `cell_field`) gives it back exactly; a name's
# undecodable bytes are left as they are, for the CSV's own `CSV_ERRORS` rule.
CELL_ITEMS, CELL_FIELDS = ";", ":"
_CELL_QUOTE = str.maketrans({"%": "%25", ";": "%3B", ":": "%3A"})
_CELL_UNQUOTE = re.compile("%(25|3B|3A)")


def first_few(items: Sequence[str], separator: str = ", ", few: int = 3) -> str:
    """The first `few` of `items` for a one-line message, the rest counted: `a, b, c, and 4 more` (a long list would
    push the reason out of sight; the full list is in the file the message names, or a --help away)."""
    more = f"{separator}and {len(items) - few} more" if len(items) > few else ""
    return separator.join(items[:few]) + more


def cell_text(items: list[list[str]]) -> str:
    """`[["bell_tower", "0.91"], ["gargoyle", "0.55"]]` -> `bell_tower:0.91;gargoyle:0.55` (fields quoted)."""
    return CELL_ITEMS.join(CELL_FIELDS.join(f.translate(_CELL_QUOTE) for f in item) for item in items)


def cell_items(text: str) -> list[list[str]]:
    """`cell_text`'s inverse: an empty cell is no item."""
    unquote = {"25": "%", "3B": ";", "3A": ":"}
    return [
        [_CELL_UNQUOTE.sub(lambda m: unquote[m.group(1)], f) for f in item.split(CELL_FIELDS)]
        for item in text.split(CELL_ITEMS)
        if text
    ]
