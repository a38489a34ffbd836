"""The HTML report: one self-contained page, every section there, opened in a real headless Chromium."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest
import torch

from conftest import CLASSES
from heritage_cnn import __version__
from heritage_cnn.apps.report import build_html_report
from heritage_cnn.base.figures import DPI
from heritage_cnn.cli.main import main
from heritage_cnn.inference.plots import CELL_FONT_PT
from heritage_cnn.models.checkpoint import load_checkpoint

SECTIONS = ["data", "training", "eval-val", "inside", "class-images", "element-map"]


@pytest.fixture(scope="module")
def quiet_report(tiny_run, synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The report of the tiny run, made with -q; and what it wrote to stderr."""
    out = tmp_path_factory.mktemp("report")
    args = ["report", "--model", str(tiny_run.checkpoint), "--data", str(synthetic_root), "--out", str(out), "-q"]
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert main(args) == 0
    return out, err.getvalue()


@pytest.fixture(scope="module")
def report(quiet_report: tuple[Path, str]) -> Path:
    return quiet_report[0]


def test_quiet_report_shows_no_progress_bar(quiet_report: tuple[Path, str]) -> None:
    err = quiet_report[1]
    assert "%|" not in err and "it/s" not in err, err  # every step's bars (class images included) obey -q


def test_report_is_one_self_contained_page(report: Path, tiny_run) -> None:
    page = (report / "index.html").read_text()
    sources = re.findall(r"<img src='([^']*)'", page)
    assert len(sources) >= 7 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http://" not in page and "https://" not in page  # opens offline
    # header: model with its size, data by name, date and version, the headline figure and its split
    metrics = json.loads((report / "eval-val" / "metrics.json").read_text())
    header = page[: page.index("<nav")]
    assert f"<dd>{Path(str(tiny_run.checkpoint)).name}: " in header and "M parameters" in header
    assert "<dt>data</dt><dd>synthetic" in header  # the folder by name
    history = json.loads(Path(str(tiny_run.checkpoint)).with_suffix(".json").read_text())["history"]
    assert f"({len(history)} epochs)" in page
    assert f"heritage-cnn {__version__}" in header and re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", header)
    assert f"Accuracy {100 * metrics['accuracy']['value']:.1f} %" in header and "validation split" in header
    assert "macro F1" in header
    # a table of contents whose every entry leads to a section
    anchors = re.findall(r"<a href='#([^']+)'>", page)
    assert anchors == SECTIONS and all(f"<section id='{a}'>" in page for a in anchors)
    # tables use display names, never folder names
    cells = re.findall(r"<td>([^<]*)</td>", page)
    assert "bell tower" in cells and "dome (inner)" in cells
    assert not {"bell_tower", "dome(inner)", "stained_glass"} & set(cells)
    # first-layer kernels inline once; deeper kernels linked, not inlined
    assert page.count("alt='first-layer kernels'") == 1
    links = re.findall(r"<a href='(inside/kernels_[^']+\.png)'>", page)
    assert links and all((report / link).exists() for link in links)
    # the deconvnet caption says what the figure shows; the class images are one grid
    assert "receptive field" in page and "photo patch" in page
    grid = re.findall(r"<ul class='classes'>(.*?)</ul>", page)
    assert len(grid) == 1 and re.findall(r"alt='drawn for ([^']+)'", grid[0]) == [
        c.replace("_", " ").replace("(", " (") for c in CLASSES
    ]


def test_curves_come_from_the_checkpoint_history(tmp_path: Path) -> None:
    """`demo --no-train`: no training run, but the shipped model carries its history: the report plots it."""
    page = build_html_report(tmp_path, tmp_path / "index.html", load_checkpoint(None), data="data/ahe64").read_text()
    assert (tmp_path / "train" / "curves.png").exists()
    epochs = len(load_checkpoint(None).member(0).info["history"])  # member 0's curves
    assert f"({epochs} epochs)" in page and "<section id='training'>" in page
    assert "default.safetensors" in page and "ahe64" in page
    assert "<h2>What is where</h2><p>Skipped: this folder holds no element maps" in page  # and says why


