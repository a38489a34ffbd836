"""`train` (training/loop.py): what a run learns and records, each recipe option, and resuming to the
same weights; what goes wrong in a run is test_loop_safety.py's."""

from __future__ import annotations

import functools
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from _loop_helpers import _config

from heritage_cnn.base.io import load_tensors
from heritage_cnn.data.augment import AugmentConfig, augment_batch
from heritage_cnn.data.folders import load_images
from heritage_cnn.inference.evaluate import predict_logits
from heritage_cnn.models.checkpoint import load_checkpoint
from heritage_cnn.training.epoch import precise_batch_norm
from heritage_cnn.training.loop import train
from heritage_cnn.training.losses import consistency_loss
from heritage_cnn.training.prepare import prepare_data


def test_tiny_model_learns_the_synthetic_set(tiny_run) -> None:
    assert tiny_run.final["val_accuracy"] >= 0.9
    assert tiny_run.train_size + tiny_run.val_size == 240 and 40 <= tiny_run.val_size <= 56
    out = tiny_run.out
    for name in (
        "last.safetensors",
        "last.json",
        "best.safetensors",
        "metrics.csv",
        "metrics.json",
        "curves.png",
        "config.json",
        "split.json",
    ):
        assert (out / name).exists(), name
    meta = json.loads((out / "last.json").read_text())
    assert meta["classes"][4] == "dome(inner)" and meta["display_names"][4] == "dome (inner)"
    assert meta["seed"] == 0 and meta["model_config"]["widths"] == [8, 16]
    assert len(meta["normalisation"]["mean"]) == 3
    header = (out / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,lr,train_loss,train_accuracy,val_loss,val_accuracy")


def test_checkpoint_round_trip_gives_identical_predictions(tiny_run, synthetic_root: Path) -> None:
    checkpoint = load_checkpoint(tiny_run.out / "last.safetensors")
    images = load_images(synthetic_root).images[:16]
    a = predict_logits(checkpoint.model, images, checkpoint.normalise)
    again = load_checkpoint(tiny_run.out / "last")
    b = predict_logits(again.model, images, again.normalise)
    assert torch.equal(a, b)
    assert checkpoint.model.config.widths == (8, 16) and checkpoint.classes == tiny_run.classes


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_after_interruption_matches_an_uninterrupted_run(
    optimizer: str, synthetic_root: Path, tmp_path: Path
) -> None:
    """Muon's momentum (one optimizer inside another) survives the resume file like AdamW's state."""
    whole = train(_config(synthetic_root, tmp_path / "whole", optimizer=optimizer), log=lambda _: None)
    stopped = train(
        _config(synthetic_root, tmp_path / "cut", optimizer=optimizer),
        log=lambda _: None,
        should_stop=lambda epoch, step: (epoch, step) == (1, 2),
    )
    assert stopped.interrupted and len(stopped.history) == 1
    resumed = train(_config(synthetic_root, tmp_path / "cut", resume=True, optimizer=optimizer), log=lambda _: None)
    assert not resumed.interrupted
    assert [r["val_accuracy"] for r in resumed.history] == [r["val_accuracy"] for r in whole.history]
    assert [r["train_loss"] for r in resumed.history] == pytest.approx(
        [r["train_loss"] for r in whole.history], rel=1e-6
    )
    a, b = load_tensors(tmp_path / "whole" / "last.safetensors"), load_tensors(tmp_path / "cut" / "last.safetensors")
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)


def test_resume_with_weight_average_and_batch_mixing_matches_an_uninterrupted_run(
    synthetic_root: Path, tmp_path: Path
) -> None:
    """The EMA, the raw weights under it and the MixUp/CutMix draws all survive an interruption."""
    recipe = {"ema_decay": 0.9, "mixup_alpha": 0.2, "cutmix_alpha": 1.0}
    whole = train(_config(synthetic_root, tmp_path / "whole", **recipe), log=lambda _: None)
    stopped = train(
        _config(synthetic_root, tmp_path / "cut", **recipe),
        log=lambda _: None,
        should_stop=lambda epoch, step: (epoch, step) == (1, 2),
    )
    assert stopped.interrupted
    resumed = train(_config(synthetic_root, tmp_path / "cut", resume=True, **recipe), log=lambda _: None)
    for key in ("val_accuracy", "raw_val_accuracy"):
        assert [r[key] for r in resumed.history] == [r[key] for r in whole.history]
    a, b = load_tensors(tmp_path / "whole" / "last.safetensors"), load_tensors(tmp_path / "cut" / "last.safetensors")
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)


