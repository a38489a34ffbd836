"""Outlier exposure in training (`--outliers`): the loss term, the config's checks, and a tiny run that learns to
answer photos of none of the classes with a flat softmax, records them, resumes exactly and refuses changed ones."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY
from heritage_cnn.base.checks import ConfigError
from heritage_cnn.base.io import load_tensors
from heritage_cnn.cli.main import main
from heritage_cnn.data.folders import load_images
from heritage_cnn.inference.evaluate import predict_logits
from heritage_cnn.models.checkpoint import load_checkpoint
from heritage_cnn.models.network import ModelConfig
from heritage_cnn.training import state as trainstate
from heritage_cnn.training.config import TrainConfig
from heritage_cnn.training.loop import train
from heritage_cnn.training.losses import TrainingLoss, consistency_loss, uniform_cross_entropy


def _outliers(folder: Path, count: int, seed: int) -> Path:
    """Grey pictures of none of the synthetic classes (each class is a hue): smooth random scenes, two layouts deep."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        coarse = np.kron(rng.random((4, 4)), np.ones((16, 16)))
        grey = np.clip(40 + 170 * coarse + rng.normal(0, 8, coarse.shape), 0, 255).astype(np.uint8)
        place = folder / ("walls" if i % 2 else "signs/old")
        place.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.stack([grey] * 3, -1)).save(place / f"{i:03d}.png")
    return folder


def _config(root: Path, out: Path, **overrides) -> TrainConfig:
    base = TrainConfig(
        data=str(root), out=str(out), epochs=6, batch_size=32, lr=0.01, model=ModelConfig(**TINY), amp=False
    )
    return replace(base, progress=False, **overrides)


def test_uniform_cross_entropy_is_log_k_for_a_flat_answer_and_grows_with_confidence() -> None:
    flat = torch.full((3, 10), 2.5)  # any constant row is the uniform softmax
    assert uniform_cross_entropy(flat).item() == pytest.approx(math.log(10))
    # one logit 4 above nine zeros: log Z = log(e^4 + 9) and the mean log p is (4 - 10 log Z) / 10
    sure = torch.zeros(1, 10)
    sure[0, 3] = 4.0
    log_z = math.log(math.exp(4) + 9)
    assert uniform_cross_entropy(sure).item() == pytest.approx(-(4 - 10 * log_z) / 10, rel=1e-6)
    assert uniform_cross_entropy(sure).item() > math.log(10)


def test_the_loss_adds_the_outliers_term_to_the_photos_and_scores_the_photos_alone() -> None:
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 10), torch.randint(0, 10, (4,))
    loss = TrainingLoss(outlier_weight=0.5)
    value, kept = loss(logits, labels, torch.rand(4, 3, 8, 8), 4, outliers=2)
    photos = torch.nn.functional.cross_entropy(logits[:4], labels)
    assert value.item() == pytest.approx(photos.item() + 0.5 * uniform_cross_entropy(logits[4:]).item(), rel=1e-6)
    assert torch.equal(kept, logits[:4])  # the training accuracy counts the photos, never the outliers


def test_the_loss_is_pytorch_oods_outlier_exposure_loss_when_it_is_installed() -> None:
    loss_module = pytest.importorskip("pytorch_ood.loss")
    torch.manual_seed(1)
    logits, labels = 3 * torch.randn(8, 10), torch.randint(0, 10, (4,))
    ours, _ = TrainingLoss(outlier_weight=0.5)(logits, labels, torch.rand(4, 3, 8, 8), 4, outliers=4)
    # the library marks outliers with negative labels and averages over all eight rows; ours averages each part
    # over its own four (the paper's code), so with as many outliers as photos ours is twice the library's value
    theirs = loss_module.OutlierExposureLoss(alpha=0.5)(logits, torch.cat([labels, torch.full((4,), -1)]))
    assert ours.item() == pytest.approx(2 * theirs.item(), rel=1e-6)


