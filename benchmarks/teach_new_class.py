"""Can `heritage teach` add a class from 20 or 50 photos? (docs/teach.md, "Benchmark: a new class")

    python benchmarks/teach_new_class.py bases --work /tmp/teach_loco      # four base networks, ~4 min each
    python benchmarks/teach_new_class.py teach --work /tmp/teach_loco --out benchmarks/teach_new_class
    python benchmarks/teach_new_class.py bases --tuning --work /tmp/teach_loco      # the tuning class's base
    python benchmarks/teach_new_class.py tune --work /tmp/teach_loco --seed 0 --settings taught_per_batch=16
    python benchmarks/teach_new_class.py ceiling --work /tmp/teach_loco    # a linear fit on all the class's photos
    python benchmarks/teach_new_class.py bases --tuning --base-recipe full --work runs/teach_full   # a longer base
    python benchmarks/teach_new_class.py tradeoff --work runs/teach_full   # recall against the known classes' cost

Leave one class out: for each class of CLASSES, `bases` hard-links the training side of the project's validation
split (the 10-class split every figure uses), less that class, into WORK/<class>/data and trains a base network on
it with the quick recipe. `teach` draws 20 and 50 of the left-out class's training-side photos (three seeds), runs
`heritage teach` on the base with them, and scores every taught model on the whole validation split: the new class's
recall, the nine known classes' accuracy against the base's, and the time `teach` took. The protocol, declared
before the runs, is in docs/teach.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from heritage_cnn.base.io import atomic_write_json, atomic_write_text
from heritage_cnn.data.folders import ImageSet, find_layout, load_images
from heritage_cnn.data.split import make_split
from run import data_root, hardware

ALL_CLASSES = [
    "altar",
    "apse",
    "bell_tower",
    "column",
    "dome(inner)",
    "dome(outer)",
    "flying_buttress",
    "gargoyle",
    "stained_glass",
    "vault",
]
# Drawn before any run, by the number: random.Random(36).sample(ALL_CLASSES, 4).
CLASSES = random.Random(36).sample(ALL_CLASSES, 4)
# The class the method's settings were tuned on, never reported: random.Random(3636).choice of the six others.
TUNING_CLASS = "bell_tower"
SEEDS = (0, 1, 2)
SIZES = (20, 50)
BASE_COMMAND = ["--val-fraction", "0.1", "--seed", "0", "-q"]  # after --recipe (quick unless --base-recipe)


def heritage(*args: str) -> list[str]:
    return [sys.executable, "-m", "heritage_cnn.cli", *args]


def split_of(root: Path) -> tuple[ImageSet, ImageSet]:
    """The project's validation split of the whole training folder (train side, validation side)."""
    images = load_images(find_layout(root).train, require_every_class=True)
    return make_split(images)


