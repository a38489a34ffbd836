"""Fitting the "none of these" operating point: the threshold rule by hand, `heritage train`'s last step, and
`heritage data none-fit` (a new checkpoint, the input untouched, an ensemble kept whole)."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_dataset
from heritage_cnn.base.io import read_json
from heritage_cnn.cli.main import main
from heritage_cnn.data.decode import decode_image
from heritage_cnn.inference.classifier import Classifier
from heritage_cnn.inference.openset_fit import describe, full_float32, reject_threshold
from heritage_cnn.models.checkpoint import load_checkpoint, save_checkpoint, save_ensemble
from heritage_cnn.models.openset_point import OperatingPoint, network_id


@pytest.mark.parametrize(
    ("scores", "share", "threshold", "rejected"),
    [
        (np.arange(100.0)[::-1], 0.03, 2.5, 3),  # floor(3.0) = 3: the three lowest, 0, 1 and 2
        ([4.0, 1.0, 3.0, 2.0], 0.25, 1.5, 1),  # floor(1.0) = 1: halfway between 1 and 2
        ([4.0, 1.0, 3.0, 2.0], 0.49, 1.5, 1),  # floor(1.96) = 1: never more than the share
        ([-7.0, -9.0, -8.0], 0.03, -9.0 - 9e-6, 0),  # floor(0.09) = 0: just below the lowest, none rejected
        ([1.0, 1.0, 1.0, 2.0], 0.5, 1.0, 0),  # floor(2.0) = 2 falls inside a tie at 1: none of the three
        ([1.0, 1.0, 2.0, 2.0, 3.0], 0.2, 1.0, 0),  # floor(1.0) = 1, again inside a tie
        ([1.0, 2.0, 2.0, 3.0], 0.5, 2.0, 1),  # floor(2.0) = 2: 1 goes, the tie at 2 stays
    ],
)
def test_the_threshold_rejects_the_share_worked_out_by_hand(scores, share, threshold, rejected) -> None:
    got, count = reject_threshold(np.asarray(scores), share)
    assert got == pytest.approx(threshold, abs=1e-12) and count == rejected
    assert count <= math.floor(share * len(scores))


def test_the_threshold_refuses_nothing_to_fit_and_a_share_of_one() -> None:
    with pytest.raises(ValueError, match="no validation photos"):
        reject_threshold(np.array([]), 0.03)
    with pytest.raises(ValueError, match="below 1"):
        reject_threshold(np.array([1.0, 2.0]), 1.0)


def test_train_fits_the_record_at_the_end_of_a_run(tiny_run) -> None:
    """The tiny run (10 classes x 24 photos: 192 training, 48 validation): 3 % of 48 is 1.44, so the threshold
    calls floor(1.44) = 1 validation photo none, and the record reloads from the run's last checkpoint."""
    point = load_checkpoint(tiny_run.out).open_set
    assert (tiny_run.train_size, tiny_run.val_size) == (192, 48)
    assert point.fitted_on == {
        "train_photos": 192,
        "val_photos": 48,
        "val_called_none": 1,
        "val_called_none_share": 1 / 48,
        "views": "none",
        "autocast": "none",  # float32 on every CPU, so the same model gets the same threshold everywhere
        "network": network_id(load_checkpoint(tiny_run.out).model.state_dict()),  # the weights it was fitted for
    }
    assert point.command == "heritage train (its last step)" and point.reject_share == 0.03
    assert load_checkpoint(tiny_run.out / "best").open_set is None  # only the last weights carry it


def test_the_fitted_threshold_calls_the_stated_share_of_its_validation_photos_none(tiny_run) -> None:
    """Predicting the run's own validation files (split.json) as `heritage predict` does in float32 (every CPU
    without bf16; the fit's precision): exactly the one photo."""
    paths = read_json(tiny_run.out / "split.json")["val_paths"]
    predictions = list(Classifier.load(tiny_run.checkpoint, bf16=False).predict_files(paths))
    assert len(predictions) == 48
    assert sum(p.known is False for p in predictions) == 1
    threshold = load_checkpoint(tiny_run.checkpoint).open_set.threshold
    assert all(p.known == (p.open_set_score >= threshold) and p.none_threshold == threshold for p in predictions)


