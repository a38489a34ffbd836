"""`heritage teach`: a new class is learned, the known classes keep their answers, the parent is never touched;
what teaching costs the known classes is test_teach_cost.py's."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil

import numpy as np
import pytest
import torch

from conftest import CLASSES, NEW, NEW_LABEL, _fresh, _nine_data, _photos, file_digest
from heritage_cnn.base.io import CheckpointError
from heritage_cnn.cli.main import main
from heritage_cnn.data.folders import DatasetError, load_images
from heritage_cnn.data.split import NEAR_DUPLICATE_DISTANCE, perceptual_hashes
from heritage_cnn.inference.classifier import Classifier
from heritage_cnn.inference.evaluate import near_any
from heritage_cnn.inference.openset_fit import fit_operating_point
from heritage_cnn.inference.teach_photos import MIN_NEW_PHOTOS, TeachPhotos, read_new_classes
from heritage_cnn.models.checkpoint import checkpoint_files, load_checkpoint, save_ensemble
from heritage_cnn.models.ensemble import copy_model
from heritage_cnn.training.teach import known_already, replay_split, teach
from heritage_cnn.training.teach_fit import FitConfig


def test_a_new_class_is_learned_and_the_known_keep_their_answers(nine, new_folder, tmp_path) -> None:
    """Without --data: the known rows are frozen, so among the known classes every answer is the parent's."""
    parent = load_checkpoint(nine)
    before = {p: file_digest(p) for p in checkpoint_files(nine)}
    result = teach(parent, read_new_classes(new_folder, parent.classes), tmp_path / "taught", log=lambda _: None)
    assert result.added == [NEW] and result.classes == [*parent.classes, NEW]
    child = Classifier.load(tmp_path / "taught", bf16=False)
    assert np.mean([p.label == NEW for p in child.predict(list(_fresh(NEW_LABEL)))]) >= 0.8
    x = torch.from_numpy(np.concatenate([_fresh(c, 8) for c in range(9)])).permute(0, 3, 1, 2)
    p_old, p_new = Classifier(parent, bf16=False).probabilities(x), child.probabilities(x)
    assert torch.equal(p_old.argmax(1), p_new[:, :9].argmax(1))
    assert (p_new.argmax(1) < 9).float().mean().item() >= 0.95  # the new class takes almost none of the known photos
    assert {p: file_digest(p) for p in checkpoint_files(nine)} == before  # the parent is only read


def test_with_data_both_layers_are_fitted_and_none_of_these_is_fitted_again(nine, new_folder, synthetic_root, tmp_path):
    parent = load_checkpoint(nine)
    replayed, held_out = replay_split(load_images(_nine_data(synthetic_root, tmp_path)), parent)
    assert len(held_out) and len(replayed) == len(parent.info["trained_on"]["phash"])
    photos = read_new_classes(new_folder, parent.classes)
    teach(parent, photos, tmp_path / "taught", data=replayed, held_out=held_out, log=lambda _: None)
    child = load_checkpoint(tmp_path / "taught")
    assert not torch.equal(child.model.head.fc1.weight, parent.model.head.fc1.weight)
    classifier = Classifier(child, bf16=False)
    assert np.mean([p.label == NEW for p in classifier.predict(list(_fresh(NEW_LABEL)))]) >= 0.8
    # the known classes keep their answers: the new class takes almost none of their photos, and the head refitted on
    # the replayed photos is no worse on them than the parent (which has 64 of these 72 right)
    truth = [CLASSES[c] for c in range(9) for _ in range(8)]
    known = [p.label for c in range(9) for p in classifier.predict(list(_fresh(c, 8)))]
    before = [p.label for c in range(9) for p in Classifier(parent, bf16=False).predict(list(_fresh(c, 8)))]
    assert np.mean([label == NEW for label in known]) <= 0.05
    assert np.mean(np.array(known) == truth) >= np.mean(np.array(before) == truth)
    point = child.open_set  # fitted again on the parent's validation photos, by the parent's rule
    taught = near_any(perceptual_hashes(held_out.images), perceptual_hashes(photos.images), NEAR_DUPLICATE_DISTANCE)
    assert point is not None and point.fitted_on["val_photos"] == len(held_out) - taught.sum()  # none it was taught
    assert point.threshold != parent.open_set.threshold and point.stats[0].means.shape[0] == 10
    without = teach(parent, photos, tmp_path / "no_threshold", data=replayed, log=lambda _: None)
    assert load_checkpoint(without.path).open_set is None  # no validation photos: it cannot reject, and says so


