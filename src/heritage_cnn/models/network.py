"""The network: conv + batch norm + ReLU blocks, max-pooling between stages, a fully connected head.

Every layer is an `nn.Conv2d`, `nn.BatchNorm2d`, `nn.ReLU`, `nn.MaxPool2d` or `nn.Linear` module
with a stable dotted name (`stage2.block1.conv1`, `stage2.pool`, `head.fc1`), so that the
visualisation code can address any layer by name and replay the network step by step. A network
with `input_scale` > 1 starts with `resize` (bilinear enlargement of the 64 px photo, no parameters):
it sees the photo as if it had been taken at 80 or 96 px, a member that differs from the others by scale.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TypeVar

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from heritage_cnn.base.checks import config_from_dict, in_range, require
from heritage_cnn.data.decode import IMAGE_SIZE

MAX_PARAMETERS = 200_000_000  # far above any network this project trains; bounds what a crafted config allocates
# The widest stage: 1024 channels on a 64 x 64 photo are 4 M values per photo in each layer's output, 0.5 GiB for a
# batch of 32 in float32, of which training keeps several per layer: about what a machine with tens of GiB trains,
# and over 5x the widest stage a recipe uses (192). Wider asks for more memory than the machine has at the first step
# (100000 channels: 1.6 TiB per layer), a traceback from the allocator instead of a refusal of the setting.
MAX_WIDTH = 1024


@dataclass(frozen=True)
class ModelConfig:
    """Width and depth of the network; saved with every checkpoint."""

    num_classes: int = 10
    widths: tuple[int, ...] = (24, 48, 96, 192)  # channels of stage 1..n; each stage ends in a 2x2 max-pool
    # conv blocks per stage; the second block of stage 4: benchmarks/recipes.md, "Full-length runs"
    blocks: tuple[int, ...] = (1, 1, 1, 2)
    stem_kernel: int = 5  # first layer's kernel: larger, so its learned filters are legible
    residual: bool = True  # stages after the first use residual blocks (two convs + skip)
    hidden: int = 256  # width of the hidden fully connected layer
    dropout: float = 0.2
    input_scale: float = 1.0  # the network first enlarges its input this much (bilinear): 1.5 trains at 96 px
    # stage 1 as conv, 2x2 max-pool, batch norm, ReLU: the element-wise work on a quarter of the pixels, 0.91x the
    # quick network's step on an AVX2 CPU (benchmarks/recipes.md, "Where the AVX2 demo's time goes"). The pool
    # commutes with ReLU, and with batch norm where its scale is positive: nearly the same function class.
    stem_pool_first: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
        require(
            len(self.widths) == len(self.blocks) and bool(self.widths),
            f"{{0}} {self.widths} and {{1}} {self.blocks} must be non-empty and of equal length",
            "widths",
            "blocks",
        )
        require(
            min(self.widths) >= 1 and max(self.widths) <= MAX_WIDTH,
            f"{{0}} must be from 1 to {MAX_WIDTH} channels each, got {self.widths}",
            "widths",
        )
        require(min(self.blocks) >= 1, f"{{0}} must be at least 1 block per stage, got {self.blocks}", "blocks")
        require(self.num_classes >= 2, f"{{0}} must be at least 2, got {self.num_classes}", "num_classes")
        require(
            len(self.widths) <= 8 and max(self.blocks) <= 32,
            f"at most 8 stages of at most 32 blocks, got {{0}} {self.blocks}",
            "blocks",
        )
        require(
            1 <= self.stem_kernel <= 15 and self.stem_kernel % 2 == 1,
            f"{{0}} must be an odd number from 1 to 15, got {self.stem_kernel}",
            "stem_kernel",
        )
        require(in_range(self.input_scale, 1, 4), f"{{0}} must be from 1 to 4, got {self.input_scale}", "input_scale")
        object.__setattr__(self, "input_scale", float(self.input_scale))
        require(
            not self.stem_pool_first or self.blocks[0] == 1,
            f"{{0}} needs one block in stage 1, got {self.blocks}",
            "stem_pool_first",
        )
        require(self.hidden >= 1, f"{{0}} must be positive, got {self.hidden}", "hidden")
        require(
            in_range(self.dropout, 0, 1, below_high=True), f"{{0}} must be in [0, 1), got {self.dropout}", "dropout"
        )
        if self.weight_count() > MAX_PARAMETERS:
            raise ValueError(f"{self.weight_count():,} parameters is more than the {MAX_PARAMETERS:,} allowed")

    def weight_count(self) -> int:
        """Weights of conv and linear layers, counted from the config alone (nothing is allocated)."""
        total, in_channels = 0, 3
        for index, (width, count) in enumerate(zip(self.widths, self.blocks, strict=True)):
            for b in range(count):
                kernel = self.stem_kernel if index == 0 and b == 0 else 3
                total += in_channels * width * kernel * kernel
                if index and self.residual:
                    total += width * width * 9 + (in_channels * width if in_channels != width else 0)
                in_channels = width
        return total + in_channels * self.hidden + self.hidden * self.num_classes

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        return config_from_dict(cls, data)


class ConvBlock(nn.Module):
    """conv -> batch norm -> ReLU; with `pool_first`, conv -> 2x2 max-pool -> batch norm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, pool_first: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.pool: nn.Module | None = nn.MaxPool2d(2) if pool_first else None
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.pool is not None:
            x = self.pool(x)
        return self.relu(self.bn(x))


