"""Attribution maps for one photo through Captum, one call shape: `attribute(method, model, x, target) -> map`.

Methods: saliency (|gradient|), guided backpropagation, deconvolution (Captum's ReLU-rule versions),
Grad-CAM on the last conv block's output upsampled to the input, and occlusion (8x8 grey patches,
stride 4). Gradient-type maps are reduced over colour channels by the largest magnitude for display, or by the
sum of magnitudes (`channels="sum"`) as the sanity check (heritage_cnn.inside.sanity) compares them.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from heritage_cnn.base.figures import PERCENTILE, new_figure, overlay, save_figure
from heritage_cnn.base.names import shown
from heritage_cnn.data.labels import resolve_class
from heritage_cnn.inside.guards import one_network
from heritage_cnn.models.checkpoint import Checkpoint
from heritage_cnn.models.network import HeritageNet, eval_mode

METHODS = ("saliency", "guided_backprop", "deconvolution", "grad_cam", "occlusion")
LABELS = {
    "saliency": "saliency (abs. gradient)",
    "guided_backprop": "guided backprop",
    "deconvolution": "deconvolution",
    "grad_cam": "Grad-CAM (last conv block)",
    "occlusion": "occlusion 8x8",
}


def captum_ready(model: nn.Module) -> nn.Module:
    """An eval-mode copy whose ReLUs are not in place (Captum's ReLU hooks and layer hooks need that)."""
    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return model


def last_conv_block(model: HeritageNet) -> nn.Module:
    """The last block of the last stage: its output is the last conv layer's rectified feature map."""
    one_network(model)
    stage = getattr(model, model.stage_names[-1])
    return [module for name, module in stage.named_children() if name != "pool"][-1]


def attribute(method: str, model: nn.Module, x: torch.Tensor, target: int, channels: str = "max") -> torch.Tensor:
    """One (H, W) map for one normalised input (1, 3, H, W) and one class. `model`: see `captum_ready`.

    Gradient methods give |map| reduced over colour channels by `channels`: "max" or "sum".
    """
    # imported here: importing Captum imports pyplot, which the package leaves alone until a map is asked for
    from captum.attr import Deconvolution, GuidedBackprop, LayerAttribution, LayerGradCam, Occlusion, Saliency

    one_network(model)
    if channels not in ("max", "sum"):
        raise ValueError(f"channels must be 'max' or 'sum', got {channels!r}")
    x = x.detach().clone().requires_grad_(True)
    if method == "saliency":
        raw = Saliency(model).attribute(x, target=target, abs=True)
    elif method == "guided_backprop":
        raw = GuidedBackprop(model).attribute(x, target=target)
    elif method == "deconvolution":
        raw = Deconvolution(model).attribute(x, target=target)
    elif method == "grad_cam":
        cam = LayerGradCam(model, last_conv_block(model)).attribute(x, target=target, relu_attributions=True)
        return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")[0, 0].detach()
    elif method == "occlusion":
        raw = Occlusion(model).attribute(
            x,
            target=target,
            sliding_window_shapes=(3, 8, 8),
            strides=(3, 4, 4),
            baselines=0.0,
            perturbations_per_eval=64,
        )
        return raw[0].mean(0).detach()  # the same value on all three channels: the score drop
    else:
        raise ValueError(f"no attribution method {method!r}; methods are: {', '.join(METHODS)}")
    magnitude = raw[0].abs()
    return (magnitude.amax(0) if channels == "max" else magnitude.sum(0)).detach()


def attribute_all(model: nn.Module, x: torch.Tensor, target: int, channels: str = "max") -> dict[str, torch.Tensor]:
    import warnings

    one_network(model)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(backward hooks|required_grads|requires_grad).*")
        return {method: attribute(method, model, x, target, channels) for method in METHODS}


def parse_target(target: str | None, classes: list[str], display_names: list[str] | None = None) -> int | None:
    """`--target`: None (the predicted class) or a class as `labels.resolve_class` accepts it."""
    return None if target is None else resolve_class(target, classes)


# --------------------------------------------------------------------------------------------
# Figure
# --------------------------------------------------------------------------------------------


def plot_explanation(
    photo: np.ndarray, maps: dict[str, torch.Tensor], title: str, path: Path, alpha: float = 0.55
) -> Path:
    """The photo, then every map laid over it, clipped at the 99th percentile of |map|, each with a colour bar.

    Clipping keeps a few extreme pixels (gradients are heavy-tailed) from washing out the rest of the map."""
    fig, axes = new_figure(1, len(maps) + 1, figsize=(3.0 * (len(maps) + 1), 3.3))
    axes[0].imshow(photo)
    axes[0].set_title("photo (as predicted)", fontsize=9)
    axes[0].axis("off")
    for ax, (method, heat) in zip(axes[1:], maps.items(), strict=True):
        # occlusion is signed: red = hiding this lowers the score, blue = raises it
        signed = method == "occlusion"
        overlay(ax, photo, heat.numpy(), signed=signed, alpha=alpha, label="score drop" if signed else "")
        ax.set_title(LABELS[method], fontsize=9)
    fig.suptitle(title + f" (maps clipped at the {PERCENTILE:g}th percentile of |map|)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def write_explanation(
    checkpoint: Checkpoint, image: str | os.PathLike, out: str | os.PathLike, target: str | None = None
) -> Path:
    """explain_<photo>.png (`photo_figure_name`): the five maps for `target` (default: the predicted class), with
    the top-3."""
    from heritage_cnn.inside.visualize import load_photo, photo_figure_name

    one_network(checkpoint)
    names = checkpoint.display_names
    index = parse_target(target, checkpoint.classes, names)
    photo = load_photo(image)
    x = checkpoint.normalise(photo.to(next(checkpoint.model.parameters()).device))
    with torch.no_grad(), eval_mode(checkpoint.model):
        probabilities = torch.softmax(checkpoint.model(x), 1)[0].cpu()
    best = probabilities.topk(3)
    index = int(best.indices[0]) if index is None else index
    maps = {method: heat.cpu() for method, heat in attribute_all(captum_ready(checkpoint.model), x, index).items()}
    top3 = ", ".join(f"{names[i]} {p:.0%}" for p, i in zip(best.values.tolist(), best.indices.tolist(), strict=True))
    title = f"{shown(Path(image).name)}: top-3 {top3}; maps for '{names[index]}'"
    path = Path(out) / photo_figure_name("explain", image)
    return plot_explanation(photo[0].permute(1, 2, 0).numpy(), maps, title, path)


__all__ = [
    "METHODS",
    "attribute",
    "attribute_all",
    "captum_ready",
    "parse_target",
    "write_explanation",
]
