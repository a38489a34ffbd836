"""The negative set of benchmarks/negatives.py written out: random square crops and the whole picture at the data
set's size, drawn images, the split by source, and the output folder with its manifest."""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from _negatives_sources import TRAINING_ONLY, Source
from heritage_cnn.base.io import atomic_write_json
from heritage_cnn.data.decode import IMAGE_SIZE
from heritage_cnn.data.resize import fit_square, to_rgb
from negative_pictures import GENERATORS, stamp_scene

SPLITS = ("tuning", "reporting")
KINDS = ("photo", "artwork", "synthetic")
TRAINING = "training"
MIN_CROP = 0.4  # a crop spans at least this share of the shorter side
SCENES = 6  # scenes per cut-out of a TRAINING package, each on its own background


# --------------------------------------------------------------------------------------------
# Preparation: random square crops and the whole picture, at the data set's size
# --------------------------------------------------------------------------------------------


def crop_boxes(width: int, height: int, count: int, rng: random.Random) -> list[tuple[int, int, int, int]]:
    """`count` random squares (left, top, right, bottom), each at least MIN_CROP of the shorter side (and at
    least IMAGE_SIZE pixels when the picture allows), anywhere inside the picture."""
    short = min(width, height)
    low = min(short, max(round(MIN_CROP * short), IMAGE_SIZE))
    boxes = []
    for _ in range(count):
        side = rng.randint(low, short)
        left, top = rng.randint(0, width - side), rng.randint(0, height - side)
        boxes.append((left, top, left + side, top + side))
    return boxes


def prepare(image: Image.Image, box: tuple[int, int, int, int] | None) -> Image.Image:
    """The 64x64 RGB image of one crop (None: the whole picture, centre square, as decode.py reads a photo)."""
    image = to_rgb(image)
    if box is not None:
        image = image.crop(box)
    return fit_square(image, IMAGE_SIZE)


def draw_synthetic(name: str, seed: int, split: str, index: int) -> Image.Image:
    """Image `index` of generator `name` for `split`: each split has its own seed stream, so none repeats."""
    generator = list(GENERATORS).index(name)
    rng = np.random.default_rng([seed, generator, SPLITS.index(split), index])
    return GENERATORS[name](rng)


# --------------------------------------------------------------------------------------------
# The split and the output folder
# --------------------------------------------------------------------------------------------


def split_groups(sources: list[Source], seed: int) -> dict[str, str]:
    """Each group (all its sources, photos and artwork alike) on one side. Groups with photos are dealt first,
    largest first, each to the side with fewer photos so far; then artwork-only groups by artwork count. Ties,
    and the order of equal groups, follow the seed."""
    rng = random.Random(seed)
    counts: dict[str, Counter] = {}
    for source in sources:
        counts.setdefault(source.group, Counter())[source.kind] += 1
    groups = sorted(counts)
    rng.shuffle(groups)
    groups.sort(key=lambda g: (counts[g]["photo"] == 0, -counts[g]["photo"], -counts[g]["artwork"]))
    totals = {split: Counter() for split in SPLITS}
    assignment = {}
    for group in groups:
        kind = "photo" if counts[group]["photo"] else "artwork"
        split = min(SPLITS, key=lambda s: (totals[s][kind], rng.random()))
        assignment[group] = split
        totals[split] += counts[group]
    return assignment


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-")


def source_files(source: Source, split: str, seed: int, crops: int, folder: Path) -> list[dict]:
    """Write the whole picture and `crops` random crops of one source (on the TRAINING side: SCENES scenes of
    it); their manifest entries. The random stream is seeded by the source's own bytes, so adding a source
    changes no other's files."""
    image = source.load()
    width, height = image.size
    rng = random.Random(f"{seed}:{source.sha256}")
    if split == TRAINING:
        views = [(f"s{k:02d}", *stamp_scene(image, rng)) for k in range(SCENES)]
    else:
        boxes = [None, *crop_boxes(width, height, crops, rng)]
        views = [
            ("whole" if box is None else f"c{k:02d}", prepare(image, box), {"crop_box": list(box) if box else None})
            for k, box in enumerate(boxes)
        ]
    stem = f"{slug(source.package)}__{slug(Path(source.file.split('#')[0]).stem)}-{source.sha256[:8]}"
    (folder / split / source.kind).mkdir(parents=True, exist_ok=True)
    entries = []
    for label, picture, placement in views:
        name = f"{split}/{source.kind}/{stem}-{label}.png"
        picture.save(folder / name, format="PNG")
        provenance = {k: v for k, v in source.record().items() if k not in ("kind", "file")}
        entries.append(
            {"file": name, "split": split, "kind": source.kind, "original_path": source.file, **provenance}
            | {"original_size": [width, height], **placement}
        )
    return entries


