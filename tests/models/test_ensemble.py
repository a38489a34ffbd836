"""Ensemble checkpoints: one pair for several networks, loaded as one model that averages their softmax."""

from __future__ import annotations

import json
import shlex
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from conftest import refused_in_one_line as _refused
from heritage_cnn.base.io import CheckpointError
from heritage_cnn.cli.main import build_parser, main
from heritage_cnn.data.folders import load_images
from heritage_cnn.inference.classifier import Classifier
from heritage_cnn.models.checkpoint import Checkpoint, load_checkpoint, save_ensemble, shipped_checkpoint_path
from heritage_cnn.models.ensemble import MAX_MEMBERS, Ensemble, copy_model
from heritage_cnn.models.network import HeritageNet, ModelConfig


def _other(single: Checkpoint, seed: int, **config: object) -> Checkpoint:
    """Another network for the same classes: a fresh one (other widths allowed), as if trained with `seed`."""
    torch.manual_seed(seed)
    model = HeritageNet(ModelConfig.from_dict({**single.model.config.to_dict(), **config})).eval()
    return replace(single, model=model, info={**single.info, "seed": seed})


@pytest.fixture(scope="module")
def members(tiny_run) -> list[Checkpoint]:
    single = load_checkpoint(tiny_run.checkpoint)
    return [single, _other(single, 1, widths=[12, 16]), _other(single, 2, residual=False)]


@pytest.fixture(scope="module")
def ensemble_path(members, tmp_path_factory: pytest.TempPathFactory) -> Path:
    stem = tmp_path_factory.mktemp("ensemble") / "ens"
    save_ensemble(
        stem, members, ["a", "b", "c"], [f"heritage train --data DATA --out RUN --seed {i}" for i in range(3)]
    )
    return stem


def _edited(ensemble_path: Path, folder: Path, edit) -> Path:
    stem = folder / "edited"
    stem.with_suffix(".safetensors").write_bytes(ensemble_path.with_suffix(".safetensors").read_bytes())
    meta = json.loads(ensemble_path.with_suffix(".json").read_text())
    edit(meta)
    stem.with_suffix(".json").write_text(json.dumps(meta))
    return stem


def test_round_trip_stores_float16_and_loads_float32(members, ensemble_path: Path) -> None:
    loaded = load_checkpoint(ensemble_path)
    assert isinstance(loaded.model, Ensemble) and loaded.member_count == 3 and loaded.info["members"] == 3
    meta = json.loads(ensemble_path.with_suffix(".json").read_text())
    assert meta["format"] == "heritage-cnn-ensemble/1" and [m["name"] for m in meta["members"]] == ["a", "b", "c"]
    with safe_open(str(ensemble_path.with_suffix(".safetensors")), "pt") as handle:
        assert handle.metadata()["generation"] == meta["generation"]
        assert handle.get_tensor("members.1.head.fc2.weight").dtype == torch.float16
    for i, original in enumerate(members):
        member = loaded.member(i)
        assert isinstance(member.model, HeritageNet) and member.index == i and member.path == loaded.path
        assert member.model.config == original.model.config and member.info["seed"] == original.info.get("seed", i)
        assert member.info["command"].endswith(f"--seed {i}") and "history" in member.info
        for key, tensor in original.model.state_dict().items():
            got = member.model.state_dict()[key]
            expected = tensor.half().float() if tensor.is_floating_point() else tensor
            assert got.dtype == tensor.dtype and torch.equal(got, expected), key
    assert loaded.info["trained_on"] == members[0].info["trained_on"]
    assert loaded.info["forward_mflop"] == pytest.approx(sum(m.info["forward_mflop"] for m in members), abs=0.02)
    assert loaded.classes == members[0].classes and loaded.mean == members[0].mean


def test_output_is_the_log_of_the_mean_member_softmax(ensemble_path: Path) -> None:
    loaded = load_checkpoint(ensemble_path)
    x = torch.randn(5, 3, 64, 64)
    with torch.no_grad():
        by_hand = torch.stack([loaded.member(i).model(x).softmax(1) for i in range(3)]).mean(0)
        output = loaded.model(x)
    assert torch.allclose(output.softmax(1), by_hand, atol=1e-6)
    assert torch.allclose(output.exp().sum(1), torch.ones(5), atol=1e-5)  # already normalised log-probabilities
    assert not torch.allclose(by_hand, loaded.member(0).model(x).softmax(1), atol=1e-3)


def test_a_single_network_is_its_own_member_0_and_bad_members_are_one_line(tiny_run, ensemble_path: Path) -> None:
    single = load_checkpoint(tiny_run.checkpoint)
    assert single.member(0) is single and single.member_count == 1
    for checkpoint, index in ((single, 1), (load_checkpoint(ensemble_path), 3), (single, -1)):
        with pytest.raises(ValueError, match=f"no member {index}") as caught:
            checkpoint.member(index)
        assert "\n" not in str(caught.value) and checkpoint.path.name in str(caught.value)


