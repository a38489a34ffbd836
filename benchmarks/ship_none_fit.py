"""Fit the shipped models' "none of these" operating points and put them in the package.

    python benchmarks/ship_none_fit.py [--data DATA]

For each shipped model this runs `heritage data none-fit` with the settings docs/open_set.md's rule picked ("One
score for near and far negatives": energy at T = 1 for both, the class statistics on head.fc2 with ridge 1e-4 for
`default` and 1e-2 for `fast`; the threshold at the 3rd percentile of the validation photos' scores) into a temporary
folder, checks that the new pair holds the very networks of the packaged
one (every tensor equal), copies it over `src/heritage_cnn/weights/NAME.*`, and moves the packaged class images'
key to the new file: `classimages.model_key` is the weights file's SHA-256, which the statistics change, while the
class images depend on the networks alone. The command each model was fitted with is recorded in its JSON
(`open_set.command`), as the members' training commands are.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' own modules

from heritage_cnn.base.io import atomic_path, atomic_write_json, read_json
from heritage_cnn.inside import classimages
from heritage_cnn.models.checkpoint import checkpoint_files, load_checkpoint, shipped_checkpoint_path
from run import default_data

HERE = Path(__file__).resolve().parent
# docs/open_set.md, "One score for near and far negatives": energy for both; the class statistics every record carries
# (for `heritage teach`) keep the ridges the first rule chose for a Mahalanobis score on the tuning negatives
SETTINGS = {"default": ["--score", "energy", "--ridge", "1e-4"], "fast": ["--score", "energy", "--ridge", "1e-2"]}
FOLDERS = {"default": classimages.PACKAGED, "fast": classimages.PACKAGED_FAST}


def same_networks(a: str | Path, b: str | Path) -> bool:
    first, second = load_checkpoint(a).model.state_dict(), load_checkpoint(b).model.state_dict()
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def install(name: str, fitted: Path) -> Path:
    """Copy the fitted pair over the packaged one and give the packaged class images the new file's key."""
    target = shipped_checkpoint_path(name)
    old_key = classimages.model_key(load_checkpoint(name).member(0))
    for source, destination in zip(checkpoint_files(fitted), checkpoint_files(target), strict=True):
        with atomic_path(destination) as tmp:
            shutil.copyfile(source, tmp)
    new_key = classimages.model_key(load_checkpoint(name).member(0))
    manifest_path = FOLDERS[name] / classimages.MANIFEST
    manifest = read_json(manifest_path)
    if manifest.get("weights_sha256") != old_key:
        raise SystemExit(f"{manifest_path}: drawn for {manifest.get('weights_sha256')}, not the packaged {old_key}")
    atomic_write_json(manifest_path, {**manifest, "model": target.name, "weights_sha256": new_key})
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=default_data())
    parser.add_argument("--models", nargs="+", choices=sorted(SETTINGS), default=["default", "fast"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ship-none-fit-") as tmp:
        for name in args.models:
            fitted = Path(tmp) / name
            command = [sys.executable, "-m", "heritage_cnn.cli", "data", "none-fit", "--model", name]
            command += ["--data", args.data, *SETTINGS[name], "--out", str(fitted)]
            subprocess.run(command, check=True)
            if not same_networks(name, fitted):
                raise SystemExit(f"{fitted}: its networks differ from the packaged {name}'s")
            target = install(name, fitted)
            weights, meta = checkpoint_files(target)
            print(
                f"{name}: {weights.name} {weights.stat().st_size:,} bytes, {meta.name} {meta.stat().st_size:,} bytes; "
                f"class images still found: {classimages.packaged_for(classimages.model_key(load_checkpoint(name).member(0))) is not None}",
                flush=True,
            )


if __name__ == "__main__":
    main()
