"""Judge finished training runs on their validation split and append them to the recipe log.

    python benchmarks/recipes.py runs/search/a runs/search/b --ref runs/search/a --note "what changed"

For each run folder: the final checkpoint (`last`, never the best epoch, so that the validation
split is not also used to pick the model) is evaluated on the run's own duplicate-aware
validation split, without test-time augmentation, with the mirror image (flip) and with seven views
(`--tta-multi`). Accuracy and macro F1 carry 95 %
bootstrap intervals; `--ref` adds the paired bootstrap interval of the accuracy difference
against a reference run on the same images, so that a gain of a few images is not read as
progress. One row per run is appended to benchmarks/recipes.md (table) and recipes.json (all figures).

    python benchmarks/recipes.py --pairs runs/gpu/g45-muon-s2=runs/gpu/g56-s2 runs/gpu/g45-muon-s3=runs/gpu/g56-s3

prints each pair's paired difference and one interval for the mean over the pairs (several seeds of two recipes).

    python benchmarks/recipes.py runs/search/a runs/search/b --ensemble
    python benchmarks/recipes.py runs/gpu/m-x96-s40 runs/gpu/m-x96-s41 --ensemble --ref default

(a model file or packaged name such as `default` stands for its members) prints (and logs nothing) the accuracy of the runs' averaged probabilities (the ceiling that distilling these
networks into one could aim at), what each member adds (paired, against the ensemble without it) and, with
`--ref RUN [RUN ...]`, the paired difference against another ensemble.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from heritage_cnn.base.io import atomic_write_json, atomic_write_text, read_json
from heritage_cnn.cli.recipe import command_flags
from heritage_cnn.inference.evaluate import compute_metrics, predict_logits
from heritage_cnn.models.checkpoint import load_checkpoint
from heritage_cnn.models.network import forward_flops, parameter_count
from heritage_cnn.training.config import TrainConfig
from heritage_cnn.training.prepare import prepare_data

HERE = Path(__file__).resolve().parent
LOG_MD, LOG_JSON = HERE / "recipes.md", HERE / "recipes.json"


# spelled out whatever their value, so that a command survives a change of defaults (the optimizer and the depth
# changed once)
SPELLED = frozenset({"epochs", "batch_size", "lr", "optimizer", "model.blocks"})


def command_of(config: TrainConfig) -> str:
    """The `heritage train` command that reproduces the run: the recipe flags that differ from the defaults, from
    the command line's own table (`command_flags`), so that no flag is forgotten here."""
    return "heritage train --out RUN " + " ".join(command_flags(config, SPELLED))


VIEWS = (("plain", "none"), ("tta", "flip"), ("multi", "multi"))  # figure name, augment.tta_views mode
DEVICE = "cpu"  # where checkpoints are judged (--device); CUDA runs in full fp32 (no TF32), as the CPU does
_VAL_SETS: dict[str, Any] = {}  # runs judged in one call usually share their validation split: decode it once


def validation_set(config: TrainConfig) -> Any:
    key = json.dumps([config.data, asdict(config.split), config.limit_per_class, config.seed])
    if key not in _VAL_SETS:
        _, _, _VAL_SETS[key] = prepare_data(replace(config, progress=False), log=lambda message: None)
    return _VAL_SETS[key]


def paths_sha(paths: list[str]) -> str:
    """A short hash of the validation photos as class/file names: the same photos give the same hash wherever
    the data lies, and whether `--data` named the dataset or its train/ folder (runs trained on another machine
    are compared with runs trained here)."""
    return hashlib.sha1("\n".join(map(photo_name, paths)).encode()).hexdigest()[:12]


def photo_name(path: str) -> str:
    """A photo as class/file name, the same wherever the data lies."""
    return f"{Path(path).parent.name}/{Path(path).name}"


