"""The deconvnet is the input gradient under the deconvnet ReLU rule; the top-k scan is exact."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from captum.attr import NeuronDeconvolution
from torch import nn

from conftest import TINY
from heritage_cnn.inside import deconvnet
from heritage_cnn.models.network import build_model
from heritage_cnn.models.network import layer as get_layer


def plain_model() -> nn.Module:
    torch.manual_seed(0)
    return build_model(**TINY, residual=False).eval()


def residual_model() -> nn.Module:
    """Residual blocks with a projection shortcut and an identity one, and batch norm that does something."""
    torch.manual_seed(1)
    model = build_model(widths=(8, 16, 16), blocks=(1, 2, 1), hidden=16, stem_kernel=5)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.3)
            module.running_mean.normal_(0, 0.3)
            module.running_var.uniform_(0.3, 2.0)
    return model.eval()


def enlarged_model() -> nn.Module:
    """The residual network behind a 1.5x bilinear enlargement of its input (`input_scale`)."""
    model = residual_model()
    torch.manual_seed(1)
    enlarged = build_model(widths=(8, 16, 16), blocks=(1, 2, 1), hidden=16, stem_kernel=5, input_scale=1.5)
    enlarged.load_state_dict(model.state_dict())
    return enlarged.eval()


def pool_first_model() -> nn.Module:
    """The residual network with its stem pooling between conv and batch norm (`stem_pool_first`); some stem
    scales negative, so that the switches must be taken where the network takes them: on the conv's output."""
    model = residual_model()
    torch.manual_seed(1)
    pooled = build_model(widths=(8, 16, 16), blocks=(1, 2, 1), hidden=16, stem_kernel=5, stem_pool_first=True)
    pooled.load_state_dict(model.state_dict())
    pooled.stage1.block1.bn.weight.data[::2] *= -1
    return pooled.eval()


class DeconvReLU(torch.autograd.Function):
    """ReLU forward; backward passes ReLU of the incoming signal (the deconvnet rule)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.clamp(min=0)


class HookedReLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return DeconvReLU.apply(x)


def relu_name(layer: str) -> str:
    """The ReLU module whose output is a deconv layer's activation."""
    return layer.replace(".conv2", ".relu2").replace(".conv1", ".relu1").replace(".conv", ".relu")


def autograd_deconv(model: nn.Module, x: torch.Tensor, layer: str, channel: int, row: int, col: int) -> torch.Tensor:
    """Input gradient of one activation, every ReLU's backward replaced by ReLU of the incoming signal."""
    model = copy.deepcopy(model)
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(module, child_name, HookedReLU())
    captured = {}
    target = get_layer(model, relu_name(layer))
    target.register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
    x = x.clone().requires_grad_(True)
    model(x)
    captured["out"][0, channel, row, col].backward()
    return x.grad


@pytest.mark.parametrize(
    "make_model",
    [plain_model, residual_model, enlarged_model, pool_first_model],
    ids=["plain", "residual_bn", "enlarged", "pool_first"],
)
def test_projection_is_the_deconv_gradient(make_model) -> None:
    model = make_model()
    captum_model = copy.deepcopy(model)
    for module in captum_model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False  # Captum's ReLU backward hooks cannot see through in-place ReLUs
    torch.manual_seed(2)
    x = torch.randn(1, 3, 32, 32)
    for layer in deconvnet.deconv_layers(model):
        activation, _ = deconvnet.forward_to(model, x, layer)
        # the strongest unit of a middle channel, and a unit at the border
        channel = activation.shape[1] // 2
        flat = activation[0, channel].flatten().argmax().item()
        units = [(channel, divmod(flat, activation.shape[3])), (0, (0, activation.shape[3] - 1))]
        for c, (row, col) in units:
            ours = deconvnet.project(model, x, layer, torch.tensor([c]), torch.tensor([[row, col]]), torch.ones(1))
            reference = autograd_deconv(model, x, layer, c, row, col)
            explainer = NeuronDeconvolution(captum_model, get_layer(captum_model, relu_name(layer)))
            with pytest.warns(UserWarning):  # Captum warns that it sets hooks and requires_grad
                by_captum = explainer.attribute(x.clone(), neuron_selector=(c, row, col))
            scale = reference.abs().max()
            assert scale > 0, f"{layer}: degenerate test unit"
            # Three float32 computations of one gradient through other kernels (transposed convolutions, autograd's
            # convolution backward, Captum's hooks) that sum in other orders: they agree to a few float32 roundings
            # of the largest value (~1e-7 relative per sum), not bit for bit. A wrong ReLU rule moves whole pixels.
            tolerance = {"atol": 1e-5 * scale.item(), "rtol": 1e-4}
            torch.testing.assert_close(ours, reference, **tolerance, msg=f"{layer} vs autograd")
            torch.testing.assert_close(ours, by_captum, **tolerance, msg=f"{layer} vs Captum")


def test_projection_scales_with_the_activation_value() -> None:
    model = residual_model()
    x = torch.randn(2, 3, 32, 32)
    layer = "stage2.block2.conv2"
    activation, _ = deconvnet.forward_to(model, x, layer)
    channels, positions = torch.tensor([3, 5]), torch.tensor([[2, 3], [4, 1]])
    values = activation[torch.arange(2), channels, positions[:, 0], positions[:, 1]]
    unit = deconvnet.project(model, x, layer, channels, positions, torch.ones(2))
    own = deconvnet.project(model, x, layer, channels, positions)
    torch.testing.assert_close(own, unit * values.view(-1, 1, 1, 1))


