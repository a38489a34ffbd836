"""Class-image synthesis on the tiny synthetic-data model: the parts, the loop, the files, the CLI."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from heritage_cnn.base import figures
from heritage_cnn.base.checks import ConfigError
from heritage_cnn.cli.main import main
from heritage_cnn.data import labels
from heritage_cnn.inside.synthesis import draw, loop, param, transforms
from heritage_cnn.inside.synthesis import objectives as o
from heritage_cnn.models.checkpoint import load_checkpoint

# The tiny model tells its synthetic classes apart by exact stripe frequency and angle; under the random
# transforms it settles on images between neighbouring classes, so the class test ascends pixel-exactly.
# The penalty is pinned: the shipped default (tuned for the real model) blurs the tiny model's stripes.
FAST = replace(draw.Settings(), steps=48, lr=0.1, transforms=False, tv=10.0)


@pytest.fixture(scope="module")
def checkpoint(tiny_run):
    return load_checkpoint(tiny_run.checkpoint)


def test_objective_rises_during_rendering(checkpoint) -> None:
    g = torch.Generator().manual_seed(0)
    result = loop.render(
        checkpoint, o.class_margin(3), param.FourierImage(2, 32, g), transforms.standard_transforms(32), 40, 0.1, g
    )
    assert len(result.history) == 40
    assert np.mean(result.history[-5:]) > np.mean(result.history[:5]) + 1.0


def test_generated_images_are_classified_as_the_target(checkpoint) -> None:
    """The tiny model tells a synthetic class by its stripes' frequency, so an image drawn for class k may sit
    between k and the class of the next frequency (4 and 5 score 0.48 against 0.47): a margin, not an exact
    top-1, is what every CPU's rounding agrees on. Classes 0, 4 and 7 are drawn; an image of any other class
    (an off-by-one target, a reversed objective) leaves its target far behind."""
    targets = [0, 4, 7]
    generated = draw.draw_classes(checkpoint, targets, n=2, settings=FAST, progress=False)
    assert generated.images.shape == (6, 3, 64, 64)
    assert generated.targets == [0, 0, 4, 4, 7, 7]
    probs = draw.classify(checkpoint, generated.images)
    rows, wanted = torch.arange(6), torch.tensor(generated.targets)
    target = probs[rows, wanted]
    rival = probs.scatter(1, wanted[:, None], 0).amax(1)
    start = draw.classify(checkpoint, draw.make_param(FAST, 6, 64, torch.Generator().manual_seed(0))().detach())
    assert (probs.topk(2).indices == wanted[:, None]).any(1).all()  # the target is first or second everywhere
    assert (target > 0.3).all()  # 3x chance; the logit objective does not push the softmax to 1
    assert (target > 5 * start[rows, wanted]).all()  # drawn from noise at 0.05-0.07
    assert target.sum() > 1.5 * rival.sum()  # and on the whole it leads its strongest rival clearly
    # the recorded probabilities are those of the returned images
    assert target.tolist() == pytest.approx(generated.probabilities)


def test_same_seed_same_image(checkpoint) -> None:
    settings = replace(FAST, steps=6)
    a = draw.draw_classes(checkpoint, [1], n=2, settings=settings, seed=3, progress=False).images
    b = draw.draw_classes(checkpoint, [1], n=2, settings=settings, seed=3, progress=False).images
    c = draw.draw_classes(checkpoint, [1], n=2, settings=settings, seed=4, progress=False).images
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a[0], a[1])  # images of a batch start from different noise


@pytest.mark.parametrize(
    "make",
    [
        lambda g: param.PixelImage(2, 24, g),
        lambda g: param.PixelImage(2, 24, g, decorrelate=True),
        lambda g: param.FourierImage(2, 24, g),
        lambda g: param.FourierImage(2, 24, g, decay_power=1.5, decorrelate=False),
    ],
)
def test_parametrisations_round_trip_to_valid_images(make, tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    param = make(g)
    image = param()
    assert image.shape == (2, 3, 24, 24) and image.min() >= 0 and image.max() <= 1
    # every parametrisation can express a given picture: fit one by gradient descent
    target = torch.rand(2, 3, 24, 24, generator=g) * 0.6 + 0.2
    optimizer = torch.optim.Adam(param.parameters(), lr=0.1)
    for _ in range(300):
        optimizer.zero_grad()
        loss = (param() - target).pow(2).mean()
        loss.backward()
        optimizer.step()
    assert loss.item() < 1e-3
    # and the saved PNG is that image to 8 bits
    fitted = param().detach()
    figures.save_png(fitted[0], tmp_path / "a.png")
    back = torch.from_numpy(np.array(Image.open(tmp_path / "a.png"))).permute(2, 0, 1) / 255
    assert (back - fitted[0]).abs().max() <= 0.5 / 255 + 1e-6


def test_transforms_keep_batches_and_are_seeded() -> None:
    x = torch.rand(3, 3, 64, 64)
    shapes = [t(x, torch.Generator().manual_seed(0)).shape for t in transforms.standard_transforms(64)]
    assert shapes == [(3, 3, 72, 72), (3, 3, 60, 60), (3, 3, 64, 64), (3, 3, 64, 64), (3, 3, 62, 62)]

    def run(seed: int) -> torch.Tensor:
        g, y = torch.Generator().manual_seed(seed), x
        for t in transforms.standard_transforms(64):
            y = t(y, g)
        return y

    assert torch.equal(run(0), run(0)) and not torch.equal(run(0), run(1))
    assert torch.allclose(transforms.rotate(0.0)(x, torch.Generator()), x, atol=1e-5)
    assert torch.allclose(transforms.scale(1.0, 1.0)(x, torch.Generator()), x, atol=1e-5)


def test_objectives_compose() -> None:
    g = torch.Generator().manual_seed(0)
    context = o.Context(
        image=torch.rand(3, 3, 16, 16, generator=g),
        logits=torch.randn(3, 10, generator=g),
        activations={"a": torch.randn(3, 4, 5, 5, generator=g)},
    )
    logit, margin, tv = o.class_logit([1, 2, 3]), o.class_margin(2), o.total_variation()
    composed = logit - 0.5 * tv + 2 * o.channel("a", 1) + o.l2() * 3
    expected = logit(context) - 0.5 * tv(context) + 2 * o.channel("a", 1)(context) + 3 * o.l2()(context)
    assert composed(context).item() == pytest.approx(expected.item())
    assert composed.layers == {"a"} and "tv" in composed.name
    assert sum([logit, margin, tv])(context).item() == pytest.approx(
        (logit(context) + margin(context) + tv(context)).item()
    )
    assert (-margin)(context).item() == pytest.approx(-margin(context).item())
    # the definitions themselves
    assert logit(context).item() == pytest.approx(context.logits[[0, 1, 2], [1, 2, 3]].sum().item())
    others = (context.logits.sum(1) - context.logits[:, 2]) / 9
    assert margin(context).item() == pytest.approx((context.logits[:, 2] - others).sum().item(), rel=1e-5)
    assert o.unit("a", 0)(context).item() == pytest.approx(context.activations["a"][:, 0, 2, 2].sum().item())
    assert o.diversity("a")(context).item() < 0
    flat = {**context.__dict__, "image": torch.full((3, 3, 16, 16), 0.5)}
    assert tv(o.Context(**flat)).item() == 0 and o.l2()(o.Context(**flat)).item() == 0
    assert o.blur()(o.Context(**flat)).item() == 0 and o.blur()(context).item() > 0
    with pytest.raises(ValueError, match="2 targets for a batch of 3"):
        o.class_logit([1, 2])(context)


def test_channel_objective_reads_the_layer_before_its_relu(checkpoint) -> None:
    """Maximising "channel c of a conv layer" reads what its batch norm hands the ReLU: negative values count."""
    layer, c = "stage2.block1.conv1", 2
    g = torch.Generator().manual_seed(0)
    result = loop.render(checkpoint, o.channel(layer, c), param.FourierImage(1, 64, g), (), 30, 0.1, g, False)
    assert result.history[-1] > result.history[0]
    start = param.FourierImage(1, 64, torch.Generator().manual_seed(0))().detach()  # the image of step 0
    seen: dict[str, torch.Tensor] = {}
    model = checkpoint.model.eval()
    handle = model.stage2.block1.bn1.register_forward_hook(lambda m, i, out: seen.update(bn=out.clone()))
    try:
        with torch.no_grad():
            model(checkpoint.normalise(start))
    finally:
        handle.remove()
    before_relu, after_relu = seen["bn"][0, c].mean().item(), seen["bn"][0, c].clamp(min=0).mean().item()
    # the test means something only where the two readings differ: the channel has negative values on this image
    assert after_relu - before_relu > 0.05 * max(abs(before_relu), abs(after_relu), 1e-3)
    assert result.history[0] == pytest.approx(before_relu, rel=1e-4, abs=1e-6)  # float32, the same forward pass
    with pytest.raises(
        KeyError, match=r"no layer 'stage9\.conv' to draw units of; choose one of: stage1\.block1\.conv"
    ):
        draw.draw_units(checkpoint, "stage9.conv", settings=FAST, progress=False)


def test_class_names_resolve_and_unknown_names_fail_clearly(checkpoint) -> None:
    classes = checkpoint.classes
    assert labels.resolve_class("gargoyle", classes) == classes.index("gargoyle")
    for name in ("dome (inner)", "dome(inner)", "Dome (Inner)"):
        assert labels.resolve_class(name, classes) == classes.index("dome(inner)")
    assert labels.resolve_class("flying_buttress", classes) == labels.resolve_class("flying buttress", classes)
    with pytest.raises(ValueError, match=r"unknown class 'dragon'; the classes are: altar, apse"):
        labels.resolve_class("dragon", classes)


@pytest.mark.parametrize(
    ("classes", "n", "limit", "sizes"),
    [(10, 4, 160, [40]), (10, 20, 50, [40] * 5), (3, 7, 10, [7, 7, 7]), (2, 25, 10, [10, 10, 10, 10, 10])],
)
def test_render_batches_cut_between_classes_and_stay_under_the_limit(classes, n, limit, sizes) -> None:
    per_image = [c for c in range(classes) for _ in range(n)]
    batches = draw.render_batches(per_image, n, limit)
    assert [len(per_image[b]) for b in batches] == sizes
    assert [i for b in batches for i in range(len(per_image))[b]] == list(range(len(per_image)))


def test_a_large_request_is_drawn_in_bounded_batches(checkpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--n 1000 --all` used to be one batch of 10,000 images, hundreds of GB of activations."""
    from heritage_cnn.inside.synthesis import draw

    sizes: list[int] = []
    real_render = draw.render

    def recording_render(checkpoint, objective, param, *args):
        sizes.append(len(param()))
        return real_render(checkpoint, objective, param, *args)

    monkeypatch.setattr(draw, "render", recording_render)
    monkeypatch.setattr(draw, "RENDER_BATCH", 4)
    settings = replace(FAST, steps=5)
    generated = draw.draw_classes(checkpoint, [0, 4, 7], n=2, settings=settings, progress=False)
    assert sizes == [4, 2]
    assert generated.images.shape == (6, 3, 64, 64) and generated.targets == [0, 0, 4, 4, 7, 7]
    assert len(generated.history) == 5 and len(generated.probabilities) == 6
    probs = draw.classify(checkpoint, generated.images)
    # one batch of six against batches of four and two: oneDNN may block the convolutions otherwise, and float32
    # sums in another order agree to ~1e-6 relative; images swapped between batches would differ by far more
    recorded = probs[torch.arange(6), torch.tensor(generated.targets)].tolist()
    assert recorded == pytest.approx(generated.probabilities, rel=1e-4, abs=1e-6)


