"""Build the shipped models from trained run folders: the ensemble (`src/heritage_cnn/weights/default.*`) and
the single `fast` network (`weights/fast.*`). The commands that built them:

    python benchmarks/build_ensemble.py --out src/heritage_cnn/weights/default runs/pool/t90-muon \\
        runs/pool/c45-muon-cons12 runs/pool/t90-muon-s1
    python benchmarks/build_ensemble.py --single src/heritage_cnn/weights/fast runs/pool/st3-muon-s8

Each network's training command is taken from benchmarks/train_pool.py's JOBS table (`heritage train --recipe
adamw --data DATA --out POOL/NAME <its args>`, POOL being the pool's folder, OUTLIERS the outlier pool of the `muon90-oe` jobs) and written into the metadata beside
its seed. The three networks of `default` and `fast`, their student, were trained on two CPU cores. A network
written into the package draws its packaged class images (the ensemble's member 0 for `default`; `heritage
generate --all --n 1`; 13 s on two cores for the default).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from heritage_cnn.base.io import atomic_path, atomic_write_json  # noqa: E402
from heritage_cnn.inside import classimages  # noqa: E402
from heritage_cnn.models.checkpoint import checkpoint_files, load_checkpoint, save_ensemble  # noqa: E402
from heritage_cnn.models.views import TTA_MODES  # noqa: E402
from train_pool import JOBS  # noqa: E402


def name_and_command(folder: str) -> tuple[str, str]:
    """A run folder's job name and training command (benchmarks/train_pool.py's table)."""
    path = Path(folder)
    name = path.name if path.is_dir() else path.stem
    jobs = {job.name: job for job in JOBS if not job.judge}
    if name not in jobs:
        raise SystemExit(f"{folder}: not a job of benchmarks/train_pool.py's JOBS table")
    args = " ".join(jobs[name].args).replace("{out}", "POOL").replace("{outliers}", "OUTLIERS")
    return name, f"heritage train --recipe adamw --data DATA --out POOL/{name} {args}"  # as train_pool.HERITAGE


def write_single(folder: str, out: str, name: str, command: str) -> Path:
    """Copy a run's final checkpoint pair to `out`, its job name and training command added to the metadata."""
    source = load_checkpoint(folder)
    weights, meta = checkpoint_files(Path(out))
    weights.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(weights) as tmp:
        shutil.copyfile(source.path, tmp)
    info = json.loads(checkpoint_files(Path(source.path))[1].read_text(encoding="utf-8"))
    atomic_write_json(meta, {**info, "name": name, "command": command})
    load_checkpoint(weights)  # the pair still loads (same weights, same generation)
    return weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", help="the ensemble pair to write (without suffix)")
    target.add_argument("--single", help="the single-network pair to write (without suffix): one run")
    parser.add_argument(
        "--views",
        choices=TTA_MODES,
        default="none",
        help="the ensemble's own test-time views, used by every tool unless told otherwise (default none)",
    )
    parser.add_argument("members", nargs="+", help="checkpoints or run folders, member 0 first")
    args = parser.parse_args(argv)
    named = [name_and_command(folder) for folder in args.members]
    if args.single:
        if len(args.members) != 1:
            parser.error("--single takes one run folder")
        single = write_single(args.members[0], args.single, *named[0])
        if single.resolve() == Path(classimages.PACKAGED_FAST).with_name("fast.safetensors").resolve():
            classimages.draw_into(load_checkpoint(single), classimages.PACKAGED_FAST)  # its own class images
        print(f"{single}: {named[0][0]}, seed {load_checkpoint(single).info.get('seed')}  {named[0][1]}")
        return 0
    checkpoints = [load_checkpoint(folder) for folder in args.members]
    weights = save_ensemble(args.out, checkpoints, [n for n, _ in named], [c for _, c in named], args.views)
    if weights.resolve() == Path(classimages.PACKAGED).with_name("default.safetensors").resolve():
        classimages.draw_into(load_checkpoint(weights).member(0), classimages.PACKAGED)
    ensemble = load_checkpoint(weights)
    print(
        f"{weights} ({weights.stat().st_size / 2**20:.1f} MB) + {checkpoint_files(weights)[1].name}: {ensemble.member_count} "
        f"members, {ensemble.info.get('forward_mflop')} MFLOP per image"
    )
    for i, (name, command) in enumerate(named):
        print(f"  {i}: {name:14s} seed {checkpoints[i].info.get('seed')}  {command}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
