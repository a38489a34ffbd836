"""Class-image synthesis: do the images mean their class to networks that did not draw them?

    python benchmarks/bench_synthesis.py --held-out J1 J2 J3 --tuning T1 T2          # the final run
    python benchmarks/bench_synthesis.py --tuning T1 T2 --seeds 10 --no-baseline \\
        --generators G1 G2 --set tv=30 --name tune_tv30                              # one tuning row

Protocol. For every seed, `draw_classes` draws `--n` images of each of the 10 classes as one batch (image
i*n + j: class i), so `--seeds 0 1 2 --n 4` gives 120 images. Generating networks: `--generators` (run
folders or checkpoint pairs; several = the ensemble objective, their logits averaged for the same
transformed image; an ensemble stands for its members; default the shipped model, the three-network
ensemble), drawn with the library defaults (`ENSEMBLE_SETTINGS` for several networks, else `Settings()`,
as `heritage generate` does) changed by `--set key=value`. In the same run, on the same judges, the
baseline: unregularised gradient ascent on raw pixels (`PIXEL_BASELINE`: no Fourier basis, colour
decorrelation, transforms or penalties) by one network (`fast`, or the first of --generators).

Judges are given by role: `--held-out` (never looked at while choosing settings; scored in the final run
only) and `--tuning` (the only ones settings may be chosen on). Their kind is detected: a .safetensors file
with the metadata key "judge" is a benchmarks/judges.py network (torchvision ResNet-18, VGG with group
norm: `load_judge`, `judge_probabilities`); anything else is a heritage-cnn checkpoint (a pair or a run
folder: `load_checkpoint`, `classify`).

Reported per method and judge: transfer = top-1 agreement of the judge with the target class, overall and
per class, each with a 95 % bootstrap interval (2,000 resamples of the images, within each class, so every
resample keeps the class balance; percentile interval); the judge's mean target probability; the
generating networks' own agreement and probability; seconds per image (wall time of the batches / images).
Writes benchmarks/out/NAME.json and NAME.md (NAME: --name, default synthesis) and, for the first seed,
benchmarks/out/generated_NAME_{ours,baseline}/ (as `heritage generate --all`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
BOOTSTRAP = 2000
# benchmarks/train_pool.py --out runs/pool writes these (relative to the working directory)
HELD_OUT = ["runs/pool/j-resnet18-s11.safetensors", "runs/pool/j-vgggn-s12.safetensors", "runs/pool/j-wide-s13"]
TUNING = ["runs/pool/t-b1111-s21", "runs/pool/t-vgggn-s22.safetensors"]


@dataclass
class Scorer:
    """A judge of either kind: a name, its role, and [0, 1] images -> softmax probabilities."""

    name: str
    role: str  # held-out | tuning | generating
    kind: str
    classes: list[str]
    val_accuracy: float | None
    probabilities: Any  # Callable[[Tensor], Tensor]


def judge_kind(path: str | Path) -> str:
    """'judges.py' for a safetensors file whose metadata has the key "judge", else 'heritage'."""
    path = Path(path)
    if path.is_file() and path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            if "judge" in (f.metadata() or {}):
                return "judges.py"
    return "heritage"


def load_scorer(path: str | Path, role: str) -> Scorer:
    path = Path(path)
    name = path.name.removesuffix(".safetensors")
    if judge_kind(path) == "judges.py":
        sys.path.insert(0, str(HERE))
        from judges import judge_probabilities, load_judge

        judge = load_judge(path)
        return Scorer(
            name,
            role,
            f"judges.py {judge.info['arch']}",
            judge.classes,
            judge.info.get("val_accuracy"),
            lambda x, j=judge: judge_probabilities(j, x),
        )
    from heritage_cnn.inside.synthesis.draw import classify
    from heritage_cnn.models.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(path)
    config = checkpoint.model.config
    return Scorer(
        name,
        role,
        f"heritage widths {'-'.join(map(str, config.widths))} blocks {'-'.join(map(str, config.blocks))}",
        checkpoint.classes,
        checkpoint.info.get("validation", {}).get("val_accuracy"),
        lambda x, c=checkpoint: classify(c, x),
    )


def bootstrap_interval(hits: Any, groups: Any, reps: int = BOOTSTRAP, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of the mean of `hits` (0/1 per image), resampling images within each group."""
    import torch

    g = torch.Generator().manual_seed(seed)
    hits = hits.float()
    means = torch.zeros(reps)
    for k in groups.unique():
        members = hits[groups == k]
        draws = torch.randint(0, len(members), (reps, len(members)), generator=g)
        means += members[draws].sum(1)
    means /= len(hits)
    low, high = torch.quantile(means, torch.tensor([0.025, 0.975])).tolist()
    return low, high