def run_config(run: Path, data: str) -> TrainConfig:
    """A run folder's recipe: its config.json, or else the record of it inside its final checkpoint (a run folder
    kept as `last.*` only, e.g. a network taken out of the package) with the data folder given."""
    if (run / "config.json").exists():
        return TrainConfig.from_dict(read_json(run / "config.json"))
    return TrainConfig.from_dict({**load_checkpoint(run / "last").info["recipe"], "data": data, "out": str(run)})


def judge(run: Path, data: str) -> dict[str, Any]:
    """Validation figures of a run's final checkpoint, plus its per-image correctness for paired comparisons."""
    config = run_config(run, data)
    val_set = validation_set(config)
    checkpoint = load_checkpoint(run / "last")
    checkpoint.model.to(DEVICE)
    history = read_json(run / "metrics.json") if (run / "metrics.json").exists() else checkpoint.info["history"]
    figures: dict[str, Any] = {"run": str(run), "command": command_of(config), "epochs": len(history)}
    for name, tta in VIEWS:
        logits = predict_logits(checkpoint.model, val_set.images, checkpoint.normalise, 64, DEVICE, tta=tta)
        probabilities = torch.softmax(logits, 1).cpu().numpy()
        metrics = compute_metrics(val_set.labels.numpy(), probabilities, checkpoint.classes)
        figures[name] = {
            "accuracy": metrics["accuracy"],
            "macro_f1": metrics["macro_f1"],
            "per_class_f1": {
                row["class"]: None if row["f1"] is None else round(row["f1"], 4) for row in metrics["per_class"]
            },
            "correct": "".join("1" if ok else "0" for ok in probabilities.argmax(1) == val_set.labels.numpy()),
        }
    figures["val_images"] = len(val_set)
    figures["params_m"] = parameter_count(checkpoint.model) / 1e6
    figures["mflop"] = forward_flops(checkpoint.model) / 1e6
    figures["train_minutes"] = sum(row["epoch_seconds"] for row in history) / 60
    figures["val_paths_sha"] = paths_sha(val_set.paths)
    return figures


def networks(paths: list[Path], data: str) -> list[tuple[str, TrainConfig, Any]]:
    """(name, recipe, final checkpoint) of each network: a run folder is one; a model file or a packaged name
    (`default`) stands for each of its members, whose recipes travel in its metadata."""
    found = []
    for path in paths:
        if path.is_dir():
            found.append((path.name, run_config(path, data), load_checkpoint(path / "last")))
            continue
        model = load_checkpoint(path)
        for index in range(model.member_count):
            member = model.member(index)
            name = member.info.get("name", f"{path.name}#{index}")
            found.append((name, TrainConfig.from_dict({**member.info["recipe"], "data": data, "out": name}), member))
    return found


def ensemble(runs: list[Path], data: str) -> tuple[dict[str, Any], dict[str, np.ndarray], np.ndarray, list[str]]:
    """Accuracy and macro F1 of the mean softmax of several networks' final checkpoints (same validation split),
    plus each network's probabilities per view, the labels (for paired comparisons) and the networks' names."""
    found = networks(runs, data)
    sets = [validation_set(config) for _, config, _ in found]
    if len({paths_sha(s.paths) for s in sets}) > 1:
        sys.exit("the runs were validated on different images; no ensemble figure")
    val_set, figures, per_run = sets[0], {}, {}
    checkpoints = [checkpoint for _, _, checkpoint in found]
    for checkpoint in checkpoints:
        checkpoint.model.to(DEVICE)
    labels = val_set.labels.numpy()
    for name, tta in VIEWS:
        per_run[name] = np.stack(
            [
                torch.softmax(predict_logits(c.model, val_set.images, c.normalise, 64, DEVICE, tta=tta), 1)
                .cpu()
                .numpy()
                for c in checkpoints
            ]
        )
        metrics = compute_metrics(labels, per_run[name].mean(0), checkpoints[0].classes)
        figures[name] = {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}
    return figures, per_run, labels, [name for name, _, _ in found]


