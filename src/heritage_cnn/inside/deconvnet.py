"""A deconvnet (Zeiler & Fergus 2014): project one activation back to pixel space, and find the top-k.

Forward: the network is replayed block by block up to the chosen layer, recording the *switches* of
every max-pool (where each maximum came from). Backward, written out layer by layer (no autograd):

- max-pool      -> `F.max_unpool2d` at the switches recorded on that image's forward pass (a stem that pools
                   between its conv and batch norm unpools there too: ReLU, unpool, transposed conv);
- ReLU          -> ReLU of the reconstructed signal (not the forward mask: that is the deconvnet rule);
- conv + BN     -> `F.conv_transpose2d` with the conv weights *folded with batch norm*;
- resize        -> the transpose of the bilinear enlargement (networks with `input_scale` > 1), so that
                   the projection lands on the photo's own pixels.

Batch norm in eval mode is a per-channel affine map y = s * conv(x) + t with s = gamma / sqrt(var + eps).
The scale s belongs to the filter (a unit whose BN scale is 0.1 contributes a tenth as much), so it is
folded into the weights: W' = s * W, and the transposed conv uses W'. The shift t is dropped, as the
deconvnet drops conv biases: a projection is a linear map of the single activation we start from, and a
bias would paint the same pattern for every unit. Inverting BN instead ((y - t) / s) would divide by small
scales, blow up weak channels and make the result no longer the transpose of the forward filter.

Residual blocks compute relu2(bn2(conv2(relu1(bn1(conv1(x))))) + shortcut(x)). Going down, the signal
after relu2's rule is copied into both paths: through the branch (conv2, relu1's rule, conv1) and through
the shortcut (identity, or the BN-folded 1x1 conv), and the two reconstructions are summed, because x fed
both paths on the way up. With these rules the projection is exactly the input gradient of the
activation with every ReLU's backward replaced by ReLU of the incoming signal (Captum's
`NeuronDeconvolution`), which tests/inside/test_deconvnet.py checks to 1e-5.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from heritage_cnn.inside.guards import one_network
from heritage_cnn.models.network import ConvBlock, HeritageNet, ResidualBlock, eval_mode, fold_batch_norm

Step = tuple[str, nn.Module, str]  # (name, module, kind): pool, conv, conv_pool, residual or residual_conv1


def _steps(model: HeritageNet, stop: str | None = None) -> list[Step]:
    """The feature extractor as a list of steps, up to and including the one whose output is `stop`.

    Layer names are the conv layers whose rectified output they are: `stage1.block1.conv` (a conv block),
    `stage2.block1.conv1` (inside a residual block, after relu1) and `stage2.block1.conv2` (the block's output).
    """
    steps: list[Step] = []
    for stage_name in model.stage_names:
        for block_name, block in getattr(model, stage_name).named_children():
            name = f"{stage_name}.{block_name}"
            if isinstance(block, nn.MaxPool2d):
                steps.append((name, block, "pool"))
            elif isinstance(block, ConvBlock):
                steps.append((f"{name}.conv", block, "conv" if block.pool is None else "conv_pool"))
            elif isinstance(block, ResidualBlock):
                if stop == f"{name}.conv1":
                    steps.append((stop, block, "residual_conv1"))
                else:
                    steps.append((f"{name}.conv2", block, "residual"))
            else:
                raise TypeError(f"{name}: no deconvnet rule for {type(block).__name__}")
            if stop is not None and steps[-1][0] == stop:
                return steps
    if stop is not None:
        raise KeyError(f"no layer {stop!r} to project from; choose one of: {', '.join(deconv_layers(model))}")
    return steps


def deconv_layers(model: HeritageNet) -> list[str]:
    """Every layer whose units can be projected, in forward order (conv layers other than 1x1 shortcuts)."""
    one_network(model)
    names = []
    for name, _, kind in _steps(model):
        if kind == "residual":
            names.append(name.removesuffix(".conv2") + ".conv1")
        if kind != "pool":
            names.append(name)
    return names


def resolve_layer(model: HeritageNet, name: str, purpose: str = "to project from") -> str:
    """A layer name as the user may type it: a conv name, a block (`stage2.block1`) or a stage (`stage2`).
    The same names for every tool that looks at a layer (deconvnet, feature maps, unit images); `purpose` says
    in the refusal what the layer was for."""
    one_network(model)
    valid = deconv_layers(model)
    if name in valid:
        return name
    candidates = [v for v in valid if v.startswith(name + ".") and not v.endswith(".conv1")]
    if candidates:
        return candidates[-1]  # the output of the block or stage
    block = valid[-1].rsplit(".", 1)[0]
    raise KeyError(
        f"no layer {name!r} {purpose}; choose one of: {', '.join(valid)}, "
        f"or a stage or block for its output (e.g. {block.split('.')[0]} or {block})"
    )


# What the rectified output of each kind of step is, as a figure's title says it (models/network.py's blocks)
OUTPUTS = {
    "conv": "conv -> BN -> ReLU",
    "conv_pool": "conv -> max-pool -> BN -> ReLU",
    "residual_conv1": "inside a residual block: conv1 -> BN -> ReLU",
    "residual": "the residual block's output: ReLU of (conv2 -> BN) + shortcut",
}


def layer_output(model: HeritageNet, layer: str) -> str:
    """What `layer`'s rectified output is, in words (`OUTPUTS`): a conv block's conv, a residual block's first conv,
    or (conv2) the whole block's output; `layer` as `resolve_layer` takes it."""
    return OUTPUTS[_steps(model, resolve_layer(model, layer))[-1][2]]


# --------------------------------------------------------------------------------------------
# Forward with switches
# --------------------------------------------------------------------------------------------

Switches = dict[str, tuple[torch.Tensor, torch.Size]]  # pool name -> (argmax indices, input size)
RESIZE = "resize"  # switches entry of an enlarged input: (no indices, the photo's size)


def forward_to(
    model: HeritageNet,
    x: torch.Tensor,
    layer: str,
    keep: dict[str, torch.Tensor] | None = None,
    record_switches: bool = True,
) -> tuple[torch.Tensor, Switches]:
    """Replay the network on normalised images up to `layer`; return its rectified output and the switches.

    `keep`, if given, receives the rectified output of every conv layer passed on the way. No autograd:
    the ReLUs and the residual sum work in place on fresh tensors. The network runs in eval mode (the caller's
    mode is given back after).
    """
    one_network(model)
    with eval_mode(model):
        return _replay(model, x, layer, keep, record_switches)


def _replay(
    model: HeritageNet, x: torch.Tensor, layer: str, keep: dict[str, torch.Tensor] | None, record_switches: bool
) -> tuple[torch.Tensor, Switches]:
    """`forward_to`'s pass, the model already in eval mode."""
    switches: Switches = {}
    if not isinstance(model.resize, nn.Identity):
        switches[RESIZE] = (torch.empty(0), x.shape[-2:])
        x = model.resize(x)
    for name, block, kind in _steps(model, layer):
        if kind == "pool":
            x = _pool(x, block, switches, name, record_switches)
        elif kind == "conv":
            x = F.relu(block.bn(block.conv(x)), inplace=True)
        elif kind == "conv_pool":
            x = _pool(block.conv(x), block.pool, switches, _pool_name(name), record_switches)
            x = F.relu(block.bn(x), inplace=True)
        elif kind == "residual_conv1":
            x = F.relu(block.bn1(block.conv1(x)), inplace=True)
        else:  # residual
            inner = F.relu(block.bn1(block.conv1(x)), inplace=True)
            if keep is not None:
                keep[name.removesuffix(".conv2") + ".conv1"] = inner
            x = F.relu(block.bn2(block.conv2(inner)).add_(block.shortcut(x)), inplace=True)
        if keep is not None and kind != "pool":
            keep[name] = x
    return x, switches


def _pool(x: torch.Tensor, pool: nn.MaxPool2d, switches: Switches, name: str, record: bool) -> torch.Tensor:
    """Max-pool `x`, recording its switches under `name` when `record` is set."""
    if not record:
        return F.max_pool2d(x, pool.kernel_size, pool.stride)
    pooled, indices = F.max_pool2d(x, pool.kernel_size, pool.stride, return_indices=True)
    switches[name] = (indices, x.shape[-2:])
    return pooled


def _pool_name(step: str) -> str:
    """The switches entry of a conv block's own pool: `stage1.block1.conv` -> `stage1.block1.pool`."""
    return step.removesuffix(".conv") + ".pool"


def _unpool(signal: torch.Tensor, pool: nn.MaxPool2d, switch: tuple[torch.Tensor, torch.Size]) -> torch.Tensor:
    indices, size = switch
    return F.max_unpool2d(signal, indices, pool.kernel_size, pool.stride, output_size=size)


# --------------------------------------------------------------------------------------------
# Backward: the deconvnet
# --------------------------------------------------------------------------------------------


def folded_weight(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> torch.Tensor:
    """Conv weights with eval-mode batch norm's scale folded in: W' = W * gamma / sqrt(running_var + eps)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return conv.weight * scale.view(-1, 1, 1, 1)


def _down(signal: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> torch.Tensor:
    """Through one conv + BN, backwards: the transposed (BN-folded) filters."""
    return F.conv_transpose2d(signal, folded_weight(conv, bn), stride=conv.stride, padding=conv.padding)


def project_down(model: HeritageNet, signal: torch.Tensor, layer: str, switches: Switches) -> torch.Tensor:
    """Walk a signal at `layer`'s output down to pixel space (normalised input scale), layer by layer."""
    one_network(model)
    for name, block, kind in reversed(_steps(model, layer)):
        if kind == "pool":
            signal = _unpool(signal, block, switches[name])
        elif kind == "conv":
            signal = _down(F.relu(signal), block.conv, block.bn)
        elif kind == "conv_pool":
            signal = _down(_unpool(F.relu(signal), block.pool, switches[_pool_name(name)]), block.conv, block.bn)
        elif kind == "residual_conv1":
            signal = _down(F.relu(signal), block.conv1, block.bn1)
        else:  # residual: the signal goes down the branch and the shortcut, and the two are summed
            signal = F.relu(signal)  # relu2
            branch = _down(F.relu(_down(signal, block.conv2, block.bn2)), block.conv1, block.bn1)
            if isinstance(block.shortcut, nn.Identity):
                skip = signal
            else:
                skip = _down(signal, block.shortcut.conv, block.shortcut.bn)
            signal = branch + skip
    if RESIZE in switches:
        signal = _resize_transposed(model.resize, signal, switches[RESIZE][1])
    return signal


def _resize_transposed(resize: nn.Module, signal: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """The transpose of the (linear) input enlargement, applied to `signal`: its vector-Jacobian product."""
    with torch.enable_grad():
        probe = torch.zeros(*signal.shape[:2], *size, dtype=signal.dtype, device=signal.device, requires_grad=True)
        (transposed,) = torch.autograd.grad(resize(probe), probe, grad_outputs=signal)
    return transposed


@torch.no_grad()
def project(
    model: HeritageNet,
    x: torch.Tensor,
    layer: str,
    channels: torch.Tensor,
    positions: torch.Tensor,
    values: torch.Tensor | None = None,
) -> torch.Tensor:
    """Project one activation per image alone: image i's unit (channels[i], positions[i]) -> pixel space.

    All other activations of the layer are set to zero. The unit keeps its own value unless `values`
    is given (`values=1` gives the input gradient under the deconvnet rule). Returns (N, 3, H, W).
    """
    one_network(model)
    activation, switches = forward_to(model, x, layer)  # in eval mode: the batch norm project_down folds in
    n = len(x)
    batch = torch.arange(n)
    channels, rows, cols = channels.long(), positions[:, 0].long(), positions[:, 1].long()
    signal = torch.zeros_like(activation)
    start = activation[batch, channels, rows, cols] if values is None else values.to(activation)
    signal[batch, channels, rows, cols] = start
    return project_down(model, signal, layer, switches)


def receptive_field(model: HeritageNet, layer: str, row: int, col: int) -> tuple[int, int, int, int]:
    """Input box (top, left, bottom, right; bottom/right exclusive, may exceed the image) a unit sees."""
    one_network(model)
    box = [row, row, col, col]  # inclusive
    for _, block, kind in reversed(_steps(model, layer)):
        if kind == "pool":
            box = _grow_pool(box, block)
        elif kind == "conv":
            box = _grow(box, block.conv)
        elif kind == "conv_pool":
            box = _grow(_grow_pool(box, block.pool), block.conv)
        elif kind == "residual_conv1":
            box = _grow(box, block.conv1)
        else:
            branch = _grow(_grow(box, block.conv2), block.conv1)
            skip = box if isinstance(block.shortcut, nn.Identity) else _grow(box, block.shortcut.conv)
            box = [min(branch[0], skip[0]), max(branch[1], skip[1]), min(branch[2], skip[2]), max(branch[3], skip[3])]
    if model.config.input_scale != 1.0:  # enlarged pixel i interpolates photo pixels floor(c) and floor(c) + 1
        scale = model.config.input_scale
        box = [math.floor((v + 0.5) / scale - 0.5) + (i % 2) for i, v in enumerate(box)]
    return box[0], box[2], box[1] + 1, box[3] + 1


def _grow_pool(box: list[int], pool: nn.MaxPool2d) -> list[int]:
    k, s = pool.kernel_size, pool.stride
    return [box[0] * s, box[1] * s + k - 1, box[2] * s, box[3] * s + k - 1]


def _grow(box: list[int], conv: nn.Conv2d) -> list[int]:
    (kh, kw), (ph, pw), (sh, sw) = conv.kernel_size, conv.padding, conv.stride
    return [box[0] * sh - ph, box[1] * sh - ph + kh - 1, box[2] * sw - pw, box[3] * sw - pw + kw - 1]


# --------------------------------------------------------------------------------------------
# Top-k scan
# --------------------------------------------------------------------------------------------


@dataclass
class TopActivations:
    """For every channel of a layer, its k strongest activations over a set of images (one per image)."""

    layer: str
    values: torch.Tensor  # (C, k) float, descending; -inf where fewer than k images were seen
    images: torch.Tensor  # (C, k) long, index into the scanned images; -1 where empty
    positions: torch.Tensor  # (C, k, 2) long: (row, col) in the layer's map
    map_size: tuple[int, int]

    def strongest_channels(self, count: int) -> list[int]:
        """Channels ranked by their top activation."""
        return self.values[:, 0].argsort(descending=True)[:count].tolist()


@torch.inference_mode()
def scan_top_activations(
    model: HeritageNet,
    images: torch.Tensor,
    normalise: Callable[[torch.Tensor], torch.Tensor],
    layer: str,
    k: int = 9,
    batch_size: int = 256,
    progress: bool = False,
) -> TopActivations:
    """One pass over uint8 images: the k strongest activations of every channel of `layer` at once.

    Each image counts once per channel (its strongest position), as in Zeiler & Fergus: nine views of
    one photo would say little. Batched forward up to the layer only, then a running top-k merge.
    """
    one_network(model)
    model = fold_batch_norm(model)
    top_values = top_images = top_positions = None
    width = 1
    batches = range(0, len(images), batch_size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc=f"scan {layer}", unit="batch")
    for start in batches:
        x = normalise(images[start : start + batch_size]).contiguous(memory_format=torch.channels_last)
        activation, _ = forward_to(model, x, layer, record_switches=False)
        n, c, h, width = activation.shape
        best, where = activation.reshape(n, c, h * width).max(dim=2)  # (n, c): strongest position per image
        index = torch.arange(start, start + n).expand(c, n)
        if top_values is None:
            top_values = torch.full((c, k), -torch.inf)
            top_images = torch.full((c, k), -1, dtype=torch.long)
            top_positions = torch.zeros((c, k), dtype=torch.long)
        values = torch.cat([top_values, best.T.float()], 1)
        chosen = values.topk(k, dim=1).indices
        top_values = values.gather(1, chosen)
        top_images = torch.cat([top_images, index], 1).gather(1, chosen)
        top_positions = torch.cat([top_positions, where.T], 1).gather(1, chosen)
    if top_values is None:
        raise ValueError("no images to scan")
    positions = torch.stack([top_positions // width, top_positions % width], dim=2)
    return TopActivations(layer, top_values, top_images, positions, (h, width))


def project_top(
    model: HeritageNet,
    images: torch.Tensor,
    normalise: Callable[[torch.Tensor], torch.Tensor],
    top: TopActivations,
    channels: list[int],
    batch_size: int = 128,
) -> torch.Tensor:
    """Deconv projections of the top activations of `channels`: (len(channels), k, 3, H, W).

    Slots with no image, or whose unit never fired (value <= 0), stay zero.
    """
    one_network(model)
    k = top.values.shape[1]
    rows = [(c, j) for c in channels for j in range(k) if top.images[c, j] >= 0 and top.values[c, j] > 0]
    out = torch.zeros(len(channels), k, 3, *images.shape[-2:])
    slot = {c: i for i, c in enumerate(channels)}
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        index = torch.tensor([top.images[c, j] for c, j in chunk])
        x = normalise(images[index])
        channel = torch.tensor([c for c, _ in chunk])
        position = torch.stack([top.positions[c, j] for c, j in chunk])
        projected = project(model, x, top.layer, channel, position)
        for (c, j), p in zip(chunk, projected, strict=True):
            out[slot[c], j] = p
    return out


__all__ = [
    "TopActivations",
    "deconv_layers",
    "folded_weight",
    "forward_to",
    "layer_output",
    "project",
    "project_down",
    "project_top",
    "receptive_field",
    "resolve_layer",
    "scan_top_activations",
]