class ResidualBlock(nn.Module):
    """Two conv + batch norm layers with a skip connection (1x1 projection when widths differ)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(
                OrderedDict(conv=nn.Conv2d(in_channels, out_channels, 1, bias=False), bn=nn.BatchNorm2d(out_channels))
            )
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class Stage(nn.Sequential):
    """`block1 .. blockN` then `pool` (2x2 max-pool): the unit whose output halves the resolution. A stem whose
    block pools first (`ModelConfig.stem_pool_first`) has no `pool` of its own."""


class HeritageNet(nn.Module):
    """A small CNN for 64x64 photos of architectural elements, trained from scratch."""

    def __init__(self, config: ModelConfig = ModelConfig()) -> None:
        super().__init__()
        self.config = config
        self.resize: nn.Module = nn.Identity()  # parameter-free, named so that hooks and the deconvnet can find it
        if config.input_scale != 1.0:
            self.resize = nn.Upsample(scale_factor=config.input_scale, mode="bilinear", align_corners=False)
        in_channels = 3
        stages = []
        for index, (width, count) in enumerate(zip(config.widths, config.blocks, strict=True)):
            blocks: list[tuple[str, nn.Module]] = []
            for b in range(count):
                if index == 0:
                    kernel = config.stem_kernel if b == 0 else 3
                    block: nn.Module = ConvBlock(in_channels, width, kernel, pool_first=config.stem_pool_first)
                elif config.residual:
                    block = ResidualBlock(in_channels, width)
                else:
                    block = ConvBlock(in_channels, width)
                blocks.append((f"block{b + 1}", block))
                in_channels = width
            if not (index == 0 and config.stem_pool_first):
                blocks.append(("pool", nn.MaxPool2d(2)))
            stages.append(Stage(OrderedDict(blocks)))
        self.stage_names = [f"stage{i + 1}" for i in range(len(stages))]
        for name, stage in zip(self.stage_names, stages, strict=True):  # stable names: stage1, ...
            self.add_module(name, stage)
        self.head = nn.Sequential(
            OrderedDict(
                gap=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(),
                drop1=nn.Dropout(config.dropout),
                fc1=nn.Linear(in_channels, config.hidden),
                relu=nn.ReLU(inplace=True),
                drop2=nn.Dropout(config.dropout),
                fc2=nn.Linear(config.hidden, config.num_classes),
            )
        )
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for module in self.modules():  # residual branches start near identity
            if isinstance(module, ResidualBlock):
                nn.init.zeros_(module.bn2.weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resize(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


Net = TypeVar("Net", bound=nn.Module)


def conv_layers(model: nn.Module) -> dict[str, nn.Conv2d]:
    """Every conv layer by stable name, in forward order."""
    return {n: m for n, m in dict(model.named_modules()).items() if isinstance(m, nn.Conv2d)}


def layer(model: nn.Module, name: str) -> nn.Module:
    """A layer by stable name, with a clear error that lists the valid names."""
    modules = dict(model.named_modules())
    if name not in modules or not name:
        raise KeyError(f"no layer {name!r}; conv layers are: {', '.join(conv_layers(model))}")
    return modules[name]


def fold_batch_norm(model: Net) -> Net:
    """A copy whose convs carry their eval-mode batch norm (weights and bias): same outputs, fewer passes.
    Works on a HeritageNet and on an Ensemble of them (every member is folded). A block that pools between
    its conv and batch norm is folded only where every scale is non-negative: max(s x + t) = s max(x) + t
    holds for s >= 0 and not otherwise."""
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        for conv_name, bn_name in (("conv", "bn"), ("conv1", "bn1"), ("conv2", "bn2")):
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if getattr(module, "pool", None) is not None and isinstance(bn, nn.BatchNorm2d) and (bn.weight < 0).any():
                continue
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(module, bn_name, nn.Identity())
    return folded


@contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Every module of `models` in eval mode inside the block; after it, also when it raises, each module back in its
    own mode: a caller's model in training stays in training, whichever tool looked at it."""
    modes = [(module, module.training) for model in models for module in model.modules()]
    try:
        for model in models:
            model.eval()
        yield
    finally:
        for module, training in modes:
            module.training = training


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def forward_flops(model: nn.Module, image_size: int = IMAGE_SIZE) -> int:
    """Forward FLOPs per image (multiply-add = 2), counted by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    with torch.no_grad(), eval_mode(model), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, image_size, image_size, device=device))
    return int(counter.get_total_flops())


def build_model(
    config: ModelConfig | dict | None = None, **overrides: Sequence[int] | int | float | bool
) -> HeritageNet:
    """A fresh network from a config (or a dict of one), with optional overrides."""
    if config is None:
        config = ModelConfig()
    elif isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    if overrides:
        config = ModelConfig.from_dict({**config.to_dict(), **overrides})
    return HeritageNet(config)


__all__ = [
    "ConvBlock",
    "HeritageNet",
    "ModelConfig",
    "ResidualBlock",
    "build_model",
    "conv_layers",
    "eval_mode",
    "fold_batch_norm",
    "forward_flops",
    "layer",
    "parameter_count",
]
