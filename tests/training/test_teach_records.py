"""What a taught model records and what `heritage teach` says: its parent's validation figure as the parent's, never
its own; the parent's path wherever teach ran; the corrections it learned from, not those it skipped."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from conftest import CLASSES, NEW, _fresh, _photos
from heritage_cnn.cli.main import main
from heritage_cnn.data.split import perceptual_hashes
from heritage_cnn.inference.classifier import Classifier
from heritage_cnn.inference.evaluate import near_any, trained_on
from heritage_cnn.inference.teach_photos import MIN_NEW_PHOTOS, TeachPhotos, read_new_classes
from heritage_cnn.models.checkpoint import checkpoint_files, load_checkpoint
from heritage_cnn.training.teach import known_already, teach


def _meta(weights: Path) -> dict:
    return json.loads(checkpoint_files(weights)[1].read_text(encoding="utf-8"))


def test_a_taught_model_keeps_its_parents_validation_figure_as_the_parents(nine, new_folder, tmp_path) -> None:
    """The QA case: the taught model's JSON carried the parent's `validation`, which the web page showed as the
    taught model's accuracy ("12 classes, 94.5% right on its validation photos"), measured or not."""
    parent = load_checkpoint(nine)
    assert parent.info["validation"]["val_accuracy"] is not None
    first = teach(parent, read_new_classes(new_folder, parent.classes), tmp_path / "first", log=lambda _: None)
    meta = _meta(first.path)
    assert "validation" not in meta and meta["taught"]["parent"]["validation"] == parent.info["validation"]
    more = tmp_path / "more"
    _photos(more / "portal", 5, MIN_NEW_PHOTOS, seed=21)
    child = load_checkpoint(first.path)
    second = teach(child, read_new_classes(more, child.classes), tmp_path / "second", log=lambda _: None)
    meta = _meta(second.path)
    assert "validation" not in meta and meta["taught"]["parent"]["validation"] is None  # nobody measured the first
    assert meta["taught"]["parent"]["taught"]["classes_added"] == [NEW]


def test_the_parents_path_is_recorded_whole_wherever_teach_ran(nine, new_folder, tmp_path, monkeypatch) -> None:
    """The QA case: from the parent's folder with `--model ./fast` the record said `fast.safetensors`, which reads as
    the shipped model; from elsewhere, a path relative to a folder the record does not name."""
    monkeypatch.chdir(nine.parent)
    out = tmp_path / "m"
    assert main(["teach", str(new_folder), "--model", f"./{nine.stem}", "--out", str(out), "--steps", "20", "-q"]) == 0
    recorded = _meta(out.with_suffix(".safetensors"))["taught"]["parent"]["path"]
    assert recorded == str(nine.resolve()) and Path(recorded).is_absolute()


def _training_photos(parent, synthetic_root: Path, name: str, count: int) -> list[Path]:
    """`count` photos of class `name` that the parent trained on (its `trained_on` record holds their hashes)."""
    files = sorted((synthetic_root / name).iterdir())
    images = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1) for f in files])
    known, distance = trained_on(parent)
    trained = near_any(perceptual_hashes(images), known, distance)
    return [f for f, seen in zip(files, trained, strict=True) if seen][:count]


def test_the_corrections_line_counts_the_photos_learned_from(
    nine, new_folder, synthetic_root, tmp_path, monkeypatch, capsys
) -> None:
    """The QA case: "corrections: 0 of the 3 photo(s) the parent answered otherwise" counted a photo skipped as one of
    the model's training photos, which was never learned. Here: fresh altars labelled apse (learned) and three altars
    the parent trained on labelled apse (skipped); the line counts the first only and names the skipped apart."""
    parent = load_checkpoint(nine)
    vault = read_new_classes(new_folder, parent.classes)
    fresh = torch.from_numpy(_fresh(CLASSES.index("altar"), 6, seed=3)).permute(0, 3, 1, 2).contiguous()
    old = _training_photos(parent, synthetic_root, "altar", 3)
    trained = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1) for f in old])
    known = torch.cat([fresh, trained])
    names = [f"fresh_{i}.png" for i in range(len(fresh))] + [str(f) for f in old]
    photos = TeachPhotos(
        torch.cat([vault.images, known]),
        [*vault.labels, *["apse"] * len(known)],
        [*vault.paths, *names],
        [*vault.digests, *(f"{i:064x}" for i in range(len(known)))],
        [*vault.kinds, *["moved"] * len(known)],
    )
    learned, _, skipped = known_already(photos, perceptual_hashes(photos.images), parent)
    answers = Classifier(parent, tta="none").probabilities(known).argmax(1).tolist()
    otherwise = {name for name, a in zip(names, answers, strict=True) if parent.classes[a] != "apse"}
    skipped_paths = {path for path, _ in skipped}
    assert len(old) == 3 and set(map(str, old)) <= skipped_paths and otherwise & set(map(str, old))  # the QA case
    wrong = len([p for p in learned.paths if p in otherwise])
    assert wrong > 0
    monkeypatch.setattr("heritage_cnn.cli.teach._photos", lambda *_: photos)
    assert main(["teach", "--model", str(nine), "--out", str(tmp_path / "m"), "--steps", "50"]) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("corrections: ")]
    counted = re.match(r"corrections: (\d+) of the (\d+) photo\(s\) the parent answered otherwise", line)
    assert counted is not None and int(counted.group(2)) == wrong, line
    alike = len(skipped_paths & set(names))  # the three, and any fresh photo that looks like one it trained on
    assert line.endswith(f"; {alike} more of known classes skipped, not learned (listed above)"), line
