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
import functools
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from heritage_cnn import __version__
from heritage_cnn.base.devices import mixed_precision
from heritage_cnn.data.augment import AugmentConfig, augment_batch
from heritage_cnn.data.folders import channel_stats, find_layout, load_images
from heritage_cnn.models.network import build_model, forward_flops
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


def bench_gemm(size: int = 2048, repeats: int = 10) -> dict[str, float]:
    """The machine's float32 compute bound: FLOP/s of a large matrix multiply on all threads."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = min(best, time.perf_counter() - start)
    return {"gemm_gflops": 2 * size**3 * repeats / best / 1e9}


def _timed_steps(step, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - start


def bench_train(root: Path, images: Any, steps: int, batch_size: int = 128) -> dict[str, float]:
    """Training images/s: ours (in-memory uint8, batched augmentation, channels_last) vs the
    notebook way (torchvision ImageFolder + PIL transforms + DataLoader), same model and optimiser.
    `images` is the training folder decoded once by the caller (`load_images`)."""
    import torchvision.transforms as T
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    train_dir = find_layout(root).train
    mean, std = channel_stats(images.images)
    mean_t, std_t = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    flops = forward_flops(build_model())
    config = AugmentConfig()

    torch.manual_seed(0)
    model = build_model().to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    labels = images.labels

    use_amp, amp_dtype = mixed_precision(torch.device("cpu"), True)  # what `heritage train` does here

    def ours() -> None:
        index = torch.randint(0, len(labels), (batch_size,), generator=generator)
        x = (augment_batch(images.images[index], config, generator) - mean_t) / std_t
        with torch.autocast("cpu", dtype=amp_dtype, enabled=use_amp):
            logits = model(x.contiguous(memory_format=torch.channels_last))
        loss = F.cross_entropy(logits.float(), labels[index], label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    ours_seconds = _timed_steps(ours, steps, warmup=3)

    torch.manual_seed(0)
    baseline_model = build_model()
    baseline_optimizer = torch.optim.AdamW(baseline_model.parameters(), lr=1e-3)
    transform = T.Compose(
        [
            T.Resize(64),
            T.RandomRotation(15),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )
    loader = DataLoader(
        ImageFolder(str(train_dir), transform=transform),
        batch_size=batch_size,
        shuffle=True,
        num_workers=2,
        drop_last=True,
        persistent_workers=True,
    )
    batches = iter(loader)

    def baseline() -> None:
        nonlocal batches
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, y = next(batches)
        loss = F.cross_entropy(baseline_model(x), y, label_smoothing=0.1)
        baseline_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        baseline_optimizer.step()

    baseline_seconds = _timed_steps(baseline, steps, warmup=3)
    ours_rate = steps * batch_size / ours_seconds
    baseline_rate = steps * batch_size / baseline_seconds
    return {
        "train_images_per_s": ours_rate,
        "train_baseline_images_per_s": baseline_rate,
        "train_speedup": ours_rate / baseline_rate,
        "forward_mflop": flops / 1e6,
        "train_gflops_effective": 3 * flops * ours_rate / 1e9,
        "train_autocast": str(amp_dtype) if use_amp else "none (float32)",
        "train_batch_size": batch_size,
    }


def _best_of(repeats: int, fn: Any) -> float:
    """Shortest wall time of `repeats` calls (as for the GEMM bound: the machine's noise only adds time)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@functools.cache
def _decoded_train(root: str) -> tuple[Any, float]:
    """The training folder decoded once per run (every prediction benchmark uses it), and how long that took."""
    start = time.perf_counter()
    decoded = load_images(find_layout(Path(root)).train)
    return decoded, time.perf_counter() - start


def open_set_cost(classifier: Any, images: torch.Tensor, repeats: int = 5) -> dict[str, Any]:
    """What the none-of-these score adds to a prediction: the same batches through `Classifier.probabilities` (no
    score) and `Classifier.scored` (the probabilities and the score from one pass) with the noise check, taking turns batch by batch (and
    which goes first, round by round) so that other work on shared cores slows both alike; the ratio is the median
    of `repeats` rounds' scored time over plain time. Empty for a model without a none-of-these record."""
    import statistics

    if classifier.open_set is None:
        return {}
    batches = list(images.split(classifier.batch_size))

    def decided(batch: torch.Tensor) -> None:  # the score and the noise check, as a prediction decides
        classifier.open_set.decide(classifier.scored(batch)[1], batch)

    decided(batches[0])  # warm-up
    ratios = []
    for repeat in range(repeats):
        seconds = {"plain": 0.0, "scored": 0.0}
        for batch in batches:
            for name in ("plain", "scored") if repeat % 2 == 0 else ("scored", "plain"):
                start = time.perf_counter()
                classifier.probabilities(batch) if name == "plain" else decided(batch)
                seconds[name] += time.perf_counter() - start
        ratios.append(seconds["scored"] / seconds["plain"])
    return {
        "predict_open_set_ratio": statistics.median(ratios),
        "predict_open_set_ratios": ratios,
        "predict_open_set_score": classifier.open_set.name,
        "predict_open_set_photos": len(images),
    }


def bench_predict(root: Path, checkpoint_path: str | None, batches: int = 40, batch_size: int = 64) -> dict[str, float]:
    """Prediction images/s of batched inference, decode excluded and included, vs a plain eager
    NCHW loop over the same batches; both with the model's own test-time views (`Checkpoint.views`), whose
    forward passes the MFLOP figure counts."""
    from heritage_cnn.inference.classifier import Classifier
    from heritage_cnn.models.checkpoint import load_checkpoint
    from heritage_cnn.models.views import TTA_VIEWS, tta_views

    checkpoint = load_checkpoint(checkpoint_path)
    classifier = Classifier(load_checkpoint(checkpoint_path), batch_size=batch_size)  # BN folded, channels_last
    decoded, decode_seconds = _decoded_train(str(root))
    images = decoded.images[: batches * batch_size]
    classifier.scored(images[:batch_size])
    ours = len(images) / _best_of(3, lambda: classifier.scored(images))  # as predictions run: with the score

    plain = load_checkpoint(checkpoint_path).model

    def plain_loop() -> None:  # the same views as the model's own (a plain loop over each)
        with torch.no_grad():
            for i in range(0, len(images), 32):
                views = tta_views(checkpoint.normalise(images[i : i + 32]), checkpoint.views)
                sum(plain(view.contiguous()) for view in views)  # NCHW, as a plain loop has it

    baseline = len(images) / _best_of(3, plain_loop)
    cost = open_set_cost(classifier, images[:1024])

    classifier = Classifier.load(checkpoint_path)  # one photo end to end: decode, resize, forward, top-k
    one = sorted(find_layout(root).train.glob("*/*"))[:60]
    classifier.predict(one[0])
    latencies = []
    for path in one[10:]:
        start = time.perf_counter()
        classifier.predict(path)
        latencies.append(time.perf_counter() - start)
    latencies.sort()

    per_image_decode = decode_seconds / len(decoded)
    with_decode = 1.0 / (1.0 / ours + per_image_decode)
    return {
        "predict_images_per_s": ours,
        "predict_baseline_images_per_s": baseline,
        "predict_speedup": ours / baseline,
        "predict_with_decode_images_per_s": with_decode,
        "predict_forward_mflop": forward_flops(checkpoint.model) / 1e6 * TTA_VIEWS[checkpoint.views],
        "predict_one_photo_ms_median": 1000 * latencies[len(latencies) // 2],
        "predict_one_photo_ms_p95": 1000 * latencies[int(len(latencies) * 0.95)],
        **cost,
    }


def bench_shipped(root: Path, out: Path) -> dict[str, Any]:
    """The two shipped models as users get them (`--model default`, the ensemble, and `--model fast`, one
    network): accuracy on the validation split they were trained beside, and prediction speed (decode
    excluded; one photo end to end), each through the same code as `heritage evaluate` and `predict`."""
    from heritage_cnn.apps.pipeline import evaluate_on

    figures: dict[str, Any] = {}
    for name in ("default", "fast"):
        metrics = evaluate_on(name, root, "val", out / f"eval-{name}", log=lambda message: None)
        speed = bench_predict(root, name)
        figures[name] = {
            "val_accuracy": metrics["accuracy"]["value"],
            "val_accuracy_ci95": metrics["accuracy"]["ci95"],
            "val_macro_f1": metrics["macro_f1"]["value"],
            "val_images": metrics["n_images"],
            "images_per_s": speed["predict_images_per_s"],
            "one_photo_ms_median": speed["predict_one_photo_ms_median"],
            "forward_mflop": speed["predict_forward_mflop"],
            "open_set_ratio": speed.get("predict_open_set_ratio"),
        }
    return {"shipped": figures}


def bench_recipe(root: Path, out: Path) -> dict[str, float]:
    """The default recipe end to end, in a fresh process: wall time, peak memory, validation figures."""
    run = out / "recipe-run"
    command = [sys.executable, "-m", "heritage_cnn.cli", "train", "--data", str(root), "--out", str(run), "--overwrite"]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    eval_out = out / "recipe-eval"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "heritage_cnn.cli",
            "evaluate",
            "--model",
            str(run / "last.safetensors"),
            "--data",
            str(root),
            "--split",
            "val",
            "--out",
            str(eval_out),
        ],
        check=True,
    )
    metrics = json.loads((eval_out / "metrics.json").read_text())
    return {
        "recipe_wall_minutes": wall / 60,
        "recipe_peak_rss_gb": peak_kb / 1024**2,
        "recipe_val_accuracy": metrics["accuracy"]["value"],
        "recipe_val_accuracy_ci95": metrics["accuracy"]["ci95"],
        "recipe_val_macro_f1": metrics["macro_f1"]["value"],
        "recipe_val_images": metrics["n_images"],
        "recipe_epochs": TrainConfig(data="", out="").epochs,
    }