def _correct(probabilities: np.ndarray, labels: np.ndarray) -> str:
    return "".join("1" if ok else "0" for ok in probabilities.argmax(1) == labels)


def _delta(a: str, b: str) -> str:
    d, low, high = paired_difference(a, b)
    return f"{d * 100:+.2f} pt ({low * 100:+.1f}…{high * 100:+.1f})"


def report_ensemble(runs: list[Path], ref: list[Path] | None, data: str) -> None:
    """Print the ensemble's figures; its paired difference against each member alone, against each
    leave-one-out ensemble (what each member adds) and against a reference ensemble (`--ref`)."""
    figures, per_run, labels, names = ensemble(runs, data)
    print(
        f"ensemble of {len(names)} ({', '.join(names)}): "
        f"accuracy {_ci(figures['plain']['accuracy'])}, macro F1 {figures['plain']['macro_f1']['value']:.4f}; "
        f"with flip TTA {_ci(figures['tta']['accuracy'])}, macro F1 {figures['tta']['macro_f1']['value']:.4f}; "
        f"with 7-view TTA {_ci(figures['multi']['accuracy'])}, macro F1 {figures['multi']['macro_f1']['value']:.4f}"
    )
    probabilities = per_run["plain"]
    whole = _correct(probabilities.mean(0), labels)
    for i, name in enumerate(names):
        alone = _correct(probabilities[i], labels)
        line = f"  {name}: alone {alone.count('1') / len(alone):.4f}; the ensemble vs it alone {_delta(whole, alone)}"
        if len(names) > 2:
            without = _correct(np.delete(probabilities, i, axis=0).mean(0), labels)
            line += f"; what it adds (vs the ensemble without it) {_delta(whole, without)}"
        print(line)
    if ref:
        ref_figures, ref_runs, ref_labels, ref_names = ensemble(ref, data)
        if not np.array_equal(ref_labels, labels):
            sys.exit("the reference was validated on different images; no paired difference")
        reference = _correct(ref_runs["plain"].mean(0), labels)
        flipped = _correct(per_run["tta"].mean(0), labels)
        print(
            f"vs the reference ensemble of {len(ref_names)} ({', '.join(ref_names)}, "
            f"{ref_figures['plain']['accuracy']['value']:.4f}, one view): {_delta(whole, reference)}; "
            f"this ensemble with flip TTA vs it: {_delta(flipped, reference)}"
        )


def paired_difference(a: str, b: str, rounds: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Accuracy of a minus accuracy of b on the same images (per-image "1"/"0" strings), with a paired
    95 % bootstrap interval."""
    return _bootstrap_mean(_differences(a, b), rounds, seed)


def _differences(a: str, b: str) -> np.ndarray:
    return np.array([int(x) - int(y) for x, y in zip(a, b, strict=True)], dtype=np.float64)


def _bootstrap_mean(diff: np.ndarray, rounds: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of per-photo differences with its 95 % bootstrap interval over photos."""
    rng = np.random.default_rng(seed)
    samples = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(rounds)]
    return float(diff.mean()), float(np.quantile(samples, 0.025)), float(np.quantile(samples, 0.975))


def report_pairs(pairs: list[str]) -> None:
    """Seed pairs judged before (`RUN=REF`, keys of recipes.json): each pair's paired difference, and the mean
    difference over the pairs with a bootstrap over photos of each photo's mean difference (the pairs share the
    validation photos), so that several seeds of two recipes give one interval."""
    known = {entry["run"]: entry for entry in json.loads(LOG_JSON.read_text())}
    diffs = []
    for pair in pairs:
        run, _, ref = pair.partition("=")
        if run not in known or ref not in known:
            sys.exit(f"{pair}: both sides must be runs in {LOG_JSON.name} (RUN=REF)")
        a, b = known[run], known[ref]
        if a["val_paths_sha"] != b["val_paths_sha"]:
            sys.exit(f"{pair}: validated on different images; no paired difference")
        print(
            f"{run}: {a['plain']['accuracy']['value']:.4f} vs {ref}: {b['plain']['accuracy']['value']:.4f}: "
            f"{_delta(a['plain']['correct'], b['plain']['correct'])}"
        )
        diffs.append(_differences(a["plain"]["correct"], b["plain"]["correct"]))
    mean, low, high = _bootstrap_mean(np.mean(diffs, axis=0))
    print(f"mean over {len(pairs)} pairs: {mean * 100:+.2f} pt ({low * 100:+.2f}…{high * 100:+.2f})")


