"""The "none of these" record a checkpoint carries: round trips, refusals in one line, checkpoints without it."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save

from conftest import refused_in_one_line as _refused
from heritage_cnn.base.io import load_tensors
from heritage_cnn.cli.main import main
from heritage_cnn.data.decode import decode_image
from heritage_cnn.inference.classifier import Classifier
from heritage_cnn.inference.openset_fit import fit_operating_point
from heritage_cnn.models.checkpoint import load_checkpoint, save_checkpoint, save_ensemble, weights_generation
from heritage_cnn.models.ensemble import Ensemble, copy_model
from heritage_cnn.models.metadata import FORMAT
from heritage_cnn.models.openset import (
    PENULTIMATE,
    forward_with_features,
    mahalanobis,
    mahalanobis_fit,
    neighbour_correlation,
)
from heritage_cnn.models.openset_point import CANNOT_REJECT, NOISE, NOISE_MARGIN, SCORE, OperatingPoint, network_id
from heritage_cnn.training.config import TrainConfig
from heritage_cnn.training.prepare import prepare_data


@pytest.fixture(scope="module")
def photos(tiny_run, synthetic_root: Path):
    """(training set, validation set) of the tiny run: the split `heritage train` drew."""
    recipe = load_checkpoint(tiny_run.checkpoint).info["recipe"]
    config = TrainConfig.from_dict({**recipe, "data": str(synthetic_root), "out": "-", "progress": False})
    _, train, val = prepare_data(config, log=lambda _: None)
    return train, val


def _copy(source: Path, stem: Path) -> dict:
    for suffix in (".safetensors", ".json"):
        stem.with_suffix(suffix).write_bytes(source.with_suffix(suffix).read_bytes())
    return json.loads(stem.with_suffix(".json").read_text())


def test_the_record_and_its_statistics_round_trip_through_save_and_load(tiny_run, tmp_path: Path) -> None:
    original = load_checkpoint(tiny_run.checkpoint)
    point = original.open_set  # `heritage train`'s own: energy, with the class statistics `heritage teach` replays
    assert point is not None and point.score == "energy" and point.layer == PENULTIMATE and len(point.stats) == 1
    save_checkpoint(tmp_path / "again", original)
    loaded = load_checkpoint(tmp_path / "again")
    assert loaded.open_set.to_dict() == point.to_dict()
    for name, tensor in point.tensors(ensemble=False).items():
        assert torch.equal(loaded.open_set.tensors(ensemble=False)[name], tensor), name
    meta = json.loads((tmp_path / "again.json").read_text())
    assert meta["open_set"] == point.to_dict() and "open_set" not in loaded.info  # the record, not info
    with safe_open(str(tmp_path / "again.safetensors"), "pt") as handle:  # beside the weights, in float32
        assert handle.get_tensor("openset.mahalanobis.whitening").dtype == torch.float32
        assert handle.metadata()["generation"] == meta["generation"]  # the generation covers the statistics


def test_an_ensembles_statistics_are_per_member_and_round_trip(tiny_run, photos, tmp_path: Path) -> None:
    single = load_checkpoint(tiny_run.checkpoint)
    torch.manual_seed(1)
    other = replace(single, model=type(single.model)(single.model.config).eval(), open_set=None)
    save_ensemble(tmp_path / "pair", [single, other], ["a", "b"], ["c0", "c1"])
    ensemble = load_checkpoint(tmp_path / "pair")
    assert ensemble.open_set is None  # members' own records do not make the ensemble's
    train, val = photos
    point = fit_operating_point(ensemble, train, val.images, ridge=1e-3)
    save_ensemble(tmp_path / "fitted", [ensemble.member(0), ensemble.member(1)], open_set=point)
    loaded = load_checkpoint(tmp_path / "fitted")
    assert isinstance(loaded.model, Ensemble) and loaded.open_set.to_dict() == point.to_dict()
    with safe_open(str(tmp_path / "fitted.safetensors"), "pt") as handle:
        names = {k for k in handle.keys() if ".openset." in f".{k}"}  # noqa: SIM118 - safe_open has no __iter__
    assert names == {f"members.{i}.openset.mahalanobis.{part}" for i in (0, 1) for part in ("means", "whitening")}
    for got, expected in zip(loaded.open_set.stats, point.stats, strict=True):
        assert torch.equal(got.means, expected.means) and torch.equal(got.whitening, expected.whitening)
    assert loaded.member(0).open_set is None  # a member alone has no threshold: it was set on the mean


def test_weights_changed_after_the_fit_are_saved_without_the_record(tiny_run, photos, tmp_path: Path) -> None:
    """A copy fine-tuned or edited after the fit (`replace(checkpoint, model=...)` keeps the old record) must not be
    written with statistics and a threshold of other weights: the record names the weights it was fitted for."""
    checkpoint = load_checkpoint(tiny_run.checkpoint)
    assert checkpoint.open_set.fitted_on["network"] == network_id(checkpoint.model.state_dict())
    tuned = copy_model(checkpoint.model)
    with torch.no_grad():
        tuned.head.fc2.bias.add_(0.01)
    save_checkpoint(tmp_path / "tuned", replace(checkpoint, model=tuned))
    assert load_checkpoint(tmp_path / "tuned").open_set is None
    assert "open_set" not in json.loads((tmp_path / "tuned.json").read_text())
    save_checkpoint(tmp_path / "same", replace(checkpoint, model=copy_model(checkpoint.model)))
    assert load_checkpoint(tmp_path / "same").open_set.to_dict() == checkpoint.open_set.to_dict()
    train, val = photos
    pair = [checkpoint, replace(checkpoint, model=tuned)]
    point = fit_operating_point(checkpoint, train, val.images)  # fitted for the single network, not for the pair
    save_ensemble(tmp_path / "pair", pair, ["a", "b"], ["c", "d"], open_set=point)
    assert load_checkpoint(tmp_path / "pair").open_set is None


def test_mahalanobis_from_the_stored_tensors_equals_a_fresh_fit(tiny_mahalanobis: Path, photos) -> None:
    """The statistics a fit stores are those of its training photos' penultimate features, as `Classifier` runs
    the network for a fit (float32 on every CPU), and score any photo as a fit made here does."""
    train, val = photos
    checkpoint = load_checkpoint(tiny_mahalanobis)
    classifier = Classifier(checkpoint, bf16=False)  # the fit's precision; bf16 scoring has its own test below
    with torch.no_grad():
        features = forward_with_features(classifier.model, checkpoint.normalise(train.images)).features[PENULTIMATE]
        fresh = mahalanobis_fit(features[0], train.labels, num_classes=10, ridge=checkpoint.open_set.ridge)
        stored = checkpoint.open_set.stats[0]
        assert torch.allclose(stored.means, fresh.means, rtol=1e-5, atol=1e-5)
        assert torch.allclose(stored.whitening, fresh.whitening, rtol=1e-4, atol=1e-4)
        x = checkpoint.normalise(val.images)
        val_features = forward_with_features(classifier.model, x).features[PENULTIMATE][0]
        by_hand = mahalanobis(val_features, fresh)
    _, scores = classifier.scored(val.images)
    assert torch.allclose(scores, by_hand, rtol=1e-4, atol=1e-3)


def _rewritten(stem: Path, meta: dict, state: dict) -> None:
    """A consistent pair (one generation) holding `meta` and `state`, so that only the edited value is wrong."""
    generation = weights_generation(state)
    stem.with_suffix(".safetensors").write_bytes(save(state, metadata={"format": FORMAT, "generation": generation}))
    stem.with_suffix(".json").write_text(json.dumps({**meta, "generation": generation}))


@pytest.mark.parametrize(
    ("field", "edit"),
    [
        ("open_set.threshold", lambda r: r.update(threshold=math.nan)),
        ("open_set.threshold", lambda r: r.update(threshold=math.inf)),
        ("open_set.threshold", lambda r: r.update(threshold="-3.5")),
        ("open_set.threshold", lambda r: r.update(threshold=True)),
        ("open_set.threshold", lambda r: r.pop("threshold")),
        ("open_set.score", lambda r: r.update(score="cosine")),
        ("open_set.layer", lambda r: r.update(layer="stage1.block1.conv1")),
        ("open_set.ridge", lambda r: r.update(ridge=-1.0)),
        ("open_set.ridge", lambda r: r.update(ridge=math.nan)),
        ("open_set.reject_share", lambda r: r.update(reject_share=1.5)),
        ("open_set.noise_threshold", lambda r: r.update(noise_threshold=1.5)),
        ("open_set.noise_threshold", lambda r: r.update(noise_threshold=math.nan)),
        ("open_set.noise_threshold", lambda r: r.update(noise_threshold="0.5")),
        ("open_set.fitted_on.val_photos", lambda r: r["fitted_on"].update(val_photos=-1)),
        ("open_set.fitted_on.val_called_none", lambda r: r["fitted_on"].update(val_called_none=10**6)),
        ("open_set.fitted_on.val_called_none_share", lambda r: r["fitted_on"].update(val_called_none_share=math.nan)),
        ("open_set.fitted_on.views", lambda r: r["fitted_on"].update(views="sideways")),
        ("open_set.fitted_on.network", lambda r: r["fitted_on"].update(network="not a hash")),
        ("open_set.command", lambda r: r.update(command=["heritage"])),
        ("unknown key 'evil'", lambda r: r.update(evil=1)),
        ("open_set: must be an object", None),
    ],
)
def test_a_bad_record_is_refused_in_one_line_naming_the_file_and_field(tiny_run, tmp_path: Path, field, edit) -> None:
    stem = tmp_path / "m"
    meta = _copy(tiny_run.checkpoint.with_suffix(""), stem)
    if edit is None:
        meta["open_set"] = [1, 2]
    else:
        edit(meta["open_set"])
    stem.with_suffix(".json").write_text(json.dumps(meta))  # NaN and Infinity as JSON writes them
    assert "open_set" in _refused(stem, field)
    result = main(["predict", str(tiny_run.checkpoint.parent), "--model", str(stem)])  # the CLI: exit 2
    assert result == 2


def test_an_energy_record_carries_its_statistics_whole_or_not_at_all(tiny_run, tmp_path: Path) -> None:
    stem = tmp_path / "m"
    meta = _copy(tiny_run.checkpoint.with_suffix(""), stem)
    state = load_tensors(stem.with_suffix(".safetensors"))
    record = {"score": "energy", "threshold": 2.0, "fitted_on": {}}
    _rewritten(stem, {**meta, "open_set": {**record, "layer": PENULTIMATE}}, state)  # a layer without its ridge
    _refused(stem, "open_set.ridge")
    _rewritten(stem, {**meta, "open_set": record}, state)  # statistics beside the weights that no record names
    _refused(stem, "openset.mahalanobis.means")
    weights = {k: v for k, v in state.items() if not k.startswith("openset.")}
    _rewritten(stem, {**meta, "open_set": record}, weights)
    assert load_checkpoint(stem).open_set == OperatingPoint("energy", 2.0)
    _rewritten(stem, {**meta, "open_set": {**record, "layer": PENULTIMATE, "ridge": 0.01}}, state)
    loaded = load_checkpoint(stem)
    assert len(loaded.open_set.stats) == 1 and loaded.open_set.name == "energy"
    x = loaded.normalise(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))
    with torch.no_grad():  # the statistics are carried, not read: the score is the energy of the logits
        logits, score = loaded.open_set.forward(loaded.model.eval(), x)
    assert torch.allclose(score, torch.logsumexp(logits, 1))


@pytest.mark.parametrize("bad", ["nan", "shape", "missing", "integer"])
def test_bad_statistics_are_refused_in_one_line_naming_the_tensor(tiny_run, tmp_path: Path, bad: str) -> None:
    stem = tmp_path / "m"
    meta = _copy(tiny_run.checkpoint.with_suffix(""), stem)
    state = load_tensors(stem.with_suffix(".safetensors"))
    name = "openset.mahalanobis.whitening"
    if bad == "nan":
        state[name][0, 0] = math.nan
    elif bad == "shape":
        state[name] = state[name][:-1]
    elif bad == "integer":
        state[name] = state[name].round().to(torch.int32)
    else:
        del state[name]
    _rewritten(stem, meta, state)
    _refused(stem, name)


def test_a_checkpoint_without_the_record_loads_works_and_says_it_cannot_reject(
    old_checkpoint: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    meta = json.loads(old_checkpoint.with_suffix(".json").read_text())
    with safe_open(str(old_checkpoint), "pt") as handle:
        assert "open_set" not in meta and not [k for k in handle.keys() if k.startswith("openset")]  # noqa: SIM118
    checkpoint = load_checkpoint(old_checkpoint)
    assert checkpoint.open_set is None
    photo = synthetic_root / "apse" / "003.png"
    prediction = Classifier(checkpoint).predict(photo)[0]
    assert prediction.known is None and prediction.open_set_score is None and prediction.none_threshold is None
    assert prediction.to_dict()["known"] is None and prediction.flat()["known"] == ""
    assert main(["predict", str(photo), "--model", str(old_checkpoint), "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)[0]["known"] is None
    assert captured.err.count(CANNOT_REJECT) == 1


@pytest.mark.parametrize("command", ["predict", "sort", "evaluate"])
def test_none_threshold_on_a_model_without_the_record_is_refused(
    command: str, old_checkpoint: Path, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = str(synthetic_root / "apse" / "003.png")
    args = {
        "predict": ["predict", photo],
        "sort": ["sort", str(synthetic_root / "apse"), "--out", str(tmp_path / "out")],
        "evaluate": ["evaluate", "--data", str(synthetic_root), "--out", str(tmp_path / "eval")],
    }[command]
    assert main([*args, "--model", str(old_checkpoint), "--none-threshold", "-3"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "--none-threshold" in error and str(old_checkpoint) in error
    assert not (tmp_path / "out").exists() and not (tmp_path / "eval").exists()  # refused before any work
    with pytest.raises(ValueError, match="no none-of-these record"):
        Classifier(load_checkpoint(old_checkpoint), none_threshold=-3.0)


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "many"])
def test_none_threshold_must_be_a_finite_number(bad: str, tiny_run, synthetic_root: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["predict", str(synthetic_root / "apse"), "--model", str(tiny_run.checkpoint), "--none-threshold", bad])
    assert info.value.code == 2 and "--none-threshold" in capsys.readouterr().err


def test_the_score_is_float32_inside_a_bf16_autocast(tiny_mahalanobis: Path, synthetic_root: Path) -> None:
    """Predictions run in bf16 autocast on CPUs that have it: the network's pass in bf16, the Mahalanobis distances
    (values of ~1e2 to 1e3, near a threshold by a few units) in float32 from the features that pass recorded."""
    checkpoint = load_checkpoint(tiny_mahalanobis)
    point, model = checkpoint.open_set, Classifier(checkpoint).model
    x = checkpoint.normalise(
        torch.stack([torch.from_numpy(decode_image(p)).permute(2, 0, 1) for p in _photos(synthetic_root)])
    )
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        _, score = point.forward(model, x)
        features = forward_with_features(model, x).features[PENULTIMATE][0]  # the same bf16 pass, recorded
    assert features.dtype == torch.float32
    by_hand = mahalanobis(features, point.stats[0])  # float32, outside the autocast
    assert torch.allclose(score, by_hand, rtol=1e-6, atol=1e-4)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # what an autocast product would give
        stats = point.stats[0]
        in_bf16 = -torch.cdist(features @ stats.whitening, stats.means @ stats.whitening).float().square().amin(1)
    assert not torch.allclose(score, in_bf16, rtol=1e-6, atol=1e-4)


def _photos(root: Path) -> list[Path]:
    return sorted(root.rglob("*.png"))[::12]


def test_the_noise_check_decides_first_and_says_why() -> None:
    """Known only when the score reaches the threshold and the pixels pass the check; the reason, checked in order:
    noise first (whatever the score), then the score. A record without the check decides by the score alone."""
    rng = np.random.default_rng(0)
    ramp = np.broadcast_to(np.arange(0, 256, 4, dtype=np.uint8), (3, 64, 64))  # correlation 1 both ways
    noise = rng.integers(0, 256, (3, 64, 64), dtype=np.uint8)  # near 0
    images = torch.from_numpy(np.stack([ramp, noise, ramp, noise]).copy())
    scores = torch.tensor([5.0, 5.0, 1.0, 1.0])  # above, above, below, below the threshold 2
    checked = OperatingPoint("energy", 2.0, noise_threshold=0.5)
    known, reasons = checked.decide(scores, images)
    assert known.tolist() == [True, False, False, False]
    assert reasons == [None, NOISE, SCORE, NOISE]
    known, reasons = OperatingPoint("energy", 2.0).decide(scores, images)  # saved before the check
    assert known.tolist() == [True, True, False, False] and reasons == [None, None, SCORE, SCORE]
    assert (
        checked.to_dict()["noise_threshold"] == 0.5 and "noise_threshold" not in OperatingPoint("energy", 2.0).to_dict()
    )


def test_the_fit_sets_the_noise_check_just_below_its_least_correlated_validation_photo(tiny_run, photos) -> None:
    train, val = photos
    point = fit_operating_point(load_checkpoint(tiny_run.checkpoint), train, val.images)
    lowest = float(neighbour_correlation(val.images).min())
    assert point.noise_threshold == pytest.approx(lowest - NOISE_MARGIN, abs=1e-12)
    assert not point.noise(val.images).any()  # it calls none of the photos it was fitted on noise


def test_a_record_without_the_noise_check_loads_and_decides_by_the_score(tiny_run, tmp_path: Path) -> None:
    stem = tmp_path / "older"
    meta = _copy(tiny_run.checkpoint.with_suffix(""), stem)
    assert "noise_threshold" in meta["open_set"]  # `heritage train` fits it now
    del meta["open_set"]["noise_threshold"]
    stem.with_suffix(".json").write_text(json.dumps(meta))
    loaded = load_checkpoint(stem)
    assert loaded.open_set.noise_threshold is None
    assert not loaded.open_set.noise(torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)).any()
