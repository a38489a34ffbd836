"""Draw each class: images synthesised by gradient ascent on a trained network (feature visualisation).

In the spirit of Lucid's optvis, built from small parts that can be swapped independently:

  parametrisation   PixelImage, FourierImage (default)      the trainable tensor -> images in [0, 1]
  transforms        pad, jitter, scale, rotate               random each step, so the image must work
                                                             under small shifts, not only pixel-exactly
  objectives        class_logit, class_margin, channel,     scores to maximise; compose with +, - and *
                    unit, diversity, l2, total_variation, blur
  render()          one Adam loop with a tqdm bar, deterministic for a seed

`draw_classes()` puts them together with the defaults of `heritage generate` (`Settings`, tuned on the
shipped model; figures in docs/synthesis.md). Unregularised ascent on raw pixels finds high-frequency
patterns that fool the generating network only; the Fourier parametrisation (which scales steps down
with frequency), decorrelated colour and the transforms push it towards images other networks agree on.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from heritage_cnn.checkpoint import Checkpoint
from heritage_cnn.data import display_name
from heritage_cnn.io import atomic_path, atomic_write_json
from heritage_cnn.model import conv_layers, layer

# --------------------------------------------------------------------------------------------
# Parametrisations: parameters -> a batch of images in [0, 1]
# --------------------------------------------------------------------------------------------

# Symmetric square root of the RGB covariance of 3,000 ahe64 training photos (pixels in [0, 1]),
# scaled so that its largest column has norm 1. Optimising in this basis moves the strongly correlated
# channels together (mostly brightness), as in photos, instead of in saturated independent colours.
AHE64_COLOUR = torch.tensor([[0.6904, 0.4567, 0.2888], [0.4567, 0.5856, 0.4975], [0.2888, 0.4975, 0.8180]])


def colour_matrix(pixels: Tensor) -> Tensor:
    """The decorrelation matrix of (N, 3) pixels in [0, 1], computed as AHE64_COLOUR was."""
    values, vectors = torch.linalg.eigh(torch.cov(pixels.double().T))
    root = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    return (root / root.norm(dim=0).max()).float()


def _to_rgb(x: Tensor, decorrelate: bool) -> Tensor:
    """Unbounded values -> valid images: optional colour correlation, then a sigmoid into [0, 1]."""
    if decorrelate:
        x = torch.einsum("ij,njhw->nihw", AHE64_COLOUR.to(x), x)
    return torch.sigmoid(x)


class PixelImage(nn.Module):
    """One free parameter per pixel and channel: the naive parametrisation (the baseline)."""

    def __init__(self, n: int, size: int, generator: torch.Generator, sd: float = 0.01, decorrelate: bool = False):
        super().__init__()
        self.decorrelate = decorrelate
        self.pixels = nn.Parameter(torch.randn(n, 3, size, size, generator=generator) * sd)

    def forward(self) -> Tensor:
        return _to_rgb(self.pixels, self.decorrelate)


class FourierImage(nn.Module):
    """Parameters are the image's 2-D spectrum, scaled by 1 / frequency**decay_power.

    Equal steps on every coefficient then change coarse structure much more than fine texture, so
    gradient ascent builds shapes first instead of the high-frequency noise pixels give.
    """

    def __init__(
        self,
        n: int,
        size: int,
        generator: torch.Generator,
        sd: float = 0.01,
        decay_power: float = 1.0,
        decorrelate: bool = True,
    ):
        super().__init__()
        self.size, self.decorrelate = size, decorrelate
        fy = torch.fft.fftfreq(size)[:, None]
        fx = torch.fft.rfftfreq(size)[None, :]
        frequency = (fy**2 + fx**2).sqrt().clamp(min=1.0 / size)
        self.register_buffer("scale", frequency**-decay_power, persistent=False)
        self.spectrum = nn.Parameter(torch.randn(n, 3, size, size // 2 + 1, 2, generator=generator) * sd)

    def forward(self) -> Tensor:
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        return _to_rgb(torch.fft.irfft2(spectrum, s=(self.size, self.size), norm="ortho"), self.decorrelate)


# --------------------------------------------------------------------------------------------
# Transforms: a random small change of the image each step, one draw per image
# --------------------------------------------------------------------------------------------

Transform = Callable[[Tensor, torch.Generator], Tensor]


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def pad(pixels: int, mode: str = "reflect") -> Transform:
    """A border (mirrored by default; "constant" is grey), so that jitter can move content off the edge."""
    if mode == "constant":
        return lambda x, g: F.pad(x, (pixels,) * 4, value=0.5)
    return lambda x, g: F.pad(x, (pixels,) * 4, mode=mode)


def jitter(pixels: int) -> Transform:
    """Crop `pixels` rows and columns at a random offset (the image shrinks by `pixels`)."""

    def apply(x: Tensor, g: torch.Generator) -> Tensor:
        offsets = torch.randint(0, pixels + 1, (x.shape[0], 2), generator=g).tolist()
        h, w = x.shape[-2] - pixels, x.shape[-1] - pixels
        return torch.stack([image[:, dy : dy + h, dx : dx + w] for image, (dy, dx) in zip(x, offsets, strict=True)])

    return apply


def _affine(x: Tensor, theta: Tensor) -> Tensor:
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def scale(low: float, high: float) -> Transform:
    """Zoom each image by a random factor in [low, high] about its centre (size unchanged)."""

    def apply(x: Tensor, g: torch.Generator) -> Tensor:
        inverse = 1.0 / _uniform(x.shape[0], low, high, g)
        theta = torch.zeros(x.shape[0], 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = inverse
        return _affine(x, theta)

    return apply


def rotate(degrees: float) -> Transform:
    """Rotate each image by a random angle in [-degrees, degrees] about its centre."""

    def apply(x: Tensor, g: torch.Generator) -> Tensor:
        angle = _uniform(x.shape[0], -degrees, degrees, g) * (math.pi / 180)
        cos, sin = angle.cos(), angle.sin()
        theta = torch.stack([torch.stack([cos, -sin, 0 * cos], 1), torch.stack([sin, cos, 0 * cos], 1)], 1)
        return _affine(x, theta)

    return apply


def standard_transforms(size: int = 64, pixels: int = 4, zoom: float = 0.1, degrees: float = 8.0) -> list[Transform]:
    """Lucid's recipe (pad, jitter, scale, rotate, jitter) with shifts sized for 64 px images."""
    px = max(1, round(pixels * size / 64))
    return [pad(px), jitter(px), scale(1 - zoom, 1 + zoom), rotate(degrees), jitter(max(1, px // 2))]


# --------------------------------------------------------------------------------------------
# Objectives: what to maximise, composable
# --------------------------------------------------------------------------------------------


@dataclass
class Context:
    """What an objective can look at in one step."""

    image: Tensor  # (n, 3, h, w) in [0, 1], before the transforms: what the penalties judge
    logits: Tensor  # (n, classes)
    activations: dict[str, Tensor]  # layer name -> that layer's (pre-ReLU) response to the transformed image


@dataclass(frozen=True)
class Objective:
    """A score to maximise, summed over the batch; `a + b`, `a - b`, `2 * a` make new objectives."""

    fn: Callable[[Context], Tensor]
    name: str
    layers: frozenset[str] = frozenset()  # layers whose activations `fn` reads

    def __call__(self, context: Context) -> Tensor:
        return self.fn(context)

    def __add__(self, other: Objective) -> Objective:
        return Objective(lambda c: self(c) + other(c), f"{self.name} + {other.name}", self.layers | other.layers)

    def __radd__(self, other: object) -> Objective:  # so that sum([a, b, c]) works
        if other == 0:
            return self
        return NotImplemented

    def __sub__(self, other: Objective) -> Objective:
        return Objective(lambda c: self(c) - other(c), f"{self.name} - {other.name}", self.layers | other.layers)

    def __neg__(self) -> Objective:
        return Objective(lambda c: -self(c), f"-({self.name})", self.layers)

    def __mul__(self, factor: float) -> Objective:
        if not isinstance(factor, int | float):
            return NotImplemented
        return Objective(lambda c: factor * self(c), f"{factor:g} * ({self.name})", self.layers)

    __rmul__ = __mul__


def _per_image(index: int | Sequence[int], n: int) -> Tensor:
    """One index per image: an int applies to all, a sequence gives image i index[i]."""
    indices = torch.as_tensor([index] * n if isinstance(index, int) else list(index), dtype=torch.long)
    if len(indices) != n:
        raise ValueError(f"{len(indices)} targets for a batch of {n} images")
    return indices


def class_logit(target: int | Sequence[int]) -> Objective:
    """The target class's logit (raw score before softmax)."""

    def fn(c: Context) -> Tensor:
        return c.logits.gather(1, _per_image(target, len(c.logits))[:, None]).sum()

    return Objective(fn, f"logit[{target}]")


def class_margin(target: int | Sequence[int]) -> Objective:
    """Target logit minus the mean of the others: raising every logit together gains nothing."""

    def fn(c: Context) -> Tensor:
        own = c.logits.gather(1, _per_image(target, len(c.logits))[:, None])[:, 0]
        others = (c.logits.sum(1) - own) / (c.logits.shape[1] - 1)
        return (own - others).sum()

    return Objective(fn, f"margin[{target}]")


def channel(layer_name: str, index: int | Sequence[int]) -> Objective:
    """A channel's mean response over the image (feature visualisation)."""

    def fn(c: Context) -> Tensor:
        act = c.activations[layer_name]
        return act[torch.arange(len(act)), _per_image(index, len(act))].mean((1, 2)).sum()

    return Objective(fn, f"{layer_name}:{index}", frozenset({layer_name}))


def unit(layer_name: str, index: int | Sequence[int], y: int | None = None, x: int | None = None) -> Objective:
    """A single unit: one channel at one position (default: the centre of the feature map)."""

    def fn(c: Context) -> Tensor:
        act = c.activations[layer_name]
        row = act.shape[2] // 2 if y is None else y
        col = act.shape[3] // 2 if x is None else x
        return act[torch.arange(len(act)), _per_image(index, len(act)), row, col].sum()

    return Objective(fn, f"{layer_name}:{index}@{y},{x}", frozenset({layer_name}))


def diversity(layer_name: str) -> Objective:
    """Minus the mean cosine similarity of the images' Gram matrices at a layer: rewards different styles."""

    def fn(c: Context) -> Tensor:
        act = c.activations[layer_name]
        n = len(act)
        if n < 2:
            return act.sum() * 0
        flat = act.flatten(2)
        gram = F.normalize((flat @ flat.transpose(1, 2)).flatten(1), dim=1)
        similarity = gram @ gram.T
        return -(similarity.sum() - similarity.diagonal().sum()) / (n - 1)

    return Objective(fn, f"diversity({layer_name})", frozenset({layer_name}))


def l2(centre: float = 0.5) -> Objective:
    """Mean squared distance of the pixels from grey (a penalty: subtract it)."""
    return Objective(lambda c: (c.image - centre).pow(2).mean((1, 2, 3)).sum(), "l2")


def total_variation() -> Objective:
    """Mean absolute difference of neighbouring pixels (a penalty: subtract it)."""

    def fn(c: Context) -> Tensor:
        dy = (c.image[:, :, 1:] - c.image[:, :, :-1]).abs().mean((1, 2, 3))
        dx = (c.image[:, :, :, 1:] - c.image[:, :, :, :-1]).abs().mean((1, 2, 3))
        return (dy + dx).sum()

    return Objective(fn, "tv")


def blur() -> Objective:
    """Squared distance from a 3x3-blurred copy held fixed (a penalty: subtract it); pulls towards smooth."""

    def fn(c: Context) -> Tensor:
        blurred = F.avg_pool2d(F.pad(c.image, (1, 1, 1, 1), mode="replicate"), 3, stride=1).detach()
        return (c.image - blurred).pow(2).mean((1, 2, 3)).sum()

    return Objective(fn, "blur")


# --------------------------------------------------------------------------------------------
# The render loop
# --------------------------------------------------------------------------------------------


@dataclass
class Rendering:
    images: Tensor  # (n, 3, size, size) in [0, 1]
    history: list[float]  # the objective per image at every step: it should rise


def _response_module(model: nn.Module, name: str) -> nn.Module:
    """A conv layer is read after its batch norm (before the ReLU), so that "maximise channel c" means
    what the next layer sees; any other layer is read as it is."""
    module = layer(model, name)
    if isinstance(module, nn.Conv2d):
        parent, _, leaf = name.rpartition(".")
        bn_name = (parent + "." if parent else "") + leaf.replace("conv", "bn")
        bn = dict(model.named_modules()).get(bn_name)
        if isinstance(bn, nn.BatchNorm2d):
            return bn
    return module


def render(
    checkpoint: Checkpoint,
    objective: Objective,
    param: nn.Module,
    transforms: Sequence[Transform] = (),
    steps: int = 160,
    lr: float = 0.05,
    generator: torch.Generator | None = None,
    progress: bool = True,
    desc: str = "render",
) -> Rendering:
    """Maximise `objective` over the parameters of `param` with Adam; the network stays fixed.

    Each step renders the image, applies the random transforms, resizes to the network's input size
    when the image is larger, and takes one ascent step. Same generator state -> same images.
    """
    from tqdm import tqdm

    model = checkpoint.model.eval()
    param = param.to(next(model.parameters()).device)  # the image lives where the network does
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    activations: dict[str, Tensor] = {}

    def hook(name: str) -> Callable[..., None]:
        def store(module: nn.Module, inputs: Any, output: Tensor) -> None:
            activations[name] = output.clone()  # a copy: the in-place ReLU that follows would overwrite it

        return store

    handles = [_response_module(model, name).register_forward_hook(hook(name)) for name in sorted(objective.layers)]
    trainable = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)  # gradients for the image only: faster, and the weights stay untouched
    optimizer = torch.optim.Adam(param.parameters(), lr=lr)
    history: list[float] = []
    try:
        bar = tqdm(range(steps), desc=desc, leave=False, dynamic_ncols=True, disable=not progress)
        for _ in bar:
            image = param()
            x = image
            for transform in transforms:
                x = transform(x, generator)
            if image.shape[-1] != checkpoint.image_size:
                x = F.interpolate(
                    x, scale_factor=checkpoint.image_size / image.shape[-1], mode="bilinear", antialias=True
                )
            activations.clear()
            logits = model(checkpoint.normalise(x))
            value = objective(Context(image, logits, activations))
            optimizer.zero_grad(set_to_none=True)
            (-value).backward()
            optimizer.step()
            history.append(value.item() / len(image))
            bar.set_postfix(objective=f"{history[-1]:.3f}", refresh=False)
    finally:
        for handle in handles:
            handle.remove()
        for p, flag in zip(model.parameters(), trainable, strict=True):
            p.requires_grad_(flag)
    with torch.no_grad():
        return Rendering(param().detach().clamp(0, 1).cpu(), history)


# --------------------------------------------------------------------------------------------
# Drawing classes with the tuned defaults
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Defaults of `heritage generate`, tuned for 64 px on the shipped model (see docs/synthesis.md)."""

    steps: int = 160  # ~5 s per 64 px image on 2 cores; the images barely change after ~128
    lr: float = 0.025  # re-tuned for the batch-32 model: at 0.05 its images transfer less (docs/synthesis.md)
    param: str = "fourier"  # fourier | pixel
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
        if self.param not in ("fourier", "pixel") or self.objective not in ("margin", "logit"):
            raise ValueError(
                f"param must be fourier|pixel and objective margin|logit, got {self.param}/{self.objective}"
            )
        if self.steps < 1 or self.lr <= 0:
            raise ValueError(f"steps must be >= 1 and lr > 0, got {self.steps} and {self.lr}")


# Feature visualisation (`draw_units`, `heritage visualize units`) keeps the step size and penalty it was tuned with.
UNIT_SETTINGS = Settings(lr=0.05, tv=10.0)

# Unregularised gradient ascent on raw pixels: the baseline of benchmarks/bench_synthesis.py.
PIXEL_BASELINE = Settings(param="pixel", decorrelate=False, transforms=False, tv=0.0)


def make_param(settings: Settings, n: int, size: int, generator: torch.Generator) -> nn.Module:
    if settings.param == "pixel":
        return PixelImage(n, size, generator, decorrelate=settings.decorrelate)
    return FourierImage(n, size, generator, decay_power=settings.decay_power, decorrelate=settings.decorrelate)


def regularisers(settings: Settings) -> list[Objective]:
    """The penalties (negative) and the diversity reward that have a non-zero weight."""
    terms = [(settings.tv, total_variation()), (settings.l2, l2()), (settings.blur, blur())]
    out = [-weight * term for weight, term in terms if weight]
    if settings.diversity:
        out.append(settings.diversity * diversity(settings.diversity_layer))
    return out


def resolve_class(name: str, classes: Sequence[str]) -> int:
    """A class index from a folder name or a display name ("dome (inner)", "dome(inner)", "bell tower")."""

    def key(text: str) -> str:
        return re.sub(r"[\s_]+", "", text.lower())

    for index, folder in enumerate(classes):
        if key(name) in (key(folder), key(display_name(folder))):
            return index
    raise ValueError(f"unknown class {name!r}; the classes are: {', '.join(display_name(c) for c in classes)}")


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


def classify(checkpoint: Checkpoint, images: Tensor) -> Tensor:
    """Softmax probabilities of [0, 1] images (resized to the network's input size)."""
    if images.shape[-1] != checkpoint.image_size:
        images = F.interpolate(images, size=checkpoint.image_size, mode="bilinear", antialias=True)
    model = checkpoint.model.eval()
    with torch.no_grad():
        return torch.softmax(model(checkpoint.normalise(images.to(next(model.parameters()).device))), 1).cpu()


def draw_classes(
    checkpoint: Checkpoint,
    targets: Sequence[int],
    n: int = 4,
    size: int = 64,
    settings: Settings = Settings(),
    seed: int = 0,
    progress: bool = True,
) -> Generated:
    """`n` images of each target class, rendered together as one batch (image i*n + j: class i)."""
    if n < 1 or not targets:
        raise ValueError(f"need at least one class and --n >= 1, got {len(targets)} classes and n = {n}")
    per_image = [t for t in targets for _ in range(n)]
    generator = torch.Generator().manual_seed(seed)
    param = make_param(settings, len(per_image), size, generator)
    objective = class_margin(per_image) if settings.objective == "margin" else class_logit(per_image)
    objective = sum(regularisers(settings), objective)
    transforms = (
        standard_transforms(size, settings.pixels, settings.zoom, settings.degrees) if settings.transforms else []
    )
    started = time.perf_counter()
    result = render(
        checkpoint, objective, param, transforms, settings.steps, settings.lr, generator, progress, "generate"
    )
    seconds = time.perf_counter() - started
    probs = classify(checkpoint, result.images)
    chosen = probs[torch.arange(len(per_image)), torch.tensor(per_image)]
    return Generated(
        result.images, per_image, chosen.tolist(), probs.argmax(1).tolist(), result.history, seconds, settings
    )


def draw_units(
    checkpoint: Checkpoint,
    layer_name: str,
    channels: Sequence[int] | None = None,
    size: int = 64,
    settings: Settings = UNIT_SETTINGS,
    seed: int = 0,
    progress: bool = True,
) -> Rendering:
    """One image per channel of a conv layer, each maximising that channel's mean response."""
    convs = conv_layers(checkpoint.model)
    if layer_name not in convs:
        raise KeyError(f"no conv layer {layer_name!r}; conv layers are: {', '.join(convs)}")
    count = convs[layer_name].out_channels
    channels = list(range(count)) if channels is None else list(channels)
    if not channels or min(channels) < 0 or max(channels) >= count:
        raise ValueError(f"{layer_name} has channels 0..{count - 1}, got {channels}")
    generator = torch.Generator().manual_seed(seed)
    param = make_param(settings, len(channels), size, generator)
    # a channel's mean response is about a tenth of a class margin, so the penalties are scaled down alike
    quiet = replace(settings, tv=settings.tv / 10, l2=settings.l2 / 10, blur=settings.blur / 10, diversity=0.0)
    objective = sum(regularisers(quiet), channel(layer_name, channels))
    transforms = (
        standard_transforms(size, settings.pixels, settings.zoom, settings.degrees) if settings.transforms else []
    )
    return render(
        checkpoint, objective, param, transforms, settings.steps, settings.lr, generator, progress, layer_name
    )


# --------------------------------------------------------------------------------------------
# Files: PNGs, the grid, the JSON
# --------------------------------------------------------------------------------------------


def _slug(folder: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", display_name(folder).lower()).strip("_")


def save_png(image: Tensor, path: str | Path) -> None:
    from PIL import Image

    array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def save_grid(
    images: Tensor, titles: Sequence[str], columns: int, path: str | Path, captions: Sequence[str] = ()
) -> None:
    """A figure of images, `columns` wide, a title above and an optional caption below each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = math.ceil(len(images) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.45 * columns, 1.65 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i].permute(1, 2, 0).numpy(), interpolation="lanczos")
            ax.set_title(titles[i], fontsize=8)
            if captions:
                ax.text(0.5, -0.08, captions[i], transform=ax.transAxes, ha="center", va="top", fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def write_generated(out: str | Path, generated: Generated, checkpoint: Checkpoint, seed: int, n: int) -> Path:
    """One PNG per image, the grid `class_images.png` (a column per class) and `class_images.json`."""
    out = Path(out)
    names = checkpoint.classes
    records = []
    for i, (image, target) in enumerate(zip(generated.images, generated.targets, strict=True)):
        file = f"{_slug(names[target])}_{i % n}.png"
        save_png(image, out / file)
        records.append(
            {
                "file": file,
                "class": names[target],
                "probability": round(generated.probabilities[i], 6),
                "predicted": names[generated.predicted[i]],
            }
        )
    # column per class, row per sample: reorder class-major images to row-major
    k = len(generated.targets) // n
    order = [c * n + r for r in range(n) for c in range(k)]
    save_grid(
        generated.images[order],
        [display_name(names[generated.targets[i]]) if j < k else "" for j, i in enumerate(order)],
        k,
        out / "class_images.png",
        [f"p = {generated.probabilities[i]:.2f}" for i in order],
    )
    atomic_write_json(
        out / "class_images.json",
        {
            "model": str(checkpoint.path),
            "seed": seed,
            "settings": asdict(generated.settings),
            "seconds": round(generated.seconds, 2),
            "mean_probability": round(sum(generated.probabilities) / len(generated.probabilities), 6),
            "images": records,
        },
    )
    return out / "class_images.png"