def test_the_taught_model_records_what_it_learned(nine, new_folder, tmp_path) -> None:
    parent = load_checkpoint(nine)
    teach(parent, read_new_classes(new_folder, parent.classes), tmp_path / "taught", log=lambda _: None)
    meta = json.loads((tmp_path / "taught.json").read_text())
    record = meta["taught"]
    assert record["classes_added"] == [NEW]
    assert record["parent"]["generation"] == json.loads(checkpoint_files(nine)[1].read_text())["generation"]
    files = sorted((new_folder / NEW).iterdir())
    assert sorted(p["sha256"] for p in record["photos"]) == sorted(file_digest(p) for p in files)
    assert len(meta["trained_on"]["phash"]) == len(parent.info["trained_on"]["phash"]) + len(files)
    # the none-of-these record goes with it (fitted for these weights), with the new class's mean
    child = load_checkpoint(tmp_path / "taught")
    assert child.open_set is not None and child.open_set.threshold == parent.open_set.threshold
    assert child.open_set.stats[0].means.shape[0] == 10
    with pytest.raises(CheckpointError, match="never overwrites"):
        teach(parent, read_new_classes(new_folder, parent.classes), tmp_path / "taught", log=lambda _: None)


def test_photos_the_model_trained_on_are_not_learned_again(nine, synthetic_root, tmp_path) -> None:
    parent = load_checkpoint(nine)
    folder = tmp_path / "again" / "portal"
    shutil.copytree(synthetic_root / "altar", folder)  # photos the parent trained on, under a new name
    photos = read_new_classes(folder.parent, parent.classes)
    with pytest.raises(DatasetError, match=r"portal: \d+ photo\(s\) new to the model \(\d+ more look like") as refused:
        teach(parent, photos, tmp_path / "taught", log=lambda _: None)
    assert str(refused.value).startswith(f"{folder}: ")  # the folder, as the too-few-readable refusal names it
    assert sum(_counts(refused.value)) == len(photos.paths)
    assert not any(tmp_path.glob("taught.*"))


def test_nothing_to_learn_from_names_the_folders_it_read(nine, synthetic_root, tmp_path) -> None:
    """Every photo one the parent trained on: the refusal named no folder, so the user could not tell which."""
    parent = load_checkpoint(nine)
    for name in ("altar", "apse"):
        shutil.copytree(synthetic_root / name, tmp_path / "source" / name / "portal", dirs_exist_ok=True)
    known = []
    for name in ("altar", "apse"):
        photos = read_new_classes(tmp_path / "source" / name, parent.classes)
        known += known_already(photos, perceptual_hashes(photos.images), parent)[2]
    folder = tmp_path / "again" / "portal"
    folder.mkdir(parents=True)
    for n, (path, _) in enumerate(known):  # only photos the parent trained on, at least the 20 a new class needs
        shutil.copy(path, folder / f"{n}.png")
    again = read_new_classes(folder.parent, parent.classes)
    with pytest.raises(DatasetError) as refused:
        teach(parent, again, tmp_path / "taught", log=lambda _: None)
    assert str(refused.value) == (
        f"{folder}: nothing to learn from: all {len(known)} photo(s) look like photos the model trained on (its "
        "training data, or photos it was taught already)"
    )


