"""Class-image synthesis: do the images mean the class to a network that did not draw them?

    python benchmarks/bench_synthesis.py                 # 4 images per class, ours vs pixel-space ascent
    python benchmarks/bench_synthesis.py --model runs/a/best.safetensors --n 4

A second network (another seed and width, same data) is trained once into benchmarks/out/second
(git-ignored) with the `train` API. Images are generated with the default settings of
`heritage_cnn.synthesis` and, as the baseline, with unregularised gradient ascent on raw pixels
(no transforms, no penalties) in the same run. Reported: the second network's top-1 agreement with
the target class (transfer accuracy), per class and overall; the generating network's mean target
probability; seconds per image. Writes benchmarks/out/synthesis.json, synthesis.md and generated_{ours,baseline}/ (as `heritage generate --all`).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
SECOND = OUT / "second"


def second_network(data: Path, epochs: int = 20) -> Path:
    """The judge: seed 1 and narrower stages (16..128 instead of 24..192), trained once and cached."""
    from heritage_cnn.io import read_json
    from heritage_cnn.model import ModelConfig
    from heritage_cnn.train import TrainConfig, train

    weights, meta = SECOND / "last.safetensors", SECOND / "last.json"
    if weights.exists() and meta.exists() and read_json(meta).get("epochs_trained") == epochs:
        return weights
    config = TrainConfig(
        data=str(data),
        out=str(SECOND),
        epochs=epochs,
        seed=1,
        model=ModelConfig(widths=(16, 32, 64, 128), blocks=(1, 1, 1, 1)),
        resume=True,  # continues an interrupted run
        progress=False,
    )
    print(f"training the second network into {SECOND} (once; about 10 min on 2 cores)")
    return train(config).checkpoint


def judge(checkpoint: Any, images: Any, targets: list[int]) -> dict[str, Any]:
    """Top-1 agreement with the target class and mean target probability, per class and overall."""
    import torch

    from heritage_cnn.synthesis import classify

    probs = classify(checkpoint, images)
    target = torch.tensor(targets)
    hit = (probs.argmax(1) == target).float()
    p = probs[torch.arange(len(target)), target]
    per_class = {
        name: {"accuracy": hit[target == k].mean().item(), "probability": p[target == k].mean().item()}
        for k, name in enumerate(checkpoint.classes)
        if (target == k).any()
    }
    return {"accuracy": hit.mean().item(), "probability": p.mean().item(), "per_class": per_class}


def run_method(name: str, settings: Any, model: Any, second: Any, n: int, seed: int) -> dict[str, Any]:
    from heritage_cnn.synthesis import draw_classes, write_generated

    generated = draw_classes(model, list(range(len(model.classes))), n, 64, settings, seed)
    write_generated(OUT / f"generated_{name}", generated, model, seed, n)  # what `heritage generate --all` writes
    row = {
        "settings": {**settings.__dict__},
        "seconds_per_image": generated.seconds / len(generated.images),
        "generating": judge(model, generated.images, generated.targets),
        "transfer": judge(second, generated.images, generated.targets),
    }
    print(
        f"{name:>9}: generating p {row['generating']['probability']:.3f} top-1 {row['generating']['accuracy']:.3f} | "
        f"second network top-1 {row['transfer']['accuracy']:.3f} p {row['transfer']['probability']:.3f} | "
        f"{row['seconds_per_image']:.2f} s/image"
    )
    return row


def single_image_seconds(model: Any, settings: Any) -> float:
    """Time of one image rendered alone (no batching), the cost a user of --class --n 1 sees."""
    from heritage_cnn.synthesis import draw_classes

    return draw_classes(model, [0], 1, 64, settings, progress=False).seconds


def markdown(result: dict[str, Any]) -> str:
    ours, base = result["methods"]["ours"], result["methods"]["baseline"]
    lines = [
        f"Generating model: `{result['model']}`; second network: `{result['second_model']}` "
        f"(validation accuracy {result['second_val_accuracy']:.3f}); {result['n']} images per class, seed {result['seed']}; "
        f"{result['machine']}.",
        "",
        "| class | transfer, ours | transfer, pixel baseline | p (generating), ours | p (generating), baseline |",
        "|---|---|---|---|---|",
    ]
    for name in ours["transfer"]["per_class"]:
        lines.append(
            f"| {name} | {ours['transfer']['per_class'][name]['accuracy']:.2f} | "
            f"{base['transfer']['per_class'][name]['accuracy']:.2f} | "
            f"{ours['generating']['per_class'][name]['probability']:.3f} | "
            f"{base['generating']['per_class'][name]['probability']:.3f} |"
        )
    lines += [
        f"| **all** | **{ours['transfer']['accuracy']:.3f}** | **{base['transfer']['accuracy']:.3f}** | "
        f"**{ours['generating']['probability']:.3f}** | **{base['generating']['probability']:.3f}** |",
        "",
        f"Seconds per 64 px image: ours {ours['seconds_per_image']:.2f} (batch of {result['n'] * 10}), "
        f"{result['single_image_seconds']:.2f} alone; baseline {base['seconds_per_image']:.2f}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    import torch

    from heritage_cnn.checkpoint import default_checkpoint_path, load_checkpoint
    from heritage_cnn.io import atomic_write_json, atomic_write_text
    from heritage_cnn.synthesis import PIXEL_BASELINE, Settings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="generating checkpoint (default: the shipped model)")
    parser.add_argument("--member", type=int, default=0, help="network of an ensemble to look inside (default 0)")
    parser.add_argument("--n", type=int, default=4, help="images per class (default 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    parser.add_argument("--second", help="judge checkpoint instead of benchmarks/out/second (trained when missing)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_checkpoint(args.model or default_checkpoint_path()).member(args.member)
    from run import data_root  # benchmarks/run.py, beside this script

    second = load_checkpoint(args.second or second_network(data_root()))
    load = os.getloadavg()[0]
    methods = {
        "ours": run_method("ours", Settings(), model, second, args.n, args.seed),
        "baseline": run_method("baseline", PIXEL_BASELINE, model, second, args.n, args.seed),
    }
    result = {
        "model": str(model.path),
        "second_model": str(second.path),
        "second_val_accuracy": second.info.get("validation", {}).get("val_accuracy", float("nan")),
        "n": args.n,
        "seed": args.seed,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__} with {torch.get_num_threads()} threads, load average {load:.1f} at the start",
        "single_image_seconds": single_image_seconds(model, Settings()),
        "methods": methods,
    }
    atomic_write_json(OUT / "synthesis.json", result)
    atomic_write_text(OUT / "synthesis.md", markdown(result))
    print(markdown(result))
    print(f"written: {OUT / 'synthesis.json'}, {OUT / 'synthesis.md'}")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"benchmark took {(time.perf_counter() - started) / 60:.1f} min")
