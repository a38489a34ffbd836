"""Attribution maps through Captum: one call shape, a figure, and a clear --target error (sanity check: test_sanity.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from heritage_cnn import explain
from heritage_cnn.checkpoint import load_checkpoint
from heritage_cnn.cli import main
from heritage_cnn.visualize import load_photo


def photos(root: Path, count: int) -> list[Path]:
    """One photo from each of the first `count` classes."""
    return [sorted(folder.glob("*.png"))[0] for folder in sorted(root.iterdir())[:count]]


def test_every_method_gives_one_map(tiny_run, synthetic_root: Path) -> None:
    checkpoint = load_checkpoint(tiny_run.checkpoint)
    model = explain.captum_ready(checkpoint.model)
    x = checkpoint.normalise(load_photo(photos(synthetic_root, 1)[0]))
    maps = explain.attribute_all(model, x, target=0)
    assert list(maps) == list(explain.METHODS)
    for method, heat in maps.items():
        assert heat.shape == (64, 64), method
        assert torch.isfinite(heat).all() and heat.std() > 0, method
    assert (maps["saliency"] >= 0).all() and (maps["grad_cam"] >= 0).all()
    assert any(m.inplace for m in checkpoint.model.modules() if isinstance(m, torch.nn.ReLU))  # original untouched
    with pytest.raises(ValueError, match="methods are"):
        explain.attribute("lime", model, x, 0)


def test_explain_command(tiny_run, synthetic_root: Path, tmp_path: Path, capsys) -> None:
    photo = photos(synthetic_root, 1)[0]
    assert main(["explain", str(photo), "--model", str(tiny_run.checkpoint), "--out", str(tmp_path)]) == 0
    figure = tmp_path / f"explain_{photo.stem}.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    args = ["explain", str(photo), "--model", str(tiny_run.checkpoint), "--target", "gargoyle", "--out"]
    assert main([*args, str(tmp_path / "g")]) == 0
    assert main([*args[:-3], "--target", "pagoda", "--out", str(tmp_path / "bad")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "pagoda" in error and "stained_glass" in error
    assert not (tmp_path / "bad").exists()


def test_parse_target_accepts_folder_display_name_and_index() -> None:
    classes, names = ["bell_tower", "dome(inner)"], ["bell tower", "dome (inner)"]
    assert explain.parse_target("bell tower", classes, names) == 0
    assert explain.parse_target("dome(inner)", classes, names) == 1
    assert explain.parse_target("1", classes, names) == 1
    assert explain.parse_target(None, classes, names) is None
    with pytest.raises(ValueError, match="bell_tower, dome"):
        explain.parse_target("2", classes, names)