def _ci(metric: dict[str, Any]) -> str:
    low, high = metric["ci95"]
    return f"{metric['value']:.4f} ({low:.3f}–{high:.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", type=Path, help="finished run folders")
    parser.add_argument(
        "--ref", type=Path, nargs="+", help="reference run for paired differences (with --ensemble: its run folders)"
    )
    parser.add_argument("--data", default="../shared/datasets/ahe64", help="for run folders without config.json")
    parser.add_argument("--note", default="", help="what this run tests (one line)")
    parser.add_argument("--ensemble", action="store_true", help="print the accuracy of the runs' averaged outputs")
    parser.add_argument("--device", default="cpu", help="where to judge (cuda: in fp32, TF32 off)")
    parser.add_argument("--pairs", nargs="+", metavar="RUN=REF", help="seed pairs already in the log: one interval")
    args = parser.parse_args()
    if args.pairs:
        report_pairs(args.pairs)
        return
    if not args.runs:
        parser.error("give run folders (or --pairs)")
    global DEVICE
    DEVICE = args.device
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    if args.ensemble:
        report_ensemble(args.runs, args.ref, args.data)
        return
    if args.ref and len(args.ref) > 1:
        sys.exit("--ref takes one run folder (several only with --ensemble)")
    args.ref = args.ref[0] if args.ref else None
    log: list[dict[str, Any]] = json.loads(LOG_JSON.read_text()) if LOG_JSON.exists() else []
    known = {entry["run"]: entry for entry in log}
    reference = None
    if args.ref:
        reference = known.get(str(args.ref)) or judge(args.ref, args.data)
        known[str(args.ref)] = reference
    rows = []
    for run in args.runs:
        if not (run / "metrics.json").exists():
            sys.exit(f"{run}: no metrics.json; is it a finished run folder?")
        entry = judge(run, args.data)
        entry["note"] = args.note
        delta = ""
        if reference is not None and reference["run"] != entry["run"]:
            if reference["val_paths_sha"] != entry["val_paths_sha"]:
                sys.exit(f"{run} and {args.ref} were validated on different images; no paired difference")
            d, low, high = paired_difference(entry["plain"]["correct"], reference["plain"]["correct"])
            entry["delta_vs_ref"] = {"ref": str(args.ref), "value": d, "ci95": [low, high]}
            delta = f"{d * 100:+.2f} pt ({low * 100:+.1f}…{high * 100:+.1f}) vs {args.ref.name}"
        known[entry["run"]] = entry
        rows.append(
            f"| {run.name} | {args.note} | {entry['epochs']} | {entry['params_m']:.2f} M / {entry['mflop']:.0f} | "
            f"{entry['train_minutes']:.1f} | {_ci(entry['plain']['accuracy'])} | {delta} | "
            f"{entry['tta']['accuracy']['value']:.4f} / {entry['multi']['accuracy']['value']:.4f} | "
            f"{entry['plain']['macro_f1']['value']:.4f} | "
            f"`{entry['command']}` |"
        )
        print(rows[-1])
    atomic_write_json(LOG_JSON, list(known.values()))
    text = LOG_MD.read_text() if LOG_MD.exists() else ""
    atomic_write_text(LOG_MD, text.rstrip("\n") + "\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