def synthetic_files(seed: int, per_split: int, folder: Path) -> list[dict]:
    entries = []
    for split in SPLITS:
        for name in GENERATORS:
            for index in range(per_split):
                file = f"{split}/synthetic/{name}-{index:03d}.png"
                draw_synthetic(name, seed, split, index).save(folder / file, format="PNG")
                entries.append(
                    {"file": file, "split": split, "kind": "synthetic", "generator": name, "index": index}
                    | {"package": "drawn by benchmarks/negatives.py", "licence": "MIT (this project)", "crop_box": None}
                )
    return entries


def tally(entries: list[dict]) -> dict:
    """Files per split (all, by kind, by package) and source images per split."""
    counts: dict = {}
    for split in (*SPLITS, TRAINING):
        mine = [e for e in entries if e["split"] == split]
        if split == TRAINING and not mine:
            continue
        counts[split] = {
            "files": len(mine),
            "by_kind": dict(sorted(Counter(e["kind"] for e in mine).items())),
            "by_package": dict(sorted(Counter(e["package"] for e in mine).items())),
            "source_images": len({e["sha256"] for e in mine if e.get("sha256")}),
        }
    return counts


def build(
    sources: list[Source],
    out: Path,
    seed: int,
    synthetic: int,
    crops: dict[str, int],
    overwrite: bool = False,
    left_out: list[dict] | None = None,
) -> dict:
    """Write every negative and the manifest into a temporary folder beside `out`, then rename it into place.
    `left_out` (candidates not used, and why) is recorded in the manifest."""
    if out.exists() and not overwrite:
        raise SystemExit(f"{out} exists: pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for split in SPLITS:
            for kind in KINDS:
                (folder / split / kind).mkdir(parents=True)
        training = {s.group for s in sources if s.package in TRAINING_ONLY}
        assignment = split_groups([s for s in sources if s.group not in training], seed)
        assignment |= dict.fromkeys(training, TRAINING)
        entries = []
        for source in sources:
            entries += source_files(source, assignment[source.group], seed, crops[source.kind], folder)
        entries += synthetic_files(seed, synthetic, folder)
        manifest = {
            "made_by": "benchmarks/negatives.py",
            "seed": seed,
            "image_size": IMAGE_SIZE,
            "crops": crops,
            "synthetic_per_generator_and_split": synthetic,
            "groups": dict(sorted(assignment.items())),
            "counts": tally(entries),
            "files": entries,
            "left_out": left_out or [],
        }
        check_split(manifest)
        atomic_write_json(folder / "manifest.json", manifest)
        publish(folder, out)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return manifest


def publish(folder: Path, out: Path) -> None:
    """Rename the finished folder onto `out`; a previous `out` is moved aside first and removed after."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent)) / out.name
        os.replace(out, old)
    os.replace(folder, out)
    if old is not None:
        shutil.rmtree(old.parent)


def check_split(manifest: dict) -> None:
    """Refuse a manifest in which one source image or one group has files on more than one side."""
    sides: dict[str, set[str]] = {}
    for entry in manifest["files"]:
        for key in ("sha256", "group"):
            if entry.get(key):
                sides.setdefault(f"{key} {entry[key]}", set()).add(entry["split"])
    mixed = sorted(key for key, splits in sides.items() if len(splits) > 1)
    if mixed:
        raise ValueError(f"on more than one side of the split: {', '.join(mixed[:5])}")