def bench_ddp(root: Path, out: Path) -> dict[str, float]:
    """Data-parallel scaling on this machine: 2 processes x (cores/2) threads vs 1 process x all cores,
    same global batch, same model; throughput of the second epoch (the first warms up)."""
    rates = {}
    for nproc in (1, 2):
        run = out / f"ddp-{nproc}"
        shutil.rmtree(run, ignore_errors=True)
        command = [sys.executable, "-m", "heritage_cnn.cli", "train", "--data", str(root), "--out", str(run)]
        command += ["--epochs", "2", "--limit-per-class", "200", "--nproc", str(nproc)]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        rates[nproc] = json.loads((run / "metrics.json").read_text())[-1]["train_images_per_second"]
    return {"ddp1_images_per_s": rates[1], "ddp2_images_per_s": rates[2], "ddp_scaling": rates[2] / rates[1]}


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


def _sections_measured(measured: dict[str, dict[str, Any]]) -> list[str]:
    """A line naming when and where each section ran, when a partial run (`--only`) left them on different days
    or machines: the header above gives the last run's."""
    groups: dict[str, list[str]] = {}
    for section, when in measured.items():
        groups.setdefault(f"{when['date']} on {when['machine']}", []).append(section)
    if len(groups) < 2:
        return []
    return [
        "Sections measured apart: " + "; ".join(f"{', '.join(names)}: {key}" for key, names in groups.items()) + "."
    ]


