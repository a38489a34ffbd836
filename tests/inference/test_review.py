"""`heritage review`: flipped labels come first, every output is written, nothing is overwritten or touched."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from heritage_cnn.cli.main import main
from heritage_cnn.data.folders import DatasetError
from heritage_cnn.inference.review import QUEUE_FIELDS, check_counts, run_review
from heritage_cnn.models.checkpoint import load_checkpoint

FLIPS = 5


def _flip(source: Path, root: Path, count: int, seed: int = 0) -> list[str]:
    """Copy `source`'s class folders to `root` with `count` photos moved into another class's folder; their new
    relative paths."""
    shutil.copytree(source, root)
    classes = sorted(p.name for p in root.iterdir())
    photos = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    rng = np.random.default_rng(seed)
    flipped = []
    for k in rng.choice(len(photos), size=count, replace=False):
        folder, name = photos[k].split("/")
        other = classes[(classes.index(folder) + 1 + int(rng.integers(len(classes) - 1))) % len(classes)]
        (root / photos[k]).rename(root / other / f"flipped_{name}")
        flipped.append(f"{other}/flipped_{name}")
    return flipped


def _snapshot(root: Path) -> dict[str, str]:
    """Every file's digest and every folder under `root`: a photo changed or a folder added shows."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
        for p in root.rglob("*")
    }


def share_in_top(queue: list[str], wanted: list[str], share: float = 0.10) -> float:
    """The share of `wanted` paths among the first `share` of `queue` (the benchmark's figure)."""
    top = set(queue[: math.ceil(share * len(queue))])
    return sum(p in top for p in wanted) / len(wanted)


