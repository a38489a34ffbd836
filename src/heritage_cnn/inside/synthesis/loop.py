"""The render loop: Adam on the image's parameters, the network fixed, deterministic for a seed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from heritage_cnn.inside.synthesis.objectives import Context, Objective
from heritage_cnn.inside.synthesis.transforms import Transform
from heritage_cnn.models.checkpoint import Checkpoint
from heritage_cnn.models.network import eval_mode, layer


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


def _logits(net: Checkpoint, x: Tensor, size: int) -> Tensor:
    """A network's logits for transformed images, resized to its input size when the image is larger."""
    if size != net.image_size:
        x = F.interpolate(x, scale_factor=net.image_size / size, mode="bilinear", antialias=True)
    return net.model(net.normalise(x))


def networks_of(checkpoint: Checkpoint | Sequence[Checkpoint]) -> list[Checkpoint]:
    """One network or several (an ensemble objective) -> a non-empty list; an ensemble stands for its members."""
    given = [checkpoint] if isinstance(checkpoint, Checkpoint) else list(checkpoint)
    networks = [net.member(i) for net in given for i in range(net.member_count)]
    if not networks:
        raise ValueError("need at least one generating network")
    return networks


def render(
    checkpoint: Checkpoint | Sequence[Checkpoint],
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

    `checkpoint` may be a list of networks (an ensemble objective): every network sees the same
    transformed image and the objective reads the mean of their logits (so `class_logit` is the logit
    averaged over the networks); layer activations (`channel`, `diversity`) come from the first network.
    """
    from tqdm import tqdm

    networks = networks_of(checkpoint)
    model = networks[0].model
    models = [net.model for net in networks]
    # every layer is found before any hook is set: a name that is not there leaves no hook behind
    responses = {name: _response_module(model, name) for name in sorted(objective.layers)}
    param = param.to(next(model.parameters()).device)  # the image lives where the network does
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    activations: dict[str, Tensor] = {}

    def hook(name: str) -> Callable[..., None]:
        def store(module: nn.Module, inputs: Any, output: Tensor) -> None:
            activations[name] = output.clone()  # a copy: the in-place ReLU that follows would overwrite it

        return store

    handles: list[torch.utils.hooks.RemovableHandle] = []
    trainable = [[p.requires_grad for p in m.parameters()] for m in models]
    optimizer = torch.optim.Adam(param.parameters(), lr=lr)
    history: list[float] = []
    try:
        with eval_mode(*models):
            for name, module in responses.items():
                handles.append(module.register_forward_hook(hook(name)))
            for p in (p for m in models for p in m.parameters()):
                p.requires_grad_(False)  # gradients for the image only: faster, and the weights stay untouched
            bar = tqdm(range(steps), desc=desc, leave=False, dynamic_ncols=True, disable=not progress)
            for _ in bar:
                image = param()
                x = image
                for transform in transforms:
                    x = transform(x, generator)
                activations.clear()
                logits = sum(_logits(net, x, image.shape[-1]) for net in networks) / len(networks)
                value = objective(Context(image, logits, activations))
                optimizer.zero_grad(set_to_none=True)
                (-value).backward()
                optimizer.step()
                history.append(value.item() / len(image))
                bar.set_postfix(objective=f"{history[-1]:.3f}", refresh=False)
    finally:
        for handle in handles:
            handle.remove()
        for m, flags in zip(models, trainable, strict=True):
            for p, flag in zip(m.parameters(), flags, strict=True):
                p.requires_grad_(flag)
    with torch.no_grad():
        return Rendering(param().detach().clamp(0, 1).cpu(), history)