def test_with_two_views_the_outliers_follow_both_and_the_consistency_term_reads_the_photos_only() -> None:
    torch.manual_seed(2)
    logits, labels = torch.randn(7, 10), torch.randint(0, 10, (3,))  # 3 photos x 2 views, then 1 outlier
    loss = TrainingLoss(consistency_weight=2.0, outlier_weight=0.5)
    value, kept = loss(logits, torch.cat([labels, labels]), torch.rand(6, 3, 8, 8), 3, outliers=1)
    expected = (
        torch.nn.functional.cross_entropy(logits[:6], torch.cat([labels, labels]))
        + 2.0 * consistency_loss(logits[:6])
        + 0.5 * uniform_cross_entropy(logits[6:])
    )
    assert value.item() == pytest.approx(expected.item(), rel=1e-6) and torch.equal(kept, logits[:3])


def test_the_config_refuses_an_outlier_weight_that_is_not_positive() -> None:
    for weight in (0.0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="outlier_weight"):
            TrainConfig(data="d", out="o", outliers="neg", outlier_weight=weight)


@pytest.fixture(scope="module")
def exposed(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """The same tiny run twice, seed for seed: without and with outliers."""
    work = tmp_path_factory.mktemp("exposure")
    outliers = _outliers(work / "none", 40, seed=0)
    (outliers / "walls" / "broken.png").write_bytes(b"not a picture")
    plain = train(_config(synthetic_root, work / "plain"), log=lambda _: None)
    messages: list[str] = []
    with_outliers = train(_config(synthetic_root, work / "oe", outliers=str(outliers)), log=messages.append)
    return plain, with_outliers, outliers, messages, work


def _logits(run_folder: Path, images: torch.Tensor) -> torch.Tensor:
    checkpoint = load_checkpoint(run_folder / "last")
    return predict_logits(checkpoint.model, images, checkpoint.normalise)


def test_outliers_get_a_flatter_answer_on_pictures_of_their_kind_never_seen(exposed, synthetic_root: Path) -> None:
    plain, with_outliers, _, _, work = exposed
    unseen = torch.from_numpy(
        np.stack([np.asarray(Image.open(p)) for p in sorted(_outliers(work / "unseen", 24, seed=9).rglob("*.png"))])
    ).permute(0, 3, 1, 2)
    # how far the answer on grey pictures it never saw is from the uniform one: the term's own measure, less log K
    before, after = (uniform_cross_entropy(_logits(run.out, unseen)).item() - math.log(10) for run in exposed[:2])
    # 0.05-0.12 without the term and 0.006-0.021 with it (seeds 0, 1 and 2, float32): under a quarter each time. A
    # run the flag did not change would read the same twice, a ratio of 1
    assert after < 0.4 * before, (before, after)
    photos = load_images(synthetic_root).images
    top = [_logits(with_outliers.out, x).softmax(1).max(1).values.mean().item() for x in (photos, unseen)]
    assert top[0] > 2 * top[1], top  # the classes still get a clear answer (0.47 against 0.14 here)
    assert with_outliers.final["val_accuracy"] >= 0.6 and plain.final["val_accuracy"] >= 0.6


def test_the_run_records_the_outliers_and_lists_the_file_it_could_not_read(exposed) -> None:
    _, with_outliers, outliers, messages, _ = exposed
    record = json.loads((with_outliers.out / "last.json").read_text())["outliers"]
    assert record["photos"] == 40 and record["skipped"] == 1 and record["folder"] == str(outliers)
    assert len(record["sha256"]) == 64
    skipped = json.loads((with_outliers.out / "skipped.json").read_text())
    assert [Path(s["path"]).name for s in skipped] == ["broken.png"]
    assert any("outlier exposure: 40 photos" in m for m in messages)
    assert json.loads((with_outliers.out / "config.json").read_text())["outliers"] == str(outliers)


def test_a_network_trained_with_outliers_says_none_by_max_softmax_the_others_by_energy(
    exposed, synthetic_root: Path, tmp_path: Path
) -> None:
    """The outlier loss leaves the level of a flat answer free, so energy cannot place it; its maximum softmax is
    1/K whatever the level. Training's own fit and `heritage data none-fit` without --score both follow the record."""
    plain, with_outliers, *_ = exposed
    scores = [json.loads((run.out / "last.json").read_text())["open_set"]["score"] for run in (plain, with_outliers)]
    assert scores == ["energy", "max_softmax"]
    for run, expected in ((plain, "energy"), (with_outliers, "max_softmax")):
        out = tmp_path / f"{run.out.name}-fit"
        assert (
            main(["data", "none-fit", "--model", str(run.out), "--data", str(synthetic_root), "--out", str(out), "-q"])
            == 0
        )
        record = json.loads(out.with_suffix(".json").read_text())["open_set"]
        assert record["score"] == expected and f"--score {expected}" in record["command"]


def test_a_run_with_outliers_resumes_exactly_and_refuses_outliers_that_changed(
    exposed, synthetic_root: Path, tmp_path: Path
) -> None:
    _, whole, outliers, _, _ = exposed
    config = _config(synthetic_root, tmp_path / "cut", outliers=str(outliers))
    stopped = train(config, log=lambda _: None, should_stop=lambda epoch, step: (epoch, step) == (3, 2))
    assert stopped.interrupted
    resumed = train(replace(config, resume=True), log=lambda _: None)
    assert [r["val_accuracy"] for r in resumed.history] == [r["val_accuracy"] for r in whole.history]
    a, b = load_tensors(whole.out / "last.safetensors"), load_tensors(tmp_path / "cut" / "last.safetensors")
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)

    changed = tmp_path / "changed"
    _outliers(changed, 40, seed=1)
    config = _config(synthetic_root, tmp_path / "cut2", outliers=str(changed))
    train(config, log=lambda _: None, should_stop=lambda epoch, step: (epoch, step) == (0, 2))
    Image.new("RGB", (64, 64), (90, 90, 90)).save(changed / "walls" / "new.png")
    with pytest.raises(ValueError, match=r"--outliers .* not those the run began with"):
        train(replace(config, resume=True), log=lambda _: None)


