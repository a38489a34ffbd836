"""The element map: the tile limit's notes, the combination worked by hand, a two-class mosaic found on its own halves
by the tiny run, tiny and elongated photos, bad files, the JSON schema and the figure; `heritage predict --elements`.
The tiling arithmetic is test_tiles.py's."""

from __future__ import annotations

import csv
import io
import json
import os
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import CLASSES, LEFT, RIGHT, draw, mosaic
from heritage_cnn.cli.main import main
from heritage_cnn.data.decode import ImageError, read_whole, try_decode
from heritage_cnn.inference.classifier import Classifier, Prediction, elements_cell, flat_fields, parse_elements_cell
from heritage_cnn.inference.element_map import Element, agreeing_maps, combine, map_elements, map_files, with_elements
from heritage_cnn.inference.tiles import MapConfig, Tile


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def two_halves(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mosaic") / "two halves.png"
    Image.fromarray(mosaic([LEFT, RIGHT])).save(path)  # 1024 x 512
    return path


@pytest.fixture(scope="module")
def enlarged(tiny_mahalanobis: Path) -> Classifier:
    """The tiny run with a none-of-these threshold for enlarged pictures. Shrinking an enlarged synthetic picture
    to 64 px averages away its pixel noise, and the tiny run's Mahalanobis score, fitted on noisy 64 px pictures,
    calls every such tile none (scores of -150 to -5,000 against its threshold of about -107, measured once). Tiles
    of one picture stay far above -20,000 and tiles straddling two pictures far below (about -55,000), so this
    threshold still rejects the straddling tiles, and the test checks the tiling and the combination, not the
    tiny run's open-set score."""
    return Classifier.load(tiny_mahalanobis, none_threshold=-20_000)


# --------------------------------------------------------------------------------------------
# The tile limit's notes, and the combination worked by hand
# --------------------------------------------------------------------------------------------


def test_scales_the_tile_limit_leaves_out_are_named_in_the_note(classifier: Classifier, tmp_path: Path) -> None:
    path = tmp_path / "four.png"
    Image.fromarray(np.concatenate([mosaic([0, 2]), mosaic([7, 8])], axis=0)).save(path)  # 1024 x 1024
    emap = map_elements(classifier, path, MapConfig(max_tiles=30))  # reduced to 256 x 256: 1 + 4 + 9 + 25 + 49
    assert emap.tiles == 14 and not emap.whole_photo and emap.tile_sides == (1024, 727, 512)
    assert emap.note == (
        "scales 0.35, 0.25 not scanned: all the scales would take 88 tiles at this stride, over the limit of 30 "
        "(the finest are left out first)"
    )
    assert map_elements(classifier, path).note is None  # 88 tiles: every scale scanned


def test_the_command_says_which_scales_were_not_scanned(tiny_run, two_halves: Path) -> None:
    model = ("--model", str(tiny_run.checkpoint))
    # 512 x 256 at the finest stride: 2363 tiles, over the 2048 limit without the 1455 of scale 0.25
    code, stdout, stderr = run_cli("map", str(two_halves), *model, "--stride", "0.125", "--format", "json")
    assert code == 0, stderr
    (item,) = json.loads(stdout)
    assert item["tiles"] == 938 and not item["whole_photo"]
    assert item["note"].startswith("scale 0.25 not scanned: all the scales would take 2363 tiles at this stride")
    code, table, _ = run_cli("map", str(two_halves), *model, "--stride", "0.125")
    assert code == 0 and "note: scale 0.25 not scanned" in table.splitlines()[-1]


def test_scales_too_small_for_a_tile_are_the_reason_given(classifier: Classifier, tmp_path: Path) -> None:
    path = tmp_path / "square.png"
    Image.fromarray(np.kron(draw(RIGHT, np.random.default_rng(0)), np.ones((24, 24, 1), np.uint8))).save(path)
    emap = map_elements(classifier, path, MapConfig(scales=(0.01,)))  # 15 px tiles of a 1536 x 1536 photo
    assert emap.whole_photo and "elongated" not in emap.note
    assert emap.note == (
        "scale 0.01 gives tiles under 64 px on this photo (15 px of its 1536 px shorter side, 1536x1536): "
        "the whole photo was classified"
    )
    assert (
        "scales up to 0.03 give tiles under 64 px"
        in map_elements(classifier, path, MapConfig(scales=(0.03, 0.02))).note
    )


def test_combination_is_the_mean_of_covering_tiles_then_the_max_over_scales() -> None:
    # a 4 x 2 grid of 8-px cells; two tiles of scale 0 side by side, one of scale 1 over everything
    tiles = [Tile(0, 0, 16, 0), Tile(16, 0, 16, 0), Tile(0, 0, 32, 1)]
    evidence = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 0.25]])
    maps = combine(tiles, evidence, (2, 4), 8.0, 2)
    assert maps.shape == (2, 2, 2, 4)
    assert maps[0, 0, 0].tolist() == [1.0, 1.0, 0.5, 0.5]
    assert maps[1, 1, 1].tolist() == [0.25] * 4
    overlapping = combine([Tile(0, 0, 16, 0), Tile(8, 0, 16, 0)], evidence[:2], (2, 3), 8.0, 1)
    assert overlapping[0, 0, 0].tolist() == [1.0, 0.75, 0.5]  # the middle cell: the mean of both tiles