@pytest.mark.parametrize(
    ("make_model", "pools", "stem_side"),
    [
        (residual_model, ["stage1.pool", "stage2.pool"], 32),
        (pool_first_model, ["stage1.block1.pool", "stage2.pool"], 16),  # the stem's output is its pooled map
    ],
    ids=["residual_bn", "pool_first"],
)
def test_forward_replay_matches_the_model(make_model, pools: list[str], stem_side: int) -> None:
    model = make_model()
    x = torch.randn(3, 3, 32, 32)
    last = deconvnet.deconv_layers(model)[-1]
    activation, switches = deconvnet.forward_to(model, x, last)
    with torch.no_grad():
        expected = model.features(x)
    torch.testing.assert_close(nn.functional.max_pool2d(activation, 2), expected)
    assert sorted(switches) == pools
    stem, _ = deconvnet.forward_to(model, x, "stage1.block1.conv")
    assert stem.shape[-2:] == (stem_side, stem_side)


@pytest.mark.parametrize(
    "make_model", [residual_model, enlarged_model, pool_first_model], ids=["residual_bn", "enlarged", "pool_first"]
)
def test_projection_stays_inside_the_receptive_field(make_model) -> None:
    model = make_model()
    x = torch.randn(1, 3, 32, 32)
    for layer in deconvnet.deconv_layers(model):
        activation, _ = deconvnet.forward_to(model, x, layer)
        row, col = activation.shape[2] // 2, 1
        projection = deconvnet.project(model, x, layer, torch.tensor([1]), torch.tensor([[row, col]]), torch.ones(1))
        top, left, bottom, right = deconvnet.receptive_field(model, layer, row, col)
        support = projection[0].abs().sum(0) > 0
        assert support.any(), layer
        inside = torch.zeros_like(support)
        inside[max(top, 0) : bottom, max(left, 0) : right] = True
        assert not (support & ~inside).any(), f"{layer}: projection leaks outside {top, left, bottom, right}"
        assert projection.shape[-2:] == x.shape[-2:], "the projection is on the photo's own pixels"
    # a 5x5 stem; pooled first, its unit is the best of 2x2 positions, so the box is one pixel wider
    stem_box = (-2, -2, 4, 4) if make_model is pool_first_model else (-2, -2, 3, 3)
    assert deconvnet.receptive_field(model, "stage1.block1.conv", 0, 0) == stem_box
    if make_model is enlarged_model:  # the box shrinks with the enlargement: no trivially large box passes
        last = deconvnet.deconv_layers(model)[-1]
        top, left, bottom, right = deconvnet.receptive_field(model, last, 1, 1)
        wide = deconvnet.receptive_field(residual_model(), last, 1, 1)
        assert bottom - top <= math.ceil((wide[2] - wide[0]) / 1.5) + 2


def test_scan_finds_the_top_activations() -> None:
    model = residual_model()
    generator = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (23, 3, 32, 32), dtype=torch.uint8, generator=generator)

    def normalise(batch: torch.Tensor) -> torch.Tensor:
        return batch.float() / 127.5 - 1

    layer = "stage2.block1.conv1"
    top = deconvnet.scan_top_activations(model, images, normalise, layer, k=4, batch_size=5)
    activation, _ = deconvnet.forward_to(model, normalise(images), layer)
    n, c, h, w = activation.shape
    best, where = activation.reshape(n, c, h * w).max(2)
    for channel in range(c):
        values, order = best[:, channel].sort(descending=True)
        torch.testing.assert_close(top.values[channel], values[:4], atol=1e-5, rtol=1e-5)
        fired = int((values[:4] > 0).sum())  # ties at zero (a unit that never fired) have no order
        assert top.images[channel, :fired].tolist() == order[:fired].tolist()
        flat = where[order[:fired], channel]
        assert top.positions[channel, :fired].tolist() == torch.stack([flat // w, flat % w], 1).tolist()
    assert top.map_size == (h, w)
    projections = deconvnet.project_top(model, images, normalise, top, [2, 0])
    assert projections.shape == (2, 4, 3, 32, 32)

    few = deconvnet.scan_top_activations(model, images[:2], normalise, layer, k=3)
    assert few.images[:, 2].eq(-1).all() and few.values[:, 2].isinf().all()


def test_layer_names_and_errors() -> None:
    model = residual_model()
    names = deconvnet.deconv_layers(model)
    assert names[:3] == ["stage1.block1.conv", "stage2.block1.conv1", "stage2.block1.conv2"]
    assert deconvnet.resolve_layer(model, "stage2") == "stage2.block2.conv2"
    assert deconvnet.resolve_layer(model, "stage2.block1") == "stage2.block1.conv2"
    with pytest.raises(KeyError, match=r"stage2\.block1\.conv1"):
        deconvnet.resolve_layer(model, "stage2.block1.shortcut.conv")
    with pytest.raises(KeyError, match="choose one of"):
        deconvnet.forward_to(model, torch.zeros(1, 3, 32, 32), "head.fc1")
