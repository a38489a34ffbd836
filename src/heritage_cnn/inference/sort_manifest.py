"""`heritage sort`'s manifest, OUT/manifest.csv: its columns, one row per photo (read back by source on the next
run, so that a listed photo is done), written atomically, and the files a row says its photo was put in.

With --multi, `destination` is the first placement (the most confident element's), and `elements` and
`destinations` (every placement) are two more columns, each a list in one cell (`base.names.cell_text`).

Sort rewrites OUT/manifest.csv and OUT/skipped.csv on every run, so a file of either name that sort did not write (the
user's own CSV, or sort's saved again by a spreadsheet with `;` between cells) is refused before any work
(`not_sorts`): read as no rows, it would be lost, and the photos its rows list sorted again, the user's moves undone.
"""

from __future__ import annotations

import csv
from pathlib import Path

from heritage_cnn.base.names import CSV_ERRORS, cell_items, cell_text, shown
from heritage_cnn.inference.classifier import Prediction, flat_fields

MANIFEST_NAME = "manifest.csv"  # in the sorted folder, beside its class folders
SKIPPED_NAME = "skipped.csv"  # beside the manifest: the files sort could not read, and why
MANIFEST_TOP = 3  # top-k columns in the manifest
MANIFEST_FIELDS = ["source", "destination", *flat_fields(MANIFEST_TOP)[1:]]
MULTI_FIELDS = [*MANIFEST_FIELDS, "elements", "destinations"]  # the manifest of a sort with `multi`
# how every reader opens a manifest: a byte-order mark that an editor or a spreadsheet saved before the header is read
# past, as CRLF line ends are (csv's newline=""), so the first column keeps its name; sort writes plain UTF-8
MANIFEST_ENCODING = "utf-8-sig"
# the columns a file must have to be taken for sort's (only what sort reads back: earlier versions wrote fewer others)
NEEDED = {MANIFEST_NAME: ("source", "destination"), SKIPPED_NAME: ("source", "reason")}


def _header(path: Path) -> list[str]:
    """The column names on a CSV's first line ([] for an empty file)."""
    with open(path, newline="", encoding=MANIFEST_ENCODING, errors=CSV_ERRORS) as handle:
        return next(csv.reader(handle), None) or []


def _header_problem(path: Path, needed: tuple[str, ...]) -> str | None:
    """Why `path` (present) is not a CSV sort wrote, or None: its first line must name the columns `needed`."""
    if not path.is_file():  # a folder, or a pipe that would block the read
        return "is not a file"
    try:
        header = _header(path)
    except (OSError, csv.Error) as error:
        return f"cannot be read as a CSV ({error})"
    if not header:
        return "is empty, with no header"
    missing = [name for name in needed if name not in header]
    if not missing:
        return None
    first = ",".join(header)
    first = first if len(first) <= 60 else first[:57] + "..."
    return f"has no {' or '.join(missing)} column (its first line: {first!r})"


def _refusal(path: Path, needed: tuple[str, ...]) -> str | None:
    problem = _header_problem(path, needed)
    if problem is None:
        return None
    return (
        f"{shown(path)}: {problem}: not a file heritage sort wrote (another program's, or sort's saved again with "
        "another delimiter), which sort would overwrite; move it away, or sort into another --out"
    )


def not_sorts(root: Path) -> str | None:
    """One line when OUT (`root`) holds a manifest.csv or skipped.csv that sort did not write: another program's file,
    or sort's re-saved with another delimiter; None otherwise. Asked before any work: sort would overwrite it."""
    for name, needed in NEEDED.items():
        path = root / name
        if path.exists() or path.is_symlink():
            problem = _refusal(path, needed)
            if problem is not None:
                return problem
    return None


def manifest_row(source: Path, destinations: list[Path], prediction: Prediction) -> dict[str, str]:
    """A photo's row: where it came from, where sort put it (every placement with --multi), and the prediction."""
    row = {"source": str(source), "destination": str(destinations[0]), **prediction.flat(MANIFEST_TOP)}
    if prediction.elements is not None:  # multi: its `elements` column comes from `flat`
        row["destinations"] = cell_text([[str(d)] for d in destinations])
    return row


def read_manifest(path: Path, multi: bool, recorded_multi: bool | None = None) -> dict[str, dict[str, str]]:
    """The rows of an earlier sort, by source; ValueError when it was sorted the other way (`multi` or not), is not
    sort's (`not_sorts`), or has lost or gained --multi's columns against the folder's record (`recorded_multi`,
    from sort-settings.json; None without one)."""
    if not path.exists():
        return {}
    problem = _refusal(path, NEEDED[MANIFEST_NAME])
    if problem is not None:  # `not_sorts` asked before any work; again here, under the lock, for one written since
        raise ValueError(problem)
    with open(path, newline="", encoding=MANIFEST_ENCODING, errors=CSV_ERRORS) as handle:
        reader = csv.DictReader(handle)
        try:
            rows = {row["source"]: row for row in reader if row.get("source")}
        except csv.Error as error:  # a cell over csv's size limit, a NUL: not what sort writes
            raise ValueError(f"{shown(path)}: line {reader.line_num}: {error}; not as sort wrote it") from None
    was_multi = "destinations" in (reader.fieldnames or [])
    if rows and recorded_multi is not None and was_multi != recorded_multi:  # said as the edit, not as a flag to change
        raise ValueError(
            f"{shown(path)}: {'has no' if recorded_multi else 'has a'} destinations column, but the folder was sorted "
            f"{'with' if recorded_multi else 'without'} --multi (its sort-settings.json): edited since; put the "
            "manifest back as sort wrote it, or sort into another folder"
        )
    if rows and was_multi != multi:
        raise ValueError(
            f"{path}: this folder was sorted {'with' if was_multi else 'without'} --multi; sort into it "
            f"{'with' if was_multi else 'without'} --multi again, or into another folder"
        )
    return rows


def manifest_columns(path: Path, fields: list[str]) -> list[str]:
    """The columns to write the manifest `path` with: sort's `fields`, then any the user added to it (a notes column
    in a spreadsheet), in their order, so that a run keeps them rather than dropping them with their cells."""
    if not path.is_file():
        return fields
    header = _header(path)
    ours = {*fields, *MULTI_FIELDS}  # sort's own columns, --multi's included: only `fields` says which are written
    return [*fields, *(name for name in dict.fromkeys(header) if name and name not in ours)]


def _in_out(root: Path, destination: str) -> Path:
    """A manifest destination as its class folder and file name inside `root` (resolved), as teach reads it: the
    same file wherever the sorted folder was when the row was written."""
    where = Path(destination)
    return root / where.parent.name / where.name


def row_files(root: Path, row: dict[str, str]) -> list[Path]:
    """Every file a manifest row says sort put its photo in (`destinations` with --multi), inside `root`."""
    if row.get("destinations"):
        return [_in_out(root, item[0]) for item in cell_items(row["destinations"]) if item and item[0]]
    return [_in_out(root, row["destination"])] if row.get("destination") else []
