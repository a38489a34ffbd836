"""The candidates of benchmarks/negatives.py: the packages fetched into the cache (apt-get download + dpkg -x,
pip download + unzip), every picture they hold with where it came from, and a person's review of each."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

from heritage_cnn.data.resize import to_rgb
from package_readers import dep5_licence, plasma_metadata, pzl_picture, readme_note, skimage_note, wheel_licence

REVIEW = Path(__file__).resolve().parent / "negatives_review.csv"
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
PYPI = {"scikit-image": "0.26.0", "scikit-learn": "1.9.1"}  # pinned: the review read these files
PYPI_FOLDERS = ("skimage/data/", "sklearn/datasets/images/")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
SKIPPED_FOLDERS = ("usr/share/icons/", "usr/share/doc/", "usr/share/locale/")
MIN_SIDE = 96  # smaller files are icons and buttons, not pictures


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
