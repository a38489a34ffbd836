"""The sanity check's criterion can fail and can pass: a tiny network and synthetic images, no shipped weights."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from heritage_cnn.inside import explain, sanity
from heritage_cnn.models.network import HeritageNet, build_model


def tiny_net(seed: int = 0, blocks: tuple[int, ...] = (1, 1)) -> HeritageNet:
    torch.manual_seed(seed)
    net = build_model(num_classes=4, widths=(8, 16), blocks=blocks, hidden=32, stem_kernel=3, dropout=0.0)
    return net.eval()


def synthetic_photos(count: int = 8, size: int = 32, seed: int = 0) -> list[torch.Tensor]:
    """Smooth random scenes with a little pixel noise, already 'normalised' (zero mean, unit scale)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(count, 3, 4, 4, generator=generator)
    scenes = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    scenes = scenes + 0.2 * torch.randn(scenes.shape, generator=generator)
    return [scene[None] for scene in scenes]


def edges(model: torch.nn.Module, x: torch.Tensor, target: int) -> dict[str, torch.Tensor]:
    """A 'method' that only looks at the photo: the magnitude of its Sobel edges, whatever the weights."""
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    kernels = torch.stack([sobel, sobel.T])[:, None]
    grey = x.mean(1, keepdim=True)
    return {"edges": F.conv2d(grey, kernels, padding=1).pow(2).sum(1).sqrt()[0]}


def constant(model: torch.nn.Module, x: torch.Tensor, target: int) -> dict[str, torch.Tensor]:
    return {"constant": torch.ones(x.shape[-2:])}


def gradient(model: torch.nn.Module, x: torch.Tensor, target: int) -> dict[str, torch.Tensor]:
    """The gradient of the class logit with respect to the input: it runs through the head's weights."""
    return {"saliency": explain.attribute("saliency", model, x, target, channels="sum")}


def judge(explainer: sanity.Explainer, net: HeritageNet | None = None) -> dict[str, sanity.Summary]:
    net = tiny_net() if net is None else net
    photos = synthetic_photos()
    summaries = sanity.summarise_scores(sanity.cascade_scores(explainer, net, photos, [0] * len(photos)))
    (per_step,) = summaries.values()
    return per_step


def test_a_map_that_depends_on_the_top_layers_passes() -> None:
    per_step = judge(gradient)
    top = per_step["head.fc1"]
    assert top.photos == 8 and top.flat == 0
    assert top.median < sanity.THRESHOLD and top.q90 < 0.9
    assert sanity.verdict(per_step)


def test_a_map_of_the_photo_alone_fails_at_every_step() -> None:
    per_step = judge(edges)
    assert not sanity.verdict(per_step)
    for summary in per_step.values():
        assert summary.flat == 0 and summary.median == pytest.approx(1.0) and not summary.passes


def test_a_constant_map_fails_and_is_never_scored_zero() -> None:
    per_step = judge(constant)
    assert not sanity.verdict(per_step)
    for summary in per_step.values():
        assert summary.flat == 8 and summary.median == sanity.FAILED
    assert math.isnan(sanity.rank_correlation(torch.ones(4, 4), torch.rand(4, 4)))
    with pytest.raises(ValueError, match="NaN"):
        sanity.summarise([0.1, math.nan])
    score, why = sanity.photo_score(torch.rand(8, 8), torch.zeros(8, 8))
    assert score == sanity.FAILED and why == "randomised map all zero"


def test_nearly_constant_and_sparse_maps_are_flat() -> None:
    torch.manual_seed(0)
    assert sanity.flatness(torch.rand(32, 32)) is None
    assert sanity.flatness(torch.zeros(32, 32)) == "all zero"
    assert sanity.flatness(5.0 + 1e-4 * torch.randn(32, 32)) == "nearly constant"
    sparse = torch.zeros(32, 32)
    sparse[0, :5] = torch.rand(5) + 1
    assert "non-zero" in sanity.flatness(sparse)
    assert sanity.flatness(torch.full((4, 4), math.nan)) == "not finite"
    signed = torch.randn(32, 32)  # a signed map (occlusion) with mean near zero is not flat
    assert sanity.flatness(signed) is None


