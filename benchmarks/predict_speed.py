"""Prediction speed of several models side by side, interleaved in one process so that the machine's drift falls
on all of them alike (the shipped `default` against a candidate ensemble, say):

    python benchmarks/build_ensemble.py --out /tmp/scale3 runs/gpu/m-x96-s40 runs/gpu/m-x96-s41 runs/gpu/m-x80-s42
    python benchmarks/predict_speed.py default /tmp/scale3

Each model goes through `benchmarks/run.py`'s prediction benchmark (`Classifier`: batch 64, batch norm folded,
channels_last; decode excluded) and one photo end to end; the best round counts, as noise only adds time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_sections import bench_predict
from run import data_root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="packaged names or checkpoint paths")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per model")
    args = parser.parse_args()
    root = data_root()
    best: dict[str, dict[str, float]] = {}
    for round_ in range(1, args.rounds + 1):
        for model in args.models:
            figures = bench_predict(root, model)
            print(
                f"round {round_}: {model}: {figures['predict_images_per_s']:.0f} images/s, one photo "
                f"{figures['predict_one_photo_ms_median']:.1f} ms, {figures['predict_forward_mflop']:.0f} MFLOP"
                + (
                    f"; with the none-of-these score {figures['predict_open_set_ratio']:.3f}x the time "
                    f"(rounds: {', '.join(f'{r:.3f}' for r in figures['predict_open_set_ratios'])})"
                    if "predict_open_set_ratio" in figures
                    else ""
                ),
                flush=True,
            )
            if figures["predict_images_per_s"] > best.get(model, {}).get("predict_images_per_s", 0):
                best[model] = figures
    for model, figures in best.items():
        print(
            f"{model}: best {figures['predict_images_per_s']:.0f} images/s ({figures['predict_forward_mflop']:.0f} MFLOP)"
        )


if __name__ == "__main__":
    main()
