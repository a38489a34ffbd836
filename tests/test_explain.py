"""Attribution maps through Captum: one call shape, a figure, a clear --target error, and the sanity check."""

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


def test_cascading_randomisation_goes_top_down(tiny_run) -> None:
    model = load_checkpoint(tiny_run.checkpoint).model
    steps = list(explain.cascading_randomisation(model))
    assert [name for name, _ in steps] == ["head.fc2", "head.fc1", "stage2.block1", "stage1.block1"]
    first, last = steps[0][1], steps[-1][1]
    assert not torch.equal(first.head.fc2.weight, model.head.fc2.weight)
    assert torch.equal(first.head.fc1.weight, model.head.fc1.weight)  # lower layers kept until their turn
    assert not torch.equal(last.stage1.block1.conv.weight, model.stage1.block1.conv.weight)


@pytest.mark.parametrize("method", ["grad_cam", "saliency"])
def test_sanity_check_maps_depend_on_the_weights(tiny_run, synthetic_root: Path, method: str) -> None:
    """Adebayo et al. 2018: once every layer is re-initialised, the map must no longer rank pixels alike."""
    checkpoint = load_checkpoint(tiny_run.checkpoint)
    trained = explain.captum_ready(checkpoint.model)
    *_, (_, randomised) = explain.cascading_randomisation(checkpoint.model, seed=0)
    randomised = explain.captum_ready(randomised)
    correlations = []
    for photo in photos(synthetic_root, 4):
        x = checkpoint.normalise(load_photo(photo))
        target = int(trained(x).argmax())
        before = explain.attribute(method, trained, x, target)
        after = explain.attribute(method, randomised, x, target)
        correlations.append(explain.rank_correlation(before, after))
    assert max(correlations) < 0.5, correlations
