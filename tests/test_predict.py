from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_survey
from heritage_cnn import cli
from heritage_cnn.data import ImageError
from heritage_cnn.predict import Classifier, Prediction, TopClass, format_predictions


def test_predict_accepts_paths_pil_images_and_arrays(classifier: Classifier, synthetic_root: Path) -> None:
    path = synthetic_root / "gargoyle" / "003.png"
    pil = Image.open(path)
    array = np.asarray(pil.convert("RGB"))
    by_path, by_pil, by_array = (classifier.predict(x)[0] for x in (path, pil, array))
    assert by_path.label == by_pil.label == by_array.label == "gargoyle"
    assert by_path.probability == pytest.approx(by_pil.probability, abs=1e-6)
    assert by_path.top[0] == TopClass("gargoyle", "gargoyle", by_path.probability) and len(by_path.top) == 3
    assert by_path.top[0].probability >= by_path.top[1].probability >= by_path.top[2].probability
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
    survey = make_survey(synthetic_root, tmp_path / "survey")
    model = str(tiny_run.checkpoint)
    assert cli.main(["predict", "--model", model, str(survey), "--format", "json"]) == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert len(rows) == 9 and list(rows[0]) == ["path", "label", "name", "probability", "top"]
    assert list(rows[0]["top"][0]) == ["label", "name", "probability"] and len(rows[0]["top"]) == 3
    assert "broken.jpg" in captured.err and "1 of 10 file(s) could not be read" in captured.err
    assert cli.main(["predict", "--model", model, str(survey / "day1" / "altar.png"), "--format", "csv"]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert len(rows) == 1 and rows[0]["label"] == rows[0]["top1_label"] == "altar"
    assert rows[0]["top3_name"] and "top4_label" not in rows[0]
    assert cli.main(["predict", "--model", model, str(survey / "day2" / "broken.jpg")]) == 2


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


def _prediction(path: str | None = "a/b.jpg") -> Prediction:
    top = (TopClass("dome(inner)", "dome (inner)", 0.75), TopClass("altar", "altar", 0.25))
    return Prediction("dome(inner)", "dome (inner)", 0.75, top, path)


def test_one_prediction_schema_for_python_json_and_csv(classifier: Classifier, synthetic_root: Path) -> None:
    """`to_dict()` is the schema; `format_predictions(..., "json")` is a list of it; CSV is its flat columns."""
    expected = {
        "path": "a/b.jpg",
        "label": "dome(inner)",
        "name": "dome (inner)",
        "probability": 0.75,
        "top": [
            {"label": "dome(inner)", "name": "dome (inner)", "probability": 0.75},
            {"label": "altar", "name": "altar", "probability": 0.25},
        ],
    }
    assert _prediction().to_dict() == expected
    assert json.loads(format_predictions([_prediction(), _prediction(None)], "json")) == [
        expected,
        expected | {"path": None},
    ]
    header, row = format_predictions([_prediction()], "csv").splitlines()
    assert header == (
        "path,label,name,probability,top1_label,top1_name,top1_probability,top2_label,top2_name,top2_probability"
    )
    assert row == "a/b.jpg,dome(inner),dome (inner),0.7500,dome(inner),dome (inner),0.7500,altar,altar,0.2500"
    table = format_predictions([_prediction()], "table")
    assert "dome (inner)" in table and "altar 0.25" in table
    with pytest.raises(ValueError, match="unknown output format"):
        format_predictions([_prediction()], "yaml")
    # a real prediction: the answer is the first of the top list, and the JSON round-trips
    real = classifier.predict(synthetic_root / "altar" / "005.png", top=4)[0]
    as_dict = real.to_dict()
    assert as_dict["top"][0] == {"label": real.label, "name": real.name, "probability": real.probability}
    assert json.loads(format_predictions([real], "json")) == [as_dict]
