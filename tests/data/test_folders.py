from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CLASSES, draw
from heritage_cnn.data import decode
from heritage_cnn.data import folders as data
from heritage_cnn.data.decode import ImageError
from heritage_cnn.data.folders import DatasetError


def test_display_name_keeps_meaning() -> None:
    assert data.display_name("dome(inner)") == "dome (inner)"
    assert data.display_name("bell_tower") == "bell tower"
    assert data.display_name("flying buttress") == "flying buttress"


def test_layouts(kaggle_root: Path, synthetic_root: Path, tmp_path: Path) -> None:
    kaggle = data.find_layout(kaggle_root)
    assert kaggle.is_kaggle and kaggle.train == kaggle_root / "train" and kaggle.test == kaggle_root / "test"
    bare = data.find_layout(synthetic_root)
    assert not bare.is_kaggle and bare.train == synthetic_root and bare.test is None
    with pytest.raises(DatasetError, match="no such folder"):
        data.find_layout(tmp_path / "missing")
    with pytest.raises(DatasetError, match="no class folders"):
        data.list_images(tmp_path)


def _save(path: Path, image: Image.Image, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)


@pytest.fixture
def messy_root(tmp_path: Path) -> Path:
    """Every kind of odd file the loader must handle, in classes with awkward names."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(draw(1, rng))
    good = tmp_path / "dome(inner)"
    _save(good / "rgb.jpg", rgb)
    _save(good / "grey.jpg", rgb.convert("L"))
    _save(good / "rgba.png", rgb.convert("RGBA"))
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    _save(good / "palette.png", palette, transparency=0)
    _save(good / "cmyk.jpg", rgb.convert("CMYK"))
    _save(good / "wide.png", Image.fromarray(np.tile(draw(1, rng), (1, 3, 1))))  # 64 x 192
    _save(good / "small.bmp", rgb.resize((20, 30)))
    sixteen = Image.fromarray(np.full((40, 40), 65535, dtype=np.uint16))
    _save(tmp_path / "bell tower" / "sixteen.png", sixteen)
    _save(tmp_path / "bell tower" / "nested" / "deep.webp", rgb)
    bad = tmp_path / "bell tower"
    buffer = io.BytesIO()
    rgb.resize((256, 256)).save(buffer, format="JPEG")
    (bad / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "text.jpg").write_text("this is not an image")
    (bad / "notes.txt").write_text("field notes")
    (tmp_path / "empty class").mkdir()
    return tmp_path


def test_loader_handles_every_odd_file(messy_root: Path) -> None:
    with pytest.warns(UserWarning, match="no readable images"):
        images = data.load_images(messy_root)
    assert images.classes == ["bell tower", "dome(inner)", "empty class"]
    assert images.images.dtype == torch.uint8 and images.images.shape[1:] == (3, 64, 64)
    loaded = {Path(p).name for p in images.paths}
    assert loaded == {
        "rgb.jpg",
        "grey.jpg",
        "rgba.png",
        "palette.png",
        "cmyk.jpg",
        "wide.png",
        "small.bmp",
        "sixteen.png",
        "deep.webp",
    }
    reasons = {Path(p).name: r for p, r in images.skipped}
    assert set(reasons) == {"truncated.jpg", "empty.jpg", "text.jpg", "notes.txt"}
    assert "empty file" in reasons["empty.jpg"]
    assert "not a recognised image" in reasons["text.jpg"]
    assert "truncated" in reasons["truncated.jpg"]
    assert images.empty_classes == ["empty class"]
    sixteen = images.images[images.paths.index(str(messy_root / "bell tower" / "sixteen.png"))]
    assert int(sixteen.min()) == 255  # 16-bit white is scaled to 8-bit white, not clipped to grey


def test_decode_error_is_one_line_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(ImageError) as info:
        decode.decode_image(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message


def test_exif_orientation_is_honoured(tmp_path: Path) -> None:
    pixels = np.zeros((64, 128, 3), dtype=np.uint8)
    pixels[:, :64] = 255  # left half white
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    decoded = decode.decode_image(tmp_path / "rotated.jpg")
    # After honouring the tag the photo is portrait: top half white, bottom half black.
    assert decoded[:24].mean() > 200 and decoded[-24:].mean() < 50


def test_transparent_pixels_become_white(tmp_path: Path) -> None:
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert decode.decode_image(tmp_path / "clear.png").min() == 255


def test_model_classes_map_labels_and_unknown_folders_are_named(synthetic_root: Path) -> None:
    files = data.list_images(synthetic_root, classes=["extra", *sorted(p.name for p in synthetic_root.iterdir())])
    assert min(files.labels) == 1  # labels follow the model's order
    with pytest.raises(DatasetError, match=r"unknown \['altar'\]"):
        data.list_images(synthetic_root, classes=[c for c in CLASSES if c != "altar"])


def test_a_class_folder_in_another_unicode_spelling_is_that_class(tmp_path: Path) -> None:
    """macOS writes `portál` decomposed (NFD: `a` and a combining accent); the model's class is composed (NFC). The
    folder is that class, for the labels and the check of empty classes; `evaluate` refused it, saying the name was
    both unknown and missing."""
    rng = np.random.default_rng(0)
    for label, name in enumerate(("altar", "porta\u0301l")):
        (tmp_path / name).mkdir()
        Image.fromarray(draw(label, rng)).save(tmp_path / name / "0.png")
    (tmp_path / "vaulte\u0301").mkdir()  # a class folder holding no photo: named as that class, in its spelling
    classes = ["altar", "port\u00e1l", "vault\u00e9"]
    files = data.list_images(tmp_path, classes)
    assert files.labels == [0, 1] and files.present == classes and files.empty_classes == ["vault\u00e9"]
    with pytest.warns(UserWarning, match="no readable images: vault\u00e9"):
        images = data.load_images(tmp_path, classes)
    assert images.labels.tolist() == [0, 1] and images.classes == classes
    assert data.folder_classes(["porta\u0301l"], ["porta\u0301l", "port\u00e1l"], tmp_path) == ["porta\u0301l"]


def test_two_class_folders_of_one_name_in_two_unicode_spellings_are_refused_naming_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`dôme` composed (NFC) and decomposed (NFD) were two classes that print alike: two identical rows in `data
    check`, two classes in training. One line names both, by the code points that tell them apart."""
    from heritage_cnn.cli.main import main

    rng = np.random.default_rng(0)
    for label, name in enumerate(("altar", "d\u00f4me", "do\u0302me")):
        (tmp_path / name).mkdir()
        Image.fromarray(draw(label, rng)).save(tmp_path / name / "0.png")
    for listing in (data.class_folders, data.list_images):  # training's check of the class folders, and the listing
        with pytest.raises(DatasetError) as caught:
            listing(tmp_path)
        message = str(caught.value)
        assert "'do\\u0302me' and 'd\\xf4me' are one name in two Unicode spellings" in message
        assert message.startswith(f"{tmp_path}: class folders ") and "\n" not in message
    assert main(["data", "check", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"heritage: error: {message}\n"


def test_names_that_truly_differ_are_listed_once_with_their_code_points(tmp_path: Path) -> None:
    """A Cyrillic о in `pоrtal` prints as the Latin `portal`: the message shows the code points, and no name is both
    unknown and missing."""
    for name in ("altar", "p\u043ertal"):
        (tmp_path / name).mkdir()
        Image.fromarray(draw(0, np.random.default_rng(0))).save(tmp_path / name / "0.png")
    with pytest.raises(DatasetError) as caught:
        data.list_images(tmp_path, ["altar", "portal"])
    message = str(caught.value)
    unknown, missing = message.split("unknown ")[1].split(", missing ")
    assert "'p\u043ertal' (U+043E)" in unknown and missing == "['portal']", message
    assert "\n" not in message


def test_load_images_takes_the_folder_as_a_string(tmp_path: Path) -> None:
    """`load_images("some/dir", classes=[...])` failed with AttributeError ('str' object has no attribute 'iterdir')
    though its signature takes a str: the file list's root is a Path whatever the caller gave."""
    rng = np.random.default_rng(0)
    for label, name in enumerate(("apse", "vault")):
        (tmp_path / name).mkdir()
        Image.fromarray(draw(label, rng)).save(tmp_path / name / "0.png")
    images = data.load_images(str(tmp_path), classes=["apse", "dome", "vault"])
    assert images.labels.tolist() == [0, 2] and images.classes == ["apse", "dome", "vault"]
    assert images.empty_classes == [] and data.list_images(str(tmp_path)).root == tmp_path


def test_cache_round_trip(synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = data.load_images(synthetic_root, cache_dir=tmp_path)
    assert list(tmp_path.glob("pixels-*.safetensors"))

    def fail(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(data, "try_decode", fail)
    second = data.load_images(synthetic_root, cache_dir=tmp_path)
    assert torch.equal(first.images, second.images) and first.paths == second.paths


def test_a_cache_of_an_earlier_decoder_is_decoded_again(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key named the package's version only, so a decoder change that kept it served the pixels it used to give."""
    data.load_images(synthetic_root, cache_dir=tmp_path)
    monkeypatch.setattr(data, "DECODE_REVISION", data.DECODE_REVISION + 1)
    decoded = []
    monkeypatch.setattr(
        data, "try_decode", lambda *args, **kwargs: decoded.append(1) or decode.try_decode(*args, **kwargs)
    )
    data.load_images(synthetic_root, cache_dir=tmp_path)
    assert decoded and len(list(tmp_path.glob("pixels-*.safetensors"))) == 2


def test_the_cache_serves_a_model_with_more_classes(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A taught model's class list holds one more class: the pixels come from the cache, the labels from its list."""
    classes = sorted(p.name for p in synthetic_root.iterdir())
    first = data.load_images(synthetic_root, classes, cache_dir=tmp_path)

    def fail(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(data, "try_decode", fail)
    taught = data.load_images(synthetic_root, ["portal", *classes], cache_dir=tmp_path)
    assert torch.equal(first.images, taught.images) and first.paths == taught.paths
    assert torch.equal(taught.labels, first.labels + 1) and taught.classes == ["portal", *classes]
    assert len(list(tmp_path.glob("pixels-*.safetensors"))) == 1


def test_a_cache_of_another_file_list_is_not_used(synthetic_root: Path, tmp_path: Path) -> None:
    """A cache file renamed onto another folder's key holds other paths: it is ignored, said, and decoded again."""
    data.load_images(synthetic_root, cache_dir=tmp_path)
    other = tmp_path / "other"
    shutil.copytree(synthetic_root / "apse", other / "apse")
    key = next(tmp_path.glob("pixels-*.json")).stem
    with pytest.warns(UserWarning, match="another file list"):
        for suffix in (".safetensors", ".json"):  # the first folder's cache under the second's name
            files = data.list_images(other)
            name = f"pixels-{data._cache_key(files, data.IMAGE_SIZE, labelled=False)}{suffix}"
            shutil.copy(tmp_path / f"{key}{suffix}", tmp_path / name)
        again = data.load_images(other, cache_dir=tmp_path)
    assert len(again.paths) == len(list((other / "apse").iterdir()))


def test_a_folder_is_decoded_once_inside_reuse_decoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside the block the second load is the first's ImageSet; a changed file, or leaving the block, decodes
    again, and the block keeps nothing once it ends."""
    rng = np.random.default_rng(0)
    for c in range(2):
        (tmp_path / CLASSES[c]).mkdir()
        for i in range(3):
            Image.fromarray(draw(c, rng)).save(tmp_path / CLASSES[c] / f"{i}.png")
    decodes = []
    real = data.try_decode
    monkeypatch.setattr(data, "try_decode", lambda *args: decodes.append(args[0]) or real(*args))
    with data.reuse_decoded():
        first = data.load_images(tmp_path)
        again = data.load_images(tmp_path, require_every_class=True)
        assert again is first and len(decodes) == 6
        Image.fromarray(draw(0, rng)).save(tmp_path / CLASSES[0] / "0.png")  # another photo under the same name
        changed = data.load_images(tmp_path)
        assert changed is not first and len(decodes) == 12
    assert data._REUSED is None
    assert data.load_images(tmp_path) is not changed and len(decodes) == 18


def test_a_channel_that_never_varies_is_normalised_by_one_uint8_step() -> None:
    """std 0 (blue 0 in every photo) would divide by zero; the floor is what the recorded (rounded) std says."""
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    images[:, 0] = torch.arange(16, dtype=torch.uint8).view(4, 4) * 16
    mean, std = data.channel_stats(images)
    assert std[1] == std[2] == round(data.MIN_CHANNEL_STD, 4) > 0 and mean[1] == mean[2] == 0.0
    assert std[0] > 0.1
