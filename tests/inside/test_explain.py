"""Attribution maps through Captum: one call shape, a figure, and a clear --target error (sanity check: inside/test_sanity.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from heritage_cnn.cli.main import main
from heritage_cnn.data.labels import resolve_class
from heritage_cnn.inside import explain
from heritage_cnn.inside.visualize import load_photo
from heritage_cnn.models.checkpoint import load_checkpoint


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


def test_explain_command(tiny_run, synthetic_root: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    photo = photos(synthetic_root, 1)[0]
    checkpoint = load_checkpoint(tiny_run.checkpoint)
    x = checkpoint.normalise(load_photo(photo))
    predicted = int(checkpoint.model.eval()(x).argmax())
    wanted = next(i for i, name in enumerate(checkpoint.classes) if i != predicted)  # a class it is not
    targets = []  # the class each figure's maps were computed for
    real_attribute_all = explain.attribute_all

    def spy(model, x, target):
        targets.append(target)
        return real_attribute_all(model, x, target)

    monkeypatch.setattr(explain, "attribute_all", spy)
    model = ["--model", str(tiny_run.checkpoint)]
    assert main(["explain", str(photo), *model, "--out", str(tmp_path / "p")]) == 0
    figure = tmp_path / "p" / f"explain_{photo.name}.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    target = checkpoint.display_names[wanted]  # by display name, as a user types it
    assert main(["explain", str(photo), *model, "--target", target, "--out", str(tmp_path / "t")]) == 0
    assert targets == [predicted, wanted]  # without --target: the prediction; with it: the class asked for
    assert (tmp_path / "t" / figure.name).read_bytes() != figure.read_bytes()  # other maps, other title
    assert main(["explain", str(photo), *model, "--target", "pagoda", "--out", str(tmp_path / "bad")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "pagoda" in error and "stained_glass" in error
    assert not (tmp_path / "bad").exists() and len(targets) == 2  # refused before any work


def test_parse_target_is_none_for_the_prediction_else_the_one_resolver() -> None:
    """What parse_target adds to labels.resolve_class (tested in data/test_labels.py): no target, no class."""
    classes, names = ["bell_tower", "dome(inner)"], ["bell tower", "dome (inner)"]
    assert explain.parse_target(None, classes, names) is None
    assert explain.parse_target("dome (inner)", classes, names) == resolve_class("dome (inner)", classes) == 1
    with pytest.raises(ValueError, match="bell_tower, dome"):
        explain.parse_target("2", classes, names)
