"""What `Classifier.predict`, `probabilities` and `scored` accept, and what they refuse with a clear message: EXIF
orientation of PIL images, tensors, generators, bytes, arrays of paths, `top`, ambiguous float scales; and the CSV
text's line ends."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import draw
from heritage_cnn.data.decode import ImageError
from heritage_cnn.inference.classifier import Classifier, Prediction, TopClass, format_predictions

ORIENTATION = 0x0112  # the EXIF tag; 6: the stored pixels are to be turned a quarter turn clockwise


def answers(predictions: list[Prediction]) -> list[list[tuple[str, float]]]:
    return [[(t.label, round(t.probability, 5)) for t in p.top] for p in predictions]


def rotated_jpeg(path: Path, pixels: np.ndarray) -> Path:
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    Image.fromarray(pixels).save(path, quality=95, exif=exif.tobytes())
    return path


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A picture twice as wide as high: a quarter turn changes the centre square the network sees."""
    rng = np.random.default_rng(11)
    return np.concatenate([draw(2, rng), draw(7, rng)], axis=1)


def test_a_pil_image_is_turned_upright_by_its_exif_orientation_as_a_file_is(
    classifier: Classifier, photo: np.ndarray, tmp_path: Path
) -> None:
    path = rotated_jpeg(tmp_path / "exif6.jpg", photo)
    with Image.open(path) as image:
        by_pil = classifier.predict(image, top=10)[0]
        assert image.size == (128, 64) and image.getexif()[ORIENTATION] == 6  # the caller's image is left as it is
    by_path = classifier.predict(path, top=10)[0]
    assert [t.label for t in by_pil.top] == [t.label for t in by_path.top]
    assert [t.probability for t in by_pil.top] == pytest.approx([t.probability for t in by_path.top], abs=1e-6)


def test_scored_refuses_float_pixels_at_the_0_255_scale_and_another_size(classifier: Classifier) -> None:
    size = classifier.checkpoint.image_size
    rng = np.random.default_rng(3)
    batch = torch.from_numpy(np.stack([draw(label, rng, size) for label in (1, 4)])).permute(0, 3, 1, 2)
    as_float = batch.float() / 255
    assert torch.allclose(classifier.probabilities(as_float), classifier.probabilities(batch), atol=1e-5)
    with pytest.raises(ValueError, match=r"float images must lie in \[0, 1\] \(uint8 for 0-255\), got values from"):
        classifier.scored(batch.float())
    with pytest.raises(ValueError, match=r"float images must lie in \[0, 1\]"):
        classifier.probabilities(batch.float())
    small = batch[:, :, : size // 2, : size // 2]
    with pytest.raises(ValueError, match=f"images are {size // 2}x{size // 2} px, the model's input is {size}x{size}"):
        classifier.probabilities(small)
    with pytest.raises(ValueError, match=r"images must be a \(N, 3, "):
        classifier.scored(batch[0])


def test_predict_reads_a_generator_once(classifier: Classifier, synthetic_root: Path) -> None:
    paths = [synthetic_root / "apse" / "001.png", synthetic_root / "vault" / "002.png"]
    from_generator = classifier.predict(p for p in paths)
    assert [p.path for p in from_generator] == [str(p) for p in paths]
    assert answers(from_generator) == answers(classifier.predict(paths))


def test_predict_takes_tensors_as_numpy_arrays_are_taken(classifier: Classifier, photo: np.ndarray) -> None:
    expected = answers(classifier.predict(photo))
    hwc = torch.from_numpy(photo.copy())
    assert answers(classifier.predict(hwc)) == expected  # one HxWx3 photo, not its rows
    assert answers(classifier.predict(hwc.permute(2, 0, 1))) == expected  # 3xHxW
    assert answers(classifier.predict(photo.transpose(2, 0, 1))) == expected
    for batch in (np.stack([photo, photo]), torch.stack([hwc, hwc]), torch.stack([hwc, hwc]).permute(0, 3, 1, 2)):
        assert answers(classifier.predict(batch)) == expected * 2
    with pytest.raises(ImageError, match=r"array input must be HxWx3 uint8 .* dtype torch.float32"):
        classifier.predict(hwc.float())


@pytest.mark.parametrize("top", [0, -1, 1.5, True])
def test_predict_refuses_a_top_that_is_not_a_positive_count(classifier: Classifier, photo: np.ndarray, top) -> None:
    with pytest.raises(ValueError, match=f"top must be a whole number of classes, at least 1, got {top!r}"):
        classifier.predict(photo, top=top)


def test_predict_top_above_the_classes_lists_them_all(classifier: Classifier, photo: np.ndarray) -> None:
    (prediction,) = classifier.predict(photo, top=99)
    assert sorted(t.label for t in prediction.top) == sorted(classifier.classes)


def test_predict_reads_encoded_bytes_as_a_photo(classifier: Classifier, synthetic_root: Path) -> None:
    path = synthetic_root / "gargoyle" / "005.png"
    (by_bytes,) = classifier.predict(path.read_bytes())
    assert by_bytes.path is None and answers([by_bytes]) == answers(classifier.predict(path))
    with pytest.raises(ImageError, match="upload: not a recognised image format"):
        classifier.predict(b"not an image")


@pytest.mark.parametrize("dtype", [object, str])
def test_predict_reads_a_1d_array_of_paths_as_several_photos(
    classifier: Classifier, synthetic_root: Path, dtype: type
) -> None:
    paths = [str(synthetic_root / "altar" / "003.png"), str(synthetic_root / "column" / "004.png")]
    predictions = classifier.predict(np.array(paths, dtype=dtype))  # as `df.path.values` gives them
    assert [p.path for p in predictions] == paths
    assert answers(predictions) == answers(classifier.predict(paths))


def test_a_float_image_in_0_1_or_0_255_is_the_same_photo(classifier: Classifier, photo: np.ndarray) -> None:
    """A PIL float image in [0, 1] was read on the 0-255 scale: black, classified with confidence."""
    grey = np.asarray(Image.fromarray(photo).convert("L"))
    expected = answers(classifier.predict(Image.fromarray(grey)))
    assert answers(classifier.predict(Image.fromarray(grey.astype(np.float32), mode="F"))) == expected
    unit = classifier.predict(Image.fromarray(grey.astype(np.float32) / 255, mode="F"))
    assert [p.name for p in unit] == [p.name for p in classifier.predict(Image.fromarray(grey))]


def test_csv_text_separates_rows_by_crlf_and_ends_without_a_line_end() -> None:
    top = (TopClass("apse", "apse", 0.75), TopClass("altar", "altar", 0.25))
    predictions = [Prediction("apse", "apse", 0.75, top, name) for name in ("a.jpg", "b.jpg")]
    text = format_predictions(predictions, "csv")
    assert not text.endswith(("\r", "\n"))
    header, *rows = text.split("\r\n")
    assert header.startswith("path,label,") and [row.split(",")[0] for row in rows] == ["a.jpg", "b.jpg"]
    assert [row["path"] for row in csv.DictReader(io.StringIO(text, newline=""))] == ["a.jpg", "b.jpg"]
    assert (
        format_predictions([], "csv") == "path,label,name,probability,known,open_set_score,none_threshold,none_reason"
    )
