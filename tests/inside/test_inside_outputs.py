"""Where the look-inside commands write and what they say: never into the data folder they scan, a channel the layer
lacks refused by its flag before any image is read, and feature-map titles that say what each layer's output is."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from heritage_cnn.cli import inside as cli_inside
from heritage_cnn.cli.main import main
from heritage_cnn.inside import visualize
from heritage_cnn.models.checkpoint import load_checkpoint


def _no_work(*_args, **_kwargs):
    raise AssertionError("the command went on to its work")


def test_deconv_never_writes_its_figures_into_the_data_folder_it_scans(
    tiny_run, synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """`--out DATA/altar` put three PNGs among the altar photos, which the next scan read as photos."""
    data = shutil.copytree(synthetic_root, tmp_path / "data")
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    monkeypatch.setattr(cli_inside, "inside_model", _no_work)  # refused before the model is loaded
    base = ["visualize", "deconv", "--model", str(tiny_run.checkpoint), "--data", str(data), "-q"]
    for out in (data / "altar", data, data / "new" / "figures"):
        assert main([*base, "--layer", "stage2", "--top-channels", "2", "--top", "2", "--out", str(out)]) == 2
        assert capsys.readouterr().err == (
            f"heritage: error: --out {out}: inside the --data folder {data}; its figures would be read as photos "
            "there\n"
        )
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before


def test_a_channel_the_layer_lacks_is_refused_by_its_flag_before_any_work(
    tiny_run, synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setattr(visualize, "sample_images", _no_work)  # no image is decoded for a refused channel
    model = str(tiny_run.checkpoint)
    deconv = ["visualize", "deconv", "--model", model, "--data", str(synthetic_root), "--out", str(tmp_path / "d")]
    assert main([*deconv, "--layer", "stage2", "--channels", "0-1000"]) == 2
    assert capsys.readouterr().err == (
        "heritage: error: --channels: stage2.block1.conv2 has channels 0..15; no channel 16\n"
    )
    assert main([*deconv, "--layer", "stage1", "stage2", "--channels", "12"]) == 2  # stage1 has 8 channels
    assert capsys.readouterr().err.endswith("--channels: stage1.block1.conv has channels 0..7; no channel 12\n")
    units = ["visualize", "units", "--model", model, "--steps", "1", "-q", "--out", str(tmp_path / "u")]
    assert main([*units, "--layer", "stage2", "--channels", "999"]) == 2
    assert capsys.readouterr().err == (
        "heritage: error: --channels: stage2.block1.conv2 has channels 0..15; no channel 999\n"
    )
    assert not (tmp_path / "d").exists() and not (tmp_path / "u").exists()


def test_feature_map_titles_say_what_each_layers_output_is(
    tiny_run, synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every title read "after ReLU (conv -> BN -> ReLU)"; a residual block's conv2 is the block's output, the ReLU
    of its branch plus its shortcut (deconvnet, models/network.py)."""
    titles: dict[str, str] = {}
    save = visualize.save_figure

    def keep_title(fig, path):
        titles[Path(path).name] = fig.axes[1].get_title()
        return save(fig, path)

    monkeypatch.setattr(visualize, "save_figure", keep_title)
    photo = synthetic_root / "gargoyle" / "000.png"
    visualize.write_feature_maps(load_checkpoint(tiny_run.checkpoint), photo, tmp_path)
    assert titles["feature_maps_000.png_layer1.png"].startswith(
        "stage1.block1.conv: 8 feature maps, 64x64, conv -> BN -> ReLU\n"
    )
    assert titles["feature_maps_000.png_stage2_block1_conv1.png"].startswith(
        "stage2.block1.conv1: 16 feature maps, 32x32, inside a residual block: conv1 -> BN -> ReLU\n"
    )
    block = titles["feature_maps_000.png_stage2_block1_conv2.png"]
    assert block.startswith("stage2.block1.conv2: 16 feature maps, 32x32, the residual block's output: ReLU of ")
    assert "+ shortcut" in block and "conv -> BN -> ReLU" not in block
