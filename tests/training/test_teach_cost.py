"""What `heritage teach` costs the known classes: measured on the parent's validation photos (less any taught),
bounded by --max-known-loss in the file as stored, reported by the command, refused when it cannot hold."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from conftest import CLASSES, _fresh, _nine_data, _photos
from heritage_cnn.cli.main import main
from heritage_cnn.data.folders import load_images
from heritage_cnn.data.split import NEAR_DUPLICATE_DISTANCE, perceptual_hashes
from heritage_cnn.inference.classifier import Classifier
from heritage_cnn.inference.evaluate import near_any
from heritage_cnn.inference.teach_photos import TeachPhotos, read_new_classes
from heritage_cnn.models.checkpoint import load_checkpoint, save_ensemble
from heritage_cnn.models.ensemble import copy_model
from heritage_cnn.training.teach import replay_split, teach


def test_with_data_the_cost_to_the_known_classes_is_measured_and_can_be_bounded(nine, synthetic_root, tmp_path):
    """Two "new" classes drawn like two known ones take those classes' validation photos; the cost is measured on
    the parent's validation photos, and --max-known-loss lowers the new classes until the known classes lose no more
    than that there, in the model file written."""
    parent = load_checkpoint(nine)
    replayed, held_out = replay_split(load_images(_nine_data(synthetic_root, tmp_path)), parent)
    _photos(tmp_path / "new" / "portal", CLASSES.index("altar"), 24, seed=31)
    _photos(tmp_path / "new" / "porch", CLASSES.index("apse"), 24, seed=32)
    photos = read_new_classes(tmp_path / "new", parent.classes)

    def accuracy(model) -> float:
        answers = Classifier(model, bf16=False, tta="none").probabilities(held_out.images).argmax(1).tolist()
        labels = [held_out.classes[i] for i in held_out.labels.tolist()]
        return float(np.mean([model.classes[a] == t for a, t in zip(answers, labels, strict=True)]))

    free = teach(parent, photos, tmp_path / "free", data=replayed, held_out=held_out, log=lambda _: None)
    cost = free.cost
    assert cost is not None and cost.photos == len(held_out) and cost.bound is None and cost.offset == 0.0
    assert cost.parent == pytest.approx(accuracy(parent), abs=1e-6) and cost.new_answers > 0.1
    assert cost.loss_points > 5  # the new class took photos the parent had right
    bound = cost.loss_points / 2
    bounded = teach(parent, photos, tmp_path / "b", data=replayed, held_out=held_out, log=print, max_known_loss=bound)
    assert bounded.cost.offset < 0 and bounded.cost.loss_points <= bound
    # the file written keeps it; half a photo of slack, as the bound is the float32 share of whole photos
    assert accuracy(load_checkpoint(bounded.path)) >= accuracy(parent) - bound / 100 - 0.5 / len(held_out)
    record = json.loads((tmp_path / "b.json").read_text())["taught"]["known_cost"]
    assert record["bound"] == bound and record["offset"] == bounded.cost.offset and record["photos"] == len(held_out)


def test_a_bound_on_the_known_classes_needs_their_validation_photos_and_a_new_class(
    nine, synthetic_root, new_folder, tmp_path, capsys
):
    parent = load_checkpoint(nine)
    photos = read_new_classes(new_folder, parent.classes)
    with pytest.raises(ValueError, match="give --data"):
        teach(parent, photos, tmp_path / "a", log=lambda _: None, max_known_loss=1.0)
    replayed, held_out = replay_split(load_images(_nine_data(synthetic_root, tmp_path)), parent)
    apse = _fresh(CLASSES.index("apse"), 4, seed=41)
    corrections = TeachPhotos(
        torch.from_numpy(apse).permute(0, 3, 1, 2).contiguous(),
        ["apse"] * 4,
        ["m.png"] * 4,
        ["0" * 64] * 4,
        ["moved"] * 4,
    )
    with pytest.raises(ValueError, match="none is added"):
        teach(parent, corrections, tmp_path / "b", replayed, held_out=held_out, log=lambda _: None, max_known_loss=1.0)
    code = main(["teach", str(new_folder), "--model", str(nine), "--out", str(tmp_path / "c"), "--max-known-loss", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "add --data" in err and len(err.splitlines()) == 1
    assert not any(tmp_path.glob("[abc].*"))


def test_the_command_reports_what_teaching_cost_the_known_classes(nine, new_folder, synthetic_root, tmp_path, capsys):
    data = _nine_data(synthetic_root, tmp_path)
    args = ["teach", str(new_folder), "--model", str(nine), "--data", str(data), "--out", str(tmp_path / "m")]
    assert main([*args, "--max-known-loss", "2", "--steps", "50"]) == 0
    out = capsys.readouterr().out
    assert "the known classes on the model's" in out and "of them given a new class" in out
    assert "within 2 pt" in out  # lowered to keep within it, or within it as taught


def test_the_cost_line_names_new_classes_only_when_there_are() -> None:
    from heritage_cnn.cli.teach import _cost_line
    from heritage_cnn.training.teach_fit import KnownCost

    cost = KnownCost(photos=200, parent=0.9, taught=0.905, new_answers=0.0)
    assert _cost_line(cost, []) == "the known classes on the model's 200 validation photos: 90.0% -> 90.5% (+0.5 pt)"
    for taught in (0.9, 0.8996, 0.9004):  # no change, or one that rounds to none: 0.0 without a sign, never -0.0
        same = KnownCost(photos=2026, parent=0.9, taught=taught, new_answers=0.0)
        assert _cost_line(same, []).endswith(f"90.0% -> {taught:.1%} (0.0 pt)")
    bounded = KnownCost(photos=200, parent=0.9, taught=0.89, new_answers=0.02, offset=-1.5, bound=1.0)
    assert _cost_line(bounded, ["portal"]) == (
        "the known classes on the model's 200 validation photos: 90.0% -> 89.0% (-1.0 pt), 2.0% of them given a new "
        "class; new classes' logits lowered by 1.50 to keep within 1 pt"
    )
    for offset in (0.0, -0.0001):  # within the bound as taught: nothing lowered, never "lowered by -0.00"
        within = KnownCost(photos=200, parent=0.9, taught=0.895, new_answers=0.01, offset=offset, bound=1.0)
        assert _cost_line(within, ["portal"]).endswith("given a new class; within 1 pt as taught, nothing lowered")


def test_an_ensemble_keeps_the_bound_in_the_float16_it_stores(nine, synthetic_root, tmp_path) -> None:
    """Both networks' new biases lowered by the same offset, rounded to the file's float16, and the cost recorded is
    that of the weights as stored."""
    single = load_checkpoint(nine)
    twin = dataclasses.replace(single, model=copy_model(single.model))
    save_ensemble(tmp_path / "pair", [single, twin], names=["a", "b"])
    parent = load_checkpoint(tmp_path / "pair")
    replayed, held_out = replay_split(load_images(_nine_data(synthetic_root, tmp_path)), parent)
    _photos(tmp_path / "new" / "portal", CLASSES.index("altar"), 24, seed=31)
    _photos(tmp_path / "new" / "porch", CLASSES.index("apse"), 24, seed=32)
    photos = read_new_classes(tmp_path / "new", parent.classes)
    free = teach(parent, photos, tmp_path / "free", replayed, held_out=held_out, log=lambda _: None)
    bound = free.cost.loss_points / 2
    result = teach(
        parent, photos, tmp_path / "b", replayed, held_out=held_out, log=lambda _: None, max_known_loss=bound
    )
    assert result.cost.offset < 0 and result.cost.loss_points <= bound
    child = load_checkpoint(result.path)
    for member in child.model.members:
        bias = member.head.fc2.bias
        assert torch.equal(bias, bias.half().float())
    answers = Classifier(child, bf16=False, tta="none").probabilities(held_out.images).argmax(1)
    labels = torch.tensor([parent.classes.index(held_out.classes[i]) for i in held_out.labels.tolist()])
    assert (answers == labels).float().mean().item() == pytest.approx(result.cost.taught, abs=0.5 / len(held_out))


def test_validation_photos_that_are_taught_set_neither_threshold_nor_cost(nine, new_folder, synthetic_root, tmp_path):
    """Corrections made on a sort of the model's own validation photos: those photos are left out of the photos the
    threshold and the cost are measured on, and the command says how many."""
    parent = load_checkpoint(nine)
    replayed, held_out = replay_split(load_images(_nine_data(synthetic_root, tmp_path)), parent)
    new = read_new_classes(new_folder, parent.classes)
    pick = [0, 5, 9]
    photos = TeachPhotos(
        torch.cat([new.images, held_out.images[pick]]),
        [*new.labels, *(held_out.classes[int(held_out.labels[i])] for i in pick)],
        [*new.paths, *(f"confirmed_{i}.png" for i in pick)],
        [*new.digests, *(f"{i:064x}" for i in pick)],
        [*new.kinds, *["confirmed"] * len(pick)],
    )
    lines: list[str] = []
    result = teach(
        parent, photos, tmp_path / "taught", replayed, held_out=held_out, log=lambda line: lines.append(line)
    )
    # the three, and any other within the near-duplicate distance of a taught photo (synthetic photos of one class
    # can be: their perceptual hashes are those of a smooth pattern)
    near = near_any(perceptual_hashes(held_out.images), perceptual_hashes(photos.images), NEAR_DUPLICATE_DISTANCE)
    assert near[pick].all() and result.cost.photos == len(held_out) - near.sum()
    assert load_checkpoint(result.path).open_set.fitted_on["val_photos"] == len(held_out) - near.sum()
    assert any(line.startswith(f"{near.sum()} of the model's {len(held_out)} validation photos are") for line in lines)


def test_a_bound_that_cannot_be_met_names_a_true_reason() -> None:
    """New classes only, no correction: the known classes' rows are fitted again all the same (with --data), and the
    message says so rather than naming corrections that do not exist."""
    from heritage_cnn.training.teach_fit import offset_for_cost

    labels = torch.tensor([0, 1, 0, 1])
    parent = torch.tensor([[[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0]]])
    taught = torch.tensor([[[0.0, 2.0, 0.0], [0.0, 2.0, 0.0], [2.0, 0.0, 0.0], [0.0, 2.0, 0.0]]])  # one photo lost
    with pytest.raises(ValueError, match="cannot be met") as error:
        offset_for_cost(parent, taught, labels, 0.0)
    assert "corrections refit them" not in str(error.value)
    assert "teaching fits the known classes' weights again too, with the new classes and any corrections" in str(
        error.value
    )