@pytest.fixture(scope="module")
def reviewed(tiny_run, synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """The tiny model reviews the synthetic set with FLIPS labels flipped and one unreadable file."""
    root = tmp_path_factory.mktemp("flipped") / "data"
    flipped = _flip(synthetic_root, root, FLIPS)
    (root / "altar" / "broken.jpg").write_bytes(b"not a jpeg")
    before = _snapshot(root)
    out = tmp_path_factory.mktemp("review") / "out"
    record = run_review(load_checkpoint(tiny_run.checkpoint), root, out, log=lambda _: None)
    with (out / "queue.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return root, out, record, rows, flipped, before


def test_flipped_labels_come_first(reviewed) -> None:
    _, _, _, rows, flipped, _ = reviewed
    queue = [row["path"] for row in rows]
    assert share_in_top(queue, flipped) == 1.0  # all 5 among the first 24 of 240
    assert share_in_top(queue[::-1], flipped) == 0.0  # the figure sees a reversed ranking
    for row in rows:
        if row["path"] in flipped:  # the suggestion is the folder the photo came from
            assert row["suggested_label"] != row["given_label"]


def test_outputs_written(reviewed, tiny_run) -> None:
    root, out, record, rows, _, _ = reviewed
    assert list(rows[0]) == QUEUE_FIELDS
    assert len(rows) == 240 and [int(r["rank"]) for r in rows] == list(range(1, 241))
    flagged = [r for r in rows if r["flagged"] == "yes"]
    assert flagged and rows[: len(flagged)] == flagged  # flagged photos head the queue
    confidences = [float(r["self_confidence"]) for r in flagged]
    assert confidences == sorted(confidences)
    with (out / "relabel.csv").open(newline="") as f:
        relabel = list(csv.DictReader(f))
    assert [(r["path"], r["new_label"]) for r in relabel] == [(r["path"], r["suggested_label"]) for r in flagged]
    assert (out / "sheet_01.png").stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary == record
    assert summary["photos"] == 240 and summary["flagged"] == len(flagged)
    assert sum(c["photos"] for c in summary["per_class"].values()) == 240
    assert [s["path"] for s in summary["skipped"]] == [str(root / "altar" / "broken.jpg")]
    # the tiny model trained on these very photos (its split's training part): the summary says they flatter
    assert summary["model_trained_on_photos"] == tiny_run.train_size and "memorised" in summary["caveat"]
    assert {"features", "cross_validation", "cleanlab", "total"} <= set(summary["seconds"])


def test_photos_untouched_and_nothing_overwritten(reviewed, tiny_run) -> None:
    root, out, _, _, _, before = reviewed
    assert _snapshot(root) == before
    queue = (out / "queue.csv").read_bytes()
    checkpoint = load_checkpoint(tiny_run.checkpoint)
    with pytest.raises(DatasetError, match="not empty"):
        run_review(checkpoint, root, out, log=lambda _: None)
    assert (out / "queue.csv").read_bytes() == queue
    with pytest.raises(DatasetError, match="inside the data folder"):
        run_review(checkpoint, root, root / "review", log=lambda _: None)
    assert not (root / "review").exists()


def test_too_few_photos_per_class() -> None:
    classes = ["a", "b", "c"]
    check_counts(np.array([0, 0, 1, 1, 1]), classes)  # a class with no photo is simply absent
    with pytest.raises(DatasetError, match="at least 2 photos in every class folder: b has 1"):
        check_counts(np.array([0, 0, 0, 1, 2, 2]), classes)
    with pytest.raises(DatasetError, match="at least 2 classes"):
        check_counts(np.array([0, 0, 0, 0, 0]), classes)


def test_cli_refuses_bad_input(tiny_run, synthetic_root: Path, tmp_path: Path, capsys) -> None:
    model = ["--model", str(tiny_run.checkpoint)]
    assert main(["review", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o1"), *model]) == 2
    assert "heritage: error:" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["review", str(tmp_path / "empty"), "--out", str(tmp_path / "o2"), *model]) == 2
    err = capsys.readouterr().err
    assert err.startswith("heritage: error:") and err.count("\n") == 1
    few = tmp_path / "few"
    for name in sorted(p.name for p in synthetic_root.iterdir())[:2]:
        (few / name).mkdir(parents=True)
        shutil.copy(next((synthetic_root / name).iterdir()), few / name)
    assert main(["review", str(few), "--out", str(tmp_path / "o3"), *model]) == 2
    assert "needs at least 2 photos" in capsys.readouterr().err


def test_cli_help_has_an_example(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["review", "--help"])
    assert "heritage review data/ahe64 --out runs/review" in capsys.readouterr().out


# a Latin-1 name (not UTF-8), and a newline, comma and quotes (tests/test_file_names.py's hostile names)
HOSTILE = {b"apse/000.png": b"altar/caf\xe9 1.png", b"altar/000.png": b'apse/new\nline,"q".png'}


def test_hostile_names_round_trip(tiny_run, synthetic_root: Path, tmp_path: Path, capsysbinary) -> None:
    """Every file review writes names a photo whatever its name: queue.csv and relabel.csv give back the exact path
    (read as `train --relabel` reads them), summary.json stays valid UTF-8, and train reads the relabel.csv back."""
    from heritage_cnn.base.names import CSV_ERRORS
    from heritage_cnn.data.folders import load_images
    from heritage_cnn.data.relabel import apply_relabel, read_relabel

    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    for old, new in HOSTILE.items():  # each moved to another class's folder, so that review flags it
        os.rename(os.fsencode(root) + b"/" + old, os.fsencode(root) + b"/" + new)
    out = Path(os.fsdecode(os.fsencode(tmp_path) + b"/rev\xe9"))
    assert main(["review", str(root), "--out", str(out), "--model", str(tiny_run.checkpoint)]) == 0
    assert b"rev\\xe9/queue.csv" in capsysbinary.readouterr().out

    def read(name: str) -> list[dict[str, str]]:
        with open(out / name, newline="", encoding="utf-8", errors=CSV_ERRORS) as handle:
            return list(csv.DictReader(handle))

    photos = {p.relative_to(root).as_posix() for p in root.rglob("*.png")}
    hostile = {os.fsdecode(new) for new in HOSTILE.values()}
    assert hostile <= photos and {row["path"] for row in read("queue.csv")} == photos
    relabel = read("relabel.csv")
    assert hostile <= {row["path"] for row in relabel}  # flagged, and named exactly
    assert all((root / row["path"]).is_file() for row in relabel)
    summary = json.loads((out / "summary.json").read_bytes().decode("utf-8"))
    assert summary["data"] == str(root)
    images = load_images(root)  # `train --relabel` on review's own file: every row names its photo
    relabelled, changed = apply_relabel(images, read_relabel(out / "relabel.csv", images.classes, root), root)
    assert changed == sum(row["new_label"] != row["path"].split("/")[0] for row in relabel) > 0
    label = dict(zip(images.paths, relabelled.labels.tolist(), strict=True))
    assert label[str(root / "altar" / "caf\udce9 1.png")] == images.classes.index("apse")


@pytest.mark.parametrize(("folds", "seed", "message"), [(1, 0, "folds must be"), (5, -1, "seed must be")])
def test_bad_folds_or_seed_are_refused_before_any_photo_is_read(
    tiny_run, synthetic_root: Path, tmp_path: Path, folds: int, seed: int, message: str
) -> None:
    """scikit-learn would refuse them, but only after every photo was decoded and run through the network."""
    checkpoint = load_checkpoint(tiny_run.checkpoint)
    out = tmp_path / "review"
    with pytest.raises(ValueError, match=message) as caught:
        run_review(checkpoint, synthetic_root, out, folds=folds, seed=seed, log=lambda _: None)
    assert "\n" not in str(caught.value) and not out.exists()


def test_an_in_memory_model_is_recorded_as_one(tiny_run, synthetic_root: Path, tmp_path: Path) -> None:
    """A checkpoint built in memory (no path) is not the shipped default: summary.json says what it is."""
    from dataclasses import replace

    small = tmp_path / "data"
    for name in ("altar", "apse", "vault"):
        (small / name).mkdir(parents=True)
        for photo in sorted((synthetic_root / name).iterdir())[:6]:
            shutil.copy(photo, small / name)
    checkpoint = replace(load_checkpoint(tiny_run.checkpoint), path=None)
    record = run_review(checkpoint, small, tmp_path / "review", folds=2, sheet_photos=0, log=lambda _: None)
    assert record["model"] == "an in-memory model (no file)"
    assert json.loads((tmp_path / "review" / "summary.json").read_text())["model"] == record["model"]