def test_consistency_training_resumes_exactly_and_pulls_the_views_together(
    synthetic_root: Path, tmp_path: Path
) -> None:
    """Both views' augmentation draws survive an interruption; the term makes the views' answers closer."""
    config = functools.partial(_config, synthetic_root, lr=0.01)  # a rate at which 3 epochs learn (0.6 accuracy)
    whole = train(config(tmp_path / "whole", consistency_weight=12.0), log=lambda _: None)
    train(
        config(tmp_path / "cut", consistency_weight=12.0),
        log=lambda _: None,
        should_stop=lambda epoch, step: (epoch, step) == (1, 2),
    )
    resumed = train(config(tmp_path / "cut", resume=True, consistency_weight=12.0), log=lambda _: None)
    assert [r["val_accuracy"] for r in resumed.history] == [r["val_accuracy"] for r in whole.history]
    a, b = load_tensors(tmp_path / "whole" / "last.safetensors"), load_tensors(tmp_path / "cut" / "last.safetensors")
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    plain = train(config(tmp_path / "plain"), log=lambda _: None)
    images = load_images(synthetic_root).images
    disagreement = []
    for run in (plain, whole):
        model = load_checkpoint(run.checkpoint)
        generator = torch.Generator().manual_seed(5)
        views = [augment_batch(images, AugmentConfig(), generator) for _ in range(2)]
        with torch.no_grad():
            logits = torch.cat([model.model.eval()(model.normalise(v)) for v in views])
        disagreement.append(consistency_loss(logits).item())
    # Same seed, same draws: the term cuts the divergence between two views of all 240 photos to 0.3-0.4 of the
    # plain run's (seeds 0 and 1, float32); without it the two runs would be the same run, a ratio of 1
    assert disagreement[1] < 0.6 * disagreement[0], disagreement