def markdown(results: dict[str, Any]) -> str:
    hw = results["hardware"]
    lines = [
        "# Benchmark results",
        "",
        f"Last measured by `python benchmarks/run.py` on {hw['cpu']}, {hw['cores']} cores, {hw['threads']} threads, "
        f"torch {hw['torch']} ({hw['cpu_capability']}), heritage-cnn {hw['heritage_cnn']}, {results['date']}.",
        "Every ratio compares two figures measured in the same run on the same machine.",
        *_sections_measured(results.get("measured", {})),
        *[f"Not measured in this run: {name} ({why})." for name, why in results.get("skipped", {}).items()],
        "",
        "| figure | value | baseline / bound | ratio |",
        "|---|---|---|---|",
        *_speed_rows(results),
        *_accuracy_rows(results),
    ]
    return "\n".join(lines) + "\n"


def _speed_rows(r: dict[str, Any]) -> list[str]:
    """Throughput and time, each against its baseline or the compute bound where it has one."""
    lines = []
    if "gemm_gflops" in r:
        lines.append(f"| float32 GEMM (2048², all threads) | {r['gemm_gflops']:.0f} GFLOP/s | | |")
    if "train_images_per_s" in r:
        for suffix in ("", "_bs128"):
            if f"train_images_per_s{suffix}" not in r:
                continue
            batch = r.get(f"train_batch_size{suffix}", 128)
            lines.append(
                f"| training images/s (default model, batch {batch}, autocast {r.get('train_autocast', 'none')}) | {r[f'train_images_per_s{suffix}']:.0f} | {r[f'train_baseline_images_per_s{suffix}']:.0f} (ImageFolder + PIL transforms + DataLoader, 2 workers, float32, batch {batch}) | **{r[f'train_speedup{suffix}']:.2f}x** |"
            )
        if "gemm_gflops" in r:
            bound = r["gemm_gflops"] * 1e9 / (3 * r["forward_mflop"] * 1e6)
            lines.append(
                f"| training vs compute bound (GEMM / 3 x {r['forward_mflop']:.0f} MFLOP) | {r['train_images_per_s']:.0f} img/s | {bound:.0f} img/s | **{r['train_images_per_s'] / bound:.0%}** |"
            )
    if "predict_images_per_s" in r:
        lines.append(
            f"| prediction images/s, decode excluded (`Classifier`: batch 64, BN folded, channels_last) | {r['predict_images_per_s']:.0f} | {r['predict_baseline_images_per_s']:.0f} (eager NCHW, batch 32) | **{r['predict_speedup']:.2f}x** |"
        )
        if "gemm_gflops" in r:
            bound = r["gemm_gflops"] * 1e9 / (r["predict_forward_mflop"] * 1e6)
            lines.append(
                f"| prediction vs compute bound (GEMM / {r['predict_forward_mflop']:.0f} MFLOP) | {r['predict_images_per_s']:.0f} img/s | {bound:.0f} img/s | **{r['predict_images_per_s'] / bound:.0%}** |"
            )
        lines.append(f"| prediction images/s, JPEG decode included | {r['predict_with_decode_images_per_s']:.0f} | | |")
        if "predict_open_set_ratio" in r:
            lines.append(
                f"| prediction with the none-of-these score ({r['predict_open_set_score']}, same pass) vs without, "
                f"{r['predict_open_set_photos']} photos | {r['predict_open_set_ratio']:.3f}x the time | | |"
            )
        if "predict_one_photo_ms_median" in r:
            lines.append(
                f"| one photo end to end after start-up (`Classifier.predict(path)`) | {r['predict_one_photo_ms_median']:.1f} ms median, {r['predict_one_photo_ms_p95']:.1f} ms p95 | | |"
            )
    if "ddp_scaling" in r:
        lines.append(
            f"| data-parallel training, 2 processes vs 1 (same global batch, CPU, gloo) | {r['ddp2_images_per_s']:.0f} img/s | {r['ddp1_images_per_s']:.0f} img/s | **{r['ddp_scaling']:.2f}x** |"
        )
    if "deconvnet" in r:
        d = r["deconvnet"]
        lines.append(
            f"| deconvnet top-{d['k']} scan of `{d['layer']}` over {d['images']} images | {d['scan_s']:.1f} s | {d['baseline_extrapolated_s']:.0f} s (one image at a time) | **{d['speedup']:.1f}x** |"
        )
    if "synthesis" in r:
        syn = r["synthesis"]
        ours, base = syn["methods"]["ours"], syn["methods"]["baseline"]
        lines.append(f"| class image synthesis, one 64 px image alone | {syn['single_image_seconds']:.2f} s | | |")
        lines.append(
            f"| class image synthesis, batch of {syn['n'] * 10} | {ours['seconds_per_image']:.2f} s per image | "
            f"{base['seconds_per_image']:.2f} s (unregularised pixel ascent) | |"
        )
        lines.append(
            f"| synthesis: share recognised by {next(iter(syn.get('judges', {'a second network': 0})))} | "
            f"{ours['transfer']['accuracy']:.3f} | "
            f"{base['transfer']['accuracy']:.3f} (unregularised pixel ascent) | |"
        )
    return lines