def _digests(stem: Path) -> dict[str, str]:
    return {s: hashlib.sha256(stem.with_suffix(s).read_bytes()).hexdigest() for s in (".safetensors", ".json")}


def test_none_fit_writes_a_new_checkpoint_and_never_touches_the_input(
    tiny_run, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tiny_run.out / "last"
    before = _digests(source)
    out = tmp_path / "refit"
    args = ["data", "none-fit", "--model", str(tiny_run.out), "--data", str(synthetic_root), "--out", str(out)]
    assert main([*args, "--ridge", "0.1", "--reject-share", "0.1"]) == 0
    assert _digests(source) == before
    refit, original = load_checkpoint(out), load_checkpoint(tiny_run.out)
    point = refit.open_set
    assert point.ridge == 0.1 and point.fitted_on["val_called_none"] == 4  # floor(0.1 x 48) = 4
    assert point.command == (
        f"heritage data none-fit --model {tiny_run.out} --data DATA --out OUT --score energy --layer head.fc2 "
        "--ridge 0.1 --reject-share 0.1"
    )
    assert refit.info == original.info  # the same model, recipe and history: only the record is new
    for key, tensor in original.model.state_dict().items():
        assert torch.equal(refit.model.state_dict()[key], tensor), key
    printed = capsys.readouterr().out
    assert "4 of 48 validation photos none" in printed
    assert f"written: {out}.safetensors + {out}.json" in printed  # both files with their folder
    assert main(args) == 2  # an existing output is never overwritten
    assert "already exists" in capsys.readouterr().err
    assert main([*args[:-1], str(source)]) == 2  # nor the input itself
    assert _digests(source) == before


def test_none_fit_refuses_a_folder_the_model_did_not_train_on(
    tiny_run, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The QA case: the model's folder inside a larger one (its split then trains on photos the model never saw and
    validates on photos it trained on), and a folder of other photos altogether: one line, no checkpoint written."""
    larger = tmp_path / "larger"
    shutil.copytree(synthetic_root, larger)
    extra = make_dataset(tmp_path / "extra", per_class=8, seed=9)
    for photo in extra.rglob("*.png"):
        shutil.copy(photo, larger / photo.parent.name / f"extra_{photo.name}")
    other = make_dataset(tmp_path / "other", per_class=24, seed=7)
    for folder in (larger, other):
        out = tmp_path / f"fit_{folder.name}"
        args = ["data", "none-fit", "--model", str(tiny_run.out), "--data", str(folder), "--out", str(out)]
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"--data {folder}: " in err, err
        assert "did not train" in err and "not the folder the model was trained on" in err
        assert not out.with_suffix(".json").exists() and not out.with_suffix(".safetensors").exists()


def test_none_fit_with_a_ridge_too_small_to_invert_is_one_line_naming_the_flag(
    tiny_run, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The QA case: `--score mahalanobis --ridge 0` (and 1e-300) ended in linalg's traceback, exit 1. The tiny run's
    network with one hidden unit that never fires (a dead ReLU unit, as real networks have): its features' covariance
    is singular without a ridge. One line naming --ridge and a ridge that works, exit 2, nothing written."""
    checkpoint = load_checkpoint(tiny_run.out)
    with torch.no_grad():
        checkpoint.model.head.fc1.weight[0] = 0.0
        checkpoint.model.head.fc1.bias[0] = -1.0
    dead = save_checkpoint(tmp_path / "dead", replace(checkpoint, open_set=None))
    for ridge in ("0", "1e-300"):
        out = tmp_path / f"fit_{ridge}"
        args = ["data", "none-fit", "--model", str(dead), "--data", str(synthetic_root), "--out", str(out), "-q"]
        assert main([*args, "--score", "mahalanobis", "--ridge", ridge]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and err.startswith(f"heritage: error: --ridge {ridge}: "), err
        assert "singular" in err and "such as 1e-4" in err
        assert not out.with_suffix(".json").exists() and not out.with_suffix(".safetensors").exists()


def test_reject_share_of_one_is_refused_by_argparse_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["data", "none-fit", "--out", "x", "--reject-share", "1"])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert info.value.code == 2 and "--reject-share" in last and "below 1" in last


def test_none_fit_with_energy_scores_the_logits_and_keeps_the_statistics(
    tiny_run, synthetic_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "energy"
    args = ["data", "none-fit", "--model", str(tiny_run.checkpoint), "--data", str(synthetic_root), "--out", str(out)]
    assert main([*args, "--score", "energy"]) == 0
    point = load_checkpoint(out).open_set  # the class statistics beside, for `heritage teach`; the score reads none
    assert point.score == "energy" and len(point.stats) == 1 and point.layer == "head.fc2"
    assert point.fitted_on["train_photos"] == 192
    photo = synthetic_root / "vault" / "001.png"
    # float32 (bf16=False) as the reference below, on every CPU: bf16 would move the score by ~4e-3 (CI, Xeon)
    prediction = Classifier.load(out, bf16=False).predict(photo)[0]
    checkpoint = load_checkpoint(out)
    with torch.no_grad():  # by hand: T logsumexp(logits / T) at T = 1, the network as loaded
        logits = checkpoint.model(checkpoint.normalise(torch.from_numpy(decode_image(photo)).permute(2, 0, 1)[None]))
    assert prediction.open_set_score == pytest.approx(float(torch.logsumexp(logits, 1)[0]), abs=1e-4)


def test_none_fit_keeps_an_ensemble_whole(tiny_run, synthetic_root: Path, tmp_path: Path) -> None:
    single = load_checkpoint(tiny_run.checkpoint)
    torch.manual_seed(3)
    other = replace(single, model=type(single.model)(single.model.config).eval())
    save_ensemble(tmp_path / "pair", [single, other], ["a", "b"], ["train a", "train b"], views="flip")
    args = ["data", "none-fit", "--model", str(tmp_path / "pair"), "--data", str(synthetic_root)]
    assert main([*args, "--out", str(tmp_path / "fitted")]) == 0
    before, after = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("pair", "fitted"))
    record = after.pop("open_set")
    assert record["fitted_on"]["views"] == "flip" and len(load_checkpoint(tmp_path / "fitted").open_set.stats) == 2
    assert {k: v for k, v in after.items() if k != "generation"} == {
        k: v for k, v in before.items() if k != "generation"
    }
    pair, fitted = load_checkpoint(tmp_path / "pair"), load_checkpoint(tmp_path / "fitted")
    for key, tensor in pair.model.state_dict().items():
        assert torch.equal(fitted.model.state_dict()[key], tensor), key


@pytest.mark.parametrize("before", [True, False])
def test_the_fit_runs_cudnn_without_tf32_and_restores_the_setting(before: bool) -> None:
    """The flag is process-wide: off inside the fit whatever it was, back as it was after, an error included."""
    torch.backends.cudnn.allow_tf32 = before
    try:
        with pytest.raises(RuntimeError, match="inside"), full_float32():
            assert torch.backends.cudnn.allow_tf32 is False
            raise RuntimeError("inside")
        assert torch.backends.cudnn.allow_tf32 is before
    finally:
        torch.backends.cudnn.allow_tf32 = True  # PyTorch's default


def test_the_one_line_names_what_the_score_reads() -> None:
    fitted = {"train_photos": 192, "val_photos": 48, "val_called_none": 1, "val_called_none_share": 1 / 48}
    energy = describe(OperatingPoint("energy", 2.5, "head.fc2", 0.01, fitted_on=fitted))
    assert energy == (
        "none of these: energy below 2.5 calls 1 of 48 validation photos none (2.08%); "
        "class statistics (for heritage teach) from 192 training photos"
    )
    distance = describe(OperatingPoint("mahalanobis", -120.0, "head.fc2", 0.01, fitted_on=fitted))
    assert distance.startswith("none of these: mahalanobis[head.fc2] (ridge 0.01) below -120 calls 1 of 48")
    assert distance.endswith("; statistics from 192 training photos")