def test_a_resume_refused_for_changed_outliers_leaves_the_run_folder_as_it_was(
    synthetic_root: Path, tmp_path: Path
) -> None:
    """The outliers are checked before config.json, skipped.json and split.json are written again."""
    outliers = _outliers(tmp_path / "none", 12, seed=2)
    out = tmp_path / "run"
    config = _config(synthetic_root, out, epochs=2, outliers=str(outliers))
    train(config, log=lambda _: None, should_stop=lambda epoch, step: (epoch, step) == (0, 2))

    def snapshot() -> dict[str, tuple[bytes, int]]:  # the lock file is rewritten by whoever takes it
        files = (f for f in out.rglob("*") if f.is_file() and f.name != trainstate.RUN_LOCK)
        return {str(f.relative_to(out)): (f.read_bytes(), f.stat().st_mtime_ns) for f in files}

    before = snapshot()
    assert {"config.json", "skipped.json", "split.json", "resume.safetensors"} <= set(before)
    Image.new("RGB", (64, 64), (90, 90, 90)).save(next((outliers / "walls").iterdir()))  # a photo changed
    time.sleep(0.01)  # a file written again would get another mtime
    with pytest.raises(ValueError, match=r"--outliers .* not those the run began with \(a file was added"):
        train(replace(config, resume=True), log=lambda _: None)
    assert snapshot() == before


def test_a_missing_outliers_folder_is_one_line_and_exit_2(synthetic_root: Path, tmp_path: Path, capsys) -> None:
    code = main(
        ["train", "--data", str(synthetic_root), "--out", str(tmp_path / "run"), "--outliers", str(tmp_path / "no")]
    )
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.count("\n") == 0
    assert f"--outliers {tmp_path / 'no'}: not a folder" in error
