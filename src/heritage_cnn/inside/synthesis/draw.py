"""Drawing classes and units with the tuned defaults of `heritage generate` (`Settings`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import heritage_cnn.inside.synthesis.objectives as o
from heritage_cnn.base.checks import in_range, require
from heritage_cnn.data.decode import IMAGE_SIZE
from heritage_cnn.inside.guards import one_network
from heritage_cnn.inside.synthesis.loop import Rendering, networks_of, render
from heritage_cnn.inside.synthesis.objectives import Objective
from heritage_cnn.inside.synthesis.param import FourierImage, MacoImage, PixelImage
from heritage_cnn.inside.synthesis.transforms import standard_transforms
from heritage_cnn.models.checkpoint import Checkpoint
from heritage_cnn.models.network import conv_layers, eval_mode


@dataclass(frozen=True)
class Settings:
    """Defaults of `heritage generate`, tuned for 64 px on the shipped model (see docs/synthesis.md)."""

    steps: int = 160  # ~5 s per 64 px image on 2 cores; the images barely change after ~128
    lr: float = 0.025  # re-tuned for the batch-32 model: at 0.05 its images transfer less (docs/synthesis.md)
    param: str = "fourier"  # fourier | pixel | maco (phase only, magnitude fixed at 1/frequency)
    decorrelate: bool = True  # optimise in the decorrelated colour basis of ahe64
    decay_power: float = 1.0  # Fourier: step size ~ 1 / frequency**decay_power
    objective: str = "logit"  # logit | margin (logit minus mean of the others); logit transferred better
    transforms: bool = True
    pixels: int = 4  # pad and jitter, in pixels of a 64 px image
    zoom: float = 0.1  # scale in [1 - zoom, 1 + zoom]
    degrees: float = 8.0  # rotation in [-degrees, degrees]
    tv: float = 20.0  # weight of the total-variation penalty; 20 for the deeper model (docs/synthesis.md)
    l2: float = 0.0  # weight of the L2 penalty
    blur: float = 0.0  # weight of the blur penalty
    diversity: float = 0.0  # weight of the diversity reward among images of the same class
    diversity_layer: str = "stage2.block1.conv2"

    def __post_init__(self) -> None:
        if self.param not in ("fourier", "pixel", "maco") or self.objective not in ("margin", "logit"):
            raise ValueError(
                f"param must be fourier|pixel|maco and objective margin|logit, got {self.param}/{self.objective}"
            )
        require(isinstance(self.steps, int) and self.steps >= 1, f"{{0}} must be at least 1, got {self.steps}", "steps")
        require(in_range(self.lr, 0, above_low=True), f"{{0}} must be a positive finite number, got {self.lr}", "lr")
        require(
            isinstance(self.pixels, int) and 0 <= self.pixels <= 32,
            f"{{0}} must be 0 to 32, got {self.pixels}",
            "pixels",
        )
        require(in_range(self.zoom, 0, 1, below_high=True), f"{{0}} must be in [0, 1), got {self.zoom}", "zoom")
        require(in_range(self.degrees, 0, 180), f"{{0}} must be from 0 to 180, got {self.degrees}", "degrees")
        for name in ("decay_power", "tv", "l2", "blur", "diversity"):
            value = getattr(self, name)
            require(in_range(value, 0), f"{{0}} must be a finite number >= 0, got {value}", name)


# Feature visualisation (`draw_units`, `heritage visualize units`) keeps the step size and penalty it was tuned with.
UNIT_SETTINGS = Settings(lr=0.05, tv=10.0)

# The ensemble recipe (docs/synthesis.md, "Transfer to independent judges"): for several generating networks,
# `draw_classes([net0, net1, ...], targets, n, size, ENSEMBLE_SETTINGS, seed)`; stronger transforms, and 80
# steps, which keep six networks' cost at about three networks' 160 steps.
ENSEMBLE_SETTINGS = Settings(steps=80, pixels=6, zoom=0.2, degrees=15.0)

# Unregularised gradient ascent on raw pixels: the baseline of benchmarks/bench_synthesis.py.
# Pinned (steps, lr, objective), so that a change of the defaults does not move the baseline.
PIXEL_BASELINE = Settings(
    steps=160, lr=0.025, param="pixel", decorrelate=False, objective="logit", transforms=False, tv=0.0
)


def make_param(settings: Settings, n: int, size: int, generator: torch.Generator) -> nn.Module:
    if settings.param == "pixel":
        return PixelImage(n, size, generator, decorrelate=settings.decorrelate)
    if settings.param == "maco":
        return MacoImage(n, size, generator, decay_power=settings.decay_power, decorrelate=settings.decorrelate)
    return FourierImage(n, size, generator, decay_power=settings.decay_power, decorrelate=settings.decorrelate)


def regularisers(settings: Settings) -> list[Objective]:
    """The penalties (negative) and the diversity reward that have a non-zero weight."""
    terms = [(settings.tv, o.total_variation()), (settings.l2, o.l2()), (settings.blur, o.blur())]
    out = [-weight * term for weight, term in terms if weight]
    if settings.diversity:
        out.append(settings.diversity * o.diversity(settings.diversity_layer))
    return out


@dataclass
class Generated:
    """Images drawn for classes, with what the generating network thinks of them."""

    images: Tensor  # (k, 3, size, size) in [0, 1]
    targets: list[int]
    probabilities: list[float]  # of the target class, under the generating network
    predicted: list[int]
    history: list[float]
    seconds: float
    settings: Settings = field(default_factory=Settings)


def classify(checkpoint: Checkpoint | Sequence[Checkpoint], images: Tensor) -> Tensor:
    """Softmax probabilities of [0, 1] images (resized to the network's input size); for several networks,
    the mean of their probabilities."""
    if not isinstance(checkpoint, Checkpoint):
        networks = networks_of(checkpoint)
        return sum(classify(net, images) for net in networks) / len(networks)
    if images.shape[-1] != checkpoint.image_size:
        images = F.interpolate(images, size=checkpoint.image_size, mode="bilinear", antialias=True)
    model = checkpoint.model
    with torch.no_grad(), eval_mode(model):
        return torch.softmax(model(checkpoint.normalise(images.to(next(model.parameters()).device))), 1).cpu()


# Images optimised at once. Memory grows with the batch (about 16 MB an image at 128 px with three networks,
# measured with `heritage generate --all --size 128 --n 4` and `--n 16`), so larger requests are drawn in
# batches of whole classes: `--n 1000 --all` is then bounded at about 2.6 GB instead of 160 GB.
RENDER_BATCH = 160


def render_batches(per_image: Sequence[int], n: int, limit: int) -> list[slice]:
    """Consecutive slices of `per_image` (n images per class, class-major) of at most `limit` images each,
    cut between classes, or inside a class when its n alone is over the limit; one slice when all fit."""
    per_batch = limit // n * n if n <= limit else limit
    return [slice(i, min(i + per_batch, len(per_image))) for i in range(0, len(per_image), per_batch)]


def draw_classes(
    checkpoint: Checkpoint | Sequence[Checkpoint],
    targets: Sequence[int],
    n: int = 4,
    size: int = IMAGE_SIZE,
    settings: Settings = Settings(),
    seed: int = 0,
    progress: bool = True,
) -> Generated:
    """`n` images of each target class (image i*n + j: class i), rendered together as one batch, or in batches
    of whole classes over `RENDER_BATCH` images (the same seed then still gives the same images).

    `checkpoint` may be a list of networks (e.g. the members of an ensemble): the objective is then their mean
    logit for the same transformed image, and `probabilities`/`predicted` are their mean softmax's. The
    diversity reward compares images rendered together, so past `RENDER_BATCH` images of one class it acts
    within each batch.
    """
    if n < 1 or not targets:
        raise ValueError(f"need at least one class and --n >= 1, got {len(targets)} classes and n = {n}")
    per_image = [t for t in targets for _ in range(n)]
    generator = torch.Generator().manual_seed(seed)
    objective = o.class_margin if settings.objective == "margin" else o.class_logit
    transforms = (
        standard_transforms(size, settings.pixels, settings.zoom, settings.degrees) if settings.transforms else []
    )
    batches = render_batches(per_image, n, RENDER_BATCH)
    started = time.perf_counter()
    renderings = []
    for k, part in enumerate(batches):
        batch = per_image[part]
        result = render(
            checkpoint,
            sum(regularisers(settings), objective(batch)),
            make_param(settings, len(batch), size, generator),
            transforms,
            settings.steps,
            settings.lr,
            generator,
            progress,
            "generate" if len(batches) == 1 else f"generate {k + 1}/{len(batches)}",
        )
        renderings.append(result)
    seconds = time.perf_counter() - started
    images = torch.cat([r.images for r in renderings])
    history = renderings[0].history
    if len(renderings) > 1:  # the objective per image at each step, over all batches (weighted by their sizes)
        history = [sum(r.history[i] * len(r.images) for r in renderings) / len(images) for i in range(settings.steps)]
    probs = torch.cat([classify(checkpoint, images[part]) for part in batches])
    chosen = probs[torch.arange(len(per_image)), torch.tensor(per_image)]
    return Generated(images, per_image, chosen.tolist(), probs.argmax(1).tolist(), history, seconds, settings)


def draw_units(
    checkpoint: Checkpoint,
    layer_name: str,
    channels: Sequence[int] | None = None,
    size: int = IMAGE_SIZE,
    settings: Settings = UNIT_SETTINGS,
    seed: int = 0,
    progress: bool = True,
) -> Rendering:
    """One image per channel of a conv layer, each maximising that channel's mean response. `layer_name` as
    the deconvnet and the feature maps take it: a conv layer, a block or a stage (its output), no 1x1 shortcut."""
    from heritage_cnn.inside.deconvnet import resolve_layer

    one_network(checkpoint)
    layer_name = resolve_layer(checkpoint.model, layer_name, "to draw units of")
    count = conv_layers(checkpoint.model)[layer_name].out_channels
    channels = list(range(count)) if channels is None else list(channels)
    if not channels or min(channels) < 0 or max(channels) >= count:
        raise ValueError(f"{layer_name} has channels 0..{count - 1}, got {channels}")
    generator = torch.Generator().manual_seed(seed)
    param = make_param(settings, len(channels), size, generator)
    # a channel's mean response is about a tenth of a class margin, so the penalties are scaled down alike
    quiet = replace(settings, tv=settings.tv / 10, l2=settings.l2 / 10, blur=settings.blur / 10, diversity=0.0)
    objective = sum(regularisers(quiet), o.channel(layer_name, channels))
    transforms = (
        standard_transforms(size, settings.pixels, settings.zoom, settings.degrees) if settings.transforms else []
    )
    return render(
        checkpoint, objective, param, transforms, settings.steps, settings.lr, generator, progress, layer_name
    )
