"""`heritage sort --multi`: a photo filed under every element the element map finds, the single-class rule for a
photo with none, one manifest row per photo listing every copy, resuming, hard links, and a folder sorted one way."""

from __future__ import annotations

import csv
import io
import json
import os
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import CLASSES, LEFT, RIGHT, draw, file_digest, make_survey, mosaic
from heritage_cnn.base.names import cell_items
from heritage_cnn.cli.main import main
from heritage_cnn.inference.classifier import Classifier, find_photos, parse_elements_cell
from heritage_cnn.inference.element_map import map_elements
from heritage_cnn.inference.sort import sort_photos
from heritage_cnn.inference.sort_manifest import MANIFEST_FIELDS, MULTI_FIELDS
from heritage_cnn.inference.sort_settings import SETTINGS_NAME
from heritage_cnn.inference.tiles import MapConfig

NONE_THRESHOLD = -20_000  # the element map tests' threshold for enlarged pictures (test_element_map.enlarged)


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _manifest(out: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(out / "manifest.csv", newline="", encoding="utf-8", errors="surrogateescape") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _survey(synthetic_root: Path, root: Path) -> Path:
    """make_survey's nine photos and its broken file, a two-element mosaic, and blends of two classes' pictures
    (ambiguous on purpose: the map finds nothing in most of them)."""
    make_survey(synthetic_root, root)
    Image.fromarray(mosaic([LEFT, RIGHT])).save(root / "two halves.png")
    rng = np.random.default_rng(11)
    pictures = [draw(label, rng).astype(np.float64) for label in range(10)]
    for a in range(4):
        Image.fromarray((0.5 * pictures[a] + 0.5 * pictures[a + 3]).astype(np.uint8)).save(root / f"blend{a}.png")
    return root


@pytest.fixture(scope="module")
def enlarged(tiny_mahalanobis: Path) -> Classifier:
    return Classifier.load(tiny_mahalanobis, none_threshold=NONE_THRESHOLD)


def _expected(classifier: Classifier, survey: Path, min_confidence: float) -> dict[str, list[str]]:
    """Each photo's folders by the rule, from its map and its single answer computed here, one photo at a time."""
    expected = {}
    for path in find_photos([survey])[0]:
        if path.name == "broken.jpg":
            continue
        labels = [e.label for e in map_elements(classifier, path).elements]
        answer = classifier.predict(path)[0]
        single = "_none" if answer.known is False else answer.label if answer.probability >= min_confidence else None
        expected[str(path)] = labels or [single or "_uncertain"]
    return expected


def test_multi_files_every_element_and_the_single_rule_without_one(
    enlarged: Classifier, synthetic_root: Path, tmp_path: Path
) -> None:
    survey = _survey(synthetic_root, tmp_path / "survey")
    before = {p: file_digest(p) for p in survey.rglob("*") if p.is_file()}
    expected = _expected(enlarged, survey, 0.6)
    # the survey exercises every branch: two elements in a photo that is none of the ten as a whole, and photos
    # with no element that are none of the ten, or unsure which
    mosaic_path = str(survey / "two halves.png")
    assert sorted(expected[mosaic_path]) == sorted([CLASSES[LEFT], CLASSES[RIGHT]])
    assert enlarged.predict(mosaic_path)[0].known is False
    assert ["_none"] in expected.values() and ["_uncertain"] in expected.values()
    out = tmp_path / "sorted"
    summary = sort_photos(enlarged, survey, out, 0.6, progress=False, multi=True)
    assert {p: file_digest(p) for p in survey.rglob("*") if p.is_file()} == before  # nothing moved, changed or deleted
    fields, rows = _manifest(out)
    assert fields == MULTI_FIELDS and len(rows) == len(expected) == summary.placed  # one row per photo
    for row in rows:
        destinations = [Path(d) for (d,) in cell_items(row["destinations"])]
        assert [d.parent.name for d in destinations] == expected[row["source"]], row["source"]
        assert row["destination"] == str(destinations[0])  # the most confident element's copy
        assert all(file_digest(d) == file_digest(Path(row["source"])) for d in destinations)
        folders = expected[row["source"]]
        labels = [label for label, _, _ in parse_elements_cell(row["elements"])]
        assert labels == ([] if folders[0].startswith("_") else folders)  # no element: a single-rule folder
    mosaic_row = next(r for r in rows if r["source"] == mosaic_path)
    found = map_elements(enlarged, mosaic_path).elements
    assert parse_elements_cell(mosaic_row["elements"]) == [(e.label, e.confidence, e.box) for e in found]
    assert mosaic_row["known"] == "false"  # the whole photo's answer stays in its columns
    placements = sum(len(folders) for folders in expected.values())
    assert sum(summary.per_class.values()) == placements == summary.copied
    assert summary.several == 1 and summary.no_element == sum(f[0].startswith("_") for f in expected.values())
    assert summary.none == sum(f == ["_none"] for f in expected.values()) and summary.uncertain == sum(
        f == ["_uncertain"] for f in expected.values()
    )
    assert "--multi: 1 photo(s) filed under two or more elements" in summary.describe(0.6)
    assert [Path(p).name for p, _ in summary.skipped] == ["broken.jpg"]

    again = sort_photos(enlarged, survey, out, 0.6, progress=False, multi=True)  # resumed from the manifest
    assert again.placed == 0 and again.already_done == len(expected)
    (out / "manifest.csv").unlink()  # as if killed before the manifest: every copy found again by its content
    third = sort_photos(enlarged, survey, out, 0.6, progress=False, multi=True)
    assert third.placed == 0 and third.already_done == len(expected) and third.copied == 0
    assert len([p for p in out.rglob("*") if p.is_file() and p.parent != out]) == placements  # no second copy
    assert _manifest(out)[1] == rows


def test_multi_hard_links_are_links_never_symbolic(enlarged: Classifier, synthetic_root: Path, tmp_path: Path) -> None:
    survey = _survey(synthetic_root, tmp_path / "survey")
    summary = sort_photos(enlarged, survey, tmp_path / "out", 0.6, "link", progress=False, multi=True)
    assert summary.copied == 0 and summary.linked == sum(summary.per_class.values())
    for row in _manifest(tmp_path / "out")[1]:
        destinations = [Path(d) for (d,) in cell_items(row["destinations"])]
        assert not any(d.is_symlink() for d in destinations)
        assert Path(row["source"]).stat().st_nlink == 1 + len(destinations)  # the photo and one link per folder
        assert all(d.samefile(row["source"]) for d in destinations)


def test_no_element_found_files_each_photo_as_without_multi(
    tiny_mahalanobis: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    """--presence 1: the map lists nothing (its peaks here stay below 1), so every photo goes where a plain sort
    sends it; the manifest says no element for each."""
    survey = _survey(synthetic_root, tmp_path / "survey")
    model = ["--model", str(tiny_mahalanobis), "--none-threshold", str(NONE_THRESHOLD), "-q"]
    assert run_cli("sort", str(survey), "--out", str(tmp_path / "plain"), *model)[0] == 0
    multi = ["sort", str(survey), "--out", str(tmp_path / "multi"), *model, "--multi", "--presence", "1"]
    code, stdout, stderr = run_cli(*multi)
    assert code == 0, stderr
    plain = {r["source"]: Path(r["destination"]) for r in _manifest(tmp_path / "plain")[1]}
    assert f"--multi: 0 photo(s) filed under two or more elements, {len(plain)} with no element found" in stdout
    rows = _manifest(tmp_path / "multi")[1]
    assert {r["source"]: Path(r["destination"]).parent.name for r in rows} == {
        s: d.parent.name for s, d in plain.items()
    }
    assert all(r["elements"] == "" and cell_items(r["destinations"]) == [[r["destination"]]] for r in rows)
    assert len({d.parent.name for d in plain.values()}) >= 3  # _none/, _uncertain/ and classes: a real comparison


def test_a_folder_is_sorted_one_way(tiny_run, enlarged: Classifier, synthetic_root: Path, tmp_path: Path) -> None:
    survey = make_survey(synthetic_root, tmp_path / "survey")
    single, multi = tmp_path / "single", tmp_path / "multi"
    sort_photos(enlarged, survey, single, progress=False)
    sort_photos(enlarged, survey, multi, progress=False, multi=True, map_config=MapConfig(presence=0.5))
    assert _manifest(single)[0] == MANIFEST_FIELDS  # the manifest of a plain sort is unchanged
    before = {p: file_digest(p) for p in [*single.rglob("*"), *multi.rglob("*")] if p.is_file()}
    with pytest.raises(ValueError, match="sorted without --multi; sort into it without --multi again"):
        sort_photos(enlarged, survey, single, progress=False, multi=True)
    code, _, stderr = run_cli("sort", str(survey), "--out", str(multi), "--model", str(tiny_run.checkpoint))
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert "manifest.csv: this folder was sorted with --multi" in stderr
    assert {p: file_digest(p) for p in [*single.rglob("*"), *multi.rglob("*")] if p.is_file()} == before  # untouched


def test_presence_needs_multi_and_a_number_in_range(tiny_run, tmp_path: Path) -> None:
    model = ["--model", str(tiny_run.checkpoint)]
    code, _, stderr = run_cli("sort", str(tmp_path), "--out", str(tmp_path / "o"), *model, "--presence", "0.5")
    assert code == 2 and stderr.strip() == "heritage: error: --presence is the element map's: add --multi"
    assert not (tmp_path / "o").exists()
    for bad in ("0", "1.5", "nan"):
        with pytest.raises(SystemExit) as info:
            run_cli("sort", str(tmp_path), "--out", str(tmp_path / "o"), "--multi", "--presence", bad)
        assert info.value.code == 2


def test_multi_names_that_are_not_utf8_round_trip(tiny_mahalanobis: Path, tmp_path: Path) -> None:
    """A source not UTF-8, and an output folder whose name holds a byte that is not UTF-8, ";", "%" and ":":
    every placement comes back exactly from the `destinations` cell."""
    survey = tmp_path / "survey"
    survey.mkdir()
    photo = Path(os.fsdecode(os.fsencode(survey) + b"/caf\xe9 halves.png"))
    Image.fromarray(mosaic([LEFT, RIGHT])).save(photo, format="PNG")
    out = Path(os.fsdecode(os.fsencode(tmp_path) + b"/out \xe9;%3B:x"))
    model = ["--model", str(tiny_mahalanobis), "--none-threshold", str(NONE_THRESHOLD), "-q"]
    code, _, stderr = run_cli("sort", str(survey), "--out", str(out), *model, "--multi")
    assert code == 0, stderr
    (row,) = _manifest(out)[1]
    assert row["source"] == str(photo)
    destinations = [Path(d) for (d,) in cell_items(row["destinations"])]
    assert sorted(d.parent.name for d in destinations) == sorted([CLASSES[LEFT], CLASSES[RIGHT]])
    assert all(d.parent.parent == out.resolve() and d.name == "caf_ halves.png" for d in destinations)
    assert all(file_digest(d) == file_digest(photo) for d in destinations)
    assert "out \udce9%3B%253B%3Ax/" in row["destinations"]  # the cell's separators escaped inside a path


def test_a_rerun_with_other_element_map_settings_is_refused(enlarged: Classifier, tmp_path: Path) -> None:
    """The element map's settings decide the folders of a --multi sort too: a resume with another --presence is
    refused, naming it, before anything is written."""
    survey = tmp_path / "survey"
    survey.mkdir()
    Image.fromarray(mosaic([LEFT, RIGHT])).save(survey / "two halves.png")
    out = tmp_path / "out"
    sort_photos(enlarged, survey, out, 0.6, progress=False, multi=True, map_config=MapConfig(presence=0.5))
    settings = json.loads((out / SETTINGS_NAME).read_text(encoding="utf-8"))
    assert settings["multi"] is True and settings["map"]["presence"] == 0.5
    before = {p: file_digest(p) for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match=r"\(--presence 0\.5 then, 0\.6 now\): the photos sorted then would keep"):
        sort_photos(enlarged, survey, out, 0.6, progress=False, multi=True, map_config=MapConfig(presence=0.6))
    assert {p: file_digest(p) for p in out.rglob("*") if p.is_file()} == before
    again = sort_photos(enlarged, survey, out, 0.6, progress=False, multi=True, map_config=MapConfig(presence=0.5))
    assert again.already_done == 1 and again.placed == 0


def test_a_manifest_that_lost_multis_columns_is_said_as_edited(enlarged: Classifier, tmp_path: Path) -> None:
    """A --multi manifest whose `destinations` column a spreadsheet dropped was refused with --multi as "sorted
    without --multi" and without it as "with --multi then": each message sent the user to the other. Both now say
    what happened, naming the manifest."""
    survey = tmp_path / "survey"
    survey.mkdir()
    Image.fromarray(mosaic([LEFT, RIGHT])).save(survey / "two halves.png")
    out = tmp_path / "out"
    sort_photos(enlarged, survey, out, 0.6, progress=False, multi=True, map_config=MapConfig(presence=0.5))
    manifest = out / "manifest.csv"
    with open(manifest, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    with open(manifest, "w", newline="", encoding="utf-8") as handle:
        kept = [name for name in rows[0] if name != "destinations"]
        writer = csv.DictWriter(handle, kept, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    edited = "manifest.csv: has no destinations column, but the folder was sorted with --multi"
    with pytest.raises(ValueError, match=edited):
        sort_photos(enlarged, survey, out, 0.6, progress=False, multi=True, map_config=MapConfig(presence=0.5))
    with pytest.raises(ValueError, match=edited):
        sort_photos(enlarged, survey, out, 0.6, progress=False)