def test_what_is_where_maps_mosaics_of_photos_the_model_did_not_train_on(report: Path, tiny_run) -> None:
    from heritage_cnn.base.io import read_json
    from heritage_cnn.inference.evaluate import trained_on

    page = (report / "index.html").read_text()
    section = page[page.index("<section id='element-map'>") :]
    record = read_json(report / "element_map" / "element_map.json")
    assert len(record["mosaics"]) == 2 and record["seed"] == 0 and record["seconds"] > 0
    assert f"took {record['seconds']:.0f} s" in section and "did not train on" in section
    names = [c.replace("_", " ").replace("(", " (") for c in CLASSES]
    for i, mosaic in enumerate(record["mosaics"], 1):
        assert len(mosaic["cells"]) == 4 and len(set(mosaic["cells"])) == 4 and set(mosaic["cells"]) <= set(names)
        assert f"alt='element map of mosaic {i}'" in section and f"Mosaic {i}: {', '.join(mosaic['cells'])}" in section
        assert (report / "element_map" / mosaic["figure"]).exists()
    # the same photos again: seeded, and none of them one the model trained on
    from heritage_cnn.apps.steps import unseen_photos
    from heritage_cnn.data.folders import find_layout
    from heritage_cnn.data.split import perceptual_hashes
    from heritage_cnn.inference.evaluate import near_any

    checkpoint = load_checkpoint(tiny_run.checkpoint)
    photos, labels, _ = unseen_photos(checkpoint, find_layout(read_json(report / "data_check.json")["root"]))
    again, _, _ = unseen_photos(checkpoint, find_layout(read_json(report / "data_check.json")["root"]))
    assert (photos == again).all() and len(set(labels.tolist())) >= 4
    hashes = perceptual_hashes(torch.from_numpy(photos).permute(0, 3, 1, 2))
    assert not near_any(hashes, *trained_on(checkpoint)).any()