def test_members_must_agree_and_be_at_most_sixteen(members, tmp_path: Path) -> None:
    other_classes = replace(members[1], classes=list(reversed(members[1].classes)))
    with pytest.raises(CheckpointError, match=r"member 1 .* has other classes"):
        save_ensemble(tmp_path / "x", [members[0], other_classes])
    other_norm = replace(members[1], mean=[0.5, 0.5, 0.5])
    with pytest.raises(CheckpointError, match="other normalisation"):
        save_ensemble(tmp_path / "x", [members[0], other_norm])
    with pytest.raises(CheckpointError, match=f"1 to {MAX_MEMBERS} members"):
        save_ensemble(tmp_path / "x", [members[0]] * (MAX_MEMBERS + 1))
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize(
    ("field", "edit"),
    [
        ("members[1].classes", lambda m: m["members"][1].__setitem__("classes", ["x", "y"])),
        ("members[2].image_size", lambda m: m["members"][2].__setitem__("image_size", 32)),
        ("members[1].model_config", lambda m: m["members"][1]["model_config"].__setitem__("widths", "wide")),
        ("members", lambda m: m.__setitem__("members", m["members"] * 6)),
        ("members", lambda m: m.__setitem__("members", [])),
        # each member within MAX_PARAMETERS (at most about 104 M) and MAX_WIDTH, the three together over it
        (
            "parameters in all",
            lambda m: [x["model_config"].update(widths=[1024, 1024], blocks=[4, 4]) for x in m["members"]],
        ),
        ("members[0].command", lambda m: m["members"][0].__setitem__("command", 3)),
        ("classes", lambda m: m["classes"].__setitem__(0, "../up")),
        ("normalisation", lambda m: m["normalisation"].__setitem__("std", [1, 0, 1])),
        ("views", lambda m: m.__setitem__("views", "sideways")),
    ],
)
def test_edited_ensemble_metadata_is_refused_in_one_line(ensemble_path: Path, tmp_path: Path, field, edit) -> None:
    _refused(_edited(ensemble_path, tmp_path, edit), field)


def test_halves_of_different_saves_are_refused(members, ensemble_path: Path, tmp_path: Path) -> None:
    retrained = [members[0], members[1], _other(members[0], 7, residual=False)]  # same shapes, other weights
    save_ensemble(tmp_path / "b", retrained, ["a", "b", "c"], ["", "", ""])
    (tmp_path / "mixed.safetensors").write_bytes((tmp_path / "b.safetensors").read_bytes())
    (tmp_path / "mixed.json").write_bytes(ensemble_path.with_suffix(".json").read_bytes())
    assert "different saves" in _refused(tmp_path / "mixed", "generation")
    (tmp_path / "single.safetensors").write_bytes(members[0].path.read_bytes())  # one network's weights
    (tmp_path / "single.json").write_bytes(ensemble_path.with_suffix(".json").read_bytes())
    assert "do not match" in _refused(tmp_path / "single", "members")


def test_classifier_on_an_ensemble_gives_its_mean_probabilities(ensemble_path: Path, synthetic_root: Path) -> None:
    loaded = load_checkpoint(ensemble_path)
    images = load_images(synthetic_root).images[::12]  # two photos of each class
    with torch.no_grad():
        logits = loaded.model(loaded.normalise(images))
    expected = logits.softmax(1)
    exact = Classifier(loaded, bf16=False).probabilities(images)
    # float32 throughout; folding batch norm into the convolutions only reorders roundings (~1e-7 relative)
    assert exact.dtype == torch.float32 and torch.allclose(exact, expected, atol=1e-5)
    predictions = Classifier(loaded, bf16=False).predict([img.permute(1, 2, 0).numpy() for img in images])
    assert [p.label for p in predictions] == [loaded.classes[i] for i in expected.argmax(1).tolist()]


def test_the_bf16_path_gives_the_same_answers_to_bf16_precision(ensemble_path: Path, synthetic_root: Path) -> None:
    """The path Classifier takes on CPUs with native bf16, run on every CPU (autocast emulates it elsewhere)."""
    loaded = load_checkpoint(ensemble_path)
    images = load_images(synthetic_root).images[::12]
    exact = Classifier(loaded, bf16=False)
    mixed = Classifier(loaded, bf16=False)
    mixed.bf16 = True  # as Classifier(loaded) sets it where devices.cpu_has_native_bf16()
    log_exact, log_mixed = exact.probabilities(images).log(), mixed.probabilities(images).log()
    assert log_mixed.dtype == torch.float32 and not torch.equal(log_mixed, log_exact)  # autocast did run
    # bf16 keeps 8 significant bits: each of the ~6 layers rounds its inputs and weights by up to 2^-9 relative, so
    # the log-probabilities move by a few per cent of their spread; 10 % is twice what that allows
    spread = log_exact.amax(1, keepdim=True) - log_exact.amin(1, keepdim=True)
    assert ((log_mixed - log_exact).abs() <= 0.1 * spread).all()
    clear = (log_exact.topk(2).values.diff(dim=1).abs() > 0.2 * spread).squeeze(1)  # a margin no rounding flips
    assert clear.sum() >= len(images) // 2
    assert torch.equal(log_mixed.argmax(1)[clear], log_exact.argmax(1)[clear])


