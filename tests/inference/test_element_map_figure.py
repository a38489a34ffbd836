"""The element map's figure: its size in pixels is bounded whatever the photo's aspect (a 17 KB 50 x 20,000 PNG once
took 22.7 GB to draw), and a figure that cannot be drawn is listed for its photo, never the end of the run."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import draw
from heritage_cnn.base.figures import DPI
from heritage_cnn.cli.main import main
from heritage_cnn.inference import element_figure
from heritage_cnn.inference.element_map import Element, ElementMap

NAMES = ["altar", "apse", "bell tower", "column", "dome (inner)", "dome (outer)", "flying buttress", "gargoyle"]
NAMES += ["stained glass", "vault"]
# 10 in wide; the photo panel drawn at most 2.5 times as high as wide, two rows of maps, one more title line (1200 x
# 3180 px); the PNG, cropped to what is drawn, may pass the width by a label beside a photo a few pixels wide
MOST_PIXELS = (1200, 3180)
MOST_PNG_PIXELS = (1600, 3300)


def element_map(width: int, height: int) -> ElementMap:
    """A made-up map of a `width` x `height` photo (its preview at that size): no model needed to draw it."""
    rng = np.random.default_rng(0)
    cell = 16
    maps = rng.random((10, -(-height // cell), -(-width // cell))).astype(np.float32)
    element = Element("c2", "bell tower", 0.8, (0, 0, width // 2, height // 2), (width // 4, height // 4), 64)
    return ElementMap(
        path=f"{width}x{height}.png",
        width=width,
        height=height,
        elements=(element,),
        classes=[f"c{i}" for i in range(10)],
        names=NAMES,
        maps=maps,
        cell=(float(cell), float(cell)),
        tiles=1,
        tile_sides=(64,),
        known_tiles=None,
        none_threshold=None,
        preview=rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
    )


@pytest.mark.parametrize("width,height", [(20, 8000), (8000, 20), (300, 12000), (1, 5000), (400, 300), (64, 64)])
def test_the_figure_is_bounded_whatever_the_aspect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, width: int, height: int
) -> None:
    """The figure's size is checked before anything is rendered (a 20 x 8000 photo made a 1200 x 400,000 px figure
    at its own aspect), then the figure is drawn, and its PNG is within the bound too."""
    sizes = []
    monkeypatch.setattr(element_figure, "save_figure", lambda fig, path: sizes.append(fig.get_size_inches() * DPI))
    element_figure.draw_element_map(element_map(width, height), tmp_path / "sized.png")
    ((figure_width, figure_height),) = sizes
    assert figure_width <= MOST_PIXELS[0] and figure_height <= MOST_PIXELS[1]
    monkeypatch.undo()
    path = element_figure.draw_element_map(element_map(width, height), tmp_path / "drawn.png")
    with Image.open(path) as figure:
        assert figure.width <= MOST_PNG_PIXELS[0] and figure.height <= MOST_PNG_PIXELS[1]


def test_an_elongated_photo_is_shown_stretched_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drawn at its own aspect within the bound, a 20 x 8000 strip would be a line 3 px wide: it is shown at 1:8."""
    figures = []
    monkeypatch.setattr(element_figure, "save_figure", lambda fig, path: figures.append(fig))
    element_figure.draw_element_map(element_map(20, 8000), "unused.png")
    element_figure.draw_element_map(element_map(400, 300), "unused.png")
    (tall, ordinary) = (fig.axes[0] for fig in figures)
    assert "shown stretched to 1:8 (the photo is 1:400)" in tall.get_title()
    assert tall.get_aspect() == pytest.approx(8 / 400)  # the strip's pixels drawn 20 times as wide as high
    assert "stretched" not in ordinary.get_title() and ordinary.get_aspect() == 1  # square pixels, as before


@pytest.mark.parametrize(
    "aspect,text",
    [(999.7, "1:1000"), (1000, "1:1000"), (1 / 1000, "1000:1"), (1 / 64_000, "64000:1"), (123_456.7, "1:123457")],
)
def test_a_long_ratio_is_written_in_whole_numbers(aspect: float, text: str) -> None:
    """From 1000:1 on, three significant digits need an exponent: the title said "the photo is 1e+03:1"."""
    assert element_figure._ratio(aspect) == text


def test_the_title_of_a_strip_says_its_ratio_in_whole_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    figures = []
    monkeypatch.setattr(element_figure, "save_figure", lambda fig, path: figures.append(fig))
    element_figure.draw_element_map(element_map(1, 5000), "unused.png")
    assert "shown stretched to 1:8 (the photo is 1:5000)" in figures[0].axes[0].get_title()


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("failure", [MemoryError, ValueError("Image size of 1200x499200 pixels is too large")])
def test_a_figure_that_cannot_be_drawn_is_listed_and_the_run_goes_on(
    tiny_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException
) -> None:
    survey = tmp_path / "survey"
    survey.mkdir()
    for i, name in enumerate(("a_tall.png", "b_plain.png")):
        Image.fromarray(draw(i, np.random.default_rng(i), size=128)).save(survey / name)
    drawing = element_figure.save_figure

    def save_figure(fig, path):  # matplotlib fails on the first photo only
        if Path(path).name.startswith("a_tall"):
            raise failure
        return drawing(fig, path)

    monkeypatch.setattr(element_figure, "save_figure", save_figure)
    out = tmp_path / "maps"
    code, stdout, stderr = run_cli(
        "map", str(survey), "--model", str(tiny_run.checkpoint), "--out", str(out), "--format", "json"
    )
    assert code == 0, stderr
    items = {Path(item["path"]).name: item for item in json.loads(stdout)}
    assert items["a_tall.png"]["figure"] is None and Path(items["b_plain.png"]["figure"]).exists()
    assert json.loads((out / "elements.json").read_text()) == json.loads(stdout)
    assert not (out / "a_tall.png.map.png").exists()
    reason = (
        "not enough memory to draw its figure"
        if failure is MemoryError
        else "its figure could not be drawn (ValueError: Image size of 1200x499200 pixels is too large)"
    )
    assert f"heritage: no figure for {survey / 'a_tall.png'}: {reason}" in stderr.splitlines()
    assert f"heritage: 1 figure(s) (1 could not be drawn) and elements.json written to {out}" in stderr.splitlines()
    assert "Traceback" not in stderr
