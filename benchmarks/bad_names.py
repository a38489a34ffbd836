"""Hostile file names for `bad_inputs.py`: the cases that run them through the commands, and the check that the
outputs give every name back exactly (`heritage_cnn.base.names`: CSV with surrogateescape, JSON with \\udcXX escapes)."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from pathlib import Path

from PIL import Image

HOSTILE = [
    b"latin1_\xe9t\xe9.jpg",
    b"caf\xe9.jpg",  # caf\xe9, caf\xe8 and caf_ are one name once sort makes them valid
    b"caf\xe8.jpg",
    b"caf_.jpg",
    b"new\nline.jpg",
    b"esc\x1b[31mred.jpg",
    b'comma, "quote".jpg',
    b"-leading-dash.jpg",
    b"   .jpg",
    "🏛️ façade.png".encode(),
    "cafe\u0301 nfd.png".encode(),
    b"<b>tag &amp;.png",
    b"L" * 250 + b"\xe9.jpg",  # 255 bytes
]
BROKEN = b"broken_\xff.jpg"
BROKEN_SHOWN = "broken_\\xff.jpg"  # how every message names it


def write_named(folder: Path, photo: Callable[[int], Image.Image], names: list[bytes] = HOSTILE) -> list[str]:
    """A distinct photo under each name and one unreadable file; the photos' paths as Python sees them."""
    base = os.fsencode(folder)
    os.makedirs(base, exist_ok=True)
    for i, name in enumerate(names):
        photo(100 + i).save(base + b"/" + name, format="PNG")
    with open(base + b"/" + BROKEN, "wb") as handle:
        handle.write(b"\xff\xd8\xff not really")
    return sorted(os.fsdecode(base + b"/" + name) for name in names)


def name_cases(tmp: Path, model: list[str], photo: Callable[[int], Image.Image]) -> list[tuple]:
    """(kind, command, expected exit, named) for predict (table, CSV, JSON), sort, data check and evaluate."""
    survey = tmp / "names" / "survey"
    write_named(survey, photo)
    data = Path(os.fsdecode(os.fsencode(tmp / "names") + b"/data <\xe9>"))
    for i, label in enumerate(("apse", "vault")):
        write_named(data / label, lambda seed, i=i: photo(seed + 50 * i), HOSTILE[i::2])
    each, out = ["predict", *model, str(survey)], tmp / "names"
    sort = ["sort", *model, str(survey), "--out", str(out / "sorted"), "--min-confidence", "1"]  # one folder
    return [
        ("hostile file names: predict table", each, 0, BROKEN_SHOWN),
        ("hostile file names: predict -o CSV", [*each, "-o", str(out / "p.csv")], 0, BROKEN_SHOWN),
        ("hostile file names: predict -o JSON", [*each, "-o", str(out / "p.json")], 0, BROKEN_SHOWN),
        ("hostile file names: sort (all in one folder)", sort, 0, None),
        ("hostile file names: data check", ["data", "check", str(data)], 0, BROKEN_SHOWN),
        ("hostile file names: evaluate", ["evaluate", *model, "--data", str(data), "--out", str(out / "e")], 0, None),
    ]


def names_come_back(tmp: Path) -> tuple[str, bool]:
    """Whether predict's CSV and JSON and sort's manifest name every photo exactly, and sort's copies are valid."""
    folder = tmp / "names"
    photos = sorted(str(p) for p in (folder / "survey").iterdir() if os.fsencode(p.name) != BROKEN)

    def csv_column(path: Path, column: str) -> list[str]:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
            return sorted(row[column] for row in csv.DictReader(handle))

    problems = []
    if not (folder / "p.csv").exists() or csv_column(folder / "p.csv", "path") != photos:
        problems.append("predict CSV")
    if (
        not (folder / "p.json").exists()
        or sorted(r["path"] for r in json.loads((folder / "p.json").read_bytes())) != photos
    ):
        problems.append("predict JSON")
    manifest = folder / "sorted" / "manifest.csv"
    if not manifest.exists() or csv_column(manifest, "source") != photos:
        problems.append("sort manifest")
    else:
        copies = csv_column(manifest, "destination")
        if len(set(copies)) != len(photos) or not all(_valid(Path(c)) for c in copies):
            problems.append("sort copies")
    line = "every name exact" if not problems else "names lost in " + ", ".join(problems)
    return line, not problems


def _valid(path: Path) -> bool:
    raw = os.fsencode(path.name)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return path.is_file() and len(raw) <= 255 and not any(c < 32 or c == 127 for c in raw)
