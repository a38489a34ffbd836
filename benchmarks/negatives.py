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
texture patch) and the whole photo, each resized like a data-set photo (heritage_cnn.data.resize.fit_square) to a
64x64 PNG. Sources are split into `tuning/` and `reporting/` by group (a Debian source package, a wheel), so
that one photographer's or one desktop's style never sits on both sides; drawn images come from seed streams
that differ between the two. `OUT/manifest.json` lists every file with its split, kind, package, version,
licence, original path, sha256 of the original and crop box. The output is written to a temporary folder and
renamed into place; an existing one is kept unless `--overwrite`.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from _negatives_build import build
from _negatives_sources import (
    REVIEW,
    candidate_sheets,
    debian_sources,
    fetch_debian,
    fetch_pypi,
    pypi_sources,
    read_review,
    reviewed,
)

HERE = Path(__file__).resolve().parent
CROPS = {"photo": 10, "artwork": 4}  # random crops per source image, besides the whole one


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