def score(scorer: Scorer, images: Any, targets: list[int], classes: list[str]) -> dict[str, Any]:
    """Top-1 agreement with the target class and mean target probability, per class and overall, with intervals."""
    import torch

    if scorer.classes != classes:
        raise SystemExit(f"{scorer.name}: classes {scorer.classes} differ from the generating network's {classes}")
    probs = scorer.probabilities(images)
    target = torch.tensor(targets)
    hit = (probs.argmax(1) == target).float()
    p = probs[torch.arange(len(target)), target]
    low, high = bootstrap_interval(hit, target)
    per_class = {}
    for k, name in enumerate(classes):
        mask = target == k
        if mask.any():
            c_low, c_high = bootstrap_interval(hit[mask], target[mask], seed=k + 1)
            per_class[name] = {
                "accuracy": hit[mask].mean().item(),
                "ci95": [c_low, c_high],
                "probability": p[mask].mean().item(),
                "images": int(mask.sum()),
            }
    worst = min(per_class, key=lambda name: per_class[name]["accuracy"])
    return {
        "accuracy": hit.mean().item(),
        "ci95": [low, high],
        "probability": p.mean().item(),
        "images": len(targets),
        "worst_class": worst,
        "worst_class_accuracy": per_class[worst]["accuracy"],
        "per_class": per_class,
        "predicted": probs.argmax(1).tolist(),
    }


def draw_batch(
    settings: Any, generators: list[str | None], n: int, seed: int, threads: int | None, one_class: bool = False
) -> dict[str, Any]:
    """One seed's batch (n images of each class); a function of paths, so that it can run in a worker process."""
    import torch

    from heritage_cnn.inside.synthesis.draw import draw_classes
    from heritage_cnn.models.checkpoint import load_checkpoint

    if threads:
        torch.set_num_threads(threads)
    networks = [load_checkpoint(p) for p in generators]
    targets = [0] if one_class else list(range(len(networks[0].classes)))
    generated = draw_classes(networks, targets, n, 64, settings, seed, progress=False)
    return {"generated": generated, "seed": seed}


def run_methods(
    methods: dict[str, tuple[Any, list[str | None]]],
    scorers: list[Scorer],
    n: int,
    seeds: list[int],
    out_name: str,
    workers: int,
    threads: int | None,
) -> dict[str, dict[str, Any]]:
    """Every (method, seed) batch, in `workers` processes; then every judge scores every method's images."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    import torch

    from heritage_cnn.inside.synthesis.files import write_generated
    from heritage_cnn.models.checkpoint import load_checkpoint

    tasks = [(name, seed) for name in methods for seed in seeds]
    batches: dict[tuple[str, int], Any] = {}
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = {
                task: pool.submit(draw_batch, methods[task[0]][0], methods[task[0]][1], n, task[1], threads)
                for task in tasks
            }
            for task, future in futures.items():
                batches[task] = future.result()["generated"]
                print(f"  {task[0]}: seed {task[1]} drawn in {batches[task].seconds:.0f} s", flush=True)
    else:
        for task in tasks:
            batches[task] = draw_batch(methods[task[0]][0], methods[task[0]][1], n, task[1], threads)["generated"]
            print(f"  {task[0]}: seed {task[1]} drawn in {batches[task].seconds:.0f} s", flush=True)
    rows = {}
    for name, (settings, generators) in methods.items():
        networks = [load_checkpoint(p) for p in generators]
        classes = networks[0].classes
        drawn = [batches[name, seed] for seed in seeds]
        write_generated(OUT / f"generated_{out_name}_{name}", drawn[0], networks[0], seeds[0], n)
        images = torch.cat([g.images for g in drawn])
        targets = [t for g in drawn for t in g.targets]
        seconds = sum(g.seconds for g in drawn)
        generating = Scorer(
            "generating",
            "generating",
            f"{len(networks)} network(s)",
            classes,
            None,
            lambda x, m=networks: _mean_probs(m, x),
        )
        row = {
            "settings": asdict(settings),
            "generators": [str(net.path) for net in networks],
            "images": len(images),
            "seconds_per_image": seconds / len(images),
            "generating": score(generating, images, targets, classes),
            "judges": {s.name: score(s, images, targets, classes) for s in scorers},
        }
        for judge_name, r in row["judges"].items():
            print(
                f"{name:>9} | {judge_name:<16} top-1 {r['accuracy']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] "
                f"p {r['probability']:.3f} worst {r['worst_class']} {r['worst_class_accuracy']:.2f}",
                flush=True,
            )
        print(
            f"{name:>9} | generating p {row['generating']['probability']:.3f}; {row['seconds_per_image']:.2f} s/image"
        )
        rows[name] = row
    return rows


def _mean_probs(networks: list[Any], images: Any) -> Any:
    from heritage_cnn.inside.synthesis.draw import classify

    return classify(networks, images)


def _network_name(path: str) -> str:
    """A run folder's name for its last.safetensors, else the file name."""
    return Path(path).parent.name if Path(path).name == "last.safetensors" else Path(path).name