def test_a_model_that_cannot_rebuild_its_split_is_reported_on_what_was_scored(
    tiny_run, synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model that records neither its recipe nor its training photos: the report scores every photo (--split auto,
    into eval-val/), and the page said "validation split" with no warning; it names what was scored and carries the
    warning `heritage evaluate` prints."""
    from dataclasses import replace

    from heritage_cnn.apps import pipeline

    monkeypatch.setattr(pipeline, "FIGURE_STEPS", ())  # the evaluation is what is tested
    checkpoint = load_checkpoint(tiny_run.checkpoint)
    blind = replace(checkpoint, info={k: v for k, v in checkpoint.info.items() if k not in ("recipe", "trained_on")})
    said: list[str] = []
    page = pipeline.run_report(blind, str(synthetic_root), tmp_path, log=said.append).read_text()
    assert json.loads((tmp_path / "eval-val" / "metrics.json").read_text())["split"] == "all"
    assert any("trained-on images cannot be told apart" in line for line in said)  # the CLI's warning
    header = page[: page.index("<nav")]
    assert "on all photos of the folder (" in header and "validation" not in header
    warning = "Warning: the model does not record which images trained it, so trained-on images cannot be told apart"
    assert warning in header
    section = page[page.index("<section id='eval-val'>") :]
    assert section.startswith("<section id='eval-val'><h2>All photos of the folder</h2>") and warning in section
    assert "Validation split" not in page


def test_what_is_where_is_skipped_with_the_reason(tiny_run, synthetic_root: Path, tmp_path: Path) -> None:
    """A model that does not record its training photos: no photo can be shown as unseen, and the page says so."""
    from dataclasses import replace

    from heritage_cnn.apps.steps import element_map_step
    from heritage_cnn.data.folders import find_layout

    checkpoint = load_checkpoint(tiny_run.checkpoint)
    blind = replace(checkpoint, info={k: v for k, v in checkpoint.info.items() if k != "trained_on"})
    lines: list[str] = []
    element_map_step(blind, str(synthetic_root), find_layout(synthetic_root), tmp_path, lines.append)
    assert lines[-1].startswith("skipped: the model does not record the photos it trained on")
    page = build_html_report(tmp_path, tmp_path / "index.html", blind).read_text()
    assert "<h2>What is where</h2><p>Skipped: the model does not record the photos it trained on" in page
    assert not list((tmp_path / "element_map").glob("*.png"))


def test_the_inside_step_skips_and_lists_unreadable_photos(tiny_run, synthetic_root: Path, tmp_path: Path) -> None:
    """A truncated photo (the first training photo, the one the step would show) and an empty one: skipped, each
    logged by name, another photo shown, every figure drawn."""
    import shutil
    from dataclasses import replace

    from heritage_cnn.apps.steps import inside_step
    from heritage_cnn.data.folders import find_layout

    data = shutil.copytree(synthetic_root, tmp_path / "data")
    first = data / "altar" / "000.png"
    first.write_bytes(first.read_bytes()[:1500])
    (data / "vault" / "zero.png").write_bytes(b"")
    no_split = replace(load_checkpoint(tiny_run.checkpoint), path=None)  # no split.json: a training photo is shown
    earlier = tmp_path / "out" / "inside" / "explain_another.jpg.png"  # a figure of an earlier report's photo
    earlier.parent.mkdir(parents=True)
    earlier.write_bytes(b"")
    lines: list[str] = []
    inside_step(no_split, str(data), find_layout(data), tmp_path / "out", lines.append)
    assert f"(photo: {data / 'altar' / '001.png'})" in lines[0]
    assert lines[1].startswith(f"skipped {first}: corrupt or truncated image")
    assert lines[2:] == [f"skipped {data / 'vault' / 'zero.png'}: empty file (0 bytes)", "2 unreadable file(s) skipped"]
    inside = tmp_path / "out" / "inside"
    for pattern in ("feature_maps_001.png_layer1.png", "kernels_layer1.png", "deconv_*.png", "explain_001.png.png"):
        assert list(inside.glob(pattern)), pattern
    assert not earlier.exists()  # else the page would show it as this model's
    # the page says so too, not only the log
    page = build_html_report(tmp_path / "out", tmp_path / "out" / "index.html", no_split).read_text(encoding="utf-8")
    assert f"2 unreadable file(s) skipped: {first}: corrupt or truncated image" in page
    assert f"{data / 'vault' / 'zero.png'}: empty file (0 bytes)" in page


def _check_in_chromium(browser, page: Path, width: int) -> dict:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}
    )
    browser.get(page.as_uri())
    # `get` can return while a page of several MB of inline images is still being parsed (seen once in CI: the
    # last section missing): measure only the whole document
    WebDriverWait(browser, 60).until(lambda d: d.execute_script("return document.readyState") == "complete")
    return browser.execute_script(
        """
        const images = [...document.images];
        const matrix = document.querySelector("img[alt^='confusion matrix']");
        return {
          broken: images.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt),
          overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
          sections: [...document.querySelectorAll('section')].map(s => s.id),
          matrixScale: matrix ? matrix.clientWidth / matrix.naturalWidth : 0,
        };
        """
    )


@pytest.mark.parametrize("width", [1280, 400])
def test_report_in_chromium(report: Path, browser, width: int) -> None:
    found = _check_in_chromium(browser, report / "index.html", width)
    assert found["broken"] == [], "broken images"
    assert found["overflow"] <= 0, f"horizontal overflow at {width} px"
    assert found["sections"] == SECTIONS, "missing section"
    if width == 1280:  # cell text of the confusion matrix as displayed, in CSS px
        assert CELL_FONT_PT * DPI / 72 * found["matrixScale"] >= 11


def test_an_unfinished_run_says_so_and_how_to_finish_it(tiny_run, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    meta = json.loads(Path(str(tiny_run.checkpoint)).with_suffix(".json").read_text())
    planned = meta["recipe"]["epochs"]
    meta["epochs_trained"], meta["history"] = 1, meta["history"][:1]  # killed after its first epoch
    (run / "last.json").write_text(json.dumps(meta))
    (run / "last.safetensors").write_bytes(Path(str(tiny_run.checkpoint)).read_bytes())
    page = build_html_report(tmp_path, tmp_path / "index.html", load_checkpoint(run / "last.safetensors")).read_text()
    assert f"trained 1 of {planned} epochs (interrupted)<" in page  # no resume state beside it: nothing to resume
    (run / "resume.safetensors").write_bytes(b"")
    page = build_html_report(tmp_path, tmp_path / "index.html", load_checkpoint(run / "last.safetensors")).read_text()
    assert f"trained 1 of {planned} epochs (interrupted: resume with heritage train --out {run} --resume)" in page
    meta["recipe"]["epochs"] = 1
    (run / "last.json").write_text(json.dumps(meta))
    page = build_html_report(tmp_path, tmp_path / "index.html", load_checkpoint(run / "last.safetensors")).read_text()
    assert "trained 1 epoch</dd>" in page and "interrupted" not in page


def test_a_folder_holding_test_alone_is_reported_on_its_test_split(
    tiny_run, kaggle_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """`DIR/test/<class>/` alone, a layout every command takes (`heritage --help`): the report wrote the test
    evaluation, then failed in its figure steps (no train/ folder). It scores the test split, says there is no
    validation section and why, and draws its figures from the test photos."""
    import shutil

    from heritage_cnn.apps import pipeline
    from heritage_cnn.apps.steps import element_map_step, inside_step

    monkeypatch.setattr(pipeline, "FIGURE_STEPS", (inside_step, element_map_step))  # the class images read no data
    only = tmp_path / "only"
    shutil.copytree(kaggle_root / "test", only / "test")
    out = tmp_path / "out"
    assert main(["report", "--model", str(tiny_run.checkpoint), "--data", str(only), "--out", str(out), "-q"]) == 0
    assert f"note: {only} holds test/ alone: no validation split" in capsys.readouterr().out
    page = (out / "index.html").read_text()
    assert re.findall(r"<a href='#([^']+)'>", page) == ["data", "training", "eval-test", "inside", "element-map"]
    assert "The folder holds test/ alone" in page and "there is no validation section" in page
    assert not (out / "eval-val").exists()
    drawn = json.loads((out / "element_map" / "element_map.json").read_text())
    assert drawn["photos"].startswith(f"photos of {only / 'test'} the model did not train on")
    assert list((out / "inside").glob("explain_*.png"))


def test_the_sections_of_one_network_of_an_ensemble_name_that_member(tiny_run, tmp_path: Path) -> None:
    """`report --member 1` of the shipped ensemble: the inside, class-image and training sections show member 1
    alone, and the page never said "member" (its header: an ensemble of 3 networks)."""
    from PIL import Image

    (tmp_path / "inside").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "inside" / "kernels_layer1.png")
    (tmp_path / "class_images").mkdir()
    (tmp_path / "class_images" / "class_images.json").write_text(json.dumps({"images": []}))
    ensemble = load_checkpoint(None)
    page = build_html_report(tmp_path, tmp_path / "index.html", ensemble, member=1).read_text()
    note = (
        "<p>This section shows one network of the ensemble: member 1 of 3 (numbered from 0; heritage report --member "
        "picks another). The evaluations are of all 3 together.</p>"
    )
    for anchor, heading in (
        ("training", "Training"),
        ("inside", "Inside the network"),
        ("class-images", "Class images"),
    ):
        assert f"<section id='{anchor}'><h2>{heading}</h2>{note}" in page, anchor
    assert page.count(note) == 3
    single = build_html_report(tmp_path, tmp_path / "index.html", load_checkpoint(tiny_run.checkpoint)).read_text()
    assert "member" not in single  # one network: nothing to choose among
