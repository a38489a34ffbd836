"""Does `heritage review` find labels flipped on purpose? (docs/review.md, "Benchmark: flipped labels")

    python benchmarks/review_flips.py flip --work /tmp/review_flips
    heritage train --data /tmp/review_flips/data --out /tmp/review_flips/run --recipe quick -q
    heritage review /tmp/review_flips/data --model /tmp/review_flips/run --out /tmp/review_flips/review
    python benchmarks/review_flips.py score --work /tmp/review_flips --out benchmarks/review_flips

`flip` hard-links every photo of the training folder into WORK/data/<class>/ (bare class folders; the user's photos
are never changed), 5 % of them, drawn with a fixed seed, under another class drawn uniformly; WORK/flips.json
records which. `score` reads the review's queue.csv and writes `<out>.json` and `<out>.md`: the share of the flipped
photos ranked in the top 10 % of the queue, with its 95 % Wilson interval.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from heritage_cnn.base.io import atomic_write_json, atomic_write_text
from heritage_cnn.data.folders import IMAGE_EXTENSIONS, find_layout
from heritage_cnn.data.walk import walk_files
from run import data_root, hardware
from two_elements import wilson

SEED = 0
FLIP_SHARE = 0.05
TOP_SHARE = 0.10


def flip(source: Path, work: Path, share: float = FLIP_SHARE, seed: int = SEED) -> dict:
    """Hard-link `source`'s photos (class folders) into work/data, `share` of them under another class."""
    classes = sorted(p.name for p in source.iterdir() if p.is_dir() and not p.name.startswith("."))
    photos = [(path, c) for c, name in enumerate(classes) for path in walk_files(source / name, IMAGE_EXTENSIONS)[0]]
    rng = np.random.default_rng(seed)
    count = round(share * len(photos))
    chosen = rng.choice(len(photos), size=count, replace=False)
    new_class = {int(i): int((photos[i][1] + rng.integers(1, len(classes))) % len(classes)) for i in chosen}
    data = work / "data"
    data.mkdir(parents=True)  # a new folder: an earlier draw is never mixed with this one
    for name in classes:
        (data / name).mkdir()
    flips = []
    for i, (path, c) in enumerate(photos):
        target = data / classes[new_class.get(i, c)] / path.name
        if target.exists():  # a file name that two classes share: keep both
            target = target.with_name(f"flipped_{i}_{path.name}")
        os.link(path, target)
        if i in new_class:
            flips.append({"path": str(target), "true": classes[c], "given": classes[new_class[i]]})
    record = {"source": str(source), "photos": len(photos), "seed": seed, "share": share, "flips": flips}
    atomic_write_json(work / "flips.json", record)
    return record


def score(work: Path, queue: Path) -> dict:
    """Where the flipped photos lie in the review queue."""
    flips = json.loads((work / "flips.json").read_text())
    flipped = {f["path"]: f for f in flips["flips"]}
    with queue.open(newline="") as f:
        rows = list(csv.DictReader(f))
    top = math.ceil(TOP_SHARE * len(rows))
    data = work / "data"  # queue paths are relative to the class-folder root
    ranks = {str(data / row["path"]): int(row["rank"]) for row in rows}
    suggested = {str(data / row["path"]): row["suggested_label"] for row in rows}
    flagged = {str(data / row["path"]) for row in rows if row["flagged"] == "yes"}
    found = [p for p in flipped if ranks.get(p, len(rows) + 1) <= top]
    right_class = [p for p in found if suggested[p] == flipped[p]["true"]]
    flagged_flips = [p for p in flipped if p in flagged]
    run_val = _validation_paths(work / "run")
    in_val = [p for p in flipped if p in run_val]
    return {
        "photos": len(rows),
        "flips": len(flipped),
        "top": top,
        "flips_in_top": {
            "count": len(found),
            "share": len(found) / len(flipped),
            "ci95": wilson(len(found), len(flipped)),
        },
        "suggested_true_class_among_found": len(right_class),
        "flagged": len(flagged),
        "flips_flagged": len(flagged_flips),
        "flagged_precision": len(flagged_flips) / len(flagged) if flagged else math.nan,
        "flips_in_run_validation": {
            "count": len(in_val),
            "in_top": sum(p in found for p in in_val),
        },
        "median_flip_rank": float(np.median([ranks.get(p, len(rows) + 1) for p in flipped])),
    }


def _validation_paths(run: Path) -> set[str]:
    """The photos the network held out for validation (its split.json): flips it never trained on."""
    split = run / "split.json"
    return set(json.loads(split.read_text())["val_paths"]) if split.exists() else set()


def _train_figures(run: Path) -> dict:
    """The flipped-label network's last validation accuracy (on flipped labels) and its training time."""
    history = json.loads((run / "metrics.json").read_text())
    return {
        "epochs": len(history),
        "val_accuracy_on_flipped_labels": history[-1]["val_accuracy"],
        "minutes": sum(h["epoch_seconds"] for h in history) / 60,
    }


def markdown(result: dict) -> str:
    s = result["scores"]
    top = s["flips_in_top"]
    lo, hi = top["ci95"]
    return "\n".join(
        [
            f"# `heritage review` on flipped labels ({result['date']}, {result['hardware']['cpu']})",
            "",
            f"{s['flips']} of {s['photos']} photos flipped (seed {SEED}); top 10 % of the queue = {s['top']} photos.",
            "",
            "| figure | value |",
            "|---|---|",
            f"| flips in the top 10 % | {top['count']}/{s['flips']} = {top['share']:.1%} (95 % Wilson {lo:.1%} to {hi:.1%}) |",
            f"| of those, suggested label = the true class | {s['suggested_true_class_among_found']} |",
            f"| flagged by cleanlab | {s['flagged']} photos, {s['flips_flagged']} of them flips (precision {s['flagged_precision']:.1%}) |",
            f"| flips in the network's validation split | {s['flips_in_run_validation']['count']}, {s['flips_in_run_validation']['in_top']} of them in the top 10 % |",
            f"| median rank of a flip | {s['median_flip_rank']:.0f} |",
            f"| the network: validation accuracy on the flipped labels | {result['train']['val_accuracy_on_flipped_labels']:.3f} "
            f"({result['train']['epochs']} epochs, {result['train']['minutes']:.1f} min of epochs) |",
            f"| review time | {result['review_summary']['seconds']['total']:.0f} s |",
            "",
            "Timings were taken on the project's 2-core machine while other work (another engineer's test runs)"
            " ran on the same cores: upper bounds.",
            "",
            "Commands:",
            "",
            *[f"    {c}" for c in result["commands"]],
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=("flip", "score"))
    parser.add_argument("--work", type=Path, required=True, help="new folder for the flipped data, run and review")
    parser.add_argument("--out", type=Path, help="score: results prefix (writes <out>.json, <out>.md)")
    args = parser.parse_args()
    if args.stage == "flip":
        record = flip(find_layout(data_root()).train, args.work)
        print(f"{len(record['flips'])} of {record['photos']} photos flipped into {args.work / 'data'}")
        return
    work = args.work
    result = {
        "date": datetime.date.today().isoformat(),
        "hardware": hardware(),
        "scores": score(work, work / "review" / "queue.csv"),
        "review_summary": json.loads((work / "review" / "summary.json").read_text()),
        "train": _train_figures(work / "run"),
        "commands": [line.strip() for line in __doc__.splitlines()[2:6]],
    }
    out = args.out or Path(__file__).with_name("review_flips")
    atomic_write_json(out.with_suffix(".json"), result)
    atomic_write_text(out.with_suffix(".md"), markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
