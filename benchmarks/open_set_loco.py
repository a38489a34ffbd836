"""Near out-of-distribution for "none of these": real architecture that is not among the classes a network knows.
(docs/open_set.md, "Leave one class out, declared before measured")

    python benchmarks/open_set_loco.py bases --work /tmp/teach_loco     # ten base networks, ~4 min each
    python benchmarks/open_set_loco.py score --work /tmp/teach_loco --out benchmarks/open_set_loco

For each of the ten classes, `bases` trains a network on the training side of the project's validation split less
that class (`teach_new_class.py`'s bases: the quick recipe, the same command, so the two benchmarks share them), and
`heritage train` fits its none-of-these record at the end, as for every model. `score` reads each base on photos it
never saw: the validation side of its nine classes (the ten, as far as it knows: positives) and every photo of the
left-out class (both sides: negatives), and reports, per class and as the mean over the ten, the AUROC (95 %
bootstrap interval, photos resampled within each group), the FPR at 95 % TPR, and at the base's own operating point
the share of left-out photos still called one of the nine and of the nine's photos called none. Three scores: the
model's own rule (what every command uses), energy at T = 1 and max softmax, all from one float32 pass.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from heritage_cnn.base.io import atomic_write_json, atomic_write_text
from heritage_cnn.data.folders import ImageSet
from heritage_cnn.inference.openset_eval import TPR, scored_logits
from heritage_cnn.models.checkpoint import load_checkpoint
from run import data_root, hardware
from teach_new_class import ALL_CLASSES, bases, split_of

ROUNDS = 1000  # bootstrap resamples of each interval
TARGET = 0.90  # the mean AUROC over the ten


def roc_figures(positives: np.ndarray, negatives: np.ndarray) -> tuple[float, float]:
    """AUROC and FPR at TPR (scikit-learn's curve; higher scores mean "one of the known classes")."""
    from sklearn.metrics import roc_auc_score, roc_curve

    truth = np.r_[np.ones(len(positives)), np.zeros(len(negatives))]
    scores = np.r_[positives, negatives]
    # every threshold: the default drops collinear points, among them the one where TPR may reach 95 %
    fpr, tpr, _ = roc_curve(truth, scores, drop_intermediate=False)
    return float(roc_auc_score(truth, scores)), float(fpr[np.searchsorted(tpr, TPR)])


def auroc_interval(positives: np.ndarray, negatives: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the AUROC, each group resampled on its own."""
    rng = np.random.default_rng(seed)
    draws = [
        roc_figures(rng.choice(positives, len(positives)), rng.choice(negatives, len(negatives)))[0]
        for _ in range(ROUNDS)
    ]
    return float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def pick(images: ImageSet, mask: np.ndarray) -> torch.Tensor:
    return images.images[torch.as_tensor(np.flatnonzero(mask), dtype=torch.long)]


def score_class(work: Path, left_out: str, train: ImageSet, val: ImageSet) -> dict:
    """The three scores of the base that never saw `left_out`, on its positives and negatives."""
    checkpoint = load_checkpoint(work / left_out / "run")
    point = checkpoint.open_set
    if point is None:
        raise SystemExit(f"{work / left_out / 'run'}: no none-of-these record; train it again")
    names = [val.classes[i] for i in val.labels.tolist()]
    positives = pick(val, np.array([n != left_out for n in names]))
    negatives = torch.cat(
        [pick(side, np.array([side.classes[i] == left_out for i in side.labels.tolist()])) for side in (train, val)]
    )
    result: dict = {"class": left_out, "positives": len(positives), "negatives": len(negatives)}
    logits, rule = {}, {}
    for group, images in (("pos", positives), ("neg", negatives)):
        logits[group], rule[group] = scored_logits(checkpoint, point, images)
    scores = {
        "rule": (rule["pos"].numpy(), rule["neg"].numpy()),
        "energy": tuple(torch.logsumexp(logits[g], 1).numpy() for g in ("pos", "neg")),
        "max_softmax": tuple(logits[g].softmax(1).amax(1).numpy() for g in ("pos", "neg")),
    }
    for name, (pos, neg) in scores.items():
        auroc, fpr = roc_figures(pos, neg)
        result[name] = {"auroc": auroc, "auroc_95": auroc_interval(pos, neg), "fpr_at_95_tpr": fpr}
    pos, neg = scores["rule"]
    result["rule"] = {
        **result["rule"],
        "name": point.name,
        "threshold": point.threshold,
        "left_out_called_known": float((neg >= point.threshold).mean()),
        "known_called_none": float((pos < point.threshold).mean()),
    }
    return result


def markdown(result: dict) -> str:
    rows = result["classes"]
    lines = [
        f"# None of these, leave one class out ({result['date']}, {result['hardware']['cpu']})",
        "",
        "Each base knows nine classes (the quick recipe); positives: the validation side of its nine classes; "
        "negatives: every photo of the tenth. `python benchmarks/open_set_loco.py score --work WORK`.",
        "",
        "| left out | positives | negatives | AUROC, the model's rule | energy | max softmax | FPR@95 %TPR (rule) "
        "| left-out photos called known at the model's threshold | known photos called none |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(row: dict, name: str) -> str:
        low, high = row[name]["auroc_95"]
        return f"{row[name]['auroc']:.3f} ({low:.3f}–{high:.3f})"

    for row in rows:
        lines.append(
            f"| {row['class']} | {row['positives']} | {row['negatives']} | {cell(row, 'rule')} | {cell(row, 'energy')} "
            f"| {cell(row, 'max_softmax')} | {100 * row['rule']['fpr_at_95_tpr']:.1f} % "
            f"| {100 * row['rule']['left_out_called_known']:.1f} % | {100 * row['rule']['known_called_none']:.1f} % |"
        )
    means = {name: np.mean([row[name]["auroc"] for row in rows]) for name in ("rule", "energy", "max_softmax")}
    lines += [
        f"| **mean over {len(rows)}** | | | **{means['rule']:.3f}** | {means['energy']:.3f} | {means['max_softmax']:.3f} "
        "| | | |",
        "",
        f"Target: mean AUROC >= {TARGET:.2f} for the model's rule: **{'met' if means['rule'] >= TARGET else 'not met'}**.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=("bases", "score"))
    parser.add_argument("--work", type=Path, required=True, help="folder of the base data and runs")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("open_set_loco"), help="results prefix")
    args = parser.parse_args()
    if args.stage == "bases":
        bases(args.work, ALL_CLASSES)
        return
    train, val = split_of(data_root())
    rows = []
    for name in ALL_CLASSES:
        rows.append(score_class(args.work, name, train, val))
        row = rows[-1]
        print(f"{name}: AUROC rule {row['rule']['auroc']:.3f}, energy {row['energy']['auroc']:.3f}", flush=True)
    result = {"date": datetime.date.today().isoformat(), "hardware": hardware(), "classes": rows}
    atomic_write_json(args.out.with_suffix(".json"), result)
    atomic_write_text(args.out.with_suffix(".md"), markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