def test_the_command_lists_the_data_files_it_could_not_read(nine, new_folder, synthetic_root, tmp_path, capsys):
    """An unreadable file of --data was left out of the replay without a word; it is named and counted now, and a
    name with a line break is shown escaped on its one line."""
    data = _nine_data(synthetic_root, tmp_path)
    (data / "altar" / "bad\nname.jpg").write_text("not a photo")
    out = tmp_path / "m"
    code = main(
        ["teach", str(new_folder), "--data", str(data), "--model", str(nine), "--out", str(out), "--steps", "2"]
    )
    captured = capsys.readouterr()
    printed = captured.out.splitlines()
    assert code == 0, captured.err
    assert f"skipped {data / 'altar' / 'bad'}\\n{'name.jpg'}: not a recognised image format" in printed
    assert "--data: 1 unreadable file(s) skipped (the first ten listed above)" in printed


def test_the_command_names_the_folder_that_dataset_copies_leave_too_few(nine, synthetic_root, tmp_path, capsys):
    folder = tmp_path / "few" / "portal"
    shutil.copytree(synthetic_root / "altar", folder)  # photos the parent trained on, under a new name
    code = main(["teach", str(folder.parent), "--model", str(nine), "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith(f"heritage: error: {folder}: "), err
    assert "photo(s) new to the model" in err and not any(tmp_path.glob("m.*"))


def _counts(error: Exception) -> tuple[int, int]:
    """(photos new to the model, photos that look like its training data) in a too-few refusal."""
    new, alike = re.search(r"(\d+) photo\(s\) new to the model \((\d+) more", str(error)).groups()
    return int(new), int(alike)


def test_the_photos_too_few_are_counted_for_their_class_alone(nine, new_folder, synthetic_root, tmp_path) -> None:
    """A class of known photos beside a class of new ones that holds a few known photos too: the refusal counts the
    first class's photos only."""
    parent = load_checkpoint(nine)
    folder = tmp_path / "both"
    shutil.copytree(synthetic_root / "altar", folder / "portal")
    shutil.copytree(new_folder / NEW, folder / NEW)
    for photo in sorted((synthetic_root / "apse").iterdir()):  # known photos in the other class as well
        shutil.copy(photo, folder / NEW / f"apse_{photo.name}")
    photos = read_new_classes(folder, parent.classes)
    portal = sum(label == "portal" for label in photos.labels)
    with pytest.raises(DatasetError, match="portal: ") as refused:
        teach(parent, photos, tmp_path / "taught", log=lambda _: None)
    new, alike = _counts(refused.value)
    assert alike > 0 and new + alike == portal  # the other class's photos are not counted


def test_an_ensemble_is_taught_member_by_member(nine, new_folder, synthetic_root, tmp_path) -> None:
    single = load_checkpoint(nine)
    twin = dataclasses.replace(single, model=copy_model(single.model))
    save_ensemble(tmp_path / "pair", [single, twin], names=["a", "b"])
    pair = load_checkpoint(tmp_path / "pair")
    images = load_images(_nine_data(synthetic_root, tmp_path))
    pair.open_set = fit_operating_point(pair, images, images.images)
    save_ensemble(tmp_path / "fitted", [pair.member(0), pair.member(1)], open_set=pair.open_set)
    parent = load_checkpoint(tmp_path / "fitted")
    assert parent.open_set is not None
    teach(parent, read_new_classes(new_folder, parent.classes), tmp_path / "taught", log=lambda _: None)
    child = load_checkpoint(tmp_path / "taught")
    assert child.member_count == 2 and child.classes[-1] == NEW
    assert child.open_set is not None  # fitted for the float16 weights the file stores
    assert "taught" in child.info
    # each member's validation figure was its parent member's, measured before its head was fitted again
    assert all("validation" in m for m in json.loads(checkpoint_files(parent.path)[1].read_text())["members"])
    assert not any("validation" in m for m in json.loads((tmp_path / "taught.json").read_text())["members"])


@pytest.mark.parametrize(
    ("name", "count", "message"),
    [
        ("portal", MIN_NEW_PHOTOS - 1, "needs at least 20"),
        ("altar", MIN_NEW_PHOTOS, "already a class of the model"),
        ("_none", MIN_NEW_PHOTOS, "reserved"),
        ("ａltar", MIN_NEW_PHOTOS, "names the model's class 'altar'"),  # fullwidth: one name after NFKC
        ("vault\u200b", MIN_NEW_PHOTOS, "'vault\\u200b' holds the invisible character U+200B"),
    ],
)
def test_a_folder_that_cannot_be_a_new_class_is_refused_in_one_line(nine, tmp_path, capsys, name, count, message):
    _photos(tmp_path / "new" / name, 3, count, seed=5)
    code = main(["teach", str(tmp_path / "new"), "--model", str(nine), "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not any(tmp_path.glob("m.*"))


def test_the_command_writes_a_model_every_command_takes(nine, new_folder, tmp_path, capsys) -> None:
    code = main(["teach", str(new_folder), "--model", str(nine), "--out", str(tmp_path / "m"), "--steps", "50"])
    out = capsys.readouterr().out
    assert code == 0 and "classes added: vault" in out
    code = main(["predict", str(new_folder / NEW / "000.png"), "--model", str(tmp_path / "m")])
    assert code == 0 and "vault" in capsys.readouterr().out


def test_fewer_steps_is_a_setting_not_ignored(nine, new_folder, tmp_path) -> None:
    parent = load_checkpoint(nine)
    photos = read_new_classes(new_folder, parent.classes)
    a = teach(parent, photos, tmp_path / "a", config=FitConfig(steps=1), log=lambda _: None)
    b = teach(parent, photos, tmp_path / "b", config=FitConfig(steps=200), log=lambda _: None)
    wa, wb = (load_checkpoint(r.path).model.head.fc2.weight for r in (a, b))
    assert not torch.equal(wa, wb)


@pytest.mark.parametrize("replay", ["stats", "data"])
def test_corrections_alone_move_the_known_classes(nine, synthetic_root, tmp_path, replay) -> None:
    """Ambiguous photos (half altar, half apse: the parent hesitates) corrected to apse, no new class: the taught
    model gives them the corrected label with more probability than the parent, with or without --data."""
    parent = load_checkpoint(nine)
    altar, apse = (_fresh(CLASSES.index(name), 24, seed=7).astype(np.float32) for name in ("altar", "apse"))
    pictures = (0.5 * altar + 0.5 * apse).astype(np.uint8)
    photos = TeachPhotos(
        torch.from_numpy(pictures).permute(0, 3, 1, 2).contiguous(),
        ["apse"] * len(pictures),
        [f"moved_{i}.png" for i in range(len(pictures))],
        [f"{i:064x}" for i in range(len(pictures))],
        ["moved"] * len(pictures),
    )
    data, held_out = None, None
    if replay == "data":
        data, held_out = replay_split(load_images(_nine_data(synthetic_root, tmp_path)), parent)
    result = teach(parent, photos, tmp_path / "taught", data=data, held_out=held_out, log=lambda _: None)
    assert result.added == [] and result.classes == parent.classes
    x = photos.images
    apse = parent.classes.index("apse")
    before = Classifier(parent, bf16=False).probabilities(x)[:, apse].mean()
    after = Classifier.load(result.path, bf16=False).probabilities(x)[:, apse].mean()
    assert after > before + 0.1


def test_data_without_a_class_the_model_knows_is_refused(nine, new_folder, synthetic_root, tmp_path) -> None:
    """A model taught `vault` earlier, then taught again with --data that has no vault photo: refused, not unlearned."""
    parent = load_checkpoint(nine)
    taught = teach(parent, read_new_classes(new_folder, parent.classes), tmp_path / "taught", log=lambda _: None)
    child = load_checkpoint(taught.path)
    replayed, _ = replay_split(load_images(_nine_data(synthetic_root, tmp_path), child.classes[:9]), child)
    other = tmp_path / "more"
    _photos(other / "portal", 5, MIN_NEW_PHOTOS, seed=21)
    with pytest.raises(DatasetError, match=r"--data: no photo the model trained on in class\(es\) vault"):
        teach(child, read_new_classes(other, child.classes), tmp_path / "again", replayed, log=lambda _: None)
    assert not any(tmp_path.glob("again.*"))


def test_the_none_of_these_refit_reads_the_features_the_fit_computed(nine, new_folder, synthetic_root, tmp_path):
    """The refit reuses the replayed photos' pooled features through the new head: the same statistics and threshold
    as a fit that runs the taught network over the photos again (float32 sums in another order: 1e-4)."""
    parent = load_checkpoint(nine)
    replayed, held_out = replay_split(load_images(_nine_data(synthetic_root, tmp_path)), parent)
    photos = read_new_classes(new_folder, parent.classes)
    teach(parent, photos, tmp_path / "taught", data=replayed, held_out=held_out, log=lambda _: None)
    child = load_checkpoint(tmp_path / "taught")
    point = child.open_set
    labels = [replayed.classes[i] for i in replayed.labels.tolist()] + photos.labels
    train = dataclasses.replace(
        replayed,
        images=torch.cat([replayed.images, photos.images]),
        labels=torch.tensor([child.classes.index(name) for name in labels]),
        paths=[*replayed.paths, *photos.paths],
        classes=child.classes,
        hashes=None,
    )
    again = fit_operating_point(
        child, train, held_out.images, point.score, point.layer, point.ridge, point.reject_share
    )
    assert torch.allclose(point.stats[0].means, again.stats[0].means, atol=1e-4)
    assert torch.allclose(point.stats[0].whitening, again.stats[0].whitening, rtol=1e-3, atol=1e-4)
    assert point.threshold == pytest.approx(again.threshold, rel=1e-4)
    with pytest.raises(ValueError, match="train_features"):
        fit_operating_point(child, train, held_out.images, train_features=torch.zeros(1, 3, 8))


def test_one_seed_gives_one_model(nine, new_folder, synthetic_root, tmp_path) -> None:
    """With --data the fit's dropout draws from the seed too: the same seed twice, the same weights."""
    parent = load_checkpoint(nine)
    replayed, _ = replay_split(load_images(_nine_data(synthetic_root, tmp_path)), parent)
    photos = read_new_classes(new_folder, parent.classes)
    config = FitConfig(hidden_steps=40)
    runs = [
        teach(parent, photos, tmp_path / name, replayed, dataclasses.replace(config, seed=seed), log=lambda _: None)
        for name, seed in (("a", 3), ("b", 3), ("c", 4))
    ]
    a, b, c = (load_checkpoint(r.path).model.head for r in runs)
    assert torch.equal(a.fc1.weight, b.fc1.weight) and torch.equal(a.fc2.weight, b.fc2.weight)
    assert not torch.equal(a.fc1.weight, c.fc1.weight)


@pytest.mark.parametrize("replay", ["stats", "data"])
def test_teach_leaves_the_callers_random_stream_alone(nine, new_folder, synthetic_root, tmp_path, replay) -> None:
    parent = load_checkpoint(nine)
    photos = read_new_classes(new_folder, parent.classes)
    replayed, held_out = (
        replay_split(load_images(_nine_data(synthetic_root, tmp_path)), parent) if replay == "data" else (None, None)
    )
    torch.manual_seed(5)
    expected = torch.rand(4)
    torch.manual_seed(5)
    config = FitConfig(steps=5, hidden_steps=5)
    teach(parent, photos, tmp_path / "m", replayed, config, log=lambda _: None, held_out=held_out)
    assert torch.equal(torch.rand(4), expected)
