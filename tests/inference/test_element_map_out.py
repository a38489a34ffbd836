"""`heritage map --out`: an output folder that holds an input photo or folder is refused before any work (a figure
could replace a photo there, and the next run would map the figures), a figure is never written over an input photo,
and a folder where elements.json goes is refused before any photo is mapped."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import LEFT, RIGHT, draw
from heritage_cnn.cli.main import main


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def photo(path: Path, label: int = LEFT) -> bytes:
    """A tiny synthetic photo (under one tile: mapped whole, fast), saved as PNG whatever the name says; its bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(draw(label, np.random.default_rng(label))[:40, :50]).save(path, format="PNG")
    return path.read_bytes()


def contents(folder: Path) -> dict[str, bytes | str]:
    """Every file below `folder` by its relative name: its bytes, or where it links to."""
    return {
        str(p.relative_to(folder)): str(p.readlink()) if p.is_symlink() else p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_symlink() or p.is_file()
    }


def test_out_holding_an_input_photo_is_refused_before_any_work(tiny_run, tmp_path: Path) -> None:
    # the photos given as files, --out the folder that holds them: the figure of m/a.png is m/a.png.map.png, the user's
    # second photo, and the next run `map m/*` would map the figures
    model = ("--model", str(tiny_run.checkpoint))
    m = tmp_path / "m"
    photo(m / "a.png")
    photo(m / "a.png.map.png", RIGHT)
    before = contents(m)
    code, stdout, stderr = run_cli("map", str(m / "a.png"), str(m / "a.png.map.png"), *model, "-q", "--out", str(m))
    assert code == 2 and stdout == ""
    assert stderr == f"heritage: error: --out {m}: holds the input photo {m / 'a.png'}; write the figures elsewhere\n"
    assert contents(m) == before  # nothing replaced, nothing written
    deep = tmp_path / "shots" / "day1" / "nave.png"  # at any depth, and through `..`
    photo(deep)
    out = tmp_path / "shots" / "day1" / ".."
    code, stdout, stderr = run_cli("map", str(deep), *model, "--out", str(out))
    assert (
        code == 2
        and stderr == f"heritage: error: --out {out}: holds the input photo {deep}; write the figures elsewhere\n"
    )
    code, stdout, stderr = run_cli("map", str(deep.parent), *model, "--out", str(tmp_path / "shots"))
    assert code == 2 and stderr == (
        f"heritage: error: --out {tmp_path / 'shots'}: holds the input folder {deep.parent}; write the figures "
        "elsewhere\n"
    )
    assert contents(tmp_path / "shots") == {"day1/nave.png": deep.read_bytes()}


def test_out_holding_a_photo_found_through_a_link_is_refused(tiny_run, tmp_path: Path) -> None:
    # survey/maps leads to the output folder: the next run would find the figures there as photos of the survey
    survey, maps = tmp_path / "survey", tmp_path / "maps"
    photo(survey / "nave.png")
    photo(maps / "earlier.png", RIGHT)
    (survey / "maps").symlink_to(maps)
    before = contents(maps)
    code, stdout, stderr = run_cli("map", str(survey), "--model", str(tiny_run.checkpoint), "--out", str(maps))
    found = survey / "maps" / "earlier.png"
    assert code == 2 and stdout == ""
    assert stderr == f"heritage: error: --out {maps}: holds the input photo {found}; write the figures elsewhere\n"
    assert contents(maps) == before


def test_a_figure_is_never_written_over_an_input_photo(tiny_run, tmp_path: Path) -> None:
    # a link in --out by the figure's name leads to the photo itself: it is kept, and the photo is listed as undrawn
    survey, maps = tmp_path / "survey", tmp_path / "maps"
    original = photo(survey / "a.png")
    maps.mkdir()
    (maps / "a.png.map.png").symlink_to(survey / "a.png")
    code, stdout, stderr = run_cli(
        "map", str(survey / "a.png"), "--model", str(tiny_run.checkpoint), "--out", str(maps), "--format", "json"
    )
    assert code == 0, stderr
    assert (maps / "a.png.map.png").is_symlink() and (survey / "a.png").read_bytes() == original
    reason = f"its figure {maps / 'a.png.map.png'} would replace an input photo"
    assert f"heritage: no figure for {survey / 'a.png'}: {reason}" in stderr.splitlines()
    (item,) = json.loads(stdout)
    assert item["figure"] is None and json.loads((maps / "elements.json").read_text()) == [item]


@pytest.mark.parametrize("link", [False, True])
def test_a_folder_where_elements_json_goes_is_refused_before_any_work(tiny_run, tmp_path: Path, link: bool) -> None:
    # found only after every photo was mapped, it lost the run's work; now before the model is loaded
    figs = tmp_path / "figs"
    if link:  # a link to a folder is a folder in the way too
        (tmp_path / "elsewhere").mkdir()
        figs.mkdir()
        (figs / "elements.json").symlink_to(tmp_path / "elsewhere")
    else:
        (figs / "elements.json").mkdir(parents=True)
    photo(tmp_path / "a.png")
    code, stdout, stderr = run_cli(
        "map", str(tmp_path / "a.png"), "--model", str(tiny_run.checkpoint), "--out", str(figs)
    )
    assert code == 2 and stdout == ""
    assert stderr == (
        f"heritage: error: {figs / 'elements.json'}: is a folder, where map writes elements.json; move it away, or "
        "use another --out\n"
    )
    assert sorted(p.name for p in figs.iterdir()) == ["elements.json"]  # no figure drawn
