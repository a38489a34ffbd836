"""Same training numerics before and after a change that should not move them (a refactor, a layout change).

`run` trains five tiny networks on synthetic photos (the tests' drawer), one per recipe and optional loss: the full
recipe (Muon), adamw with MixUp and CutMix, quick with the consistency term and balanced loss, quick distilled from
the first, and SGD with a weight average; two epochs each, one thread, on the source tree given. `compare` checks
two such folders by content: every tensor of every best/last/resume file bit-equal, and every metadata field equal
except wall-clock timings and the run folder's own name. File hashes cannot be compared: safetensors writes its
header's metadata in no fixed order, and the resume state records seconds.

    git worktree add /tmp/before REV
    python benchmarks/numerics_identity.py run --src /tmp/before/src --out /tmp/num-before
    python benchmarks/numerics_identity.py run --src src --out /tmp/num-after
    python benchmarks/numerics_identity.py compare /tmp/num-before /tmp/num-after
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TIMINGS = {"epoch_seconds", "train_images_per_second", "seconds"}
COMMON = ["--widths", "8,16", "--blocks", "1,1", "--epochs", "2", "--threads", "1", "-q", "--overwrite"]
RUNS = {  # name -> the flags beside COMMON; "{out}" is the output folder (the teacher of distil)
    "full": ["--recipe", "full"],
    "adamw": ["--recipe", "adamw", "--mixup", "0.2", "--cutmix", "1.0"],
    "quick": ["--recipe", "quick", "--consistency", "0.5", "--balanced-loss"],
    "distil": ["--recipe", "quick", "--teacher", "{out}/full", "--distill-weight", "0.5"],
    "sgd": ["--recipe", "full", "--optimizer", "sgd", "--lr", "0.05", "--ema", "0.9"],
}


def run(src: Path, out: Path) -> None:
    sys.path.insert(0, str(HERE.parent / "tests"))
    from conftest import make_dataset  # the tests' synthetic drawer: no dataset photo

    data = out / "data"
    if not data.exists():
        make_dataset(data, per_class=12)
    env = {**os.environ, "PYTHONPATH": str(src.resolve())}
    for name, flags in RUNS.items():
        flags = [f.format(out=out) for f in flags]
        command = [sys.executable, "-m", "heritage_cnn.cli", "train", "--data", str(data), "--out", str(out / name)]
        subprocess.run([*command, *COMMON, *flags], env=env, check=True)


def _scrub(value: object) -> object:
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _metadata(raw: dict[str, str] | None) -> dict[str, object]:
    return {k: _scrub(json.loads(v)) if v[:1] in "[{" else v for k, v in (raw or {}).items()}


def compare(a: Path, b: Path) -> bool:
    import torch
    from safetensors import safe_open

    same = total = 0
    for name in RUNS:
        for kind in ("best", "last", "resume"):
            left, right = (
                safe_open(a / name / f"{kind}.safetensors", "pt"),
                safe_open(b / name / f"{kind}.safetensors", "pt"),
            )
            tensors = set(left.keys()) == set(right.keys()) and all(
                torch.equal(left.get_tensor(k), right.get_tensor(k))
                for k in left.keys()  # noqa: SIM118 (a safetensors handle, not a dict)
            )
            ok = tensors and _metadata(left.metadata()) == _metadata(right.metadata())
            if kind != "resume":
                json_a = (a / name / f"{kind}.json").read_text().replace(str(a), "RUN")
                json_b = (b / name / f"{kind}.json").read_text().replace(str(b), "RUN")
                ok = ok and _scrub(json.loads(json_a)) == _scrub(json.loads(json_b))
            print(f"{'same' if ok else 'DIFFERENT'}  {name}/{kind}")
            same, total = same + ok, total + 1
    print(f"{same} of {total} checkpoints the same (tensors bit for bit, metadata but timings)")
    return same == total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("run", help="train the five tiny runs with the source tree SRC")
    one.add_argument("--src", type=Path, required=True)
    one.add_argument("--out", type=Path, required=True)
    two = sub.add_parser("compare", help="compare two run folders by content")
    two.add_argument("a", type=Path)
    two.add_argument("b", type=Path)
    args = parser.parse_args()
    if args.command == "run":
        run(args.src, args.out)
        return 0
    return 0 if compare(args.a, args.b) else 1


if __name__ == "__main__":
    sys.exit(main())
