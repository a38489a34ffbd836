"""Add `info["trained_on"]` to a checkpoint whose run wrote none (the shipped model predates the record).

The record holds the 64-bit perceptual hash (the same pHash the split uses) of every image the model trained
on, so that `heritage evaluate` can leave trained-on images and their near-duplicates out of a score. The
training split is rebuilt from the checkpoint's own recipe over the data folder, exactly as
`heritage evaluate --split val` rebuilds the validation split.

    python benchmarks/record_trained_on.py --data /path/to/ahe64 [--model src/heritage_cnn/weights/fast.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from heritage_cnn.base.io import atomic_write_text, read_json
from heritage_cnn.data.split import perceptual_hashes
from heritage_cnn.inference.evaluate import hashes_to_hex
from heritage_cnn.models.checkpoint import shipped_checkpoint_path
from heritage_cnn.training.config import TrainConfig
from heritage_cnn.training.prepare import prepare_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the data folder the model was trained on")
    parser.add_argument(
        "--model", default=str(shipped_checkpoint_path("fast").with_suffix(".json")), help="checkpoint JSON"
    )
    args = parser.parse_args()
    path = Path(args.model).with_suffix(".json")
    meta = read_json(path)
    config = TrainConfig.from_dict({**meta["recipe"], "data": args.data, "out": "-", "progress": False})
    _, train_set, val_set = prepare_data(config, log=print)
    expected = meta.get("split", {})
    if (len(train_set), len(val_set)) != (expected.get("train"), expected.get("val")):
        raise SystemExit(f"rebuilt split {len(train_set)}/{len(val_set)} differs from the recorded {expected}")
    meta["trained_on"] = {"phash": ["@HASHES@"], "distance": config.split.near_duplicate_distance}
    hashes = json.dumps(hashes_to_hex(perceptual_hashes(train_set.images)), separators=(",", ":"))
    text = json.dumps(meta, indent=2, ensure_ascii=False).replace('[\n      "@HASHES@"\n    ]', hashes)
    atomic_write_text(path, text + "\n")
    print(f"{path}: trained_on records {len(train_set)} images ({path.stat().st_size / 1e3:.0f} KB)")


if __name__ == "__main__":
    main()
