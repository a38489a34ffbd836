"""What each section of benchmarks/run.py measures, each against a plain baseline measured in the same run:
the GEMM bound, training and prediction speed, the shipped models, data-parallel scaling and the default recipe."""

from __future__ import annotations

import functools
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from heritage_cnn.base.devices import mixed_precision
from heritage_cnn.data.augment import AugmentConfig, augment_batch
from heritage_cnn.data.folders import channel_stats, find_layout, load_images
from heritage_cnn.models.network import build_model, forward_flops
from heritage_cnn.training.config import TrainConfig


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
    from heritage_cnn.apps.evaluation import evaluate_on

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
