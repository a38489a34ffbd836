"""Outlier exposure measured for "none of these": fine-tune a trained network so that photos of none of the ten get a
uniform softmax (Hendrycks, Mazeika & Dietterich, "Deep Anomaly Detection with Outlier Exposure", ICLR 2019).

    python benchmarks/outlier_exposure.py --data DATA --negatives data/negatives --out runs/oe/fast-oe \
        [--model fast] [--epochs 3] [--lr 3e-4] [--weight 0.5] [--seed 0] [--teacher default --distill-weight 0.9]

The protocol was declared before the run in docs/open_set.md ("Outlier exposure, declared before measured"). The
network's own training photos (its recorded split, rebuilt and checked) are replayed with `heritage train`'s
augmentation and label-smoothed cross-entropy (with `--teacher`, mixed with the teachers' soft targets on the same
augmented photos, as `heritage train --teacher` distils: each member of a teacher ensemble is one teacher); each step adds as many outlier images, augmented alike, whose loss is
the cross-entropy to the uniform distribution times `--weight`. The outliers are `NEG/tuning/` and further images
drawn by `benchmarks/negative_pictures.py`'s generators under another seed (with `--with-training`, also `NEG/training/`);
`NEG/reporting/` is never read. Writes
OUT.safetensors / OUT.json (a checkpoint every command and `benchmarks/open_set.py --models OUT` loads; it keeps
the base network's records and adds `outlier_exposure`) and prints the validation accuracy of both networks with a
paired bootstrap interval of the difference. The fine-tune stays a benchmark; outlier exposure from the first step
is `heritage train --outliers DIR`, and `--write-pool DIR` writes this pool as a folder it reads.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from _negatives_build import TRAINING, draw_synthetic
from heritage_cnn.data.augment import AugmentConfig, augment_batch
from heritage_cnn.data.split import SplitRecipe
from heritage_cnn.inference.evaluate import predict_logits
from heritage_cnn.models.checkpoint import load_checkpoint, save_checkpoint, save_ensemble
from heritage_cnn.training.config import TrainConfig
from heritage_cnn.training.losses import (
    distillation_loss,
    load_teachers,
    teacher_probabilities,
    uniform_cross_entropy,
)
from heritage_cnn.training.optim import learning_rate, make_optimizer
from heritage_cnn.training.prepare import prepare_data
from negative_pictures import GENERATORS

DRAWN_PER_GENERATOR = 150  # 1,050 drawn images beside tuning/'s 755
DRAWN_SEED = 1  # tuning/ and reporting/ are drawn under seed 0: a stream neither of them uses
BATCH = 32  # the training photos of a step; as many outliers join them
LABEL_SMOOTHING = 0.1  # the shipped networks' recipe


def outlier_pool(negatives: Path, with_training: bool = False) -> torch.Tensor:
    """uint8 (N, 3, 64, 64): every image of NEG/tuning/ and the drawn images of seed DRAWN_SEED; with
    `with_training`, then every image of NEG/training/ (the cut-out scenes only training reads)."""
    pictures = read_side(negatives / "tuning")
    pictures += [
        draw_synthetic(name, DRAWN_SEED, "tuning", index).convert("RGB")
        for name in GENERATORS
        for index in range(DRAWN_PER_GENERATOR)
    ]
    if with_training:
        pictures += read_side(negatives / TRAINING)
    arrays = np.stack([np.asarray(p.resize((64, 64)) if p.size != (64, 64) else p) for p in pictures])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()


def read_side(folder: Path) -> list[Image.Image]:
    """Every PNG below one side of the negative set, in name order, as RGB."""
    files = sorted(folder.rglob("*.png"))
    if not files:
        raise SystemExit(f"{folder}: no PNG files; build them with benchmarks/negatives.py")
    return [Image.open(path).convert("RGB") for path in files]


def write_pool(pool: torch.Tensor, folder: Path) -> None:
    """The pool as PNG files in a new folder: what `heritage train --outliers` reads."""
    folder.mkdir(parents=True, exist_ok=False)
    for index, picture in enumerate(pool.permute(0, 2, 3, 1).numpy()):
        Image.fromarray(picture).save(folder / f"{index:05d}.png")
    print(f"{folder}: {len(pool)} outlier pictures")


def teacher_networks(name: str) -> list:
    """Each network of model `name` as a teacher (batch norm folded, frozen), as `heritage train --teacher` loads one."""
    teacher = load_checkpoint(name)
    with tempfile.TemporaryDirectory() as folder:  # load_teachers reads files: each member saved on its own
        paths = [save_checkpoint(Path(folder) / f"member{i}", teacher.member(i)) for i in range(teacher.member_count)]
        return load_teachers(paths, torch.device("cpu"))


def paired_interval(a: np.ndarray, b: np.ndarray, rounds: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of b - a (per-photo correctness) with a 95 % percentile-bootstrap interval over photos."""
    rng = np.random.default_rng(seed)
    diff = b.astype(float) - a.astype(float)
    draws = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(rounds)]
    return float(diff.mean()), float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def fine_tune(base, train_set, val_set, pool: torch.Tensor, teachers: list, args, config: TrainConfig) -> nn.Module:
    """Network `base` (a single-network Checkpoint) fine-tuned in place with outliers; prints each epoch."""
    model = base.model
    trained = {"all": ("",), "last": (f"{model.stage_names[-1]}.", "head."), "head": ("head.",)}[args.part]
    frozen = [module for name, module in model.named_children() if not f"{name}.".startswith(trained)]
    for name, parameter in model.named_parameters():  # the frozen layers and their batch norm statistics stay
        parameter.requires_grad_(name.startswith(trained))
    optimizer = make_optimizer(model, config)
    generator = torch.Generator().manual_seed(args.seed + (base.index or 0))
    steps = len(train_set) // BATCH
    started = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        for module in frozen:
            module.eval()
        order = torch.randperm(len(train_set), generator=generator)
        outliers = torch.randint(0, len(pool), (steps * BATCH,), generator=generator)
        sums = {"ce": 0.0, "oe": 0.0}
        for step in range(steps):
            index, out_index = order[step * BATCH : (step + 1) * BATCH], outliers[step * BATCH : (step + 1) * BATCH]
            pixels = augment_batch(torch.cat([train_set.images[index], pool[out_index]]), AugmentConfig(), generator)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(epoch * steps + step, args.epochs * steps, 0, args.lr)
            logits = model(base.normalise(pixels).contiguous(memory_format=torch.channels_last))
            ce = F.cross_entropy(logits[:BATCH].float(), train_set.labels[index], label_smoothing=LABEL_SMOOTHING)
            if teachers:  # the photos' targets: hard labels and the teachers' answers on the same augmented photos
                soft = teacher_probabilities(teachers, pixels[:BATCH], args.distill_temperature)
                kd = distillation_loss(logits[:BATCH], soft, args.distill_temperature)
                ce = (1 - args.distill_weight) * ce + args.distill_weight * kd
            oe = uniform_cross_entropy(logits[BATCH:])
            loss = ce + args.weight * oe
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if not torch.isfinite(loss):
                raise SystemExit(f"the loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}")
            sums["ce"] += ce.item()
            sums["oe"] += oe.item()
        model.eval()
        correct = predict_logits(model, val_set.images, base.normalise).argmax(1) == val_set.labels
        print(
            f"epoch {epoch + 1}/{args.epochs}: cross-entropy {sums['ce'] / steps:.3f}, to-uniform {sums['oe'] / steps:.3f} "
            f"(uniform: {np.log(len(base.classes)):.3f}), validation accuracy {correct.float().mean():.4f}, "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data")
    parser.add_argument("--negatives", type=Path, required=True)
    parser.add_argument("--out", help="checkpoint path without suffix")
    parser.add_argument(
        "--write-pool",
        type=Path,
        help="only write the outlier pool there as PNG files (for `heritage train --outliers`), then stop",
    )
    parser.add_argument(
        "--with-training",
        action="store_true",
        help="the pool also holds NEG/training/ (cut-out scenes of benchmarks/negatives.py, read by training alone)",
    )
    parser.add_argument("--model", default="fast")
    parser.add_argument("--member", type=int, default=None, help="of an ensemble: only this network (from 0)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--weight", type=float, default=0.5, help="lambda: the outliers' share of the loss")
    parser.add_argument("--seed", type=int, default=0, help="member i of an ensemble draws its batches from seed + i")
    parser.add_argument(
        "--part",
        choices=("all", "last", "head"),
        default="all",
        help="what is fine-tuned: every layer, the last stage and the head, or the head only",
    )
    parser.add_argument("--teacher", default=None, help="a model whose networks give the training photos soft targets")
    parser.add_argument("--distill-weight", type=float, default=0.9, help="the soft targets' share (`fast`'s recipe)")
    parser.add_argument("--distill-temperature", type=float, default=2.0, help="(`fast`'s recipe)")
    args = parser.parse_args()
    if args.write_pool is not None:
        write_pool(outlier_pool(args.negatives, args.with_training), args.write_pool)
        return
    if not (args.data and args.out):
        parser.error("--data and --out are needed to fine-tune")
    torch.manual_seed(args.seed)
    base = load_checkpoint(args.model)
    if args.member is not None:
        base = base.member(args.member)
    recorded = base.member(0).info["split"]  # an ensemble's members share theirs
    split = {k: v for k, v in recorded.items() if k in ("val_fraction", "seed", "near_duplicate_distance")}
    config = TrainConfig(
        data=args.data, out=args.out, optimizer="adamw", lr=args.lr, weight_decay=0.05, split=SplitRecipe(**split)
    )
    _, train_set, val_set = prepare_data(config)
    expected = (recorded["train"], recorded["val"])
    if (len(train_set), len(val_set)) != expected:
        raise SystemExit(f"the rebuilt split has {len(train_set)} / {len(val_set)} photos, the model {expected}")
    teachers = [] if args.teacher is None else teacher_networks(args.teacher)
    pool = outlier_pool(args.negatives, args.with_training)
    print(f"training photos {len(train_set)}, outlier pool {len(pool)}, validation photos {len(val_set)}")

    reference = predict_logits(base.model, val_set.images, base.normalise).argmax(1) == val_set.labels
    record = vars(args) | {
        "negatives": str(args.negatives),
        "pool": len(pool),
        "steps_per_epoch": len(train_set) // BATCH,
    }
    if base.member_count == 1:
        model = fine_tune(base, train_set, val_set, pool, teachers, args, config)
        info = base.info | {"outlier_exposure": record, "name": f"{base.info.get('name', args.model)}+oe"}
        saved = save_checkpoint(args.out, replace(base, model=model, info=info))
    else:  # each network in turn, then the ensemble again, with the model's own views
        members = []
        for i in range(base.member_count):
            member = base.member(i)
            print(f"member {i}: {member.info.get('name')}", flush=True)
            model = fine_tune(member, train_set, val_set, pool, teachers, args, config)
            name = f"{member.info.get('name', i)}+oe"
            members.append(replace(member, model=model, info=member.info | {"outlier_exposure": record, "name": name}))
        saved = save_ensemble(args.out, members, views=base.views)
    model = load_checkpoint(saved).model
    correct = predict_logits(model, val_set.images, base.normalise).argmax(1) == val_set.labels
    delta = paired_interval(reference.numpy(), correct.numpy())
    print(
        f"{saved}: validation accuracy {correct.float().mean():.4f} against {reference.float().mean():.4f} for "
        f"{args.model}: {100 * delta[0]:+.2f} pt ({100 * delta[1]:+.2f}…{100 * delta[2]:+.2f}, paired bootstrap "
        f"over the {len(val_set)} photos)"
    )


if __name__ == "__main__":
    main()
