"""Independent judges for the class images: networks of other architectures and normalisations.

    python benchmarks/judges.py train --arch resnet18 --seed 11 --out judges/j1-resnet18
    python benchmarks/judges.py score judges/j1-resnet18.safetensors IMAGE_FOLDER...

A class image means its class only if networks that played no part in drawing it, or in choosing how it is
drawn, recognise it. This file trains such networks outside the project's model code, so that they share
nothing with it but the data split and the augmentation:

- `resnet18`: torchvision's ResNet-18, from scratch, its stem adapted to 64 px (3x3 convolution, stride 1,
  then the usual max-pool), batch norm, inputs standardised per channel;
- `vgg-gn`: a plain VGG-style stack (64-64, 128-128, 256-256, 512, a max-pool after each group), group norm
  instead of batch norm, inputs scaled to [-1, 1], no residual connections.

Training: AdamW (2e-3, weight decay 0.05 on weights), one warm-up epoch then cosine, batch 64, label
smoothing 0.1, bf16 autocast where the device has it, the project's batched augmentation, on the
duplicate-aware training split (seed 0); the final weights are kept (no selection on validation).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

ARCHES = ("resnet18", "vgg-gn")


def build_judge(arch: str, num_classes: int) -> nn.Module:
    if arch == "resnet18":
        from torchvision.models import resnet18

        net = resnet18(num_classes=num_classes)
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        return net
    if arch == "vgg-gn":
        layers: list[nn.Module] = []
        channels = 3
        for group in ((64, 64), (128, 128), (256, 256), (512,)):
            for width in group:
                layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.GroupNorm(8, width), nn.ReLU()]
                channels = width
            layers.append(nn.MaxPool2d(2))
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(channels, num_classes)]
        return nn.Sequential(*layers)
    raise ValueError(f"unknown judge architecture {arch!r}; one of {ARCHES}")


class Judge(nn.Module):
    """A judge network with its own input normalisation: takes [0, 1] RGB images of any size."""

    def __init__(self, arch: str, classes: list[str], mean: list[float], std: list[float], size: int = 64):
        super().__init__()
        self.arch, self.classes, self.size = arch, list(classes), size
        self.net = build_judge(arch, len(classes))
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.shape[-1] != self.size or pixels.shape[-2] != self.size:
            pixels = F.interpolate(pixels, size=(self.size, self.size), mode="bilinear", antialias=True)
        return self.net((pixels - self.mean) / self.std)


def save_judge(judge: Judge, path: Path, info: dict) -> None:
    from safetensors.torch import save_file

    meta = {"arch": judge.arch, "classes": judge.classes, "size": judge.size, **info}
    tmp = path.with_suffix(".tmp")
    save_file(
        {k: v.contiguous() for k, v in judge.state_dict().items()}, str(tmp), metadata={"judge": json.dumps(meta)}
    )
    tmp.replace(path)


def load_judge(path: str | Path, device: str = "cpu") -> Judge:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["judge"])
    judge = Judge(meta["arch"], meta["classes"], [0.0] * 3, [1.0] * 3, meta["size"])
    judge.load_state_dict(load_file(str(path)))
    judge.info = meta
    return judge.to(device).eval()


def train_judge(args: argparse.Namespace) -> Path:
    from heritage_cnn.base.devices import mixed_precision
    from heritage_cnn.data.augment import AugmentConfig, augment_batch
    from heritage_cnn.data.folders import channel_stats
    from heritage_cnn.training.config import TrainConfig
    from heritage_cnn.training.optim import learning_rate
    from heritage_cnn.training.prepare import prepare_data

    torch.manual_seed(args.seed)
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    config = TrainConfig(data=args.data, out=args.out, cache_dir=args.cache_dir, progress=False, seed=args.seed)
    _, train_set, val_set = prepare_data(config)
    if args.arch == "vgg-gn":  # another input normalisation: [-1, 1]
        mean, std = [0.5] * 3, [0.5] * 3
    else:
        mean, std = channel_stats(train_set.images)
    judge = Judge(args.arch, train_set.classes, mean, std).to(device, memory_format=torch.channels_last)
    decay = [p for p in judge.parameters() if p.ndim > 1]
    rest = [p for p in judge.parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}])
    use_amp, amp_dtype = mixed_precision(device, True)
    images, labels = train_set.images.to(device), train_set.labels.to(device)
    steps_per_epoch = len(images) // args.batch_size
    total, step, started = steps_per_epoch * args.epochs, 0, time.perf_counter()
    generator = torch.Generator(device=device).manual_seed(args.seed)
    for epoch in range(args.epochs):
        judge.train()
        order = torch.randperm(len(images), generator=generator, device=device)
        for start in range(0, steps_per_epoch * args.batch_size, args.batch_size):
            index = order[start : start + args.batch_size]
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total, steps_per_epoch, args.lr)
            x = augment_batch(images[index], AugmentConfig(), generator).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                loss = F.cross_entropy(judge(x).float(), labels[index], label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        if not math.isfinite(loss.item()):
            raise SystemExit(f"{args.out}: the loss became {loss.item()} at epoch {epoch + 1}; lower --lr")
    accuracy = score_images(judge, val_set.images, val_set.labels, device)
    seconds = time.perf_counter() - started
    out = Path(args.out).with_suffix(".safetensors")
    out.parent.mkdir(parents=True, exist_ok=True)
    info = {"seed": args.seed, "epochs": args.epochs, "val_accuracy": accuracy, "train_seconds": round(seconds, 1)}
    save_judge(judge.cpu(), out, {**info, "command": " ".join(args.argv)})
    print(f"{out}: {args.arch} seed {args.seed}, validation accuracy {accuracy:.4f}, {seconds:.0f} s")
    return out


@torch.no_grad()
def judge_probabilities(judge: Judge, pixels: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """Softmax of the judge for [0, 1] float images (N, 3, H, W)."""
    judge.eval()
    device = next(judge.parameters()).device
    out = [
        judge(pixels[i : i + batch_size].to(device)).float().softmax(1).cpu() for i in range(0, len(pixels), batch_size)
    ]
    return torch.cat(out) if out else torch.empty(0, len(judge.classes))


def score_images(judge: Judge, images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> float:
    probs = judge_probabilities(judge.to(device), images.float().div(255))
    return round(float((probs.argmax(1) == labels.cpu()).float().mean()), 4)


def main(argv: list[str] | None = None) -> None:
    import sys

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train one judge")
    p.add_argument("--arch", choices=ARCHES, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out", required=True, help="output path; .safetensors is added")
    p.add_argument("--data", default="../shared/datasets/ahe64")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--device", default="auto")
    p.add_argument("--cache-dir", default=None)
    args = parser.parse_args(argv)
    args.argv = ["python", "benchmarks/judges.py", *(argv if argv is not None else sys.argv[1:])]
    if args.command == "train":
        train_judge(args)


if __name__ == "__main__":
    main()
