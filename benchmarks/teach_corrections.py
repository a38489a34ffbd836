"""Do corrections stick? (docs/teach.md, "Benchmark: corrections")

    python benchmarks/teach_corrections.py --work /tmp/teach_corrections --out benchmarks/teach_corrections

The validation split's photos (2,026, duplicate-aware) are cut in two halves by near-duplicate group, stratified by
class (seed 0). Half A is sorted by the shipped model as a user would (`heritage sort`, copies); every photo it
filed wrongly, `_uncertain/` and `_none/` included, is then moved into its true class folder, as a user correcting the
sort would. `heritage teach --corrections` learns from that folder (with `--data`, the Kaggle training folder, and
without), and both models score half B: the accuracy change against the shipped model with a paired 95 % interval,
and each class's recall change with its own.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from heritage_cnn.base.io import atomic_write_json, atomic_write_text
from heritage_cnn.data.split import group_near_duplicates, perceptual_hashes
from heritage_cnn.inference.classifier import Classifier
from run import data_root, hardware
from teach_new_class import heritage, paired, split_of

MODEL = "default"


def halves(val, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of half A and half B: StratifiedGroupKFold with two folds over near-duplicate groups."""
    from sklearn.model_selection import StratifiedGroupKFold

    groups = group_near_duplicates(perceptual_hashes(val.images))
    splitter = StratifiedGroupKFold(n_splits=2, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        a, b = next(splitter.split(np.zeros(len(val)), val.labels.numpy(), groups))
    return np.sort(a), np.sort(b)


def corrected_sort(val, half_a: np.ndarray, work: Path) -> dict:
    """Sort half A with the shipped model, then move every misfiled photo into its true class folder."""
    photos = work / "half_a"
    for i in half_a:
        target = photos / val.classes[int(val.labels[i])] / Path(val.paths[i]).name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(val.paths[i], target)
    sorted_dir = work / "sorted"
    subprocess.run(heritage("sort", str(photos), "--out", str(sorted_dir), "--model", MODEL, "-q"), check=True)
    moved = 0
    with open(sorted_dir / "manifest.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            truth, filed = Path(row["source"]).parent.name, Path(row["destination"])
            if filed.parent.name != truth:  # the user moves it into its true class's folder
                (sorted_dir / truth).mkdir(exist_ok=True)
                target = sorted_dir / truth / filed.name
                filed.rename(target if not target.exists() else target.with_name(f"moved_{filed.name}"))
                moved += 1
    return {"photos": len(half_a), "moved": moved}


def scored(model: str | Path, val, half_b: np.ndarray) -> np.ndarray:
    """0/1 per photo of half B: the model's top class is its label."""
    classifier = Classifier.load(model)
    probs = classifier.probabilities(val.images[half_b])
    predicted = [classifier.classes[i] for i in probs.argmax(1).tolist()]
    return np.array([p == val.classes[int(val.labels[i])] for p, i in zip(predicted, half_b, strict=True)])


def per_class(val, half_b: np.ndarray, taught: np.ndarray, base: np.ndarray) -> dict:
    labels = val.labels.numpy()[half_b]
    return {
        name: {"photos": int((labels == c).sum()), **paired(taught[labels == c], base[labels == c])}
        for c, name in enumerate(val.classes)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="a new folder for half A, its sort and the models")
    parser.add_argument("--out", type=Path, help="results prefix (writes <out>.json, <out>.md)")
    args = parser.parse_args()
    _, val = split_of(data_root())
    half_a, half_b = halves(val)
    record = args.work / "corrected.json"
    if not record.exists():
        atomic_write_json(record, corrected_sort(val, half_a, args.work))
    corrected = json.loads(record.read_text())
    base = scored(MODEL, val, half_b)
    wrong_a = half_a[~scored(MODEL, val, half_a)]  # the photos the user corrected whose top class was wrong
    result = {"date": datetime.date.today().isoformat(), "hardware": hardware(), "half_a": corrected}
    result["command"] = "python benchmarks/teach_corrections.py " + " ".join(sys.argv[1:])
    result |= {"half_b_photos": len(half_b), "shipped_accuracy_b": float(base.mean()), "runs": {}}
    for mode, extra in (("data", ["--data", str(data_root())]), ("stats", [])):
        out = args.work / f"taught_{mode}"
        for suffix in (".safetensors", ".json"):
            out.with_suffix(suffix).unlink(missing_ok=True)
        command = heritage("teach", "--corrections", str(args.work / "sorted"), "--out", str(out), *extra, "-q")
        started = time.perf_counter()
        subprocess.run(command, check=True)
        seconds = time.perf_counter() - started
        taught = scored(out, val, half_b)
        result["runs"][mode] = {
            "seconds": seconds,
            "wrong_a_photos": len(wrong_a),
            "wrong_a_now_right": float(scored(out, val, wrong_a).mean()),
            "accuracy_b": float(taught.mean()),
            "change": paired(taught, base),
            "per_class": per_class(val, half_b, taught, base),
        }
        print(mode, result["runs"][mode]["accuracy_b"], result["runs"][mode]["change"], flush=True)
    out = args.out or Path(__file__).with_name("teach_corrections")
    atomic_write_json(out.with_suffix(".json"), result)
    atomic_write_text(out.with_suffix(".md"), markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    lines = [
        f"# `heritage teach --corrections`: half A corrected, half B scored ({result['date']}, "
        f"{result['hardware']['cpu']})",
        "",
        f"Shipped `{MODEL}` on half B ({result['half_b_photos']} validation photos, duplicate-aware split): "
        f"{result['shipped_accuracy_b']:.2%}. Half A: {result['half_a']['photos']} photos, "
        f"{result['half_a']['moved']} moved by hand to their true class after `heritage sort`.",
        "",
        "| replay | half A's wrong photos now right | accuracy on B | change (pt, paired 95 %) "
        "| classes worse by more than their interval | time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for mode, run in result["runs"].items():
        lo, hi = run["change"]["ci95"]
        worse = [n for n, c in run["per_class"].items() if c["ci95"][1] < 0]
        taught = f"{run['wrong_a_now_right']:.1%} of {run['wrong_a_photos']}" if "wrong_a_photos" in run else "-"
        lines.append(
            f"| {mode} | {taught} | {run['accuracy_b']:.2%} | {run['change']['difference'] * 100:+.2f} ({lo * 100:+.2f} to "
            f"{hi * 100:+.2f}) | {', '.join(worse) or 'none'} | {run['seconds']:.0f} |"
        )
    lines += [
        "",
        "Half A's wrong photos: those whose top class the shipped model got wrong, which the user corrected and `teach`"
        " learned from; the share the taught model gets right says the corrections were learned, not that they carry.",
        "Time: the wall time of the command (process start included) on the project's two cores.",
        "",
        "Command:",
        "",
        f"    {result.get('command') or __doc__.splitlines()[2].strip()}",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
