"""Feature maps, kernels and deconvnet figures, through the command line, on a tiny trained model."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY
from heritage_cnn.cli.main import main
from heritage_cnn.inside import deconvnet, visualize
from heritage_cnn.models.checkpoint import load_checkpoint
from heritage_cnn.models.network import build_model, layer

PNG = b"\x89PNG\r\n\x1a\n"


def a_photo(root: Path) -> Path:
    return sorted((root / "gargoyle").glob("*.png"))[0]


def test_feature_maps_are_the_rectified_conv_outputs(tiny_run, synthetic_root: Path) -> None:
    checkpoint = load_checkpoint(tiny_run.checkpoint)
    photo = visualize.load_photo(a_photo(synthetic_root))
    names = deconvnet.deconv_layers(checkpoint.model)
    maps = visualize.feature_maps(checkpoint, photo, names)
    model = copy.deepcopy(checkpoint.model)
    seen = {}
    for name in names:  # the ReLU module after each conv, hooked on the real model
        relu = name.replace(".conv2", ".relu2").replace(".conv1", ".relu1").replace(".conv", ".relu")
        layer(model, relu).register_forward_hook(lambda m, i, o, name=name: seen.setdefault(name, o.clone()))
    with torch.no_grad():
        model(checkpoint.normalise(photo))
    for name in names:
        torch.testing.assert_close(maps[name], seen[name][0])


def test_features_and_kernels_commands(tiny_run, synthetic_root: Path, tmp_path: Path, capsys) -> None:
    model = str(tiny_run.checkpoint)
    photo = a_photo(synthetic_root)
    assert main(["visualize", "features", str(photo), "--model", model, "--layers", "nosuch", "--out", "x"]) == 2
    error = capsys.readouterr().err  # its own words, not the deconvnet's "to project from"
    assert error.startswith("heritage: error: no layer 'nosuch' to show feature maps of; choose one of: stage1")
    assert main(["visualize", "features", str(photo), "--model", model, "--out", str(tmp_path)]) == 0
    expected = [  # named after the photo's whole file name
        f"feature_maps_{photo.name}_layer1.png",
        f"feature_maps_{photo.name}_stage2_block1_conv1.png",
        f"feature_maps_{photo.name}_stage2_block1_conv2.png",
    ]
    assert sorted(p.name for p in tmp_path.glob("feature_maps_*.png")) == sorted(expected)
    assert main(["visualize", "kernels", "--model", model, "--out", str(tmp_path)]) == 0
    for name in ["kernels_layer1.png", "kernels_stage2_block1_conv2.png", *expected]:
        assert (tmp_path / name).read_bytes()[:8] == PNG, name
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave nothing behind


def test_deconv_commands(tiny_run, synthetic_root: Path, tmp_path: Path, capsys) -> None:
    model = str(tiny_run.checkpoint)
    base = ["visualize", "deconv", "--model", model, "--data", str(synthetic_root)]
    assert main([*base, "--layer", "stage2", "--top-channels", "3", "--out", str(tmp_path)]) == 0
    for name in [
        "deconv_stage2_block1_conv2.png",
        "deconv_stage2_block1_conv2_projections.png",
        "deconv_contact_sheet.png",
    ]:
        assert (tmp_path / name).read_bytes()[:8] == PNG, name
    assert (
        main([*base, "--layer", "stage1.block1.conv", "--channels", "0,2", "--limit", "30", "--out", str(tmp_path)])
        == 0
    )
    capsys.readouterr()
    assert main([*base, "--layer", "stage9", "--out", str(tmp_path)]) == 2
    assert "stage2.block1.conv1" in capsys.readouterr().err  # lists the valid layers
    assert main([*base, "--layer", "stage2", "--channels", "99", "--out", str(tmp_path)]) == 2
    assert "no channel 99" in capsys.readouterr().err
    photo = a_photo(synthetic_root)
    assert main(["visualize", "deconv", str(photo), "--model", model, "--out", str(tmp_path)]) == 0
    assert (tmp_path / f"deconv_image_{photo.name}.png").read_bytes()[:8] == PNG
    assert main(["visualize", "deconv", str(tmp_path / "none.jpg"), "--model", model, "--out", "x"]) == 2
    assert "none.jpg" in capsys.readouterr().err


def test_tiles_are_cropped_to_the_receptive_field(tiny_run, synthetic_root: Path) -> None:
    checkpoint = load_checkpoint(tiny_run.checkpoint)
    images = torch.stack([visualize.load_photo(p)[0] for p in sorted(synthetic_root.glob("*/00[0-2].png"))])
    top = deconvnet.scan_top_activations(checkpoint.model, images, checkpoint.normalise, "stage2.block1.conv2", k=4)
    projections, patches = visualize.deconv_tiles(checkpoint, images, top, [0, 1])
    top_, left, bottom, right = deconvnet.receptive_field(checkpoint.model, "stage2.block1.conv2", 0, 0)
    assert projections.shape == patches.shape == (2, 4, bottom - top_, right - left, 3)
    assert projections.min() >= 0 and projections.max() <= 1


def test_helpers() -> None:
    image = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    crop = visualize._crop(image, (-1, 2, 2, 5), fill=-1)
    assert crop.shape == (1, 3, 3)
    assert crop[0, 0].tolist() == [-1, -1, -1] and crop[0, 1].tolist() == [2, 3, -1]
    with pytest.raises(KeyError, match="choose one of"):
        deconvnet.resolve_layer(build_model(**TINY), "head")


def test_a_unit_is_placed_on_its_map_and_on_the_photo() -> None:
    text = visualize.describe_unit("stage3.block1.conv2", 12, 4, 5, (-3, 10, 19, 32), (8, 8))
    assert text == (
        "stage 3 (stage3.block1.conv2), channel 12:\nat (4, 5) of its 8x8 map; sees 22x22 px\n"
        "photo rows 0-18, cols 10-31"  # the window clipped to the photo; map and photo are named apart
    )


def test_feature_maps_take_the_layer_names_of_the_other_tools(tiny_run, synthetic_root: Path) -> None:
    """A stage or a block stands for its output, as in `write_feature_maps` and the deconvnet; the maps are keyed
    by the names given. The tiny network's stage 2 output: 16 channels (its width) at 64 / 2 = 32 px (one pool
    before it)."""
    checkpoint = load_checkpoint(tiny_run.checkpoint)
    photo = visualize.load_photo(a_photo(synthetic_root))
    maps = visualize.feature_maps(checkpoint, photo, ["stage2", "stage2.block1", "stage1"])
    assert list(maps) == ["stage2", "stage2.block1", "stage1"]
    assert maps["stage2"].shape == (16, 32, 32) and maps["stage1"].shape == (8, 64, 64)
    conv = visualize.feature_maps(checkpoint, photo, ["stage2.block1.conv2", "stage1.block1.conv"])
    assert torch.equal(maps["stage2"], conv["stage2.block1.conv2"]) and torch.equal(
        maps["stage2.block1"], maps["stage2"]
    )
    assert torch.equal(maps["stage1"], conv["stage1.block1.conv"])
    with pytest.raises(ValueError, match=r"^no layers to show feature maps of"):
        visualize.feature_maps(checkpoint, photo, [])
    with pytest.raises(KeyError, match="no layer 'stage9' to show feature maps of"):
        visualize.feature_maps(checkpoint, photo, ["stage9"])
