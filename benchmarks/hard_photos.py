"""The validation photos that most of this project's networks get wrong: how much of the split any ensemble of them
can still win, and contact sheets of those photos for a reviewer.

    python benchmarks/hard_photos.py [--min-epochs 45] [--until RUN] [--data DATA] [--out runs/hard]

It reads `benchmarks/recipes.json` only (every logged run's per-photo correctness on the duplicate-aware validation
split, final checkpoints, one view), so it needs none of the run folders. For the networks trained for at least
`--min-epochs`, it prints how many photos each share of them gets right, and what a majority vote of all of them
scores: an ensemble of averaged networks rarely wins a photo that most of its members lose.

With `--data`, it rebuilds the split, asks `--model` (default: the shipped `default`) for its answer on those photos, and writes
`OUT/hard_photos.csv` and `OUT/sheet-K.png` (the photos enlarged, each titled with its number and label, and
captioned with the default model's answer and how many networks got it right). The sheets show dataset images, so
they stay in the run folder, out of git. `benchmarks/hard_photos_review.csv` holds one reviewer's reading of each
photo (the sheets' columns, then a category and a note), made from the runs logged up to
`runs/search/t45-muon-s4` (`--until`), whose answers are those of the default shipped then, the six AdamW networks
(`--model` a rebuild of it: `benchmarks/build_ensemble.py --out runs/six` with the six `member` jobs of
train_pool.py); when it exists, the tally by category is printed.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
LOG_JSON = HERE / "recipes.json"
REVIEW = HERE / "hard_photos_review.csv"
PER_SHEET = 30
sys.path.insert(0, str(HERE))  # recipes: the split's fingerprint and photo names


def correctness(log: list[dict], min_epochs: int, until: str | None = None) -> tuple[list[str], np.ndarray, str]:
    """Run names, a (networks, photos) boolean matrix of final-checkpoint correctness, and the split's hash: the
    logged runs of at least `min_epochs` (up to the run `until`, the log being in the order runs were added) that
    were validated on the split most of them share."""
    if until is not None:
        names = [entry["run"] for entry in log]
        if until not in names:
            raise SystemExit(f"--until {until}: no such run in {LOG_JSON.name}")
        log = log[: names.index(until) + 1]
    runs = [entry for entry in log if entry["epochs"] >= min_epochs]
    if not runs:
        raise SystemExit(f"no logged run was trained for {min_epochs} epochs or more")
    sha = Counter(entry["val_paths_sha"] for entry in runs).most_common(1)[0][0]
    runs = [entry for entry in runs if entry["val_paths_sha"] == sha]
    matrix = np.array([[c == "1" for c in entry["plain"]["correct"]] for entry in runs])
    return [entry["run"] for entry in runs], matrix, sha


def summary(matrix: np.ndarray, min_epochs: int, target: float = 0.95) -> np.ndarray:
    """Print what the share of networks right on each photo allows; return that share per photo."""
    share = matrix.mean(0)
    n_nets, n_photos = matrix.shape
    singles = matrix.mean(1)
    print(
        f"{n_nets} networks of {min_epochs} epochs or more, {n_photos} validation photos (final checkpoints, one view)"
    )
    print(f"  one network alone: {singles.mean():.4f} on average ({singles.min():.4f} to {singles.max():.4f})")
    print(f"  a majority of them right: {(share > 0.5).mean():.4f}   at least one right: {(share > 0).mean():.4f}")
    for limit, words in ((0.0, "none of them"), (0.25, "a quarter or fewer"), (0.5, "half or fewer")):
        count = int((share <= limit).sum())
        print(f"  photos that {words} get right: {count} ({count / n_photos:.2%})")
    needed = math.ceil(target * n_photos - 1e-9) - int((share > 0.5).sum())
    print(f"  {target:.0%} needs {needed} photos more than the majority vote wins, from those half or fewer get right")
    return share


def write_sheets(
    share: np.ndarray, n_nets: int, sha: str, data: str, out: Path, limit: float, model: str = "default"
) -> None:
    import torch

    from heritage_cnn.base.figures import image_grid
    from heritage_cnn.inference.classifier import Classifier
    from heritage_cnn.training.config import TrainConfig
    from recipes import paths_sha, photo_name, validation_set

    val = validation_set(TrainConfig(data=data, out="-"))
    if paths_sha(val.paths) != sha:
        raise SystemExit(f"{data}: the rebuilt validation split is not the one in {LOG_JSON.name}")
    hard = np.flatnonzero(share <= limit)
    hard = hard[np.argsort(share[hard], kind="stable")]
    classifier = Classifier.load(model)
    probs = classifier.probabilities(val.images[torch.as_tensor(hard)])
    names = val.display_names
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, (index, p) in enumerate(zip(hard.tolist(), probs, strict=True), start=1):
        label, answer = names[int(val.labels[index])], names[int(p.argmax())]
        right = round(float(share[index]) * n_nets)
        photo = photo_name(val.paths[index])
        rows.append(
            {
                "number": k,
                "photo": photo,
                "label": label,
                "default_answer": answer,
                "default_probability": f"{float(p.max()):.3f}",
                "networks_right": f"{right}/{n_nets}",
            }
        )
    with open(out / "hard_photos.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    starts = range(0, len(rows), PER_SHEET)
    for sheet, start in enumerate(starts, start=1):
        chunk = rows[start : start + PER_SHEET]
        images = val.images[torch.as_tensor(hard[start : start + PER_SHEET])].float() / 255
        images = torch.nn.functional.interpolate(images, scale_factor=2, mode="bilinear", align_corners=False)
        titles = [f"{r['number']}: {r['label']}" for r in chunk]
        captions = [f"-> {r['default_answer']} ({r['networks_right']})" for r in chunk]
        image_grid(images.clamp(0, 1), titles, 6, out / f"sheet-{sheet}.png", captions)
    print(f"wrote {out / 'hard_photos.csv'} and {len(starts)} sheets ({len(rows)} photos)")


def tally_review() -> None:
    if not REVIEW.exists():
        return
    with open(REVIEW, newline="") as f:
        rows = list(csv.DictReader(f))
    counts = Counter(row["category"] for row in rows)
    print(f"{REVIEW.name}: {len(rows)} photos reviewed")
    for category, count in counts.most_common():
        pairs = Counter(
            f"{r['label']} -> {r['default_answer']}"
            for r in rows
            if r["category"] == category and r["label"] != r["default_answer"]
        )
        won = sum(r["label"] == r["default_answer"] for r in rows if r["category"] == category)
        common = ", ".join(f"{pair} {n}" for pair, n in pairs.most_common(3))
        print(
            f"  {category}: {count} ({count / len(rows):.0%}); the shipped default wins {won}; most common mistakes: {common}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--min-epochs", type=int, default=45, help="networks trained at least this long")
    parser.add_argument("--until", help="only the runs logged up to this one (the review read the photos as of it)")
    parser.add_argument("--data", help="rebuild the split from this dataset and write the sheets")
    parser.add_argument("--out", type=Path, default=Path("runs/hard"))
    parser.add_argument("--model", default="default", help="whose answers caption the sheets (default: default)")
    parser.add_argument("--share", type=float, default=0.5, help="sheets of the photos at most this share gets right")
    args = parser.parse_args()
    names, matrix, sha = correctness(json.loads(LOG_JSON.read_text()), args.min_epochs, args.until)
    share = summary(matrix, args.min_epochs)
    if args.data:
        write_sheets(share, len(names), sha, args.data, args.out, args.share, args.model)
    tally_review()


if __name__ == "__main__":
    main()
