"""What the tests of teach's readers share: folders written the way sort writes them, without running a model."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from heritage_cnn.data.folders import DatasetError
from heritage_cnn.inference.sort_manifest import MANIFEST_FIELDS

KNOWN = ["altar", "apse", "bell_tower", "column", "dome(inner)", "vault"]


# Folders written the way sort writes them, without running a model: each photo filed in the folder named by its
# row's answer, a manifest row with sort's columns and absolute paths.


def _photo(synthetic_root: Path, name: str, i: int) -> bytes:
    return (synthetic_root / name / f"{i:03d}.png").read_bytes()


def _hand_sorted(synthetic_root: Path, tmp_path: Path, per_class: int = 3) -> Path:
    """altar, apse and vault photos (altar_0.png, ...) "sorted" into their own class folders."""
    survey, out = tmp_path / "survey", (tmp_path / "sorted").resolve()
    survey.mkdir()
    rows = []
    for name in ("altar", "apse", "vault"):
        (out / name).mkdir(parents=True)
        for i in range(per_class):
            data = _photo(synthetic_root, name, i)
            (survey / f"{name}_{i}.png").write_bytes(data)
            (out / name / f"{name}_{i}.png").write_bytes(data)
            row = dict.fromkeys(MANIFEST_FIELDS, "")
            row.update(source=str(survey / f"{name}_{i}.png"), destination=str(out / name / f"{name}_{i}.png"))
            row.update(label=name, top1_label=name, top2_label="bell_tower", top3_label="column")
            rows.append(row)
    _write_manifest(out, rows)
    return out


def _write_manifest(out: Path, rows: list[dict[str, str]]) -> None:
    with open(out / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _new_folder(synthetic_root: Path, root: Path, name: str, source: str = "gargoyle", count: int = 20) -> Path:
    (root / name).mkdir(parents=True)
    for i in range(count):
        (root / name / f"{i:03d}.png").write_bytes(_photo(synthetic_root, source, i))
    return root


def _one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises(DatasetError) as caught:
        call(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message, message
    return message
