"""The element map's in-memory inputs: a PIL image turned upright by its EXIF orientation as its file is, and
predictions without a file refused by `with_elements`; a strip within the pixel budget, as its file is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import LEFT, RIGHT, mosaic
from heritage_cnn.inference.classifier import Classifier
from heritage_cnn.inference.element_map import map_elements, with_elements
from heritage_cnn.inference.tiles import MapConfig

ORIENTATION = 0x0112  # the EXIF tag; 6: the stored pixels are to be turned a quarter turn clockwise


def test_a_pil_image_is_mapped_upright_as_its_file_is(classifier: Classifier, tmp_path: Path) -> None:
    path = tmp_path / "exif6.jpg"
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    Image.fromarray(mosaic([LEFT, RIGHT], enlarge=2)).save(path, quality=95, exif=exif.tobytes())  # 256 x 128 stored
    by_path = map_elements(classifier, path)
    with Image.open(path) as image:
        by_pil = map_elements(classifier, image)
        assert image.size == (256, 128)  # the caller's image is left as it is
    assert (by_pil.width, by_pil.height) == (by_path.width, by_path.height) == (128, 256)
    assert np.array_equal(by_pil.preview, by_path.preview)
    assert np.allclose(by_pil.maps, by_path.maps, atol=1e-6)
    assert [(e.label, e.box) for e in by_pil.elements] == [(e.label, e.box) for e in by_path.elements]


def test_with_elements_refuses_a_prediction_made_from_an_in_memory_image(classifier: Classifier) -> None:
    image = Image.fromarray(mosaic([LEFT, RIGHT], enlarge=1))
    predictions = classifier.predict([image])
    with pytest.raises(ValueError, match="a prediction made from an in-memory image has no file to map"):
        list(with_elements(classifier, predictions))


def test_an_array_strip_is_reduced_within_the_pixel_budget_as_its_file_is(
    classifier: Classifier, tmp_path: Path
) -> None:
    # reduced to the budget, its width would be under 1 px: it stays 1 px, and its length is cut to the budget
    strip = np.full((20_000, 1, 3), 90, dtype=np.uint8)
    path = tmp_path / "strip.png"
    Image.fromarray(strip).save(path)
    config = MapConfig(max_pixels=4096)
    by_array, by_path = map_elements(classifier, strip, config), map_elements(classifier, path, config)
    assert by_array.preview.shape == by_path.preview.shape == (4096, 1, 3)
    assert (by_array.width, by_array.height) == (1, 20_000) and by_array.whole_photo
