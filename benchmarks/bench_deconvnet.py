"""Deconvnet top-k scan: one layer over the whole dataset, against a plain per-image loop, same run.

    python benchmarks/bench_deconvnet.py                              # stage3.block1.conv2, shipped model
    python benchmarks/bench_deconvnet.py --layer stage2 --model runs/a/last.safetensors --baseline-images 500

The scan (BN folded into the convs, batches of 256, forward only up to the layer, a running top-9 merge
for every channel at once) runs over every training image. The baseline (one image at a time through
the unfolded network, a Python top-9 update per channel) runs over the first --baseline-images only;
its rate is extrapolated to the full set, and both are checked to find the same top-9 on that subset.
Decoding the JPEGs is timed separately. Writes deconvnet.json and deconvnet.md to --out.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' own modules

from heritage_cnn.base.io import atomic_write_json, atomic_write_text
from heritage_cnn.data.folders import find_layout, load_images
from heritage_cnn.inside import deconvnet
from heritage_cnn.models.checkpoint import load_checkpoint
from run import default_data

HERE = Path(__file__).resolve().parent


def baseline_scan(checkpoint, images: torch.Tensor, layer: str, k: int) -> torch.Tensor:
    """The plain way: one image at a time, a Python list of the best k per channel."""
    best: list[list[tuple[float, int]]] | None = None
    with torch.no_grad():
        for i in range(len(images)):
            activation, _ = deconvnet.forward_to(checkpoint.model, checkpoint.normalise(images[i : i + 1]), layer)
            peaks = activation[0].flatten(1).max(1).values.tolist()
            best = best or [[] for _ in peaks]
            for channel, value in enumerate(peaks):
                best[channel] = sorted([*best[channel], (value, i)], reverse=True)[:k]
    return torch.tensor([[i for _, i in row] for row in best])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint (default: the shipped model)")
    parser.add_argument("--member", type=int, default=0, help="network of an ensemble to look inside (default 0)")
    parser.add_argument("--data", default=default_data())
    parser.add_argument("--layer", default="stage3.block1.conv2")
    parser.add_argument("--top", type=int, default=9)
    parser.add_argument("--baseline-images", type=int, default=1000)
    parser.add_argument("--out", default=str(HERE / "out"))
    args = parser.parse_args()
    if not Path(args.data).is_dir():
        sys.exit(f"no data at {args.data}: pass --data or set HERITAGE_DATA")

    checkpoint = load_checkpoint(args.model).member(args.member)
    layer = deconvnet.resolve_layer(checkpoint.model, args.layer)
    started = time.perf_counter()
    images = load_images(find_layout(args.data).train, classes=checkpoint.classes).images
    decode_s = time.perf_counter() - started

    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    top = deconvnet.scan_top_activations(checkpoint.model, images, checkpoint.normalise, layer, k=args.top)
    scan_s = time.perf_counter() - started

    subset = images[: args.baseline_images]
    started = time.perf_counter()
    plain = baseline_scan(checkpoint, subset, layer, args.top)
    baseline_s = time.perf_counter() - started
    fast = deconvnet.scan_top_activations(checkpoint.model, subset, checkpoint.normalise, layer, k=args.top)
    fired = fast.values > 1e-4  # ties at zero have no order; tiny float differences (BN folding) may swap near-ties
    agreement = float((fast.images == plain)[fired].float().mean())
    baseline_full_s = baseline_s * len(images) / len(subset)

    result = {
        "layer": layer,
        "channels": int(top.values.shape[0]),
        "images": len(images),
        "k": args.top,
        "model": str(checkpoint.path),
        "decode_s": round(decode_s, 2),
        "scan_s": round(scan_s, 2),
        "scan_images_per_s": round(len(images) / scan_s, 1),
        "baseline_images": len(subset),
        "baseline_s": round(baseline_s, 2),
        "baseline_extrapolated_s": round(baseline_full_s, 1),
        "speedup": round(baseline_full_s / scan_s, 1),
        "top_k_agreement_on_subset": round(agreement, 4),
        "threads": torch.get_num_threads(),
        "load_average_1min_before": round(load_before, 2),
        "target_s": 30,
    }
    out = Path(args.out)
    atomic_write_json(out / "deconvnet.json", result)
    atomic_write_text(
        out / "deconvnet.md",
        f"| layer | images | scan | images/s | per-image baseline (extrapolated) | speed-up |\n|---|---|---|---|---|---|\n"
        f"| {layer} ({result['channels']} channels, top {args.top}) | {len(images)} | {scan_s:.1f} s | "
        f"{result['scan_images_per_s']} | {baseline_full_s:.0f} s (measured on {len(subset)}) | "
        f"{result['speedup']}x |\n",
    )
    for key, value in result.items():
        print(f"{key:28} {value}")


if __name__ == "__main__":
    main()
