"""A check for uncorrelated noise in front of the none-of-these score, measured before anything ships.
(docs/open_set.md, "A check for noise in front of the score, declared before measured")

    python benchmarks/noise_check.py --data DATA --negatives data/negatives --out benchmarks/noise_check

Photographs, drawings and documents have strongly correlated neighbouring pixels; uniform noise has none, and every
network here files it as stained glass with a photo's confidence. The statistic (`openset.neighbour_correlation`, the
one the shipped check computes) is the correlation of each pixel with its right and lower neighbours in the 64 px
image the network sees; the threshold sits just below the lowest value among the validation photos (no photo of the ten is called noise), and `reporting/` is read once, for
`default` at its shipped energy threshold: the share of negatives filed into a class before and after the check.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from heritage_cnn.base.io import atomic_write_json, atomic_write_text
from heritage_cnn.inference.openset_eval import load_negatives, scored_logits
from heritage_cnn.models.checkpoint import load_checkpoint
from heritage_cnn.models.openset import neighbour_correlation
from heritage_cnn.models.openset_point import NOISE_MARGIN as MARGIN
from run import hardware
from teach_new_class import split_of


def sources(folder: Path) -> list[str]:
    """Each negative's kind (its folder below `folder`), and for a drawn one its generator (the file name less its
    number), in `load_negatives`'s order."""
    from heritage_cnn.inference.classifier import find_photos

    photos, _ = find_photos([folder])
    kinds = [Path(p).relative_to(folder).parts[0] for p in photos]
    return [
        k if k != "synthetic" else f"{k}:{Path(p).stem.rsplit('-', 1)[0]}" for k, p in zip(kinds, photos, strict=True)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--negatives", type=Path, default=Path("data/negatives"))
    parser.add_argument("--model", default="default")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("noise_check"))
    args = parser.parse_args()
    _, val = split_of(args.data)
    val_statistic = neighbour_correlation(val.images).numpy()
    threshold = float(val_statistic.min()) - MARGIN
    result: dict = {"date": datetime.date.today().isoformat(), "hardware": hardware(), "threshold": threshold}
    result["val"] = {"photos": len(val), "called_noise": int((val_statistic < threshold).sum())}
    checkpoint = load_checkpoint(args.model)
    point = checkpoint.open_set
    for side in ("tuning", "reporting"):
        images, skipped = load_negatives(args.negatives / side, checkpoint.image_size)
        names = sources(args.negatives / side)
        if skipped or len(names) != len(images):
            raise SystemExit(f"{args.negatives / side}: {len(skipped)} unreadable photos; rebuild the negatives")
        noise = neighbour_correlation(images).numpy() < threshold
        _, scores = scored_logits(checkpoint, point, images)
        filed = scores.numpy() >= point.threshold
        of = {name: np.array(names) == name for name in sorted(set(names))}
        by_source = {
            name: {
                "n": int(mask.sum()),
                "noise": int((noise & mask).sum()),
                "filed_before": int((filed & mask).sum()),
                "filed_after": int((filed & ~noise & mask).sum()),
            }
            for name, mask in of.items()
        }
        result[side] = {
            "photos": len(images),
            "called_noise": int(noise.sum()),
            "filed_before": float(filed.mean()),
            "filed_after": float((filed & ~noise).mean()),
            "by_source": by_source,
        }
        print(
            f"{side}: noise {noise.sum()} of {len(images)}; filed {filed.mean():.2%} -> {(filed & ~noise).mean():.2%}"
        )
    atomic_write_json(args.out.with_suffix(".json"), result)
    atomic_write_text(args.out.with_suffix(".md"), markdown(result, args.model))


def markdown(result: dict, model: str) -> str:
    lines = [
        f"# A check for noise in front of the score ({result['date']}, {result['hardware']['cpu']})",
        "",
        f"Threshold {result['threshold']:.4f} (the lowest validation photo's statistic less {MARGIN}); validation "
        f"photos called noise: {result['val']['called_noise']} of {result['val']['photos']}. `{model}` at its shipped "
        "threshold. `python benchmarks/noise_check.py --data DATA --negatives data/negatives`.",
        "",
        "| side | source | photos | called noise | filed before | filed after |",
        "|---|---|---|---|---|---|",
    ]
    for side in ("tuning", "reporting"):
        part = result[side]
        for name, row in part["by_source"].items():
            lines.append(
                f"| {side} | {name} | {row['n']} | {row['noise']} | {row['filed_before']} | {row['filed_after']} |"
            )
        lines.append(
            f"| **{side}** | **all** | {part['photos']} | {part['called_noise']} | {100 * part['filed_before']:.2f} % "
            f"| **{100 * part['filed_after']:.2f} %** |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
