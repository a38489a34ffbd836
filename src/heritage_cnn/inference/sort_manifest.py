"""`heritage sort`'s manifest, OUT/manifest.csv: its columns, one row per photo (read back by source on the next
run, so that a listed photo is done), written atomically, and the files a row says its photo was put in.

With --multi, `destination` is the first placement (the most confident element's), and `elements` and
`destinations` (every placement) are two more columns, each a list in one cell (`base.names.cell_text`).
"""

from __future__ import annotations

import csv
from pathlib import Path

from heritage_cnn.base.names import CSV_ERRORS, cell_items, cell_text
from heritage_cnn.inference.classifier import Prediction, flat_fields

MANIFEST_NAME = "manifest.csv"  # in the sorted folder, beside its class folders
SKIPPED_NAME = "skipped.csv"  # beside the manifest: the files sort could not read, and why
MANIFEST_TOP = 3  # top-k columns in the manifest
MANIFEST_FIELDS = ["source", "destination", *flat_fields(MANIFEST_TOP)[1:]]
MULTI_FIELDS = [*MANIFEST_FIELDS, "elements", "destinations"]  # the manifest of a sort with `multi`
# how every reader opens a manifest: a byte-order mark that an editor or a spreadsheet saved before the header is read
# past, as CRLF line ends are (csv's newline=""), so the first column keeps its name; sort writes plain UTF-8
MANIFEST_ENCODING = "utf-8-sig"


def manifest_row(source: Path, destinations: list[Path], prediction: Prediction) -> dict[str, str]:
    """A photo's row: where it came from, where sort put it (every placement with --multi), and the prediction."""
    row = {"source": str(source), "destination": str(destinations[0]), **prediction.flat(MANIFEST_TOP)}
    if prediction.elements is not None:  # multi: its `elements` column comes from `flat`
        row["destinations"] = cell_text([[str(d)] for d in destinations])
    return row


def read_manifest(path: Path, multi: bool) -> dict[str, dict[str, str]]:
    """The rows of an earlier sort, by source; ValueError when it was sorted the other way (`multi` or not)."""
    if not path.exists():
        return {}
    with open(path, newline="", encoding=MANIFEST_ENCODING, errors=CSV_ERRORS) as handle:
        reader = csv.DictReader(handle)
        rows = {row["source"]: row for row in reader if row.get("source")}
    was_multi = "destinations" in (reader.fieldnames or [])
    if rows and was_multi != multi:
        raise ValueError(
            f"{path}: this folder was sorted {'with' if was_multi else 'without'} --multi; sort into it "
            f"{'with' if was_multi else 'without'} --multi again, or into another folder"
        )
    return rows


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
