"""What the `heritage sort` tests read back from a sorted folder: its manifest, its copies, file digests (`conftest.file_digest`)."""

from __future__ import annotations

import csv
from pathlib import Path

from conftest import file_digest


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): file_digest(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _manifest(out: Path) -> list[dict[str, str]]:
    with open(out / "manifest.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _copies(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.is_file() and p.parent != out]