def test_neighbouring_scales_must_agree() -> None:
    per_scale = np.array([[[[0.9, 0.0]]], [[[0.8, 0.7]]], [[[0.1, 0.6]]]])  # 3 scales, 1 class, a 1 x 2 grid
    maps, finest = agreeing_maps(per_scale, [0, 1, 2], "adjacent")
    assert maps[:, 0, 0].tolist() == [[0.8, 0.0], [0.1, 0.6]] and finest == [1, 2]
    maps, finest = agreeing_maps(per_scale, [0, 2], "max")  # scale 1 had no tile
    assert maps.max(0)[0, 0].tolist() == [0.9, 0.6] and finest == [0, 2]
    maps, finest = agreeing_maps(per_scale, [1], "adjacent")  # one scale: nothing to agree with
    assert maps[0, 0, 0].tolist() == [0.8, 0.7] and finest == [1]


# --------------------------------------------------------------------------------------------
# Photos
# --------------------------------------------------------------------------------------------


def test_two_class_mosaic_lists_both_classes_each_on_its_own_half(enlarged: Classifier, two_halves: Path) -> None:
    emap = map_elements(enlarged, two_halves)
    assert (emap.width, emap.height) == (1024, 512) and not emap.whole_photo
    found = {e.label: e for e in emap.elements}
    assert set(found) == {CLASSES[LEFT], CLASSES[RIGHT]}, [(e.label, e.confidence) for e in emap.elements]
    left, right = found[CLASSES[LEFT]], found[CLASSES[RIGHT]]
    assert left.box[2] <= 512 + 64 and right.box[0] >= 512 - 64, (left.box, right.box)  # at most one cell over
    assert left.peak[0] < 512 <= right.peak[0]
    for e in emap.elements:
        assert 0 <= e.box[0] < e.box[2] <= 1024 and 0 <= e.box[1] < e.box[3] <= 512
        assert emap.maps[CLASSES.index(e.label)].max() == pytest.approx(e.confidence, abs=1e-4)
    assert emap.preview.shape == (256, 512, 3)  # reduced once: the smallest tile (128 px) is 64 px there
    assert emap.tile_sides == (512, 364, 256, 179, 128)


def test_an_array_gives_the_same_map_as_its_lossless_file(classifier: Classifier, two_halves: Path) -> None:
    from_file = map_elements(classifier, two_halves)
    from_array = map_elements(classifier, np.asarray(Image.open(two_halves)))
    assert from_array.path is None
    np.testing.assert_array_equal(from_file.maps, from_array.maps)
    from_bytes = map_elements(classifier, two_halves.read_bytes())  # an upload: decoded by the same path as a file
    assert from_bytes.path is None and from_bytes.to_dict() | {"path": str(two_halves)} == from_file.to_dict()
    np.testing.assert_array_equal(from_file.maps, from_bytes.maps)
    with pytest.raises(ImageError, match=r"^upload: not a recognised image format"):
        map_elements(classifier, b"just some notes")


def test_a_tile_called_none_counts_for_no_class(tiny_run, two_halves: Path) -> None:
    rejecting = Classifier.load(tiny_run.checkpoint, none_threshold=1e30)  # every tile below the threshold
    emap = map_elements(rejecting, two_halves)
    assert emap.known_tiles == 0 and emap.elements == () and emap.maps.max() == 0