def test_an_ensemble_carries_the_test_time_views_every_tool_uses(
    members, ensemble_path: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    """`views` in the JSON is what Classifier and evaluate average unless told otherwise; it costs its passes."""
    from heritage_cnn.apps.evaluation import evaluate_on
    from heritage_cnn.inference.evaluate import predict_logits

    save_ensemble(tmp_path / "flip", members, views="flip")
    plain, flip = load_checkpoint(ensemble_path), load_checkpoint(tmp_path / "flip")
    assert (plain.views, flip.views, flip.member(0).views) == ("none", "flip", "none")
    assert flip.info["forward_mflop"] == pytest.approx(2 * plain.info["forward_mflop"], abs=0.02)
    images = torch.randint(0, 256, (5, 3, 64, 64), dtype=torch.uint8)
    mirrored = predict_logits(flip.model, images, flip.normalise, tta="flip").softmax(1)
    one_view = predict_logits(flip.model, images, flip.normalise).softmax(1)
    assert not torch.allclose(mirrored, one_view, atol=1e-4)
    assert torch.allclose(Classifier(flip, bf16=False).probabilities(images), mirrored, atol=1e-5)
    assert torch.allclose(Classifier(flip, tta="none", bf16=False).probabilities(images), one_view, atol=1e-5)
    evaluate_on(tmp_path / "flip", synthetic_root, "val", tmp_path / "eval", log=lambda _: None)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["tta"] == "flip"
    with pytest.raises(CheckpointError, match="views must be one of"):
        save_ensemble(tmp_path / "bad", members, views="sideways")
    assert not list(tmp_path.glob("bad*"))


def test_view_flags_default_to_the_models_own_and_one_view_overrides_it() -> None:
    parser = build_parser()
    for command in (["predict", "p.jpg"], ["evaluate", "--out", "eval"]):
        assert parser.parse_args(command).tta is None
        assert parser.parse_args([*command, "--one-view"]).tta == "none"
        assert parser.parse_args([*command, "--tta"]).tta == "flip"
    with pytest.raises(SystemExit):
        parser.parse_args(["predict", "p.jpg", "--tta", "--one-view"])


def test_shipped_names_default_is_the_ensemble_and_fast_a_distilled_network() -> None:
    default, fast = load_checkpoint(None), load_checkpoint("fast")
    assert load_checkpoint("default").path == default.path == shipped_checkpoint_path("default")
    assert fast.path.name == "fast.safetensors" and fast.member_count == 1 and default.member_count == 3
    assert default.views == "none" and fast.info["forward_mflop"] <= 300
    member_mflop = [default.member(i).info["forward_mflop"] for i in range(default.member_count)]
    assert default.info["forward_mflop"] == pytest.approx(sum(member_mflop), abs=0.02)
    assert default.info["trained_on"] == fast.info["trained_on"]  # the same split: --split auto agrees
    members = json.loads(default.path.with_suffix(".json").read_text())["members"]
    # every shipped network carries the command that trained it (benchmarks/train_pool.py) and its seed
    for name, command, seed in [(m["name"], m["command"], m["seed"]) for m in members] + [
        (fast.info["name"], fast.info["command"], fast.info["seed"])
    ]:
        assert command.startswith(f"heritage train --recipe adamw --data DATA --out POOL/{name} --seed {seed}"), command
    # fast is a student of exactly the networks of default, in their order
    teachers = [Path(t).name for t in fast.info["recipe"]["teachers"]]
    assert teachers == [m["name"] for m in members]


def test_each_shipped_command_rebuilds_the_recipe_its_network_records() -> None:
    """The recorded command still trains the recorded recipe under today's defaults (they have changed since)."""
    from heritage_cnn.cli.recipe import new_config
    from heritage_cnn.training.config import TrainConfig

    members = json.loads(shipped_checkpoint_path("default").with_suffix(".json").read_text())["members"]
    fast = json.loads(shipped_checkpoint_path("fast").with_suffix(".json").read_text())
    parser = build_parser()
    for info in [*members, fast]:
        args = parser.parse_args(shlex.split(info["command"])[1:])
        rebuilt = new_config(args, "DATA", "o")
        recorded = TrainConfig.from_dict({**info["recipe"], "data": "DATA", "out": "o"})
        same_teachers = [Path(t).name for t in rebuilt.teachers] == [Path(t).name for t in recorded.teachers]
        rebuilt = replace(rebuilt, teachers=recorded.teachers)
        assert same_teachers and rebuilt.recipe_differences(recorded) == [], info["name"]


def test_member_option_on_look_inside_commands(
    ensemble_path: Path, tiny_run, synthetic_root: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "k"
    assert main(["visualize", "kernels", "--model", str(ensemble_path), "--member", "1", "--out", str(out)]) == 0
    assert (out / "kernels_layer1.png").exists()
    capsys.readouterr()
    bad = ["visualize", "kernels", "--model", str(ensemble_path), "--member", "3", "--out", str(tmp_path / "x")]
    assert main(bad) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "ens.safetensors" in error and "--member 0 to 2" in error
    photo = str(sorted(synthetic_root.rglob("*.png"))[0])
    explained = tmp_path / "explained"
    assert main(["explain", photo, "--model", str(ensemble_path), "--member", "2", "--out", str(explained)]) == 0
    assert list(explained.glob("*.png"))
    capsys.readouterr()
    single = ["explain", photo, "--model", str(tiny_run.checkpoint), "--member", "1", "--out", str(tmp_path / "e")]
    assert main(single) == 2 and "has 1 network: --member 0" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "e").exists()


def test_evaluate_rebuilds_the_members_split_and_leaves_out_what_trained_them(
    ensemble_path: Path, tiny_run, synthetic_root: Path, tmp_path: Path
) -> None:
    from heritage_cnn.apps.evaluation import choose_split, evaluate_on
    from heritage_cnn.data.folders import find_layout

    quiet = {"log": lambda _: None}
    scored = evaluate_on(ensemble_path, synthetic_root, "val", tmp_path / "val", **quiet)
    assert scored["n_images"] == tiny_run.val_size  # the split rebuilt from member 0's recipe
    assert (
        choose_split(find_layout(synthetic_root), load_checkpoint(ensemble_path)) == "unseen"
    )  # the shared trained_on record
    unseen = evaluate_on(ensemble_path, synthetic_root, "auto", tmp_path / "auto", **quiet)
    assert unseen["n_images"] < tiny_run.train_size + tiny_run.val_size


def test_generate_draws_with_every_member_unless_one_is_named(ensemble_path: Path, tmp_path: Path, monkeypatch) -> None:
    """An ensemble draws its class images with all its networks (the ensemble objective, ENSEMBLE_SETTINGS);
    --member N draws with that network alone and the single-network settings."""
    from heritage_cnn.inside.synthesis import draw, loop

    seen: list[tuple[int, int]] = []
    real = draw.draw_classes

    def spy(checkpoint, targets, n, size, settings, seed, progress=False):
        seen.append((len(loop.networks_of(checkpoint)), settings.pixels))
        return real(checkpoint, targets, n, size, settings, seed, progress=progress)

    monkeypatch.setattr(draw, "draw_classes", spy)
    model = f"{ensemble_path}.safetensors"
    args = ["generate", "--model", model, "--class", "altar", "--n", "1", "--steps", "2"]
    assert main([*args, "--out", str(tmp_path / "all")]) == 0
    assert main([*args, "--member", "1", "--out", str(tmp_path / "one")]) == 0
    count = load_checkpoint(model).member_count
    assert count > 1
    assert seen == [(count, draw.ENSEMBLE_SETTINGS.pixels), (1, draw.Settings().pixels)]


def test_loading_or_copying_a_model_leaves_the_callers_random_stream_alone(ensemble_path: Path) -> None:
    """Building each network drew its (then overwritten) initial weights from the global generator, so seeding,
    loading and sampling gave other numbers than seeding and sampling."""
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    checkpoint = load_checkpoint(ensemble_path)
    copy_model(checkpoint.model)
    assert torch.equal(torch.rand(3), expected)


def test_an_ensemble_the_loader_would_refuse_is_never_written(members, tmp_path: Path) -> None:
    """save_ensemble checks its JSON as the loader does (each member's record included) before writing anything."""
    control = [replace(m, classes=["bell\x07", *m.classes[1:]]) for m in members]
    with pytest.raises(CheckpointError, match=r"ens\.safetensors: not written: classes: 'bell\\x07' contains"):
        save_ensemble(tmp_path / "ens", control)
    with pytest.raises(CheckpointError, match=r"not written: members\[1\]\.name: must be a string"):
        save_ensemble(tmp_path / "ens", members, ["a", "b" * 3000, "c"])
    assert list(tmp_path.iterdir()) == []
