"""Bad photos and odd names in the look-inside commands: unreadable files skipped and listed, never a stopped run;
flags that mean nothing for one photo refused; figures named apart and names shown safely."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import declared_png
from heritage_cnn.base.names import NAME_MAX, shown
from heritage_cnn.cli.main import main
from heritage_cnn.data.folders import DatasetError, list_images
from heritage_cnn.inside import visualize
from heritage_cnn.models.checkpoint import load_checkpoint


def write_bad_files(root: Path, photo: Path) -> list[Path]:
    """A truncated photo, an empty file, a text file and a PNG whose header claims 100000 x 100000 pixels."""
    bad = [root / "altar" / "trunc.png", root / "apse" / "zero.jpg", root / "column" / "text.jpg"]
    bad[0].write_bytes(photo.read_bytes()[:1500])
    bad[1].write_bytes(b"")
    bad[2].write_text("not a photo\n")
    huge = root / "vault" / "huge.png"
    huge.write_bytes(declared_png(100_000, 100_000))
    return [*bad, huge]


@pytest.fixture
def bad_data(synthetic_root: Path, tmp_path: Path) -> tuple[Path, list[Path]]:
    """The synthetic set (240 readable photos) with four unreadable files among them."""
    data = shutil.copytree(synthetic_root, tmp_path / "data")
    return data, write_bad_files(data, data / "gargoyle" / "000.png")


def test_a_sample_skips_unreadable_files_lists_them_and_draws_others_in_their_place(tiny_run, bad_data) -> None:
    data, bad = bad_data
    classes = load_checkpoint(tiny_run.checkpoint).classes
    every = visualize.sample_images(data, classes, progress=False)
    assert len(every.images) == 240 and sorted(p for p, _ in every.skipped) == sorted(map(str, bad))
    # as many as there are readable photos: every file is tried, the four bad ones listed, the rest all there
    sample = visualize.sample_images(data, classes, limit=240)
    assert sorted(p for p, _ in sample.skipped) == sorted(map(str, bad)) and sample.total == 244
    assert torch.equal(sample.images, every.images)
    reasons = dict(sample.skipped)
    assert reasons[str(bad[0])].startswith("corrupt or truncated") and "too large" in reasons[str(bad[3])]
    small = visualize.sample_images(data, classes, limit=100)
    assert len(small.images) == 100 and {p for p, _ in small.skipped} <= set(map(str, bad))


def test_a_folder_of_only_unreadable_files_is_one_error(tiny_run, tmp_path: Path, synthetic_root: Path) -> None:
    data = tmp_path / "data"
    for name in ("altar", "apse", "column", "vault"):
        (data / name).mkdir(parents=True)
    write_bad_files(data, synthetic_root / "altar" / "000.png")
    classes = load_checkpoint(tiny_run.checkpoint).classes
    with pytest.raises(DatasetError, match="none of the 4 image files tried could be read") as refused:
        visualize.sample_images(data, classes, limit=10)
    files = list_images(data, classes).files  # tried in the seeded order: the first of it is named
    assert str(refused.value).endswith(f"(first: {files[np.random.default_rng(0).permutation(len(files))[0]]})")


@pytest.mark.parametrize("limit", [[], ["--limit", "240"]])
def test_deconv_over_a_folder_skips_and_lists_unreadable_files(tiny_run, bad_data, tmp_path, capsys, limit) -> None:
    data, bad = bad_data
    out = tmp_path / "out"
    args = ["visualize", "deconv", "--model", str(tiny_run.checkpoint), "--data", str(data), "-q", *limit]
    # a layer named twice (as a stage and as its conv) gets its figures once
    assert main([*args, "--layer", "stage2", "stage2.block1.conv2", "--top-channels", "2", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"3 deconvnet figures in {out}/")
    lines = captured.err.splitlines()
    for path in bad:
        assert sum(line.startswith(f"heritage: skipped {path}: ") for line in lines) == 1, path
    assert lines[-1] == "heritage: 4 of 244 file(s) could not be read"
    assert (out / "deconv_stage2_block1_conv2.png").exists()


def test_deconv_of_one_photo_honours_layer_and_refuses_the_data_options(tiny_run, synthetic_root, tmp_path, capsys):
    photo = synthetic_root / "gargoyle" / "000.png"
    base = ["visualize", "deconv", str(photo), "--model", str(tiny_run.checkpoint)]
    for flag in (["--channels", "0"], ["--top-channels", "2"], ["--top", "3"], ["--limit", "5"]):
        assert main([*base, *flag, "--out", str(tmp_path / "no")]) == 2
        error = capsys.readouterr().err
        assert error == f"heritage: error: visualize deconv: {flag[0]} applies with --data only, not with a PHOTO\n"
    assert not (tmp_path / "no").exists()
    assert main([*base, "--out", str(tmp_path / "all")]) == 0
    assert main([*base, "--layer", "stage1", "--out", str(tmp_path / "one")]) == 0
    figure = f"deconv_image_{photo.name}.png"
    assert (tmp_path / "one" / figure).read_bytes() != (tmp_path / "all" / figure).read_bytes()  # one layer
    assert main([*base, "--layer", "stage9", "--out", str(tmp_path / "no")]) == 2
    assert "no layer 'stage9'" in capsys.readouterr().err
    from heritage_cnn.cli.main import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["visualize", "deconv", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for said in ("0-7,12; with", "(default 16); with", "Fergus); with", "(default: all); with"):  # each option's help
        assert f"{said} --data only" in text, said
    assert "with a PHOTO all" in text


def test_one_photo_figures_are_named_apart_and_names_shown_safely(tiny_run, synthetic_root, tmp_path, capsys) -> None:
    model = ["--model", str(tiny_run.checkpoint)]
    photos = tmp_path / "photos"
    photos.mkdir()
    source = (synthetic_root / "gargoyle" / "000.png").read_bytes()
    a_jpg, a_png = photos / "a.jpg", photos / "a.png"  # the decoder reads the format from the bytes
    a_jpg.write_bytes(source)
    a_png.write_bytes((synthetic_root / "vault" / "000.png").read_bytes())
    out = tmp_path / "out"
    for photo in (a_jpg, a_png):
        assert main(["explain", str(photo), *model, "--out", str(out)]) == 0
        assert main(["visualize", "features", str(photo), *model, "--layers", "stage1", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("explain_*")) == ["explain_a.jpg.png", "explain_a.png.png"]
    assert sorted(p.name for p in out.glob("feature_maps_*")) == [
        "feature_maps_a.jpg_layer1.png",
        "feature_maps_a.png_layer1.png",
    ]
    assert (out / "explain_a.jpg.png").read_bytes() != (out / "explain_a.png.png").read_bytes()
    capsys.readouterr()
    for odd in ("rl\u202eo.png", "zero\u200bwidth.png"):
        photo = photos / odd
        photo.write_bytes(source)
        for command in (["explain"], ["visualize", "features"], ["visualize", "deconv"]):
            assert main([*command, str(photo), *model, "--out", str(out)]) == 0
            printed = capsys.readouterr().out
            assert shown(odd) in printed and odd not in printed, (command, printed)
        assert (out / f"explain_{odd}.png").exists() and (out / f"deconv_image_{odd}.png").exists()


def test_a_long_photo_name_is_cut_never_the_figure_kind() -> None:
    name = os.fsdecode(b"L" * 200 + b"\xe9" + b"x" * 50 + b".jpg")  # 255 bytes, one of them not UTF-8
    made = visualize.photo_figure_name("feature_maps", name, "_stage2_block1_conv2")
    assert len(made.encode()) <= NAME_MAX and made.startswith("feature_maps_LLL")
    assert made.endswith("_stage2_block1_conv2.png") and "\udce9" not in made
