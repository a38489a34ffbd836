"""What every look-inside tool shares (`heritage_cnn.inside.guards`): an ensemble is refused in one line that says
how to pick a member, the caller's model is left in the mode it was in, and no figure goes through pyplot."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from heritage_cnn.inside import deconvnet, explain, sanity, visualize
from heritage_cnn.inside.synthesis import draw, loop, param
from heritage_cnn.inside.synthesis import objectives as o
from heritage_cnn.models.checkpoint import Checkpoint, load_checkpoint
from heritage_cnn.models.ensemble import Ensemble, copy_model

LAYER = "stage2.block1.conv2"
ONE_STEP = replace(draw.Settings(), steps=1, transforms=False)


def a_photo(root: Path) -> Path:
    return root / "gargoyle" / "000.png"


@pytest.fixture
def single(tiny_run) -> Checkpoint:
    """The tiny run's network, loaded afresh: a test may change its mode."""
    return load_checkpoint(tiny_run.checkpoint)


@pytest.fixture
def ensemble(single: Checkpoint) -> Checkpoint:
    """An ensemble of two tiny networks: the tiny run's and another of the same shape, untrained."""
    torch.manual_seed(5)
    other = type(single.model)(single.model.config).eval()
    return replace(single, model=Ensemble([copy_model(single.model), other]), open_set=None)


def test_an_ensemble_is_refused_in_one_line_by_every_tool_that_reads_one_network(
    ensemble: Checkpoint, synthetic_root: Path, tmp_path: Path
) -> None:
    photo = a_photo(synthetic_root)
    x = ensemble.normalise(visualize.load_photo(photo))
    images = visualize.load_photo(photo).repeat(2, 1, 1, 1)
    top = deconvnet.scan_top_activations(ensemble.member(0).model, images, ensemble.normalise, LAYER, k=1)
    model, out = ensemble.model, tmp_path / "out"
    calls = {
        "write_explanation": lambda: explain.write_explanation(ensemble, photo, out),
        "attribute": lambda: explain.attribute("saliency", explain.captum_ready(model), x, 0),
        "attribute_all": lambda: explain.attribute_all(model, x, 0),
        "feature_maps": lambda: visualize.feature_maps(ensemble, visualize.load_photo(photo), [LAYER]),
        "write_feature_maps": lambda: visualize.write_feature_maps(ensemble, photo, out),
        "write_kernels": lambda: visualize.write_kernels(ensemble, out),
        "write_deconv": lambda: visualize.write_deconv(ensemble, images, [LAYER], out),
        "deconv_tiles": lambda: visualize.deconv_tiles(ensemble, images, top, [0]),
        "write_deconv_photo": lambda: visualize.write_deconv_photo(ensemble, photo, out),
        "deconv_layers": lambda: deconvnet.deconv_layers(model),
        "resolve_layer": lambda: deconvnet.resolve_layer(model, "stage2"),
        "forward_to": lambda: deconvnet.forward_to(model, x, LAYER),
        "project": lambda: deconvnet.project(model, x, LAYER, torch.tensor([0]), torch.tensor([[0, 0]])),
        "project_down": lambda: deconvnet.project_down(model, torch.zeros(1, 16, 32, 32), LAYER, {}),
        "receptive_field": lambda: deconvnet.receptive_field(model, LAYER, 0, 0),
        "scan_top_activations": lambda: deconvnet.scan_top_activations(model, images, ensemble.normalise, LAYER),
        "project_top": lambda: deconvnet.project_top(model, images, ensemble.normalise, top, [0]),
        "cascading_randomisation": lambda: sanity.cascading_randomisation(model),  # before the first step
        "cascade_scores": lambda: sanity.cascade_scores(lambda m, x, t: {}, model, [x], [0]),
        "draw_units": lambda: draw.draw_units(ensemble, LAYER, [0], 32, ONE_STEP, progress=False),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError) as refused:
            call()
        message = str(refused.value)
        assert message == (
            "an ensemble of 2 networks: pass one of them, checkpoint.member(i) with i from 0 to 1 "
            "(the command line's --member 0 to 1)"
        ), name
    assert not out.exists()  # refused before any figure was written
    # class images are drawn for every network of an ensemble at once, on purpose
    generated = draw.draw_classes(ensemble, [2], n=1, size=32, settings=ONE_STEP, progress=False)
    assert generated.images.shape == (1, 3, 32, 32)
    assert visualize.write_kernels(ensemble.member(1), out)[0].exists()  # a member is one network


