from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_survey
from heritage_cnn.base.devices import cpu_has_native_bf16
from heritage_cnn.cli.main import main
from heritage_cnn.data.decode import ImageError, decode_image
from heritage_cnn.inference.classifier import Classifier, Prediction, TopClass, format_predictions
from heritage_cnn.models.checkpoint import load_checkpoint


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
    """Each file decodes to the pixels it holds, and is classified as those pixels given as an array."""
    photo = Image.open(synthetic_root / "vault" / "004.png").convert("RGB").resize((300, 200))
    palette, cmyk = photo.convert("P"), photo.convert("CMYK")
    # the RGB each file holds: lossless files hold the photo itself, the GIF its palette colours
    holds = {"wide.tif": photo, "plain.bmp": photo, "rgba.webp": photo, "palette.gif": palette.convert("RGB")}
    photo.save(tmp_path / "wide.tif")
    cmyk.save(tmp_path / "cmyk.jpg", quality=95)
    palette.save(tmp_path / "palette.gif")
    photo.convert("RGBA").save(tmp_path / "rgba.webp", lossless=True)
    photo.save(tmp_path / "plain.bmp")
    files = sorted(tmp_path.iterdir())
    predictions = classifier.predict(files)
    assert [Path(p.path).name for p in predictions] == [f.name for f in files]
    for file, prediction in zip(files, predictions, strict=True):
        if file.name in holds:  # lossless: exactly the pixels it holds, so the answer for those pixels
            pixels = decode_image_of(holds[file.name])
            assert np.array_equal(decode_image(file), pixels), file.name
            # the same pixels in a batch of another size: float32 sums in another order (~1e-7 relative each)
            expected = classifier.predict(pixels)[0]
            assert prediction.label == expected.label, file.name
            assert prediction.probability == pytest.approx(expected.probability, abs=1e-5), file.name
        else:  # JPEG at quality 95: within a few levels of the CMYK photo's RGB
            error = np.abs(decode_image(file).astype(int) - decode_image_of(cmyk.convert("RGB")).astype(int))
            assert error.mean() < 3, error.mean()


