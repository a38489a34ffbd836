"""The negative set's pure parts (benchmarks/negatives.py, in _negatives_build.py and _negatives_sources.py): drawn
images, crops, the split by source, the manifest.
Nothing here fetches a package."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from _pictures import cut_out

from _negatives_build import (
    SCENES,
    SPLITS,
    TRAINING,
    build,
    check_split,
    crop_boxes,
    draw_synthetic,
    prepare,
    split_groups,
)
from _negatives_sources import Source, candidate
from negative_pictures import GENERATORS, SCENE_GROUNDS


def source(group: str, name: str, kind: str = "photo", size: tuple[int, int] = (300, 200)) -> Source:
    colour = random.Random(name).randrange(256)
    image = Image.linear_gradient("L").resize(size).point(lambda v: (v + colour) % 256).convert("RGB")
    made = Source(group, "1.0", f"debian:{group}", f"/usr/share/{name}.jpg", f"{colour:02x}{name}", "CC0-1.0", "test")
    made.kind, made.load = kind, lambda: image.copy()
    return made


@pytest.mark.parametrize("name", list(GENERATORS))
def test_drawn_images_are_seeded_and_each_split_has_its_own(name: str) -> None:
    first = draw_synthetic(name, 0, "tuning", 3)
    assert first.mode == "RGB" and first.size == (64, 64)
    assert np.array_equal(np.asarray(first), np.asarray(draw_synthetic(name, 0, "tuning", 3)))
    for other in ((0, "reporting", 3), (0, "tuning", 4), (1, "tuning", 3)):
        assert not np.array_equal(np.asarray(first), np.asarray(draw_synthetic(name, *other)))


def test_crops_are_squares_inside_the_picture_and_no_smaller_than_the_field_of_view() -> None:
    rng = random.Random(0)
    for width, height in ((5120, 2880), (640, 960), (102, 102), (90, 300)):
        short = min(width, height)
        for left, top, right, bottom in crop_boxes(width, height, 50, rng):
            assert right - left == bottom - top >= min(short, max(0.4 * short, 64)) - 1
            assert 0 <= left < right <= width and 0 <= top < bottom <= height
    for mode in ("RGB", "RGBA", "L", "P"):
        image = Image.new(mode, (400, 250))
        for box in (None, (10, 10, 210, 210)):
            out = prepare(image, box)
            assert out.mode == "RGB" and out.size == (64, 64)


def test_the_split_keeps_every_group_on_one_side_and_balances_photos() -> None:
    sources = [source(g, f"{g}{k}") for g, n in (("a", 12), ("b", 10), ("c", 11), ("d", 9), ("e", 3)) for k in range(n)]
    sources += [source("art", f"art{k}", "artwork") for k in range(6)]
    assignment = split_groups(sources, seed=0)
    assert set(assignment) == {"debian:" + g for g in "abcde"} | {"debian:art"}
    assert split_groups(sources, seed=0) == assignment
    photos = {split: sum(s.kind == "photo" and assignment[s.group] == split for s in sources) for split in SPLITS}
    assert abs(photos["tuning"] - photos["reporting"]) <= 3


def test_build_writes_both_sides_apart_and_the_manifest_round_trips(tmp_path: Path) -> None:
    sources = [source(g, f"{g}{k}") for g in "abcd" for k in range(2)] + [source("art", "art0", "artwork")]
    out = tmp_path / "negatives"
    manifest = build(sources, out, 0, 2, {"photo": 3, "artwork": 1}, left_out=[{"why": "test"}])
    assert json.loads((out / "manifest.json").read_text()) == manifest
    files = manifest["files"]
    assert len(files) == 8 * 4 + 1 * 2 + 2 * 2 * len(GENERATORS)
    for entry in files:
        with Image.open(out / entry["file"]) as image:
            assert image.size == (64, 64) and image.mode == "RGB"
        assert entry["file"].startswith(f"{entry['split']}/{entry['kind']}/")
    for sha in {e["sha256"] for e in files if "sha256" in e}:
        assert len({e["split"] for e in files if e.get("sha256") == sha}) == 1
        crops = [e for e in files if e.get("sha256") == sha]
        assert sum(e["crop_box"] is None for e in crops) == 1  # one whole picture, the rest crops
    assert sum(c["files"] for c in manifest["counts"].values()) == len(files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["negatives"]  # no temporary folder left
    with pytest.raises(SystemExit, match="--overwrite"):
        build(sources, out, 0, 2, {"photo": 3, "artwork": 1})
    again = build(sources, out, 0, 2, {"photo": 3, "artwork": 1}, overwrite=True, left_out=[{"why": "test"}])
    assert again == manifest and sorted(p.name for p in tmp_path.iterdir()) == ["negatives"]


def test_a_manifest_with_a_source_on_both_sides_is_refused() -> None:
    files = [{"split": "tuning", "sha256": "x", "group": "g"}, {"split": "reporting", "sha256": "x", "group": "g"}]
    with pytest.raises(ValueError, match="more than one side"):
        check_split({"files": files})


def test_only_pictures_outside_skipped_folders_are_candidates() -> None:
    stamps = "usr/share/tuxpaint/stamps/"
    assert candidate("tuxpaint-stamps-default", stamps + "animals/birds/owl.png")
    for skipped in ("town/houses/a.png", "animals/insects/cartoon/bee.png", "symbols/math/plus.png", "seasonal/x.png"):
        assert not candidate("tuxpaint-stamps-default", stamps + skipped)
    assert not candidate("tuxpaint-stamps-default", "usr/share/tuxpaint/other/owl.png")
    assert candidate("mate-backgrounds", "usr/share/backgrounds/mate/nature/Aqua.jpg")
    assert not candidate("mate-backgrounds", "usr/share/icons/hicolor/a.png")
    assert not candidate("plasma-workspace-wallpapers", "usr/share/wallpapers/X/contents/screenshot.png")


def test_a_training_only_package_gets_its_own_side_and_leaves_the_other_two_as_they_were(tmp_path: Path) -> None:
    sources = [source(g, f"{g}{k}") for g in "abcd" for k in range(2)] + [source("art", "art0", "artwork")]
    stamps = []
    for k in range(2):
        stamp = Source("tuxpaint-stamps-default", "1", "debian:tuxpaint-stamps", f"/s{k}.png", f"s{k}", "GPL-2", "t")
        stamp.kind, stamp.load = "photo", (lambda k=k: cut_out(f"s{k}"))
        stamps.append(stamp)
    crops = {"photo": 3, "artwork": 1}
    before = build(sources, tmp_path / "before", 0, 2, crops)
    after = build(sources + stamps, tmp_path / "after", 0, 2, crops)
    assert after["groups"] == before["groups"] | {"debian:tuxpaint-stamps": TRAINING}
    training = [e for e in after["files"] if e["split"] == TRAINING]
    assert [e for e in after["files"] if e["split"] != TRAINING] == before["files"]
    assert len(training) == 2 * SCENES and after["counts"]["training"]["files"] == 2 * SCENES
    assert "training" not in before["counts"]
    for entry in before["files"]:  # the same bytes on the two sides that tune and report
        assert (tmp_path / "before" / entry["file"]).read_bytes() == (tmp_path / "after" / entry["file"]).read_bytes()
    for entry in training:
        assert entry["file"].startswith("training/photo/") and entry["scene"]["ground"] in SCENE_GROUNDS
