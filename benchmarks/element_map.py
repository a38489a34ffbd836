"""The element map measured on mosaics of photos whose content is known (docs/element_map.md, "Protocol"):

    python benchmarks/element_map.py --models fast default --mosaics 100 --out benchmarks/element_map

Mixed 2 x 2 and 3 x 3 mosaics of validation photos (a quarter of the cells, on average, a photo of none of the ten),
and mosaics made only of none-photos, each cell enlarged to 1,000 px; scored with each model's shipped operating
point: per-mosaic multi-label F1, the share of present elements whose map peaks in their own cell, the share of
none mosaics left empty; then the time of one 12-megapixel photo from its JPEG file. Writes `<out>.json` and
`<out>.md`. `--negatives tuning --seed 1` builds the tuning side, the only one any choice may be made on.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from heritage_cnn.base.io import atomic_write_json, atomic_write_text
from heritage_cnn.data.folders import find_layout, load_images
from heritage_cnn.data.mosaics import mosaic_specs, photo_mosaic
from heritage_cnn.data.split import perceptual_hashes
from heritage_cnn.inference.classifier import Classifier
from heritage_cnn.inference.element_map import map_elements
from heritage_cnn.inference.evaluate import hashes_from_hex, near_any
from heritage_cnn.inference.tiles import MapConfig
from run import data_root, hardware

NEGATIVES = Path(__file__).resolve().parents[1] / "data" / "negatives"
ROUNDS = 1000


def validation_photos(data: Path, classifiers: dict[str, Classifier]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(N, 64, 64, 3) photos no model trained on, their labels and the classes."""
    layout = find_layout(data)
    first = next(iter(classifiers.values())).checkpoint
    images = load_images(layout.train, classes=first.classes, cache_dir=Path(tempfile.gettempdir()) / "heritage-em")
    hashes = perceptual_hashes(images.images)
    seen = np.zeros(len(images), dtype=bool)
    for classifier in classifiers.values():
        record = classifier.checkpoint.info.get("trained_on") or classifier.checkpoint.member(0).info["trained_on"]
        seen |= near_any(hashes, hashes_from_hex(record["phash"]), int(record["distance"]))
    keep = np.flatnonzero(~seen)
    photos = images.images[keep].permute(0, 2, 3, 1).numpy()
    return photos, images.labels[keep].numpy(), list(first.classes)


def negative_photos(root: Path, side: str) -> np.ndarray:
    files = sorted((root / side).glob("*/*.png"))
    if not files:
        sys.exit(f"no negatives in {root / side}: give --negatives-dir (benchmarks/negatives.py makes them)")
    return np.stack([np.asarray(Image.open(f).convert("RGB").resize((64, 64))) for f in files])


def score_mosaic(spec: dict, emap, classes: list[str], tile_px: int) -> dict:
    present = {c: i for i, (_, _, c) in enumerate(spec["cells"]) if c >= 0}
    listed = {classes.index(e.label) for e in emap.elements}
    peaks_in_tile = []
    for c, i in present.items():
        heat = emap.maps[c]
        if heat.max() <= 0:
            peaks_in_tile.append(False)
            continue
        y, x = np.unravel_index(int(heat.argmax()), heat.shape)
        px, py = (x + 0.5) * emap.cell[0], (y + 0.5) * emap.cell[1]
        r, col = divmod(i, spec["grid"])
        peaks_in_tile.append(bool(col * tile_px <= px < (col + 1) * tile_px and r * tile_px <= py < (r + 1) * tile_px))
    hits = len(listed & set(present))
    f1 = 2 * hits / (len(present) + len(listed)) if present or listed else 1.0
    return {
        "kind": spec["kind"],
        "present": sorted(classes[c] for c in present),
        "listed": [e.label for e in emap.elements],
        "confidences": [e.confidence for e in emap.elements],
        "peaks": [round(float(heat.max()), 4) for heat in emap.maps],  # every class's peak: a presence sweep
        "hits": hits,
        "f1": f1,
        "peaks_in_tile": peaks_in_tile,
        "empty": bool(not listed),
        "known_tiles": emap.known_tiles,
        "tiles": emap.tiles,
    }