def test_a_photo_smaller_than_a_tile_gets_the_whole_photo_answer(classifier: Classifier, tmp_path: Path) -> None:
    path = tmp_path / "tiny.png"
    Image.fromarray(draw(RIGHT, np.random.default_rng(0))[:40, :50]).save(path)
    emap = map_elements(classifier, path)
    assert emap.whole_photo and emap.tiles == 1 and "smaller than one tile" in emap.note
    answer = classifier.predict(path)[0]  # the same pixels: the centre square, enlarged to 64 px
    if answer.known is not False:
        assert emap.maps[CLASSES.index(answer.label)].max() == pytest.approx(answer.probability, abs=1e-5)
    listed = [e.label for e in emap.elements]
    assert listed in ([], [answer.label])
    if listed:  # the centre square that was classified, 40 px wide in the middle of 50
        assert emap.elements[0].box == (5, 0, 45, 40) and emap.elements[0].tile == 40


def test_a_panorama_is_bounded_in_pixels_and_tiles(enlarged: Classifier, tmp_path: Path) -> None:
    path = tmp_path / "strip.png"
    Image.fromarray(np.tile(draw(LEFT, np.random.default_rng(1)), (1, 100, 1))).save(path)  # 6400 x 64
    decoded = read_whole(path, 256, max_pixels=100_000)  # sqrt(100,000 / 409,600) = 0.494: 3162 x 31
    assert decoded.pixels.shape == (31, 3162, 3) and (decoded.width, decoded.height) == (6400, 64)
    emap = map_elements(enlarged, path, MapConfig(max_tiles=50))  # 199 tiles of 64 px would fit: 50 are spread
    assert emap.tiles == 50 and emap.preview.shape == (64, 6400, 3) and not emap.whole_photo
    assert emap.maps[CLASSES.index(emap.elements[0].label), :, -8:].max() > 0  # the tiles reach the far end
    elongated = map_elements(enlarged, path, MapConfig(max_pixels=100_000))  # 64 px would make it too long
    assert elongated.whole_photo and "too elongated" in elongated.note
    # only the centre square was classified: the map, boxes and tile side say so, not the whole 6400 px strip
    assert elongated.tile_sides[0] <= 64
    columns = np.flatnonzero(elongated.maps.max(axis=(0, 1)) > 0) * elongated.cell[0]  # in photo pixels
    assert columns.size and 3200 - 64 - elongated.cell[0] <= columns.min() and columns.max() <= 3200 + 64
    for element in elongated.elements:
        assert 3200 - 64 <= element.box[0] < element.box[2] <= 3200 + 64 and element.tile <= 64


