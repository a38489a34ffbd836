"""Speed and accuracy benchmarks, each against a plain baseline measured in the same run.

    python benchmarks/run.py                     # everything (the default recipe takes about half an hour on 2 cores)
    python benchmarks/run.py --only gemm train   # a subset: gemm train predict shipped ddp deconv synthesis recipe
    python benchmarks/run.py --quick             # fewer steps, recipe skipped (a smoke run)

Writes benchmarks/results.json and benchmarks/results.md (or --out DIR) after every section, keeping the last
figures of sections not run (each section's date and machine in `measured`). Needs the data: $HERITAGE_DATA or
../shared/datasets/ahe64. The synthesis section also needs judge networks (benchmarks/train_pool.py, or --judge PATH);
without them it is skipped and says why.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from _bench_report import markdown
from _bench_sections import bench_ddp, bench_gemm, bench_predict, bench_recipe, bench_shipped, bench_train
from heritage_cnn import __version__
from heritage_cnn.data.folders import find_layout, load_images
from heritage_cnn.training.config import TrainConfig

HERE = Path(__file__).resolve().parent
SECTIONS = ["gemm", "train", "predict", "shipped", "ddp", "deconv", "synthesis", "recipe"]


SHARED_DATA = HERE.parents[1] / "shared" / "datasets" / "ahe64"  # ../shared beside the checkout


def default_data() -> str:
    """Every benchmark's --data default: $HERITAGE_DATA, else the shared copy (checked when read, not here)."""
    return os.environ.get("HERITAGE_DATA") or str(SHARED_DATA)


def data_root() -> Path:
    for candidate in (os.environ.get("HERITAGE_DATA"), SHARED_DATA):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    sys.exit("benchmarks need the data: set HERITAGE_DATA or put it in ../shared/datasets/ahe64")


def hardware() -> dict[str, Any]:
    from heritage_cnn.base.devices import cpu_model

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
        "heritage_cnn": __version__,
    }


def when_measured() -> dict[str, Any]:
    """Date, machine and load of a section's run: docs quote them beside each figure (docs_figures.py)."""
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{hardware()['cpu']}, {os.cpu_count()} cores",
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def missing_judges(judge: str | None) -> str | None:
    """Why the synthesis section cannot run, or None: it needs networks that did not draw the images to judge them,
    `judge` or the pool's (benchmarks/bench_synthesis.py's HELD_OUT and TUNING, trained by benchmarks/train_pool.py,
    hours on two cores: not something `make bench` trains on the way)."""
    from bench_synthesis import HELD_OUT, TUNING

    if judge is not None or any(Path(p).exists() for p in (*HELD_OUT, *TUNING)):
        return None
    return (
        "no judge networks (benchmarks/train_pool.py trains them into runs/pool, or give one with --judge PATH); "
        "the figures of its last run are kept"
    )


def bench_script(script: str, key: str, *args: str) -> dict[str, Any]:
    """Run one of the feature benchmarks (each writes benchmarks/out/<key>.json) and keep its figures."""
    subprocess.run([sys.executable, str(HERE / script), *args], check=True)
    return {key: json.loads((HERE / "out" / f"{key}.json").read_text())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=SECTIONS, help="run only these")
    parser.add_argument("--quick", action="store_true", help="fewer steps and no recipe run")
    parser.add_argument("--model", help="checkpoint for the prediction benchmark (default: the shipped fast network)")
    parser.add_argument("--out", default=str(HERE), help="where results.json/md go (default benchmarks/)")
    parser.add_argument(
        "--judge",
        help="a held-out judge for the synthesis benchmark (default: the judges benchmarks/train_pool.py trains in "
        "runs/pool; without any, that section is skipped and its last figures kept)",
    )
    args = parser.parse_args()
    if args.judge is not None and not Path(args.judge).exists():
        parser.error(f"--judge {args.judge}: no such file or folder")
    wanted = set(args.only or SECTIONS)
    if args.quick:
        wanted -= {"recipe", "synthesis", "ddp"}
    root = data_root()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    # every run updates the sections it measures and keeps the others' last figures (with their dates, in `measured`)
    if (out / "results.json").exists():
        results = json.loads((out / "results.json").read_text())
    results |= {"hardware": hardware(), "date": time.strftime("%Y-%m-%d"), "data": str(root), "skipped": {}}
    from heritage_cnn.base.io import atomic_write_json, atomic_write_text

    def save() -> None:
        """After every section, so that a section that fails loses none measured before it."""
        atomic_write_json(out / "results.json", results)
        atomic_write_text(out / "results.md", markdown(results))

    for section in SECTIONS:
        if section in wanted:
            measure(section, results, args, root)
            save()
    print(markdown(results))


def measure(section: str, results: dict[str, Any], args: argparse.Namespace, root: Path) -> None:
    """Run one section and add its figures (and when and where it ran) to `results`."""
    if section == "synthesis":
        missing = missing_judges(args.judge)
        if missing:
            results["skipped"]["synthesis"] = missing
            print(f"synthesis: skipped: {missing}", flush=True)
            return
    results.setdefault("measured", {})[section] = when_measured()
    steps = 8 if args.quick else 30
    if section == "gemm":
        results |= bench_gemm()
        print(f"gemm: {results['gemm_gflops']:.0f} GFLOP/s", flush=True)
    elif section == "train":  # at the default recipe's batch size, and at 128 (the notebooks' usual batch)
        recipe_batch = TrainConfig(data="", out="").batch_size
        decoded = load_images(find_layout(root).train)  # once, for both batch sizes
        for batch in dict.fromkeys((recipe_batch, 128)):
            figures = bench_train(root, decoded, steps * 128 // batch, batch)
            results |= figures if batch == recipe_batch else {f"{k}_bs{batch}": v for k, v in figures.items()}
            print(
                f"train (batch {batch}): {figures['train_images_per_s']:.0f} vs "
                f"{figures['train_baseline_images_per_s']:.0f} img/s",
                flush=True,
            )
    elif section == "predict":
        results |= bench_predict(root, args.model or "fast")  # one network: the compute-bound comparison is per network
        print(f"predict: {results['predict_images_per_s']:.0f} img/s", flush=True)
    elif section == "shipped":
        results |= bench_shipped(root, HERE / "out")
        for name, figures in results["shipped"].items():
            print(
                f"shipped {name}: accuracy {figures['val_accuracy']:.4f}, {figures['images_per_s']:.0f} img/s",
                flush=True,
            )
    elif section == "ddp":
        results |= bench_ddp(root, HERE / "out")
        print(f"ddp: {results['ddp_scaling']:.2f}x", flush=True)
    elif section == "deconv":
        results |= bench_script("bench_deconvnet.py", "deconvnet", "--out", str(HERE / "out"))
    elif section == "synthesis":
        judge = [] if args.judge is None else ["--second", args.judge]
        results |= bench_script("bench_synthesis.py", "synthesis", *judge)
    elif section == "recipe":
        results |= bench_recipe(root, HERE / "out")  # run folder kept (git-ignored) for inspection


if __name__ == "__main__":
    main()