def _accuracy_rows(r: dict[str, Any]) -> list[str]:
    """The shipped models and the default recipe on the validation split."""
    lines = []
    for name, shipped in r.get("shipped", {}).items():
        low, high = shipped["val_accuracy_ci95"]
        lines.append(
            f"| shipped `{name}` ({shipped['forward_mflop']:.0f} MFLOP): validation accuracy, macro F1 | "
            f"{shipped['val_accuracy']:.2%} (95% CI {low:.2%}–{high:.2%}), {shipped['val_macro_f1']:.4f} | | |"
        )
        lines.append(
            f"| shipped `{name}`: images/s (decode excluded), one photo | {shipped['images_per_s']:.0f}, "
            f"{shipped['one_photo_ms_median']:.1f} ms | | |"
        )
    if "recipe_wall_minutes" in r:
        low, high = r["recipe_val_accuracy_ci95"]
        lines.append(
            f"| default recipe: validation accuracy ({r['recipe_val_images']} images, duplicate-aware split) | {r['recipe_val_accuracy']:.2%} (95% CI {low:.2%}–{high:.2%}) | | |"
        )
        lines.append(f"| default recipe: macro F1 | {r['recipe_val_macro_f1']:.4f} | | |")
        lines.append(
            f"| default recipe: wall time (decode, {r.get('recipe_epochs', 40)} epochs, validation) | {r['recipe_wall_minutes']:.1f} min | | |"
        )
        lines.append(f"| default recipe: peak memory (max RSS) | {r['recipe_peak_rss_gb']:.2f} GB | | |")
    return lines


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
