from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from heritage_cnn import cli
from heritage_cnn.data import ImageError
from heritage_cnn.predict import Classifier, sort_photos


@pytest.fixture(scope="module")
def classifier(tiny_run) -> Classifier:
    return Classifier.load(tiny_run.checkpoint)


def _survey(synthetic_root: Path, root: Path) -> Path:
    """A messy survey folder: photos from a few classes in nested folders, a duplicate name, a broken file."""
    (root / "day1" / "nave").mkdir(parents=True)
    (root / "day2").mkdir()
    for i, name in enumerate(["altar", "gargoyle", "stained_glass"]):
        shutil.copy(synthetic_root / name / "000.png", root / "day1" / f"{name}.png")
        shutil.copy(synthetic_root / name / "001.png", root / "day2" / f"{name}.png")  # same name, other photo
        Image.open(synthetic_root / name / "002.png").convert("RGB").save(
            root / "day1" / "nave" / f"{name}_{i}.jpg", quality=95
        )
    (root / "day2" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    return root


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_predict_accepts_paths_pil_images_and_arrays(classifier: Classifier, synthetic_root: Path) -> None:
    path = synthetic_root / "gargoyle" / "003.png"
    pil = Image.open(path)
    array = np.asarray(pil.convert("RGB"))
    by_path, by_pil, by_array = (classifier.predict(x)[0] for x in (path, pil, array))
    assert by_path.label == by_pil.label == by_array.label == "gargoyle"
    assert by_path.probability == pytest.approx(by_pil.probability, abs=1e-6)
    assert by_path.top[0][0] == "gargoyle" and len(by_path.top) == 3
    assert by_path.top[0][1] >= by_path.top[1][1] >= by_path.top[2][1]
    with pytest.raises(ImageError, match="HxWx3 uint8"):
        classifier.predict(np.zeros((4, 4), dtype=np.float32))


def test_any_size_mode_and_format(classifier: Classifier, synthetic_root: Path, tmp_path: Path) -> None:
    photo = Image.open(synthetic_root / "vault" / "004.png").convert("RGB").resize((300, 200))
    photo.save(tmp_path / "wide.tif")
    photo.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    photo.convert("P").save(tmp_path / "palette.gif")
    photo.convert("RGBA").save(tmp_path / "rgba.webp", lossless=True)
    photo.save(tmp_path / "plain.bmp")
    predictions = classifier.predict(sorted(tmp_path.iterdir()))
    assert len(predictions) == 5 and all(0 < p.probability <= 1 for p in predictions)


def test_predict_command_formats_and_skips_bad_files(
    tiny_run, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    survey = _survey(synthetic_root, tmp_path / "survey")
    model = str(tiny_run.checkpoint)
    assert cli.main(["predict", "--model", model, str(survey), "--format", "json"]) == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert len(rows) == 9 and {"path", "label", "probability", "top"} <= set(rows[0])
    assert "broken.jpg" in captured.err and "1 of 10 file(s) could not be read" in captured.err
    assert cli.main(["predict", "--model", model, str(survey / "day1" / "altar.png"), "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "path,class,probability,top" and lines[1].split(",")[1] == "altar"
    assert cli.main(["predict", "--model", model, str(survey / "day2" / "broken.jpg")]) == 2


def test_sort_copies_never_touches_sources_and_resumes(
    classifier: Classifier, synthetic_root: Path, tmp_path: Path
) -> None:
    survey = _survey(synthetic_root, tmp_path / "survey")
    before = _tree_digest(survey)
    out = tmp_path / "sorted"
    first = sort_photos(classifier, survey, out, min_confidence=0.0, progress=False)
    assert _tree_digest(survey) == before  # nothing moved, changed or deleted
    assert first.placed == 9 and first.already_done == 0 and [Path(p).name for p, _ in first.skipped] == ["broken.jpg"]
    altars = sorted(p.name for p in (out / "altar").iterdir())
    assert altars == ["altar-1.png", "altar.png", "altar_0.jpg"]  # a name collision gets a suffix
    with open(out / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 9 and all(Path(r["destination"]).exists() for r in rows)
    second = sort_photos(classifier, survey, out, min_confidence=0.0, progress=False)
    assert second.placed == 0 and second.already_done == 9
    assert sum(1 for p in out.rglob("*") if p.is_file() and p.parent != out) == 9


def test_sort_threshold_link_mode_and_refusals(classifier: Classifier, synthetic_root: Path, tmp_path: Path) -> None:
    survey = _survey(synthetic_root, tmp_path / "survey")
    summary = sort_photos(classifier, survey, tmp_path / "unsure", min_confidence=1.0, mode="link", progress=False)
    assert summary.uncertain == 9 and len(list((tmp_path / "unsure" / "_uncertain").iterdir())) == 9
    linked = next((tmp_path / "unsure" / "_uncertain").iterdir())
    assert linked.stat().st_nlink == 2 or linked.is_symlink()
    with pytest.raises(ValueError, match="must not be inside the input folder"):
        sort_photos(classifier, survey, survey / "out", progress=False)
    with pytest.raises(ValueError, match="must not be inside the output folder"):
        sort_photos(classifier, survey / "day1", survey, progress=False)
    with pytest.raises(ValueError, match="min-confidence"):
        sort_photos(classifier, survey, tmp_path / "x", min_confidence=1.5, progress=False)


def test_test_time_augmentation_in_classifier_and_commands(
    tiny_run, classifier: Classifier, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = sorted(synthetic_root.rglob("*.png"))[:6]
    multi = Classifier.load(tiny_run.checkpoint, tta="multi")
    plain_probs = [p.probability for p in classifier.predict(photos)]
    multi_preds = multi.predict(photos)
    assert all(0 < p.probability <= 1 for p in multi_preds) and [p.probability for p in multi_preds] != plain_probs
    with pytest.raises(ValueError, match="unknown test-time augmentation"):
        Classifier.load(tiny_run.checkpoint, tta="crops")
    model = str(tiny_run.checkpoint)
    # the photo after the flag stays a photo (no optional value that could swallow it)
    assert cli.main(["predict", "--model", model, "--tta-multi", str(photos[0]), "--format", "csv"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    with pytest.raises(SystemExit):
        cli.main(["predict", "--model", model, "--tta", "--tta-multi", str(photos[0])])