def _short(name: str) -> str:
    return name.replace("_", " ").replace("(", " (")


def markdown(result: dict[str, Any]) -> str:
    methods = result["methods"]
    roles = result["judges"]
    lines = [
        f"`{result['command']}`, {result['date']}; {result['machine']}.",
        "",
        f"{result['images_per_method']} images per method (seeds {', '.join(map(str, result['seeds']))} x "
        f"{result['n']} images x 10 classes). Ours: generating networks "
        f"{', '.join('`' + _network_name(p) + '`' for p in methods['ours']['generators'])} "
        f"with {result['changed_settings'] or 'the library defaults'}.",
        "",
        "| method | judge (role, validation accuracy) | transfer top-1 [95 % CI] | judge's p | worst class |",
        "|---|---|---|---|---|",
    ]
    for method, row in methods.items():
        for judge_name, r in row["judges"].items():
            role, val = roles[judge_name]["role"], roles[judge_name]["val_accuracy"]
            lines.append(
                f"| {method} | {judge_name} ({role}, {val:.3f}) | **{r['accuracy']:.3f}** "
                f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | {r['probability']:.3f} | "
                f"{_short(r['worst_class'])} {r['worst_class_accuracy']:.2f} |"
            )
    for method, row in methods.items():
        judge_names = list(row["judges"])
        lines += [
            "",
            f"Per class, {method} (top-1 agreement over {row['images'] // 10} images per class):",
            "",
            "| class | " + " | ".join(judge_names) + " | generating |",
            "|---|" + "---|" * (len(judge_names) + 1),
        ]
        for cls in row["generating"]["per_class"]:
            cells = [f"{row['judges'][j]['per_class'][cls]['accuracy']:.2f}" for j in judge_names]
            lines.append(
                f"| {_short(cls)} | "
                + " | ".join(cells)
                + f" | {row['generating']['per_class'][cls]['accuracy']:.2f} |"
            )
        lines.append(
            "| **all** | "
            + " | ".join(f"**{row['judges'][j]['accuracy']:.3f}**" for j in judge_names)
            + f" | **{row['generating']['accuracy']:.3f}** |"
        )
    lines += [
        "",
        "Seconds per 64 px image (batches of 40, "
        + ", ".join(
            f"{m} {row['seconds_per_image']:.2f} with {len(row['generators'])} network(s)" for m, row in methods.items()
        )
        + ").",
    ]
    return "\n".join(lines) + "\n"