def test_map_files_skips_and_lists_a_corrupt_file(classifier: Classifier, two_halves: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really")
    results = list(map_files(classifier, [broken, two_halves]))
    assert results[0] == (str(broken), try_decode(broken))  # the reason `predict` gives
    assert results[1].path == str(two_halves)


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def test_cli_json_schema_and_figures(tiny_mahalanobis: Path, two_halves: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really")
    out = tmp_path / "maps"
    code, stdout, stderr = run_cli(
        *("map", str(two_halves), str(broken), "--model", str(tiny_mahalanobis), "--none-threshold", "-20000"),
        *("--out", str(out), "--format", "json"),
    )
    assert code == 0, stderr
    (item,) = json.loads(stdout)
    assert {e["label"] for e in item["elements"]} == {CLASSES[LEFT], CLASSES[RIGHT]}
    assert (
        item["none_threshold"] == -20_000 and 0 < item["known_tiles"] < item["tiles"] == 194
    )  # 3 + 10 + 21 + 55 + 105
    assert set(item) == {"path", "width", "height", "elements", "whole_photo", "note", "tiles", "tile_sides",
                         "known_tiles", "none_threshold", "figure"}  # fmt: skip
    assert item["path"] == str(two_halves) and (item["width"], item["height"]) == (1024, 512)
    for element in item["elements"]:
        assert set(element) == {"label", "name", "confidence", "box", "peak", "tile"}
        assert set(element["box"]) == {"left", "top", "right", "bottom"} and set(element["peak"]) == {"x", "y"}
        assert element["label"] in CLASSES and 0 < element["confidence"] <= 1
    figure = Path(item["figure"])
    assert figure == out / "two halves.png.map.png" and figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"skipped {broken}" in stderr and "1 of 2 file(s) could not be read" in stderr
    assert json.loads((out / "elements.json").read_text()) == [item]
    code, table, _ = run_cli("map", str(two_halves), "--model", str(tiny_mahalanobis), "--stride", "0.5")
    assert code == 0 and "two halves.png" in table and "bell tower" not in table.splitlines()[0]


def test_cli_exits_2_naming_the_file_when_nothing_could_be_read(tiny_run, tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    code, stdout, stderr = run_cli("map", str(broken), "--model", str(tiny_run.checkpoint))
    assert code == 2 and stdout == ""
    assert f"heritage: skipped {broken}: not a recognised image format" in stderr.splitlines()


def test_cli_refuses_a_bad_scale() -> None:
    with pytest.raises(SystemExit):
        run_cli("map", "x.jpg", "--scales", "0.5,2")


def test_out_inside_an_input_folder_is_refused(tiny_run, two_halves: Path, tmp_path: Path) -> None:
    # the next run would map its own figures (IMG_1.jpg.map.png.map.png); a symbolic link does not hide the folder
    survey = tmp_path / "survey"
    survey.mkdir()
    (survey / "two halves.png").write_bytes(two_halves.read_bytes())
    (tmp_path / "link").symlink_to(survey)
    model = ("--model", str(tiny_run.checkpoint))
    for out in (survey / "maps", survey, tmp_path / "link" / "maps"):
        code, stdout, stderr = run_cli("map", str(survey), *model, "--out", str(out))
        assert code == 2 and stdout == ""
        assert (
            stderr == f"heritage: error: --out {out}: inside the input folder {survey}; write the figures elsewhere\n"
        )
    photo = survey / "two halves.png"
    code, _, stderr = run_cli("map", str(photo), *model, "--out", str(photo))
    assert (
        code == 2 and stderr == f"heritage: error: --out {photo}: is the input {photo}; write the figures elsewhere\n"
    )
    assert sorted(p.name for p in survey.iterdir()) == ["two halves.png"]  # nothing written there
    assert run_cli("map", str(survey), *model, "--out", str(tmp_path / "maps"))[0] == 0  # beside it: fine


def test_map_explains_itself_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["map", "--help"])
    text = capsys.readouterr().out
    assert info.value.code == 0 and "example" in text and "heritage map west_front.jpg" in text
    assert "--presence" in text and "--rule" in text and "--scales" in text


def test_a_hostile_file_name_is_exact_in_json_and_valid_as_a_figure(tiny_run, tmp_path: Path) -> None:
    name = b"caf\xe9\nphoto.png"  # not UTF-8, and a newline
    path = Path(os.fsdecode(bytes(tmp_path) + b"/" + name))
    Image.fromarray(draw(RIGHT, np.random.default_rng(2))[:40, :50]).save(path, format="PNG")
    out = tmp_path / "maps"
    code, stdout, stderr = run_cli(
        "map", str(path), "--model", str(tiny_run.checkpoint), "--out", str(out), "--format", "json"
    )
    assert code == 0, stderr
    (item,) = json.loads(stdout)
    assert item["path"] == str(path) and item["whole_photo"]
    assert Path(item["figure"]).name == "caf__photo.png.map.png" and Path(item["figure"]).exists()
    code, table, _ = run_cli("map", str(path), "--model", str(tiny_run.checkpoint))
    assert code == 0 and "caf\\xe9\\nphoto.png" in table and "note: photo smaller than one tile" in table


# --------------------------------------------------------------------------------------------
# heritage predict --elements
# --------------------------------------------------------------------------------------------


def test_with_elements_adds_the_maps_elements_and_keeps_the_answer(enlarged: Classifier, two_halves: Path) -> None:
    missing = Prediction("altar", "altar", 0.9, (), path="gone.png")  # predicted, then gone before the map reads it
    plain = list(enlarged.predict_files([two_halves, "broken.png"]))
    items = list(with_elements(enlarged, [*plain, missing]))
    assert replace(items[0], elements=None) == plain[0]  # the single answer is unchanged
    assert items[0].elements == map_elements(enlarged, two_halves).elements and len(items[0].elements) == 2
    assert items[1] == plain[1] and plain[1][0] == "broken.png"  # a file skipped by predict passes through
    assert items[2][0] == "gone.png" and isinstance(items[2], tuple)  # skipped, listed: never a stop
    assert "elements" not in plain[0].to_dict() and "elements" not in plain[0].flat()  # not asked: not there


def test_elements_cell_round_trips_any_label() -> None:
    boxes = [Element("bell_tower", "bell tower", 0.91, (120, 0, 980, 760), (1, 1), 64),
             Element("odd;label:50%", "odd", 0.5512, (0, 1, 2, 3), (1, 1), 64)]  # fmt: skip
    text = elements_cell(boxes)
    assert text == "bell_tower:0.9100:120,0,980,760;odd%3Blabel%3A50%25:0.5512:0,1,2,3"
    assert parse_elements_cell(text) == [(e.label, e.confidence, e.box) for e in boxes]
    assert parse_elements_cell("") == [] and elements_cell([]) == ""
    with pytest.raises(ValueError):
        parse_elements_cell("bell_tower:0.91")  # no box: not a cell this tool wrote


def test_predict_elements_in_json_csv_and_table(tiny_mahalanobis: Path, two_halves: Path, tmp_path: Path) -> None:
    model = ["--model", str(tiny_mahalanobis), "--none-threshold", "-20000", "-q"]
    code, stdout, stderr = run_cli("map", str(two_halves), *model, "--format", "json")
    assert code == 0, stderr
    mapped = json.loads(stdout)[0]["elements"]
    code, stdout, stderr = run_cli("predict", str(two_halves), *model, "--elements", "--format", "json")
    assert code == 0, stderr
    (item,) = json.loads(stdout)
    code, plain, _ = run_cli("predict", str(two_halves), *model, "--format", "json")
    assert item.pop("elements") == mapped and len(mapped) == 2  # the map's own schema and elements
    assert item == json.loads(plain)[0]  # beside the unchanged answer; without --elements, no such field
    code, stdout, _ = run_cli("predict", str(two_halves), *model, "--elements", "--format", "csv")
    (row,) = csv.DictReader(io.StringIO(stdout))
    assert list(row)[-1] == "elements" and list(row)[:-1] == flat_fields(3)
    listed = [(e["label"], e["confidence"], tuple(e["box"].values())) for e in mapped]
    assert parse_elements_cell(row["elements"]) == listed
    code, table, _ = run_cli("predict", str(two_halves), *model, "--elements")
    _, answer, line = table.splitlines()  # the elements under the photo's one answer
    assert "none of these" in answer and line.strip().startswith("elements: ")
    assert all(f"{e['name']} {e['confidence']:.2f}" in line for e in mapped)
    code, table, _ = run_cli("predict", str(two_halves), *model, "--elements", "--presence", "1")
    assert table.splitlines()[2].split() == ["elements:", "none", "found"]


def test_predict_presence_needs_elements(tiny_run, two_halves: Path) -> None:
    code, stdout, stderr = run_cli("predict", str(two_halves), "--model", str(tiny_run.checkpoint), "--presence", "0.5")
    assert code == 2 and stdout == "" and stderr == "heritage: error: --presence is the element map's: add --elements\n"
    with pytest.raises(SystemExit):
        run_cli("predict", str(two_halves), "--elements", "--presence", "0")


def test_predict_elements_names_that_are_not_utf8_round_trip(tiny_mahalanobis: Path, tmp_path: Path) -> None:
    path = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9;halves.png"))
    Image.fromarray(mosaic([LEFT, RIGHT])).save(path, format="PNG")
    model = ["--model", str(tiny_mahalanobis), "--none-threshold", "-20000", "--elements", "-q"]
    assert run_cli("predict", str(path), *model, "-o", str(tmp_path / "p.csv"))[0] == 0
    assert run_cli("predict", str(path), *model, "-o", str(tmp_path / "p.json"))[0] == 0
    with open(tmp_path / "p.csv", newline="", encoding="utf-8", errors="surrogateescape") as handle:
        (row,) = csv.DictReader(handle)
    (item,) = json.loads((tmp_path / "p.json").read_text(encoding="utf-8"))
    assert row["path"] == item["path"] == str(path)
    assert [label for label, _, _ in parse_elements_cell(row["elements"])] == [e["label"] for e in item["elements"]]
    assert {e["label"] for e in item["elements"]} == {CLASSES[LEFT], CLASSES[RIGHT]}


def test_noise_tiles_count_for_no_class_whatever_their_score(tiny_run) -> None:
    """A photo of uniform noise with the score's threshold below every score: the score would keep every tile, the
    noise check keeps none, so no element is listed."""
    classifier = Classifier.load(tiny_run.checkpoint, none_threshold=-1e9)
    noise = np.random.default_rng(6).integers(0, 256, (256, 320, 3), dtype=np.uint8)
    found = map_elements(classifier, noise)
    assert found.tiles > 1 and found.known_tiles == 0 and found.elements == ()
    bare = Classifier.load(tiny_run.checkpoint, none_threshold=-1e9)
    bare.open_set = replace(bare.open_set, noise_threshold=None)  # the score alone: every tile counts
    assert map_elements(bare, noise).known_tiles == found.tiles