def test_the_grid_shows_the_first_rows_and_every_image_gets_its_file(
    checkpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from heritage_cnn.inside.synthesis import files

    monkeypatch.setattr(files, "GRID_ROWS", 2)
    generated = draw.draw_classes(checkpoint, [1, 2], n=3, settings=replace(FAST, steps=2), progress=False)
    grid = files.write_generated(tmp_path, generated, checkpoint, seed=0, n=3)
    assert len(list(tmp_path.glob("*_[0-9].png"))) == 6
    shown = Image.open(grid).size
    monkeypatch.setattr(files, "GRID_ROWS", 3)
    assert Image.open(files.write_generated(tmp_path, generated, checkpoint, seed=0, n=3)).size[1] > shown[1]


def test_generate_cli_writes_pngs_grid_and_json(tiny_run, tmp_path: Path, capsys) -> None:
    out = tmp_path / "gen"
    args = ["generate", "--model", str(tiny_run.checkpoint), "--steps", "4", "--out", str(out)]
    assert main([*args, "--all", "--n", "1"]) == 0
    report = json.loads((out / "class_images.json").read_text())
    assert len(report["images"]) == 10 and report["settings"]["steps"] == 4
    assert all(0 <= row["probability"] <= 1 and (out / row["file"]).exists() for row in report["images"])
    assert Image.open(out / "class_images.png").size[0] > 600
    before = sorted(p.name for p in out.iterdir())
    capsys.readouterr()
    # a second run into the same folder would leave the first one's PNGs beside its own, unlisted: refused
    assert main([*args, "--class", "dome (inner)", "--n", "2"]) == 2
    error = capsys.readouterr().err
    assert (
        error == f"heritage: error: --out {out}: already exists and is not empty; generate writes into a new folder\n"
    )
    assert sorted(p.name for p in out.iterdir()) == before
    args[-1] = str(tmp_path / "domes")
    assert main([*args, "--class", "dome (inner)", "--n", "2", "--size", "128"]) == 0
    assert Image.open(tmp_path / "domes" / "dome_inner_1.png").size == (128, 128)
    capsys.readouterr()
    args[-1] = str(tmp_path / "dragons")
    assert main([*args, "--class", "dragon"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "unknown class 'dragon'" in error and "gargoyle" in error


def test_visualize_units_cli(tiny_run, tmp_path: Path, capsys) -> None:
    args = ["visualize", "units", "--model", str(tiny_run.checkpoint), "--steps", "3", "--out", str(tmp_path)]
    assert main([*args, "--layer", "stage1.block1.conv", "--channels", "0-2,5"]) == 0
    assert (tmp_path / "units_stage1_block1_conv.png").exists()
    assert main([*args, "--layer", "stage1.block1.conv", "--channels", "99"]) == 2
    # the layer names of visualize features and deconv: a stage is its output, a 1x1 shortcut is no layer
    assert main([*args, "--layer", "stage2", "--channels", "0"]) == 0
    assert (tmp_path / "units_stage2_block1_conv2.png").exists()
    capsys.readouterr()
    assert main([*args, "--layer", "stage2.block1.shortcut.conv"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("heritage: error: no layer 'stage2.block1.shortcut.conv' to draw units of; choose one")
    assert "shortcut" not in error.split("choose one of")[1]


@pytest.mark.parametrize("make", [lambda: o.class_logit([1, 2]), lambda: o.class_margin(3)])
def test_objectives_index_on_the_logits_device(make, monkeypatch: pytest.MonkeyPatch) -> None:
    """The target indices follow the logits to their device: built on the CPU, CUDA refused them in gather.
    Without a GPU, the meta device stands in, and gather is made as strict about devices as CUDA's."""
    gather = torch.Tensor.gather

    def strict_gather(self: torch.Tensor, dim: int, index: torch.Tensor) -> torch.Tensor:
        assert index.device == self.device, f"index on {index.device}, values on {self.device}"
        return gather(self, dim, index)

    monkeypatch.setattr(torch.Tensor, "gather", strict_gather)
    logits = torch.randn(2, 10, device="meta")
    value = make()(o.Context(torch.zeros(2, 3, 8, 8, device="meta"), logits, {}))
    assert value.device.type == "meta"


def test_render_over_several_networks_reads_their_mean_logits(checkpoint) -> None:
    """The ensemble objective: a list of networks sees one transformed image and the objective their mean logit."""
    from heritage_cnn.models.ensemble import copy_model

    settings = replace(FAST, steps=5)

    def first_logits(networks) -> torch.Tensor:
        seen: list[torch.Tensor] = []
        spy = o.Objective(lambda c: seen.append(c.logits.detach()) or c.logits[:, 2].sum(), "spy")
        loop.render(networks, spy, param.FourierImage(2, 32, torch.Generator().manual_seed(1)), (), 1, 0.1, None, False)
        return seen[0]

    # the mean of two equal logits is the logit: (a + a) / 2 is exact in float32, one forward pass each
    torch.testing.assert_close(first_logits([checkpoint, checkpoint]), first_logits(checkpoint), rtol=1e-6, atol=1e-6)
    other = replace(checkpoint, model=copy_model(checkpoint.model).eval())  # a new module starts in train mode
    with torch.no_grad():
        for p in other.model.parameters():
            p.mul_(0.5)
    seen: list[torch.Tensor] = []
    objective = o.Objective(lambda c: seen.append(c.logits.detach()) or c.logits[:, 2].sum(), "spy")
    image = param.FourierImage(1, 32, torch.Generator().manual_seed(0))
    loop.render([checkpoint, other], objective, image, (), 1, 0.1, None, False)
    # one Adam step has changed the image since; compare with the logits of the image before the step
    image_before = param.FourierImage(1, 32, torch.Generator().manual_seed(0))
    x = torch.nn.functional.interpolate(image_before().detach(), scale_factor=2, mode="bilinear", antialias=True)
    with torch.no_grad():
        expected = (checkpoint.model(checkpoint.normalise(x)) + other.model(other.normalise(x))) / 2
    assert torch.allclose(seen[0], expected, atol=1e-5)
    assert all(p.requires_grad for p in other.model.parameters())  # the networks are given back trainable
    probs = draw.classify([checkpoint, other], x)
    assert torch.allclose(probs, (draw.classify(checkpoint, x) + draw.classify(other, x)) / 2)
    with pytest.raises(ValueError, match="at least one generating network"):
        draw.draw_classes([], [1], settings=settings, progress=False)


def test_maco_optimises_the_phase_only() -> None:
    g = torch.Generator().manual_seed(0)
    maco = param.MacoImage(2, 24, g, decorrelate=False)
    assert [name for name, _ in maco.named_parameters()] == ["phase"]
    image = maco()
    assert image.shape == (2, 3, 24, 24) and image.min() >= 0 and image.max() <= 1
    # before the sigmoid the image is standardised, and its spectrum has the fixed magnitude (up to that scale)
    x = torch.logit(image.double().clamp(1e-9, 1 - 1e-9))
    assert x.mean((1, 2, 3)).abs().max() < 1e-4 and (x.std((1, 2, 3)) - 1).abs().max() < 1e-3
    ratio = torch.fft.rfft2(x, norm="ortho").abs()[:, :, 1:, 1:-1] / maco.magnitude[:, 1:, 1:-1]
    assert torch.allclose(ratio, ratio[:, :1, :1, :1].expand_as(ratio), rtol=1e-3)
    # a settings value, drawn like the others
    settings = draw.Settings(param="maco")
    assert isinstance(draw.make_param(settings, 1, 16, g), param.MacoImage)


def test_benchmark_intervals_and_judge_kinds(tiny_run, tmp_path: Path) -> None:
    """benchmarks/bench_synthesis.py: the class-stratified bootstrap, and a judge's kind read from its file."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from safetensors.torch import save_file

    from bench_synthesis import bootstrap_interval, judge_kind

    groups = torch.arange(4).repeat_interleave(10)
    perfect = torch.ones(40)
    assert bootstrap_interval(perfect, groups) == (1.0, 1.0)
    hits = (torch.arange(40) % 10 < 7).float()  # 7 of 10 in every class
    low, high = bootstrap_interval(hits, groups, reps=500)
    assert low < 0.7 < high and low > 0.5 and high < 0.9
    assert bootstrap_interval(hits, groups, reps=500) == (low, high)  # seeded
    judge = tmp_path / "judge.safetensors"
    save_file({"w": torch.zeros(1)}, str(judge), metadata={"judge": json.dumps({"arch": "vgg-gn"})})
    assert judge_kind(judge) == "judges.py"
    assert judge_kind(tiny_run.checkpoint) == "heritage"
    assert judge_kind(Path(tiny_run.checkpoint).parent) == "heritage"


@pytest.mark.parametrize("field", ["lr", "zoom", "degrees", "tv", "l2", "blur", "diversity", "decay_power"])
def test_settings_refuse_nan_and_negative_numbers(field: str) -> None:
    for bad in (math.nan, -1.0):
        with pytest.raises(ConfigError, match=f"^{field} must be"):
            draw.Settings(**{field: bad})


def test_a_layer_that_is_not_there_leaves_no_hook_behind(checkpoint) -> None:
    """The objective's layers are found before any hook is set: a bad name (sorted after a good one, whose hook
    would otherwise be set first) fails the render and leaves every module of the network without forward hooks."""
    objective = o.channel("stage1.block1.conv", [0]) + o.channel("zzz_bad", [0])
    with pytest.raises(KeyError, match="zzz_bad"):
        loop.render(checkpoint, objective, param.PixelImage(1, 32, torch.Generator()), (), 1, progress=False)
    assert [name for name, module in checkpoint.model.named_modules() if module._forward_hooks] == []
