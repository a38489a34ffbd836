"""`heritage train --relabel`: the run says and records the labels it changed among the photos it trains on, not the
rows of the file; rows it could not apply (an unreadable photo, one --limit-per-class left out) are counted by why."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import make_dataset
from heritage_cnn.data.folders import DatasetError
from heritage_cnn.training.config import TrainConfig
from heritage_cnn.training.prepare import prepare_data, relabel_record

MOVED = 14  # rows moving altar/000..013 to apse; of 24 altar photos, --limit-per-class 8 keeps some


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_dataset(tmp_path_factory.mktemp("relabel_applied") / "data", per_class=24)
    (root / "altar" / "zz_corrupt.png").write_bytes(b"not an image")
    return root


def _file(root: Path, rows: list[str]) -> Path:
    path = root.parent / f"relabel_{len(rows)}.csv"
    path.write_text("path,new_label\n" + "".join(f"{row}\n" for row in rows))
    return path


def test_the_limited_out_rows_are_not_counted_as_moved(root: Path) -> None:
    rows = [f"altar/{i:03d}.png,apse" for i in range(MOVED)]
    config = TrainConfig(data=str(root), out="-", relabel=str(_file(root, rows)), limit_per_class=8, progress=False)
    lines: list[str] = []
    images, _, _ = prepare_data(config, log=lines.append)
    kept = {Path(p).name for p in images.paths if Path(p).parent.name == "altar"}
    moved = sum(f"{i:03d}.png" in kept for i in range(MOVED))
    assert 0 < moved < MOVED  # the test's premise: the limit leaves some of the rows' photos out, not all
    apse = images.classes.index("apse")
    labels = zip(images.paths, images.labels.tolist(), strict=True)
    assert sum(Path(p).parent.name == "altar" and label == apse for p, label in labels) == moved  # as trained on
    record = relabel_record(config, images)["relabel"]
    assert record["rows"] == MOVED and record["labels_changed"] == moved
    assert record["not_applied"] == {"limited_out": MOVED - moved}
    [line] = [line for line in lines if line.startswith("relabel:")]
    assert line.startswith(f"relabel: {moved} photos moved to another class by ")
    assert line.endswith(f"; {MOVED - moved} rows not applied: {MOVED - moved} photos left out by --limit-per-class")


def test_a_row_of_an_unreadable_photo_moves_nothing(root: Path) -> None:
    config = TrainConfig(
        data=str(root), out="-", relabel=str(_file(root, ["altar/zz_corrupt.png,apse"])), progress=False
    )
    lines: list[str] = []
    images, _, _ = prepare_data(config, log=lines.append)
    record = relabel_record(config, images)["relabel"]
    assert record["labels_changed"] == 0 and record["not_applied"] == {"unreadable": 1}
    assert any(line.endswith("by " + str(config.relabel) + "; 1 row not applied: 1 photo unreadable") for line in lines)


def test_every_row_applied_records_no_rows_not_applied(root: Path) -> None:
    """The record of a file whose rows all apply is as it always was: no `not_applied`."""
    config = TrainConfig(data=str(root), out="-", relabel=str(_file(root, ["altar/000.png,apse"])), progress=False)
    images, _, _ = prepare_data(config, log=lambda _: None)
    record = relabel_record(config, images)["relabel"]
    assert record["labels_changed"] == 1 and "not_applied" not in record


def test_a_relabel_file_that_empties_a_class_is_refused(root: Path) -> None:
    """Moving every photo of a class away trained a class of no photos, with only a note of no validation photo."""
    rows = [f"apse/{path.name},altar" for path in sorted((root / "apse").iterdir())]
    config = TrainConfig(data=str(root), out="-", relabel=str(_file(root, rows)), progress=False)
    with pytest.raises(DatasetError, match=r"relabel_\d+\.csv: moves every photo out of apse; a class needs photos"):
        prepare_data(config, log=lambda _: None)