def link_base_data(train: ImageSet, left_out: str, folder: Path) -> int:
    """Hard-link the training side, less `left_out`, into folder/<class>/ (the user's photos stay untouched)."""
    count = 0
    for path, label in zip(train.paths, train.labels.tolist(), strict=True):
        name = train.classes[label]
        if name == left_out:
            continue
        target = folder / name / Path(path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.link(path, target)
        count += 1
    return count


def bases(work: Path, classes: list[str], recipe: str = "quick") -> None:
    train, _ = split_of(data_root())
    for left_out in classes:
        base = work / left_out
        if (base / "trained").exists():
            print(f"{left_out}: base already trained in {base / 'run'}")
            continue
        count = link_base_data(train, left_out, base / "data")
        print(f"{left_out}: {count} photos of nine classes in {base / 'data'}; training", flush=True)
        started = time.perf_counter()
        command = heritage("train", "--data", str(base / "data"), "--out", str(base / "run"), "--recipe", recipe)
        command += BASE_COMMAND
        if (base / "run").exists():
            command.append("--resume")
        subprocess.run(command, check=True)
        (base / "trained").write_text(f"{time.perf_counter() - started:.0f} s\n")
        print(f"{left_out}: base trained in {(time.perf_counter() - started) / 60:.1f} min", flush=True)


def draw(train: ImageSet, name: str, size: int, seed: int, base: Path | None = None) -> list[str]:
    """`size` training-side photos of class `name`, drawn with `seed`; with `base` (a run), only those that are not
    near-duplicates of the photos it trained on (a few are, under another label: teach would skip them)."""
    index = [i for i, label in enumerate(train.labels.tolist()) if train.classes[label] == name]
    if base is not None:
        from heritage_cnn.data.split import perceptual_hashes
        from heritage_cnn.inference.evaluate import near_any, trained_on
        from heritage_cnn.models.checkpoint import load_checkpoint

        hashes, distance = trained_on(load_checkpoint(base))
        seen = near_any(perceptual_hashes(train.images[index]), hashes, distance)
        index = [i for i, s in zip(index, seen, strict=True) if not s]
    paths = [train.paths[i] for i in index]
    rng = np.random.default_rng(seed)
    return [paths[i] for i in sorted(rng.choice(len(paths), size=size, replace=False))]


def paired(taught: np.ndarray, base: np.ndarray) -> dict:
    """Mean difference of two 0/1 arrays on the same photos, with a 95 % normal interval of the paired difference."""
    diff = taught.astype(float) - base.astype(float)
    half = 1.959964 * diff.std(ddof=1) / math.sqrt(len(diff)) if len(diff) > 1 else math.nan
    return {"difference": float(diff.mean()), "ci95": [float(diff.mean() - half), float(diff.mean() + half)]}


def score(model: Path, val: ImageSet, name: str, base_correct: np.ndarray | None = None) -> dict:
    """Recall of `name` and the other classes' correct answers (0/1 per photo) on the validation side."""
    from heritage_cnn.inference.classifier import Classifier

    classifier = Classifier.load(model)
    probs, scores = classifier.scored(val.images)
    predicted = [classifier.classes[i] for i in probs.argmax(1).tolist()]
    truth = [val.classes[i] for i in val.labels.tolist()]
    new = np.array([t == name for t in truth])
    hit = np.array([p == t for p, t in zip(predicted, truth, strict=True)])
    known = (
        np.array([s >= classifier.open_set.threshold for s in scores.tolist()])
        if scores is not None
        else np.ones(len(hit), dtype=bool)
    )
    result = {
        "recall": float(hit[new].mean()) if name in classifier.classes else None,
        "recall_and_known": float((hit & known)[new].mean()) if name in classifier.classes else None,
        "known_classes_accuracy": float(hit[~new].mean()),
        "known_correct": hit[~new],
        "new_photos": int(new.sum()),
        "known_photos": int((~new).sum()),
    }
    if base_correct is not None:
        result["known_change"] = paired(hit[~new], base_correct)
    return result


def teach_runs(work: Path, modes: tuple[str, ...]) -> list[dict]:
    train, val = split_of(data_root())
    runs = []
    for name in CLASSES:
        base = work / name
        base_score = score(base / "run", val, name)
        print(f"{name}: base, nine known classes {base_score['known_classes_accuracy']:.4f}", flush=True)
        for mode in modes:
            for size in SIZES:
                for seed in SEEDS:
                    folder = base / f"photos_{size}_{seed}" / name
                    if not folder.exists():
                        folder.mkdir(parents=True)
                        for path in draw(train, name, size, seed, base / "run"):
                            os.link(path, folder / Path(path).name)
                    out = base / f"taught_{mode}_{size}_{seed}"
                    for suffix in (".safetensors", ".json"):
                        out.with_suffix(suffix).unlink(missing_ok=True)
                    replay = ["--data", str(base / "data")] if mode in ("data", "bound1") else []
                    if mode == "bound1":  # docs/teach.md, "Recall against what the known classes lose"
                        replay += ["--max-known-loss", "1"]
                    command = heritage(
                        "teach",
                        str(folder.parent),
                        "--model",
                        str(base / "run"),
                        "--out",
                        str(out),
                        "--seed",
                        str(seed),
                        *replay,
                        "-q",
                    )
                    started = time.perf_counter()
                    subprocess.run(command, check=True, capture_output=True)
                    seconds = time.perf_counter() - started
                    result = score(out, val, name, base_score["known_correct"])
                    result.pop("known_correct")
                    row = {"class": name, "mode": mode, "photos": size, "seed": seed, "seconds": seconds, **result}
                    print(json.dumps(row), flush=True)
                    runs.append(row)
    return runs


def markdown(result: dict) -> str:
    lines = [
        f"# `heritage teach`: a new class from 20 or 50 photos ({result['date']}, {result['hardware']['cpu']})",
        "",
        "Leave one class out (docs/teach.md, protocol declared before the runs). Mean over seeds "
        + ", ".join(map(str, SEEDS))
        + " (min to max). Figures on the duplicate-aware validation split.",
        "",
        "| class | replay | photos | recall | recall, and called one of the classes | nine known: change (pt) | teach time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    runs = result["runs"]
    keys = sorted({(r["class"], r["mode"], r["photos"]) for r in runs}, key=lambda k: (CLASSES.index(k[0]), k[1], k[2]))
    for name, mode, size in keys:
        rows = [r for r in runs if (r["class"], r["mode"], r["photos"]) == (name, mode, size)]

        def spread(values: list[float], scale: float = 100) -> str:
            return f"{np.mean(values) * scale:.1f} ({min(values) * scale:.1f} to {max(values) * scale:.1f})"

        change = [r["known_change"]["difference"] for r in rows]
        lines.append(
            f"| {name} | {mode} | {size} | {spread([r['recall'] for r in rows])} | "
            f"{spread([r['recall_and_known'] for r in rows])} | {spread(change)} | "
            f"{spread([r['seconds'] for r in rows], 1)} |"
        )
    lines += [
        "",
        "Teach time: the wall time of the command (process start included) on the project's two cores; "
        "docs/teach.md says what else ran.",
    ]
    lines += ["", "Commands:", "", *[f"    {c}" for c in result.get("commands", [])], ""]
    return "\n".join(lines)


def tune(work: Path, size: int, seed: int, settings: list[str], max_known_loss: float | None = None) -> None:
    """One in-process `teach` on the tuning class's base (`--data` replay, FitConfig fields as NAME=VALUE): the rows
    of docs/teach.md's tuning table. `--settings stats` runs the last-layer fit without --data instead."""
    from heritage_cnn.data.folders import load_images
    from heritage_cnn.inference.teach_photos import read_new_classes
    from heritage_cnn.models.checkpoint import load_checkpoint
    from heritage_cnn.training.teach import replay_split, teach
    from heritage_cnn.training.teach_fit import FitConfig

    train, val = split_of(data_root())
    base, name = work / TUNING_CLASS, TUNING_CLASS
    parent = load_checkpoint(base / "run")
    folder = base / f"photos_{size}_{seed}" / name
    if not folder.exists():
        folder.mkdir(parents=True)
        for path in draw(train, name, size, seed, base / "run"):
            os.link(path, folder / Path(path).name)
    stats = settings == ["stats"]
    fields = dict(item.split("=", 1) for item in ([] if stats else settings))
    config = FitConfig(seed=seed, **{k: type(getattr(FitConfig(), k))(v) for k, v in fields.items()})
    data, held_out = (None, None) if stats else replay_split(load_images(base / "data", parent.classes), parent)
    out = base / f"tuned_{time.time_ns()}"
    started = time.perf_counter()
    photos = read_new_classes(folder.parent, parent.classes)
    taught = teach(parent, photos, out, data, config, lambda _: None, held_out, max_known_loss)
    seconds = time.perf_counter() - started
    base_score = score(base / "run", val, name)
    result = score(out, val, name, base_score["known_correct"])
    change = result["known_change"]["difference"] * 100
    bound = (
        f" (--max-known-loss {max_known_loss:g}: offset {taught.cost.offset:+.2f})"
        if max_known_loss is not None
        else ""
    )
    print(
        f"{name} {size} photos seed {seed} {settings}{bound}: recall {result['recall']:.1%}, known {change:+.2f} pt, "
        f"{seconds:.0f} s"
    )


def ceiling(work: Path, name: str) -> None:
    """What a linear classifier on a base's frozen features reaches on its left-out class when fitted on all of that
    class's training-side photos (not 20): scikit-learn's logistic regression, balanced, on the penultimate and the
    pooled features; docs/teach.md, "What limits it"."""
    import warnings

    from sklearn.linear_model import LogisticRegression

    from heritage_cnn.inference.classifier import Classifier, network_features
    from heritage_cnn.models.checkpoint import load_checkpoint
    from heritage_cnn.models.openset import PENULTIMATE, POOLED

    train, val = split_of(data_root())
    classifier = Classifier(load_checkpoint(work / name / "run"), bf16=False, tta="none")
    k, truth = train.classes.index(name), val.labels.numpy()
    for layer in (PENULTIMATE, POOLED):
        x_train, x_val = (network_features(classifier, s.images, layer)[0].numpy() for s in (train, val))
        for c in (0.1, 1.0):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit = LogisticRegression(C=c, max_iter=2000, class_weight="balanced").fit(x_train, train.labels.numpy())
            predicted = fit.predict(x_val)
            recall = (predicted[truth == k] == k).mean()
            others = (predicted[truth != k] == truth[truth != k]).mean()
            print(f"{name} {layer} C={c}: recall {recall:.1%}, the nine others {others:.1%}")


OFFSETS = (-3.0, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0)  # added to the new class's logit: the trade-off's points


def tradeoff(work: Path) -> None:
    """The tuning class's recall against what the nine known classes lose, as the new class's logit is moved by each
    of OFFSETS, for two fits on the same frozen features of its base: the shipped one with `--data` (both fully
    connected layers refitted, `fit_hidden_and_last`) and one that keeps the known classes' head fixed and learns
    only the new class's row on the replayed photos' real features (`fit_last_layer`, known rows frozen); each with
    20 and 50 photos (seeds 0, 1, 2, the draws of `tune`) and with every training-side photo of the class. One view,
    no test-time augmentation, as the base is scored; docs/teach.md, "Recall against what the known classes lose"."""
    import torch

    from heritage_cnn.inference.classifier import Classifier, network_features
    from heritage_cnn.models.checkpoint import load_checkpoint
    from heritage_cnn.models.ensemble import networks
    from heritage_cnn.models.openset import POOLED
    from heritage_cnn.training.teach import _replay_labels, replay_split, views
    from heritage_cnn.training.teach_fit import FitConfig, fit_hidden_and_last, fit_last_layer, imprint

    train, val = split_of(data_root())
    base, name = work / TUNING_CLASS, TUNING_CLASS
    parent = load_checkpoint(base / "run")
    head = networks(parent.model)[0].head
    classifier = Classifier(parent, bf16=False, tta="none")
    data, _ = replay_split(load_images(base / "data", parent.classes), parent)
    replayed = network_features(classifier, torch.cat([data.images, data.images.flip(3)]), POOLED)[0]
    replayed_labels = _replay_labels(data, parent.classes, "--data").repeat(2)
    pooled_val = network_features(classifier, val.images, POOLED)[0]
    known = len(parent.classes)
    truth = torch.tensor(
        [
            parent.classes.index(c) if c in parent.classes else known
            for c in (val.classes[i] for i in val.labels.tolist())
        ]
    )
    new = truth == known
    with torch.no_grad():
        base_correct = head.fc2(torch.relu(head.fc1(pooled_val))).argmax(1) == truth
    draws = {
        (size, seed): [train.paths.index(p) for p in draw(train, name, size, seed, base / "run")]
        for size in SIZES
        for seed in SEEDS
    }
    draws[("all", 0)] = [i for i, label in enumerate(train.labels.tolist()) if train.classes[label] == name]
    print(f"{name}: base, the nine known classes {base_correct[~new].float().mean():.1%} (one view)")
    with torch.no_grad():
        hidden = torch.relu(head.fc1(replayed))
        means = torch.stack([hidden[replayed_labels == k].mean(0) for k in range(known)])
    curves: dict[tuple, list] = {}
    for (size, seed), index in draws.items():
        taught = network_features(classifier, views(train.images[index]), POOLED)[0]
        labels = torch.full((len(taught),), known)
        config = FitConfig(seed=seed)
        with torch.no_grad():
            hidden_taught = torch.relu(head.fc1(taught))
        fc1, fc2 = fit_hidden_and_last(head, replayed, replayed_labels, taught, labels, 1, config)
        row = fit_last_layer(
            head.fc2,
            torch.cat([hidden, hidden_taught]),
            torch.cat([replayed_labels, labels]),
            imprint(head.fc2, hidden_taught.mean(0, keepdim=True), means),
            False,
            config,
        )
        with torch.no_grad():
            logits = {
                "both layers refitted": fc2(torch.relu(fc1(pooled_val))),
                "known head fixed": row(torch.relu(head.fc1(pooled_val))),
            }
        for fit, z in logits.items():
            for offset in OFFSETS:
                hit = torch.cat([z[:, :known], z[:, known:] + offset], 1).argmax(1) == truth
                change = (hit[~new].float().mean() - base_correct[~new].float().mean()).item() * 100
                curves.setdefault((fit, size, offset), []).append((hit[new].float().mean().item(), change))
    for (fit, size, offset), points in curves.items():
        recall, change = (float(np.mean(v)) for v in zip(*points, strict=True))
        print(f"{fit}, {size} photos, offset {offset:+.1f}: recall {recall:.1%}, the nine known {change:+.2f} pt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=("bases", "teach", "tune", "ceiling", "tradeoff"))
    parser.add_argument("--work", type=Path, required=True, help="folder for the base data, runs and taught models")
    parser.add_argument("--out", type=Path, help="teach: results prefix (writes <out>.json, <out>.md)")
    parser.add_argument("--tuning", action="store_true", help="bases, ceiling: the tuning class's base only")
    parser.add_argument(
        "--base-recipe", default="quick", choices=("quick", "full"), help="bases: their recipe; teach: recorded"
    )
    parser.add_argument("--photos", type=int, default=20, help="tune: photos of the tuning class")
    parser.add_argument("--seed", type=int, default=0, help="tune: seed of their draw and of the fit")
    parser.add_argument("--settings", nargs="*", default=[], help="tune: FitConfig NAME=VALUE, or 'stats'")
    parser.add_argument(
        "--modes", default="stats,data", help="teach: stats (no --data), data, bound1 (--data --max-known-loss 1)"
    )
    parser.add_argument("--max-known-loss", type=float, help="tune: teach's bound on the known classes' loss")
    args = parser.parse_args()
    if args.stage == "bases":
        bases(args.work, [TUNING_CLASS] if args.tuning else CLASSES, args.base_recipe)
        return
    if args.stage == "ceiling":
        for name in [TUNING_CLASS] if args.tuning else [*CLASSES, TUNING_CLASS]:
            if (args.work / name / "trained").exists():
                ceiling(args.work, name)
            else:
                print(f"{name}: no base trained in {args.work / name}; skipped")
        return
    if args.stage == "tradeoff":
        tradeoff(args.work)
        return
    if args.stage == "tune":
        tune(args.work, args.photos, args.seed, args.settings, args.max_known_loss)
        return
    runs = teach_runs(args.work, tuple(args.modes.split(",")))
    out = args.out or Path(__file__).with_name("teach_new_class")
    recipe = [] if args.base_recipe == "quick" else ["--base-recipe", args.base_recipe]
    modes = [] if args.modes == parser.get_default("modes") else ["--modes", args.modes]
    commands = [
        " ".join(["python benchmarks/teach_new_class.py bases", *recipe, "--work", str(args.work)]),
        " ".join(
            ["python benchmarks/teach_new_class.py teach", *recipe, *modes, "--work", str(args.work), "--out", str(out)]
        ),
    ]
    result = {"date": datetime.date.today().isoformat(), "hardware": hardware(), "classes": CLASSES}
    result |= {"base_recipe": args.base_recipe, "commands": commands, "runs": runs}
    atomic_write_json(out.with_suffix(".json"), result)
    atomic_write_text(out.with_suffix(".md"), markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