def test_the_rule_is_read_after_the_top_two_layers() -> None:
    high, low = sanity.summarise([0.9] * 5), sanity.summarise([0.1, 0.2, 0.3, 0.95, 0.99])
    assert sanity.TOP_LAYERS == ("head.fc2", "head.fc1")
    assert sanity.verdict({"head.fc2": high, "head.fc1": low, "stage2.block1": high})
    assert not sanity.verdict({"head.fc2": low, "head.fc1": high, "stage2.block1": low})
    assert low.median == pytest.approx(0.3) and low.cell() == "0.30 [0.20, 0.95]"
    assert sanity.summarise([1.0, 0.1], flat=1).cell().endswith("(1 flat)")


def test_cascading_randomisation_goes_top_down() -> None:
    model = tiny_net(blocks=(1, 2))
    before = {name: value.clone() for name, value in model.state_dict().items()}
    steps = list(sanity.cascading_randomisation(model))
    assert [name for name, _ in steps] == ["head.fc2", "head.fc1", "stage2.block2", "stage2.block1", "stage1.block1"]
    first, last = steps[0][1], steps[-1][1]
    assert not torch.equal(first.head.fc2.weight, model.head.fc2.weight)
    assert torch.equal(first.head.fc1.weight, model.head.fc1.weight)  # lower layers kept until their turn
    assert torch.equal(steps[2][1].stage2.block1.conv1.weight, model.stage2.block1.conv1.weight)
    assert not torch.equal(last.stage1.block1.conv.weight, model.stage1.block1.conv.weight)
    assert all(torch.equal(value, model.state_dict()[name]) for name, value in before.items())  # original intact


def test_gradient_maps_sum_magnitudes_over_channels() -> None:
    model = explain.captum_ready(tiny_net())
    x = synthetic_photos(1)[0]
    summed = explain.attribute("guided_backprop", model, x, 0, channels="sum")
    largest = explain.attribute("guided_backprop", model, x, 0)
    assert summed.shape == largest.shape == (32, 32)
    assert (summed >= largest - 1e-7).all() and (summed <= 3 * largest + 1e-7).all()
    with pytest.raises(ValueError, match="channels"):
        explain.attribute("saliency", model, x, 0, channels="mean")


def test_the_cascade_draws_from_a_stream_of_its_own() -> None:
    """The caller's random draws between steps are those it makes without the cascade, and take nothing from it:
    the randomised weights depend on the seed alone."""
    model = tiny_net(blocks=(1, 2))
    torch.manual_seed(7)
    expected = [torch.rand(3) for _ in range(5)]  # the caller's draws, without the cascade
    torch.manual_seed(7)
    steps, drawn = [], []
    for name, randomised in sanity.cascading_randomisation(model, seed=1):
        drawn.append(torch.rand(3))  # the caller draws between steps
        steps.append((name, randomised))
    assert all(torch.equal(a, b) for a, b in zip(drawn, expected, strict=True))
    torch.manual_seed(123)  # another state of the caller's stream, and no draws between steps
    alone = list(sanity.cascading_randomisation(model, seed=1))
    for (name, a), (_, b) in zip(steps, alone, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)), (
            name
        )
    # worked out directly: the first step is head.fc2 re-initialised from the seed's stream
    torch.manual_seed(1)
    fc2 = torch.nn.Linear(32, 4)
    assert torch.equal(alone[0][1].head.fc2.weight, fc2.weight) and torch.equal(alone[0][1].head.fc2.bias, fc2.bias)
    other = list(sanity.cascading_randomisation(model, seed=2))
    assert not torch.equal(other[0][1].head.fc2.weight, fc2.weight)