def interval(values: np.ndarray, rng: np.random.Generator) -> list[float]:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return [float("nan")] * 2
    means = values[rng.integers(0, len(values), (ROUNDS, len(values)))].mean(1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def summarise(rows: list[dict], seed: int) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    mixed = [r for r in rows if r["kind"] != "none"]
    parts = {kind: [r for r in mixed if r["kind"] == kind] for kind in ("2x2", "3x3")} | {"mixed": mixed}
    for name, part in parts.items():
        f1 = np.array([r["f1"] for r in part])
        peaks = np.array([p for r in part for p in r["peaks_in_tile"]], dtype=np.float64)
        listed = sum(len(r["listed"]) for r in part)
        present = sum(len(r["present"]) for r in part)
        hits = sum(r["hits"] for r in part)
        out[name] = {
            "mosaics": len(part),
            "f1_mean": float(f1.mean()) if f1.size else float("nan"),
            "f1_ci95": interval(f1, rng),
            "peak_in_tile": float(peaks.mean()) if peaks.size else float("nan"),
            "peak_in_tile_ci95": interval(peaks, rng),
            "precision": hits / listed if listed else float("nan"),
            "recall": hits / present if present else float("nan"),
        }
    none = [r for r in rows if r["kind"] == "none"]
    empty = np.array([r["empty"] for r in none], dtype=np.float64)
    listed = {}
    for r in none:
        for label in r["listed"]:
            listed[label] = listed.get(label, 0) + 1
    out["none"] = {
        "mosaics": len(none),
        "empty": float(empty.mean()),
        "empty_ci95": interval(empty, rng),
        "listed": dict(sorted(listed.items(), key=lambda kv: -kv[1])),
    }
    return out


def time_12mp(classifiers: dict[str, Classifier], photos: np.ndarray, tile_px: int, rounds: int = 5) -> dict:
    """One 12-megapixel JPEG mapped end to end (decode included) by each model, the models taking turns round by
    round so that the machine's drift falls on all alike; one warm-up each, then the median of `rounds`."""
    rng = np.random.default_rng(12)
    spec = {"grid": 4, "cells": [("val", int(i), -1) for i in rng.choice(len(photos), 12, replace=False)]}
    canvas = photo_mosaic(spec, photos, photos, tile_px)[: 3 * tile_px]  # 4 x 4 cut to 4 x 3
    seconds: dict[str, list[float]] = {name: [] for name in classifiers}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "12mp.jpg"
        Image.fromarray(canvas).save(path, quality=90)
        tiles = {name: map_elements(c, path).tiles for name, c in classifiers.items()}
        for _ in range(rounds):
            for name, classifier in classifiers.items():
                start = time.perf_counter()
                map_elements(classifier, path)
                seconds[name].append(time.perf_counter() - start)
    size = [canvas.shape[1], canvas.shape[0]]
    return {
        name: {"size": size, "tiles": tiles[name], "seconds": s, "median_s": float(np.median(s))}
        for name, s in seconds.items()
    }


def markdown(result: dict) -> str:
    mosaics = all("summary" in v for v in result["models"].values())
    what = (
        f"on mosaics (negatives: {result['negatives']}, seed {result['seed']}, {result['mosaics_per_kind']} per kind)"
        if mosaics
        else "timing"
    )
    lines = [
        f"Element map {what}: {result['date']}, {result['hardware']['cpu']}, {result['threads']} threads",
        "",
        "| | " + " | ".join(f"`{m}`" for m in result["models"]) + " | target |",
        "|---|" + "---|" * len(result["models"]) + "---|",
    ]

    def cell(model: str, part: str, key: str, pct: bool = False) -> str:
        s = result["models"][model]["summary"][part]
        v, ci = s[key], s.get(f"{key.removesuffix('_mean')}_ci95")
        f = (lambda x: f"{100 * x:.1f} %") if pct else (lambda x: f"{x:.3f}")
        return f(v) + (f" ({f(ci[0])}–{f(ci[1])})" if ci else "")

    rows = [
        ("mean F1, 2x2", "2x2", "f1_mean", False, ""),
        ("mean F1, 3x3", "3x3", "f1_mean", False, ""),
        ("mean F1, mixed", "mixed", "f1_mean", False, ">= 0.85"),
        ("precision / recall, mixed", None, None, False, ""),
        ("peak in its own tile", "mixed", "peak_in_tile", True, ">= 80 %"),
        ("none mosaics left empty", "none", "empty", True, ">= 95 %"),
    ]
    for title, part, key, pct, target in rows if mosaics else ():
        if part is None:
            values = [
                f"{result['models'][m]['summary']['mixed']['precision']:.3f} / "
                f"{result['models'][m]['summary']['mixed']['recall']:.3f}"
                for m in result["models"]
            ]
        else:
            values = [cell(m, part, key, pct) for m in result["models"]]
        lines.append(f"| {title} | " + " | ".join(values) + f" | {target} |")
    if all("timing" in v for v in result["models"].values()):
        values = [f"{v['timing']['median_s']:.2f} s ({v['timing']['tiles']} tiles)" for v in result["models"].values()]
        lines.append("| 12 MP photo, median of 5 | " + " | ".join(values) + " | fast <= 2 s, default <= 5 s |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["fast", "default"])
    parser.add_argument("--mosaics", type=int, default=100, help="mosaics per kind (2x2, 3x3, none)")
    parser.add_argument("--negatives", choices=["reporting", "tuning"], default="reporting")
    parser.add_argument("--negatives-dir", default=str(NEGATIVES), help=f"default {NEGATIVES}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tile-px", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-timing", action="store_true", help="mosaics only")
    parser.add_argument("--timing-only", action="store_true", help="the 12-megapixel photo only")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "element_map"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    classifiers = {name: Classifier.load(name) for name in args.models}
    photos, labels, classes = validation_photos(data_root(), classifiers)
    negatives = None if args.timing_only else negative_photos(Path(args.negatives_dir), args.negatives)
    specs = []
    if negatives is not None:
        print(f"{len(photos)} validation photos, {len(negatives)} {args.negatives} negatives", flush=True)
        specs = mosaic_specs(labels, len(negatives), args.mosaics, args.seed)
    result = {
        "date": datetime.date.today().isoformat(),
        "hardware": hardware(),
        "threads": args.threads,
        "negatives": args.negatives,
        "seed": args.seed,
        "mosaics_per_kind": args.mosaics,
        "tile_px": args.tile_px,
        "config": MapConfig().__dict__,
        "command": " ".join(sys.argv),
        "validation_photos": len(photos),
        "models": {},
    }
    for name, classifier in classifiers.items() if not args.timing_only else ():
        start, rows = time.perf_counter(), []
        for spec in specs:
            emap = map_elements(classifier, photo_mosaic(spec, photos, negatives, args.tile_px))
            rows.append(score_mosaic(spec, emap, classes, args.tile_px))
        entry = {"seconds": time.perf_counter() - start, "summary": summarise(rows, args.seed), "mosaics": rows}
        result["models"][name] = entry
        print(name, f"{entry['seconds']:.0f} s", entry["summary"], flush=True)
    if not args.no_timing:
        for name, timing in time_12mp(classifiers, photos, args.tile_px).items():
            result["models"].setdefault(name, {})["timing"] = timing
            print(name, timing, flush=True)
    result["config"] = {k: list(v) if isinstance(v, tuple) else v for k, v in result["config"].items()}
    atomic_write_json(Path(args.out).with_suffix(".json"), result)
    atomic_write_text(Path(args.out).with_suffix(".md"), markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