def parse_settings(pairs: list[str]) -> dict[str, Any]:
    from heritage_cnn.inside.synthesis.draw import Settings

    types = {f.name: type(getattr(Settings(), f.name)) for f in fields(Settings)}
    changes: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in types:
            raise SystemExit(f"--set {pair}: unknown setting; one of {', '.join(types)}")
        kind = types[key]
        changes[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return changes


def member_count(path: str) -> int:
    """How many networks a checkpoint holds, read from its JSON half alone (the workers load the weights)."""
    from heritage_cnn.models.checkpoint import SHIPPED, checkpoint_files, shipped_checkpoint_path

    info = json.loads(checkpoint_files(shipped_checkpoint_path(path) if path in SHIPPED else path)[1].read_text())
    return len(info.get("members") or []) or 1


def main() -> None:
    import torch

    from heritage_cnn.base.io import atomic_write_json, atomic_write_text
    from heritage_cnn.inside.synthesis.draw import ENSEMBLE_SETTINGS, PIXEL_BASELINE, Settings
    from heritage_cnn.models.checkpoint import default_checkpoint_path

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generators", nargs="+", help="generating networks (default: the shipped model)")
    parser.add_argument("--held-out", nargs="*", help=f"judges never used to choose settings (default: {HELD_OUT})")
    parser.add_argument("--tuning", nargs="*", help=f"judges settings may be chosen on (default: {TUNING})")
    parser.add_argument("--second", help="one more held-out judge (what benchmarks/run.py --judge passes)")
    parser.add_argument("--n", type=int, default=4, help="images per class and seed (default 4)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="changes to Settings()")
    parser.add_argument("--no-baseline", action="store_true", help="skip the pixel-space baseline")
    parser.add_argument("--name", default="synthesis", help="output stem in benchmarks/out (default synthesis)")
    parser.add_argument("--threads", type=int, help="torch threads per process (default: all cores)")
    parser.add_argument("--workers", type=int, default=1, help="processes drawing batches at once (default 1)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.held_out is None and args.tuning is None:  # the pool's judges, where benchmarks/train_pool.py put them
        args.held_out = [p for p in HELD_OUT if Path(p).exists()]
        args.tuning = [p for p in TUNING if Path(p).exists()]
    args.held_out, args.tuning = [*(args.held_out or []), *([args.second] if args.second else [])], args.tuning or []
    if not args.held_out and not args.tuning:
        raise SystemExit("give judges: --held-out PATH... and/or --tuning PATH... (none found in runs/pool)")
    generators = args.generators or [str(default_checkpoint_path())]
    scorers = [load_scorer(p, "held-out") for p in args.held_out] + [load_scorer(p, "tuning") for p in args.tuning]
    changes = parse_settings(args.set)
    networks = sum(member_count(p) for p in generators)  # an ensemble stands for its members
    settings = replace(ENSEMBLE_SETTINGS if networks > 1 else Settings(), **changes)
    load = os.getloadavg()[0]
    OUT.mkdir(parents=True, exist_ok=True)
    todo = {"ours": (settings, generators)}
    if not args.no_baseline:
        todo["baseline"] = (PIXEL_BASELINE, generators[:1] if args.generators else ["fast"])  # one network
    methods = run_methods(todo, scorers, args.n, args.seeds, args.name, args.workers, args.threads)
    # what benchmarks/run.py reads: one image drawn alone, and "transfer" = the first judge's figures
    alone = draw_batch(settings, generators, 1, 0, args.threads, one_class=True)["generated"].seconds
    first = scorers[0].name
    for row in methods.values():
        row["transfer"] = row["judges"][first]
    result = {
        "command": "python benchmarks/bench_synthesis.py " + " ".join(sys.argv[1:]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, {args.workers} process(es) x {torch.get_num_threads()} thread(s), load average {load:.1f} at the start",
        "seeds": args.seeds,
        "n": args.n,
        "images_per_method": len(args.seeds) * args.n * 10,
        "single_image_seconds": alone,
        "changed_settings": ", ".join(f"{k}={v}" for k, v in changes.items()),
        "judges": {
            s.name: {"role": s.role, "kind": s.kind, "val_accuracy": s.val_accuracy, "path": p}
            for s, p in zip(scorers, [*args.held_out, *args.tuning], strict=True)
        },
        "methods": methods,
    }
    atomic_write_json(OUT / f"{args.name}.json", result)
    atomic_write_text(OUT / f"{args.name}.md", markdown(result))
    print(markdown(result))
    print(f"written: {OUT / (args.name + '.json')}, {OUT / (args.name + '.md')}")
    json.dumps(result)  # fails loudly on anything not serialisable before the next run relies on it


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"benchmark took {(time.perf_counter() - started) / 60:.1f} min")
