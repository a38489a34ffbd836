"""Prediction speed of the shipped models: `default` (the ensemble) and `fast` (its member 0), on this CPU.

    OMP_NUM_THREADS=2 python benchmarks/bench_ensemble.py --data $HERITAGE_DATA

For each model: `Classifier.probabilities` images/s on decoded 64 px photos (decode excluded, batch 64, best
of 3) in bf16 autocast where the CPU has native bf16 (the Classifier's default) and in float32, how often the
two agree on the top class, and one photo end to end (`Classifier.predict(path)`: decode, resize, forward,
top-k) median and p95 over 50 photos. The load average is printed: compare figures taken on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from heritage_cnn.checkpoint import load_checkpoint
from heritage_cnn.decode import decode_image
from heritage_cnn.predict import Classifier
from run import _best_of  # benchmarks/run.py, beside this script: the shortest of a few timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=os.environ.get("HERITAGE_DATA") or "../shared/datasets/ahe64")
    parser.add_argument("--images", type=int, default=640, help="photos for the throughput (default 640)")
    args = parser.parse_args()
    photos = sorted(Path(args.data, "train").glob("*/*.*"))[:: max(1, 10_000 // args.images)][: args.images]
    batch = torch.from_numpy(np.stack([decode_image(p, 64) for p in photos])).permute(0, 3, 1, 2).contiguous()
    print(f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()}, {len(batch)} photos")
    for name in ("fast", "default"):
        checkpoint = load_checkpoint(name)
        results = {}
        for bf16 in (True, False):
            classifier = Classifier(checkpoint, batch_size=64, bf16=bf16)
            classifier.probabilities(batch[:64])  # warm-up
            seconds = _best_of(3, lambda c=classifier: c.probabilities(batch))
            results[bf16] = classifier.probabilities(batch).argmax(1)
            mode = "bf16" if classifier.bf16 else "fp32"
            print(f"{name:8s} {mode}: {len(batch) / seconds:7.0f} images/s (decode excluded, batch 64)")
        agree = float((results[True] == results[False]).float().mean())
        print(f"{name:8s} top class equal in bf16 and fp32 on {100 * agree:.2f} % of the photos")
        classifier = Classifier(checkpoint)
        classifier.predict(photos[0])
        latencies = []
        for path in photos[10:60]:
            start = time.perf_counter()
            classifier.predict(path)
            latencies.append(1000 * (time.perf_counter() - start))
        latencies.sort()
        print(
            f"{name:8s} one photo end to end: {statistics.median(latencies):.1f} ms median, "
            f"{latencies[int(0.95 * len(latencies)) - 1]:.1f} ms p95"
        )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