def test_bf16_training_learns_resumes_exactly_and_is_recorded(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default on CPUs with native bf16 (autocast), run on every CPU: autocast emulates it where the kernels
    have no bf16, so an AVX2 machine checks the path an Intel Xeon takes."""
    from heritage_cnn.base import devices

    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    logged: list[str] = []
    whole = train(_config(synthetic_root, tmp_path / "whole", amp=True, lr=0.01), log=logged.append)
    assert any("torch.bfloat16 autocast" in line for line in logged), logged
    assert whole.final["val_accuracy"] >= 0.5  # 3 epochs at this rate learn the set: chance is 0.1
    machine = load_checkpoint(whole.checkpoint).info["trained_on_machine"]
    assert machine["autocast"] == "bfloat16" and machine["cpu"]
    train(
        _config(synthetic_root, tmp_path / "cut", amp=True, lr=0.01),
        log=lambda _: None,
        should_stop=lambda epoch, step: (epoch, step) == (1, 3),
    )
    resumed = train(_config(synthetic_root, tmp_path / "cut", amp=True, lr=0.01, resume=True), log=lambda _: None)
    a, b = load_tensors(whole.checkpoint), load_tensors(resumed.checkpoint)
    assert all(torch.equal(a[k], b[k]) for k in a)
    plain = train(_config(synthetic_root, tmp_path / "plain", lr=0.01), log=lambda _: None)
    assert load_checkpoint(plain.checkpoint).info["trained_on_machine"]["autocast"] == "none"


def test_train_gives_the_callers_thread_count_back(synthetic_root: Path, tmp_path: Path) -> None:
    """--threads holds for the run only: a caller's later results must not depend on a run it made before."""
    before = torch.get_num_threads()
    run_threads = 1 if before > 1 else 2
    train(
        _config(synthetic_root, tmp_path / "run", epochs=1, threads=run_threads, limit_per_class=8), log=lambda _: None
    )
    assert torch.get_num_threads() == before


def test_saved_weights_are_the_moving_average_of_the_raw_weights(synthetic_root: Path, tmp_path: Path) -> None:
    """With --ema the checkpoint holds the average, which follows the raw weights as the decay goes to 0."""
    for decay, same in ((1e-9, True), (0.9, False)):
        run = train(_config(synthetic_root, tmp_path / str(decay), epochs=1, ema_decay=decay), log=lambda _: None)
        state = load_tensors(Path(run.out) / "resume.safetensors")
        saved = load_tensors(run.checkpoint)
        for name in (k for k in saved if k.endswith(("conv.weight", "running_mean"))):
            assert torch.equal(state[f"ema.module.{name}"], saved[name])
            assert torch.allclose(state[f"raw.{name}"], saved[name], atol=1e-6) == same, (decay, name)
        assert "raw_val_accuracy" in run.final


def test_same_seed_same_weights_and_other_seed_differs(synthetic_root: Path, tmp_path: Path) -> None:
    runs = [
        train(_config(synthetic_root, tmp_path / name, epochs=1, seed=seed), log=lambda _: None)
        for name, seed in (("a", 0), ("b", 0), ("c", 1))
    ]
    a, b, c = (load_tensors(r.checkpoint) for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_precise_statistics_change_only_batch_norm_and_are_what_the_checkpoint_validates_as(
    synthetic_root: Path, tmp_path: Path
) -> None:
    """--bn-statistics precise: the same weights as the running run, batch norm's statistics recomputed over the
    training photos (nothing else), the recorded validation that of the saved network, and resuming the finished
    run writes the same file again."""
    running = train(_config(synthetic_root, tmp_path / "running", epochs=2), log=lambda _: None)
    lines: list[str] = []
    precise = train(_config(synthetic_root, tmp_path / "precise", epochs=2, bn_statistics="precise"), log=lines.append)
    a, b = load_tensors(running.checkpoint), load_tensors(precise.checkpoint)
    statistics = {k for k in a if k.endswith(("running_mean", "running_var"))}
    # the network's own tensors; the none-of-these statistics (`openset.*`) are fitted on the saved network, after
    weights = {k for k in a if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    weights -= {k for k in a if k.startswith("openset.")}
    assert statistics and weights and all(torch.equal(a[k], b[k]) for k in weights)
    assert all(not torch.equal(a[k], b[k]) for k in statistics)

    checkpoint = load_checkpoint(precise.checkpoint)
    _, train_set, val_set = prepare_data(_config(synthetic_root, tmp_path / "x"), log=lambda _: None)
    again = load_checkpoint(running.checkpoint).model.to(memory_format=torch.channels_last)  # as the run holds it
    precise_batch_norm(again, train_set.images, checkpoint.normalise, 64, torch.device("cpu"))
    assert all(torch.equal(again.state_dict()[k], b[k]) for k in statistics)  # the same kernels, the same sums

    accuracy = predict_logits(checkpoint.model, val_set.images, checkpoint.normalise).argmax(1) == val_set.labels
    record = checkpoint.info["bn_statistics"]
    assert record["photos"] == len(train_set) and record["statistics"] == "precise"
    assert checkpoint.info["validation"]["val_accuracy"] == pytest.approx(accuracy.float().mean().item())
    assert precise.final["val_accuracy"] == checkpoint.info["validation"]["val_accuracy"]  # what `train` prints
    assert record["running_statistics_validation"]["val_accuracy"] == running.final["val_accuracy"]
    assert any(line.startswith("precise batch norm: statistics over") for line in lines)

    train(_config(synthetic_root, tmp_path / "precise", epochs=2, bn_statistics="precise", resume=True), log=print)
    resumed = load_tensors(precise.checkpoint)
    assert all(torch.equal(resumed[k], b[k]) for k in b)


def test_distillation_follows_the_teacher_not_the_labels(tiny_run, synthetic_root: Path, tmp_path: Path) -> None:
    """A teacher that calls every class c "c + 1" (its last layer's rows rolled): with the teacher's soft
    targets as the whole loss, the student learns that mapping, not the folder labels."""
    from heritage_cnn.models.checkpoint import save_checkpoint

    teacher = load_checkpoint(tiny_run.out / "last")
    fc2 = teacher.model.head.fc2
    with torch.no_grad():
        fc2.weight.copy_(fc2.weight.roll(1, dims=0))
        fc2.bias.copy_(fc2.bias.roll(1, dims=0))
    save_checkpoint(tmp_path / "teacher", teacher)
    base = _config(synthetic_root, tmp_path / "x", epochs=8, lr=1e-2, label_smoothing=0.0)
    # temperature 0.5 sharpens the tiny teacher (mean top probability ~0.6 at T = 1) so 8 epochs suffice
    student = train(
        replace(
            base,
            out=str(tmp_path / "student"),
            teachers=(str(tmp_path / "teacher"),),
            distill_weight=1.0,
            distill_temperature=0.5,
        ),
        log=lambda _: None,
    )
    images = load_images(synthetic_root)
    model = load_checkpoint(student.checkpoint)
    predicted = predict_logits(model.model, images.images, model.normalise).argmax(1)
    taught = predict_logits(teacher.model, images.images, teacher.normalise).argmax(1)
    assert (taught == images.labels).float().mean() < 0.2  # the rolled teacher is wrong on purpose
    assert (predicted == taught).float().mean() > 0.85  # and the student agrees with it
    assert student.final["val_accuracy"] < 0.2
    with pytest.raises(ValueError, match="distill"):
        replace(base, distill_weight=1.5)
    with pytest.raises(ValueError, match="classes"):  # a teacher for other classes is refused by name
        other = load_checkpoint(tmp_path / "teacher")
        other.classes = [f"class{i}" for i in range(10)]
        save_checkpoint(tmp_path / "other", other)
        train(replace(base, out=str(tmp_path / "y"), teachers=(str(tmp_path / "other"),)), log=lambda _: None)


def test_checkpoints_record_the_training_images_and_the_machine(tiny_run) -> None:
    from heritage_cnn.data.folders import load_images
    from heritage_cnn.data.split import NEAR_DUPLICATE_DISTANCE, perceptual_hashes

    meta = json.loads((tiny_run.out / "last.json").read_text())
    record = meta["trained_on"]
    assert record["distance"] == NEAR_DUPLICATE_DISTANCE and len(record["phash"]) == tiny_run.train_size
    assert all(len(h) == 16 and int(h, 16) >= 0 for h in record["phash"])
    val_paths = set(json.loads((tiny_run.out / "split.json").read_text())["val_paths"])
    images = load_images(Path(json.loads((tiny_run.out / "config.json").read_text())["data"]))
    train_images = images.subset([i for i, p in enumerate(images.paths) if p not in val_paths])
    assert record["phash"] == [f"{int(h):016x}" for h in perceptual_hashes(train_images.images)]
    machine = meta["trained_on_machine"]
    assert machine["torch"] == torch.__version__ and machine["device"] == "cpu" and machine["cpu"]