def bn_statistics(model: torch.nn.Module) -> list[torch.Tensor]:
    return [t.clone() for name, t in model.state_dict().items() if "running" in name or "num_batches" in name]


def test_every_tool_leaves_the_model_in_its_own_mode(single: Checkpoint, synthetic_root: Path, tmp_path: Path) -> None:
    """A model in train() mode, its head alone in eval(): so after each tool, also after one that raises, and its
    batch-norm statistics untouched (a forward pass in train mode would have updated them)."""
    model = single.model.train()
    model.head.eval()
    modes = {name: module.training for name, module in model.named_modules()}
    statistics = bn_statistics(model)
    photo = a_photo(synthetic_root)
    x = single.normalise(visualize.load_photo(photo))
    images = visualize.load_photo(photo).repeat(2, 1, 1, 1)
    calls = {
        "write_explanation": lambda: explain.write_explanation(single, photo, tmp_path),
        "feature_maps": lambda: visualize.feature_maps(single, visualize.load_photo(photo), ["stage1", LAYER]),
        "write_feature_maps": lambda: visualize.write_feature_maps(single, photo, tmp_path, ["stage2"]),
        "write_deconv_photo": lambda: visualize.write_deconv_photo(single, photo, tmp_path),
        "write_deconv": lambda: visualize.write_deconv(single, images, ["stage2"], tmp_path, top_channels=2, k=1),
        "forward_to": lambda: deconvnet.forward_to(model, x, LAYER),
        "project": lambda: deconvnet.project(model, x, LAYER, torch.tensor([0]), torch.tensor([[0, 0]])),
        "classify": lambda: draw.classify(single, torch.rand(1, 3, 64, 64)),
        "draw_classes": lambda: draw.draw_classes(single, [2], n=1, size=32, settings=ONE_STEP, progress=False),
        "draw_units": lambda: draw.draw_units(single, LAYER, [0], 32, ONE_STEP, progress=False),
    }

    def stop(context: o.Context) -> torch.Tensor:
        raise RuntimeError("stop")

    thin = torch.zeros(1, 3, 1, 64)  # one row of pixels: the first max-pool refuses it
    failing = {  # each raises inside the tool, after the model was switched to eval mode
        "render": lambda: loop.render(single, o.Objective(stop, "stop"), param.PixelImage(1, 32, torch.Generator())),
        "classify": lambda: draw.classify(single, thin),
        "feature_maps": lambda: visualize.feature_maps(single, thin.to(torch.uint8), [LAYER]),
        "forward_to": lambda: deconvnet.forward_to(model, thin, LAYER),
    }
    for name, call in [*calls.items(), *failing.items()]:
        if call in failing.values():
            with pytest.raises(RuntimeError):
                call()
        else:
            call()
        assert {n: m.training for n, m in model.named_modules()} == modes, name
        assert all(torch.equal(a, b) for a, b in zip(bn_statistics(model), statistics, strict=True)), name


def test_no_module_draws_through_pyplot(single: Checkpoint, tmp_path: Path) -> None:
    """Figures are made without pyplot (`figures.new_figure`): none is left open in pyplot's list. That importing
    the package imports no pyplot (nor Captum, which imports it) is tests/test_imports.py's."""
    import matplotlib.pyplot as plt

    plt.close("all")
    visualize.write_kernels(single, tmp_path)
    assert plt.get_fignums() == []
