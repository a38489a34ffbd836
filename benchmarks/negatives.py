"""Photos of none of the ten elements, for measuring open-set scores: fetched from packages, cropped to the data
set's format, and split by source into a set to tune on and a set to report on.

    python benchmarks/negatives.py [--cache .cache/negatives] [--out data/negatives] [--seed 0] [--overwrite]
    python benchmarks/negatives.py --list [--cache .cache/negatives]   # candidates not yet in the review
    python benchmarks/negatives.py --sheets runs/negatives-review         # contact sheets of every candidate

Sources, nothing downloaded but packages by their ordinary clients, nothing installed into the system:
- Debian packages of wallpapers and photo games (`apt-get download`, unpacked with `dpkg -x` into the cache);
  licence from the package's DEP-5 `copyright` (a Plasma wallpaper's own metadata.json when it names one);
- photos shipped inside PyPI wheels (`pip download --no-deps` of pinned versions, unzipped): scikit-image's
  `skimage/data` and scikit-learn's sample images; licence from the wheel's METADATA, with the image's own
  note from scikit-image's docstrings;
- images drawn by code, seeded: noise, flat colours, gradients, text pages, line plans, a lens cap
  (benchmarks/negative_pictures.py);
- for a third side, `training/`, read by training alone and never to tune or report: the TRAINING_ONLY packages'
  cut-out photos (Tux Paint's stamps), each laid on SCENES drawn backgrounds.

Every packaged image is read by a person first: `benchmarks/negatives_review.csv` holds one row per candidate
(package, file, sha256, decision, reason). `photo` and `artwork` (renders, paintings, abstract patterns: kept as
their own kind) are used; `exclude` is not (architecture of any kind, duplicates at other sizes, overlays). A
candidate without a row, or whose bytes changed since the review, is skipped and listed.

Each source image gives `--crops` random squares (at least `MIN_CROP` of its shorter side: a scene, not a
texture patch) and the whole photo, each resized like a data-set photo (heritage_cnn.data.decode.fit_square) to a
64x64 PNG. Sources are split into `tuning/` and `reporting/` by group (a Debian source package, a wheel), so
that one photographer's or one desktop's style never sits on both sides; drawn images come from seed streams
that differ between the two. `OUT/manifest.json` lists every file with its split, kind, package, version,
licence, original path, sha256 of the original and crop box. The output is written to a temporary folder and
renamed into place; an existing one is kept unless `--overwrite`.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from heritage_cnn.base.io import atomic_write_json
from heritage_cnn.data.decode import IMAGE_SIZE, fit_square, to_rgb
from negative_pictures import GENERATORS, stamp_scene
from package_readers import dep5_licence, plasma_metadata, pzl_picture, readme_note, skimage_note, wheel_licence

HERE = Path(__file__).resolve().parent
REVIEW = HERE / "negatives_review.csv"
SPLITS = ("tuning", "reporting")
KINDS = ("photo", "artwork", "synthetic")
DEBIAN = (
    "gnome-backgrounds",
    "mate-backgrounds",
    "plasma-workspace-wallpapers",
    "sway-backgrounds",
    "lomiri-wallpapers",
    "lomiri-wallpapers-16.04",
    "lomiri-wallpapers-20.04",
    "ukui-wallpapers",
    "palapeli-data",  # KDE's jigsaw game: five photos and five textures
    "jigzo-data",  # a photo puzzle game: twelve photos inside its .pzl files
)
# Packages whose pictures are outliers to train with, never to tune or report on: their side is TRAINING. Tux
# Paint's stamps are cut-out photos of animals, food, tools, instruments, vehicles and plants; its folders of
# cartoons, letters and symbols, buildings and monuments, and holiday decorations are not candidates.
TRAINING_ONLY = {"tuxpaint-stamps-default": "usr/share/tuxpaint/stamps/"}
TRAINING_SKIPPED_FOLDERS = frozenset({"cartoon", "symbols", "town", "seasonal"})
TRAINING = "training"
PYPI = {"scikit-image": "0.26.0", "scikit-learn": "1.9.1"}  # pinned: the review read these files
PYPI_FOLDERS = ("skimage/data/", "sklearn/datasets/images/")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
SKIPPED_FOLDERS = ("usr/share/icons/", "usr/share/doc/", "usr/share/locale/")
MIN_SIDE = 96  # smaller files are icons and buttons, not pictures
MIN_CROP = 0.4  # a crop spans at least this share of the shorter side
CROPS = {"photo": 10, "artwork": 4}  # random crops per source image, besides the whole one
SCENES = 6  # scenes per cut-out of a TRAINING package, each on its own background


# --------------------------------------------------------------------------------------------
# Fetching into the cache: apt-get download + dpkg -x, pip download + unzip
# --------------------------------------------------------------------------------------------


def fetch_debian(cache: Path, packages: tuple[str, ...] = (*DEBIAN, *TRAINING_ONLY)) -> None:
    """Download and unpack each package once; `root/PKG/.deb.json` records what was unpacked."""
    debs, root = cache / "debs", cache / "root"
    debs.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)  # dpkg-deb -x creates the last folder of its target, not its parents
    for package in packages:
        record = root / package / ".deb.json"
        if record.exists():
            continue
        found = sorted(debs.glob(f"{package}_*.deb"))
        if not found:
            subprocess.run(["apt-get", "download", package], cwd=debs, check=True)
            found = sorted(debs.glob(f"{package}_*.deb"))
        deb = found[-1]
        fields = {}
        for field in ("Package", "Version", "Source"):
            out = subprocess.run(["dpkg-deb", "-f", str(deb), field], capture_output=True, text=True, check=True)
            fields[field.lower()] = out.stdout.strip().split(" ")[0] or None
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root / package)], check=True)
        fields["source"] = fields["source"] or package
        fields.update(deb=deb.name, deb_sha256=sha256(deb.read_bytes()))
        record.write_text(json.dumps(fields, indent=2) + "\n")


def fetch_pypi(cache: Path, pins: dict[str, str] = PYPI) -> None:
    """Download each pinned wheel (no dependencies, no install) and unzip its image folders and metadata."""
    wheels = cache / "pypi"
    wheels.mkdir(parents=True, exist_ok=True)
    for name, version in pins.items():
        target = wheels / name
        if (target / ".wheel.json").exists():
            continue
        stem = name.replace("-", "_")
        found = sorted(wheels.glob(f"{stem}-{version}-*.whl"))
        if not found:
            pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(wheels)]
            subprocess.run([*pip, f"{name}=={version}"], check=True)
            found = sorted(wheels.glob(f"{stem}-{version}-*.whl"))
        with zipfile.ZipFile(found[-1]) as wheel:
            members = [m for m in wheel.namelist() if m.startswith(PYPI_FOLDERS) or ".dist-info/" in m]
            wheel.extractall(target, members)
        meta = (next(target.glob("*.dist-info")) / "METADATA").read_text(encoding="utf-8")
        record = {"package": name, "version": version, "licence": wheel_licence(meta), "wheel": found[-1].name}
        record["wheel_sha256"] = sha256(found[-1].read_bytes())
        (target / ".wheel.json").write_text(json.dumps(record, indent=2) + "\n")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------
# Candidates: every picture the cached packages hold, with where it came from
# --------------------------------------------------------------------------------------------


@dataclass
class Source:
    """One source image and its provenance; `load` returns the picture (any Pillow mode)."""

    package: str
    version: str
    group: str  # the unit of the split: a Debian source package or a wheel
    file: str  # the original path: installed path, path in the wheel, or PZL#member
    sha256: str  # of the original file's bytes
    licence: str
    licence_from: str
    kind: str = ""  # photo or artwork, from the review
    author: str | None = None
    note: str | None = None
    load: Callable[[], Image.Image] | None = None

    def record(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "load"}


def open_file(path: Path) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        with Image.open(path) as image:
            return ImageOps.exif_transpose(image)

    return load


def debian_sources(cache: Path) -> list[Source]:
    sources = []
    for record in sorted((cache / "root").glob("*/.deb.json")):
        deb, root = json.loads(record.read_text()), record.parent
        copyright_file = root / "usr/share/doc" / deb["package"] / "copyright"
        text = copyright_file.read_text(encoding="utf-8", errors="replace") if copyright_file.exists() else ""
        for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
            rel = path.relative_to(root).as_posix()
            if not candidate(deb["package"], rel):
                continue
            loads = []
            if path.suffix == ".pzl":
                loads = [(f"/{rel}#picture", lambda p=path: pzl_picture(p.read_bytes()))]
            elif path.suffix.lower() in IMAGE_SUFFIXES and min(Image.open(path).size) >= MIN_SIDE:
                loads = [(f"/{rel}", open_file(path))]
            for name, load in loads:
                licence, origin = dep5_licence(text, rel), "copyright"
                meta = plasma_metadata(path) if "usr/share/wallpapers/" in rel else {}
                if meta.get("licence"):
                    licence, origin = meta["licence"], "metadata.json"
                author = meta.get("author") or by_author(path.stem)
                source = Source(deb["package"], deb["version"], f"debian:{deb['source']}", name, "", "", "")
                source.sha256, source.author, source.load = sha256(path.read_bytes()), author, load
                source.licence = licence or "not machine-readable: see the package's copyright file"
                source.licence_from = f"/usr/share/doc/{deb['package']}/copyright" if origin == "copyright" else origin
                sources.append(source)
    return sources


def candidate(package: str, rel: str) -> bool:
    """Whether an installed file may be a negative: not an icon, a manual or one of Plasma's preview thumbnails
    of its own pictures; of a TRAINING package, only what lies under its folder, outside the skipped folders."""
    if rel.startswith(SKIPPED_FOLDERS) or Path(rel).name.startswith("screenshot."):
        return False
    folder = TRAINING_ONLY.get(package)
    if folder is None:
        return True
    return rel.startswith(folder) and not TRAINING_SKIPPED_FOLDERS & set(rel[len(folder) :].split("/")[:-1])


def by_author(stem: str) -> str | None:
    """Lomiri names its wallpapers TITLE_by_AUTHOR."""
    return stem.split("_by_", 1)[1].strip("_").replace("_", " ") if "_by_" in stem else None


def pypi_sources(cache: Path) -> list[Source]:
    sources = []
    for record in sorted((cache / "pypi").glob("*/.wheel.json")):
        wheel, root = json.loads(record.read_text()), record.parent
        fetchers = root / "skimage/data/_fetchers.py"
        docs = fetchers.read_text(encoding="utf-8") if fetchers.exists() else ""
        for folder in PYPI_FOLDERS:
            for path in sorted((root / folder).glob("*")):
                if path.suffix.lower() not in IMAGE_SUFFIXES or min(Image.open(path).size) < MIN_SIDE:
                    continue
                rel = path.relative_to(root).as_posix()
                source = Source(wheel["package"], wheel["version"], f"pypi:{wheel['package']}", rel, "", "", "")
                source.licence, source.licence_from = wheel["licence"], "wheel METADATA"
                source.sha256, source.load = sha256(path.read_bytes()), open_file(path)
                source.note = skimage_note(docs, "data/" + path.name) if docs else readme_note(path)
                sources.append(source)
    return sources


# --------------------------------------------------------------------------------------------
# The review: a person's decision on each candidate, tied to the bytes that were read
# --------------------------------------------------------------------------------------------


def read_review(path: Path = REVIEW) -> dict[tuple[str, str], dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return {(row["package"], row["file"]): row for row in csv.DictReader(handle)}


def reviewed(sources: list[Source], review: dict) -> tuple[list[Source], list[dict]]:
    """The sources a reviewer kept (kind set from the decision), and what was left out and why."""
    kept, left = [], []
    for source in sources:
        row = review.get((source.package, source.file))
        if row is None:
            left.append({"package": source.package, "file": source.file, "why": "not reviewed"})
        elif row["sha256"] != source.sha256:
            left.append({"package": source.package, "file": source.file, "why": "changed since the review"})
        elif row["decision"] in ("photo", "artwork"):
            source.kind = row["decision"]
            kept.append(source)
        else:
            left.append({"package": source.package, "file": source.file, "why": f"excluded: {row['reason']}"})
    return kept, left


def candidate_sheets(sources: list[Source], review: dict, out: Path, per_sheet: int = 20) -> None:
    """Contact sheets of the candidates, each captioned with its number, package, file and decision."""
    out.mkdir(parents=True, exist_ok=True)
    cell, cols = 240, 5
    for start in range(0, len(sources), per_sheet):
        chunk = sources[start : start + per_sheet]
        sheet = Image.new("RGB", (cols * cell, -(-len(chunk) // cols) * (cell + 28)), "white")
        draw = ImageDraw.Draw(sheet)
        for k, source in enumerate(chunk):
            image = to_rgb(source.load())
            image.thumbnail((cell - 4, cell - 4))
            x, y = (k % cols) * cell, (k // cols) * (cell + 28)
            sheet.paste(image, (x + 2, y + 2))
            decision = review.get((source.package, source.file), {}).get("decision", "?")
            draw.text((x + 2, y + cell), f"{start + k} {source.package[:24]} [{decision}]", fill="black")
            draw.text((x + 2, y + cell + 12), Path(source.file).name[:38], fill="black")
        sheet.save(out / f"sheet-{start // per_sheet + 1:02d}.png")
    print(f"wrote {-(-len(sources) // per_sheet)} sheets of {len(sources)} candidates to {out}")


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=HERE.parent / ".cache/negatives", help="packages go here")
    parser.add_argument("--out", type=Path, default=HERE.parent / "data/negatives")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crops", type=int, default=CROPS["photo"], help="random crops per photo")
    parser.add_argument("--artwork-crops", type=int, default=CROPS["artwork"], help="random crops per artwork")
    parser.add_argument("--synthetic", type=int, default=40, help="drawn images per generator and split")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--no-fetch", action="store_true", help="use the cache as it is")
    parser.add_argument("--list", action="store_true", help="print review rows for candidates not yet reviewed")
    parser.add_argument("--sheets", type=Path, help="write contact sheets of every candidate here, then stop")
    args = parser.parse_args()
    if not args.no_fetch:
        fetch_debian(args.cache)
        fetch_pypi(args.cache)
    candidates = debian_sources(args.cache) + pypi_sources(args.cache)
    review = read_review() if REVIEW.exists() else {}
    if args.sheets:
        return candidate_sheets(candidates, review, args.sheets)
    kept, left = reviewed(candidates, review)
    if args.list:
        writer = csv.writer(sys.stdout)
        for item in left:
            if item["why"] != "not reviewed" and not item["why"].startswith("changed"):
                continue
            source = next(s for s in candidates if (s.package, s.file) == (item["package"], item["file"]))
            writer.writerow([source.package, source.file, source.sha256, "", item["why"]])
        return None
    for item in left:
        if not item["why"].startswith("excluded"):
            print(f"skipped {item['package']} {item['file']}: {item['why']}")
    crops = {"photo": args.crops, "artwork": args.artwork_crops}
    manifest = build(kept, args.out, args.seed, args.synthetic, crops, args.overwrite, left)
    report(manifest, args.out)


def report(manifest: dict, out: Path) -> None:
    for split, counts in manifest["counts"].items():
        kinds = ", ".join(f"{kind} {n}" for kind, n in counts["by_kind"].items())
        print(f"{out / split}: {counts['files']} images ({kinds}) from {counts['source_images']} source images")
        for package, n in counts["by_package"].items():
            print(f"    {package}: {n}")


if __name__ == "__main__":
    main()