def decode_image_of(image: Image.Image) -> np.ndarray:
    """The 64 px pixels the one decode policy makes of an RGB image (through a lossless PNG of it)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return decode_image(buffer.getvalue())


def test_predict_command_formats_and_skips_bad_files(
    tiny_run, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    survey = make_survey(synthetic_root, tmp_path / "survey")
    model = str(tiny_run.checkpoint)
    assert main(["predict", "--model", model, str(survey), "--format", "json"]) == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    fields = ["path", "label", "name", "probability", "known", "open_set_score", "none_threshold", "none_reason", "top"]
    assert len(rows) == 9 and list(rows[0]) == fields
    assert list(rows[0]["top"][0]) == ["label", "name", "probability"] and len(rows[0]["top"]) == 3
    assert "broken.jpg" in captured.err and "1 of 10 file(s) could not be read" in captured.err
    assert main(["predict", "--model", model, str(survey / "day1" / "altar.png"), "--format", "csv"]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert len(rows) == 1 and rows[0]["label"] == rows[0]["top1_label"] == "altar"
    assert rows[0]["top3_name"] and "top4_label" not in rows[0]
    assert main(["predict", "--model", model, str(survey / "day2" / "broken.jpg")]) == 2


def test_test_time_augmentation_in_classifier_and_commands(
    tiny_run, classifier: Classifier, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = sorted(synthetic_root.rglob("*.png"))[:6]
    # float32 on every CPU (bf16=False): the by-hand reference is float32, and bf16 rounding (~4e-3 on a
    # probability, on CPUs that autocast) would hide a wrong average under the tolerance below
    flip = Classifier.load(tiny_run.checkpoint, tta="flip", bf16=False)
    # by hand: the logits of each photo and of its mirror, averaged, then softmax (the plain network, unfolded)
    checkpoint = load_checkpoint(tiny_run.checkpoint)
    pixels = torch.from_numpy(np.stack([decode_image(p) for p in photos])).permute(0, 3, 1, 2)
    with torch.no_grad():
        x = checkpoint.normalise(pixels)
        logits, mirrored = checkpoint.model.eval()(x), checkpoint.model(torch.flip(x, dims=[3]))
    by_hand, plain_by_hand = torch.softmax((logits + mirrored) / 2, 1), torch.softmax(logits, 1)
    # folded batch norm and channels_last change only the rounding of float32 sums: ~1e-6 on a probability
    tolerance = 1e-5
    mirror_matters = False
    for prediction, expected, plain in zip(flip.predict(photos, top=10), by_hand, plain_by_hand, strict=True):
        got = torch.tensor([t.probability for t in prediction.top])
        assert torch.allclose(got, expected.sort(descending=True).values, atol=tolerance)
        assert prediction.label == tiny_run.classes[int(expected.argmax())]
        mirror_matters |= bool((expected - plain).abs().max() > 100 * tolerance)
    assert mirror_matters  # the photos are not symmetric: a "flip" that ignored the mirror would be caught
    multi = Classifier.load(tiny_run.checkpoint, tta="multi")
    assert [p.probability for p in multi.predict(photos)] != [p.probability for p in classifier.predict(photos)]
    with pytest.raises(ValueError, match="unknown test-time augmentation"):
        Classifier.load(tiny_run.checkpoint, tta="crops")
    model = str(tiny_run.checkpoint)
    # the photo after the flag stays a photo (no optional value that could swallow it)
    assert main(["predict", "--model", model, "--tta-multi", str(photos[0]), "--format", "csv"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    with pytest.raises(SystemExit):
        main(["predict", "--model", model, "--tta", "--tta-multi", str(photos[0])])


@pytest.mark.parametrize("n", [1, 4, 10])
def test_predict_top_n_in_table_and_json(
    n: int, tiny_run, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = [str(synthetic_root / name / "007.png") for name in ("apse", "gargoyle")]
    # both photos answered with a class, whatever the tiny run's none-of-these score makes of them: the layout of a
    # photo called none has its own test
    model, *known = str(tiny_run.checkpoint), "--none-threshold", "-1000000000"
    assert main(["predict", *photos, "--model", model, *known, "--top", str(n), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["path"] for row in rows] == photos
    for row in rows:
        probabilities = [t["probability"] for t in row["top"]]
        assert len(row["top"]) == n and probabilities == sorted(probabilities, reverse=True)
        assert row["top"][0]["label"] == row["label"] and len({t["label"] for t in row["top"]}) == n
    assert main(["predict", *photos, "--model", model, *known, "--top", str(n)]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split() == ["path", "class", "prob", "top"] and len(lines) == len(photos)
    for line, row in zip(lines, rows, strict=True):  # the answer, then the other n - 1 as "name 0.12, ..."
        others = line.split("  ")[-1].strip() if n > 1 else ""
        shown = [other.rsplit(" ", 1) for other in others.split(", ")] if others else []
        assert [name for name, _ in shown] == [t["name"] for t in row["top"][1:]]
        assert [p for _, p in shown] == [f"{t['probability']:.2f}" for t in row["top"][1:]]
        assert line.startswith(row["path"]) and f" {row['name']} " in line


@pytest.mark.parametrize("bad", ["0", "-1", "three", "2.5"])
def test_predict_top_refuses_what_is_not_a_positive_count(
    bad: str, tiny_run, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = str(synthetic_root / "apse" / "007.png")
    with pytest.raises(SystemExit) as info:
        main(["predict", photo, "--model", str(tiny_run.checkpoint), "--top", bad])
    assert info.value.code == 2 and "--top" in capsys.readouterr().err


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
        "known": None,
        "open_set_score": None,
        "none_threshold": None,
        "none_reason": None,
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
        "path,label,name,probability,known,open_set_score,none_threshold,none_reason,"
        "top1_label,top1_name,top1_probability,top2_label,top2_name,top2_probability"
    )
    assert row == "a/b.jpg,dome(inner),dome (inner),0.7500,,,,,dome(inner),dome (inner),0.7500,altar,altar,0.2500"
    table = format_predictions([_prediction()], "table")
    assert "dome (inner)" in table and "altar 0.25" in table
    with pytest.raises(ValueError, match="unknown output format"):
        format_predictions([_prediction()], "yaml")
    # a real prediction: the answer is the first of the top list, and the JSON round-trips
    real = classifier.predict(synthetic_root / "altar" / "005.png", top=4)[0]
    as_dict = real.to_dict()
    assert as_dict["top"][0] == {"label": real.label, "name": real.name, "probability": real.probability}
    assert json.loads(format_predictions([real], "json")) == [as_dict]


def test_none_of_these_in_python_json_csv_and_the_table(
    tiny_run, classifier: Classifier, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A threshold between two photos' scores: the lower one is none of these (known false, its closest class still
    the label), the other known; the same in every output, and --none-threshold is the threshold reported."""
    photos = [str(synthetic_root / "apse" / "007.png"), str(synthetic_root / "gargoyle" / "007.png")]
    low, high = sorted(classifier.predict(photos), key=lambda p: p.open_set_score)
    assert low.open_set_score < high.open_set_score and low.none_threshold == classifier.open_set.threshold
    middle = (low.open_set_score + high.open_set_score) / 2
    model = ["--model", str(tiny_run.checkpoint), "--none-threshold", repr(middle)]
    assert main(["predict", *photos, *model, "--format", "json"]) == 0
    rows = {row["path"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows[low.path]["known"] is False and rows[high.path]["known"] is True
    assert rows[low.path]["label"] == low.label and rows[low.path]["none_threshold"] == middle
    assert rows[low.path]["open_set_score"] == pytest.approx(low.open_set_score, rel=1e-6)
    assert main(["predict", *photos, *model, "--format", "csv"]) == 0
    rows = {row["path"]: row for row in csv.DictReader(capsys.readouterr().out.splitlines())}
    assert (rows[low.path]["known"], rows[high.path]["known"]) == ("false", "true")
    assert float(rows[low.path]["none_threshold"]) == pytest.approx(middle, rel=1e-6)
    assert main(["predict", *photos, *model]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    closest = ", ".join(f"{t.name} {t.probability:.2f}" for t in low.top)
    assert "none of these" in lines[low.path] and lines[low.path].endswith(f"closest: {closest}")
    assert f" {high.name} " in lines[high.path] and "none of these" not in lines[high.path]


def test_noise_is_none_of_these_whatever_its_score_in_every_output(
    tiny_run, classifier: Classifier, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Uniform noise is below the tiny run's fitted noise check: none of these, reason "noise", even with the score's
    threshold moved below every score (--none-threshold moves the score's only); a photo beside it stays known."""
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (80, 80, 3), dtype=np.uint8)).save(noise)
    photo = str(synthetic_root / "apse" / "007.png")
    model = ["--model", str(tiny_run.checkpoint), "--none-threshold=-1e9"]  # the score alone would keep both
    assert main(["predict", photo, str(noise), *model, "--format", "json"]) == 0
    rows = {Path(row["path"]).name: row for row in json.loads(capsys.readouterr().out)}
    assert (rows["noise.png"]["known"], rows["noise.png"]["none_reason"]) == (False, "noise")
    assert (rows["007.png"]["known"], rows["007.png"]["none_reason"]) == (True, None)
    assert rows["noise.png"]["open_set_score"] > -1e9  # the score would have kept it
    assert main(["predict", photo, str(noise), *model, "--format", "csv"]) == 0
    rows = {Path(row["path"]).name: row for row in csv.DictReader(capsys.readouterr().out.splitlines())}
    assert (rows["noise.png"]["known"], rows["noise.png"]["none_reason"]) == ("false", "noise")
    assert (rows["007.png"]["known"], rows["007.png"]["none_reason"]) == ("true", "")
    assert main(["predict", photo, str(noise), *model]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if "noise.png" in line)
    assert "none of these" in line and "noise, not a photo; closest:" in line
    low = classifier.predict([photo])[0]  # the model's own threshold: why a photo below it is none
    threshold = low.open_set_score + 1
    again = Classifier.load(tiny_run.checkpoint, none_threshold=threshold).predict([photo])[0]
    assert (again.known, again.none_reason) == (False, "score")


def test_the_classifier_autocasts_where_the_cpu_has_bf16_or_the_bf16_pass_says_so(tiny_run, request) -> None:
    """`make test`'s --bf16-autocast pass must really compute in bf16, or it would show nothing of a Xeon."""
    forced = request.config.getoption("--bf16-autocast")
    assert Classifier.load(tiny_run.checkpoint).bf16 is (forced or cpu_has_native_bf16())
    assert Classifier.load(tiny_run.checkpoint, bf16=False).bf16 is False
