"""Open-set scores measured: which score tells "none of these" from the ten classes, per model and kind of negative.

    python benchmarks/open_set.py --data DATA --negatives data/negatives [--models default fast] [--out benchmarks]

The protocol, declared before it was measured, is in docs/open_set.md ("Open-set scores, declared before measured").
Positives are the training folder's photos each model did not train on (its `trained_on` record, as `heritage
evaluate --split unseen` chooses them: the validation split); Mahalanobis statistics are fitted on the photos it did
train on. Every setting (energy temperature, ridge, layer, combination weights) is chosen on `NEG/tuning` against
the positives; `NEG/reporting` is reported, per kind and overall, with clustered bootstrap intervals (validation
photos by near-duplicate group, negatives by source picture) and paired AUROC differences against max softmax. Writes
OUT/open_set.json and OUT/open_set.md (the tables of docs/open_set.md). Everything is seeded; `--records DIR` keeps
the forward passes (features and logits) so a second run only redoes the statistics.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' own modules

from _open_set_report import breakdown, markdown, report
from _open_set_scores import choose_variants, load_negatives, model_records, raw_scores, tuning_auroc
from _open_set_timing import TIME_PHOTOS, pick, scorers, timing
from heritage_cnn.base.devices import machine_description
from heritage_cnn.base.io import atomic_write_json
from heritage_cnn.data.folders import find_layout, load_images
from heritage_cnn.data.split import perceptual_hashes
from heritage_cnn.inference.classifier import Classifier
from heritage_cnn.inference.evaluate import near_any, trained_on
from heritage_cnn.models.checkpoint import Checkpoint, load_checkpoint
from run import default_data

HERE = Path(__file__).resolve().parent


def measure_model(name: str, photos, hashes: np.ndarray, negatives: dict, args: argparse.Namespace) -> dict:
    checkpoint: Checkpoint = load_checkpoint(name)
    if checkpoint.classes != photos.classes:
        raise SystemExit(f"{name}: classes {checkpoint.classes} differ from the data's {photos.classes}")
    classifier = Classifier(checkpoint)
    began = time.perf_counter()
    records = model_records(name, classifier, photos, hashes, negatives, args.records)
    print(f"{name}: forward passes {time.perf_counter() - began:.0f} s", flush=True)
    table = raw_scores(records)
    chosen, settings = choose_variants(table)
    figures = report(chosen, settings, records, negatives["reporting"], args.rounds, args.seed)
    if args.reuse_timing:  # the statistics again (they are seeded), the timing of the run that wrote OUT's JSON
        times = json.loads((args.out / "open_set.json").read_text())["models"][name]["timing"]
    else:
        val_images = photos.images[np.flatnonzero(~near_any(hashes, *trained_on(checkpoint)))][:TIME_PHOTOS]
        times = timing(classifier, val_images, scorers(records, settings, table))
    grid = {v: {"tuning_auroc": tuning_auroc(s)} for v, s in table.items()}
    counts = {"fit": len(records["fit_labels"]), "val": len(records["val"].logits)}
    counts |= {side: len(negatives[side]["kind"]) for side in ("tuning", "reporting")}
    return {
        "counts": counts,
        "grid": grid,
        "variants": figures,
        "by_source": breakdown(chosen, records, negatives["reporting"], checkpoint.classes),
        "timing": times,
        "rule": pick(settings, times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=default_data())
    parser.add_argument("--negatives", type=Path, default=HERE.parent / "data" / "negatives")
    parser.add_argument("--models", nargs="+", default=["default", "fast"])
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--records", type=Path, default=None, help="keep the forward passes here (a rerun reuses them)")
    parser.add_argument(
        "--reuse-timing", action="store_true", help="keep the timing of OUT/open_set.json (a busy machine's rerun)"
    )
    parser.add_argument("--cache-dir", default=None, help="the decoded training photos' cache (heritage --cache-dir)")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    began = time.perf_counter()
    photos = load_images(find_layout(args.data).train, cache_dir=args.cache_dir)
    hashes = perceptual_hashes(photos.images)
    negatives = load_negatives(args.negatives)
    print(f"decoded and hashed in {time.perf_counter() - began:.0f} s", flush=True)
    results = {
        "command": "python benchmarks/open_set.py " + " ".join(sys.argv[1:]),
        "machine": machine_description(torch.device("cpu"), torch.bfloat16),
        "torch_threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "seed": args.seed,
        "models": {},
    }
    for name in args.models:
        results["models"][name] = measure_model(name, photos, hashes, negatives, args)
        print(markdown(name, results["models"][name]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "open_set.json", results)
    text = "\n".join(markdown(name, result) for name, result in results["models"].items())
    (args.out / "open_set.md").write_text(text)
    print(f"wrote {args.out / 'open_set.json'} and open_set.md in {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
