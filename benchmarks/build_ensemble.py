"""Build the shipped ensemble (`src/heritage_cnn/weights/default.*`) from trained run folders.

    python benchmarks/build_ensemble.py --out src/heritage_cnn/weights/default \\
        src/heritage_cnn/weights/fast /work/runs/pool/m-s1 /work/runs/pool/m-weakaug-s2 \\
        /work/runs/pool/m-vgg-s3 /work/runs/pool/m-wide-s4 /work/runs/pool/m-mix-s5

(the command that built the shipped ensemble). Member 0 is the `fast` network, so the figures of member 0 and
the packaged class images (drawn by it) stay those of the single network. Each member's training command is
taken from benchmarks/train_pool.py's JOBS table (`heritage train --data DATA --out RUN <its args>`; they were
trained with `--device cuda`); the `fast` network is the default recipe, seed 0. When the ensemble is written
into the package, the packaged class images are marked as drawn for its member 0 as well.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from heritage_cnn import classimages  # noqa: E402
from heritage_cnn.checkpoint import _paths, load_checkpoint  # noqa: E402
from heritage_cnn.ensemble import save_ensemble  # noqa: E402
from heritage_cnn.io import atomic_write_json  # noqa: E402
from train_pool import JOBS  # noqa: E402

TRAIN = "heritage train --data DATA --out RUN"


def name_and_command(folder: str) -> tuple[str, str]:
    """A run folder's job name and training command (the pool's table; `fast`: the default recipe, seed 0)."""
    path = Path(folder)
    name = path.name if path.is_dir() else path.stem
    jobs = {job.name: job for job in JOBS if job.group == "member"}
    if name in jobs:
        return name, " ".join([TRAIN, *jobs[name].args])
    if name in ("fast", "shipped"):
        return "fast", f"{TRAIN} --seed 0"
    raise SystemExit(f"{folder}: not a member of benchmarks/train_pool.py's JOBS table")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="the ensemble pair to write (without suffix)")
    parser.add_argument("members", nargs="+", help="checkpoints or run folders, member 0 first")
    args = parser.parse_args(argv)
    checkpoints = [load_checkpoint(folder) for folder in args.members]
    named = [name_and_command(folder) for folder in args.members]
    weights = save_ensemble(args.out, checkpoints, [n for n, _ in named], [c for _, c in named])
    if weights.resolve() == Path(classimages.PACKAGED).with_name("default.safetensors").resolve():
        manifest_path = classimages.PACKAGED / classimages.MANIFEST
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        first = load_checkpoint(weights).member(0)
        manifest["also_for"] = [classimages.model_key(first)]
        atomic_write_json(manifest_path, manifest)
    ensemble = load_checkpoint(weights)
    print(
        f"{weights} ({weights.stat().st_size / 2**20:.1f} MB) + {_paths(weights)[1].name}: {ensemble.member_count} "
        f"members, {ensemble.info.get('forward_mflop')} MFLOP per image"
    )
    for i, (name, command) in enumerate(named):
        print(f"  {i}: {name:14s} seed {checkpoints[i].info.get('seed')}  {command}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
