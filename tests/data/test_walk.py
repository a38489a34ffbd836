"""`walk_files`: symbolic links to folders are followed, each folder walked once, and every command that walks
folders walks them so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import draw
from heritage_cnn.data.folders import list_images
from heritage_cnn.data.walk import walk_files


@pytest.fixture
def linked_survey(tmp_path: Path) -> Path:
    """survey/ with a photo of its own, a real subfolder, and links: one to a folder elsewhere (followed), one to the
    real subfolder and one into the linked folder (both reached already), one back to survey/ (a loop)."""
    rng = np.random.default_rng(0)
    for label, photo in enumerate(["survey/own.png", "survey/real/a.png", "elsewhere/b.png", "elsewhere/sub/c.png"]):
        (tmp_path / photo).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(draw(label, rng)).save(tmp_path / photo)
    survey = tmp_path / "survey"
    (survey / "link").symlink_to("../elsewhere", target_is_directory=True)
    (survey / "again").symlink_to("real", target_is_directory=True)  # named before real/: real/ still comes first
    (survey / "zlink").symlink_to("../elsewhere/sub", target_is_directory=True)
    (survey / "real" / "up").symlink_to("..", target_is_directory=True)
    return survey


def test_symlinked_folders_are_followed_and_each_folder_walked_once(linked_survey: Path) -> None:
    """The photos behind a link are listed where the link is; a folder reached twice is walked once (its own path
    first) and a link back to its holder is not followed: each of those is listed with its reason, none silently."""
    survey = linked_survey
    files, problems = walk_files(survey)
    assert files == [
        survey / "own.png",
        survey / "link" / "b.png",
        survey / "link" / "sub" / "c.png",
        survey / "real" / "a.png",
    ]
    assert problems == [
        (
            str(survey / "again"),
            f"symlinked folder leading to a folder already walked as {survey / 'real'}; not walked again",
        ),
        (
            str(survey / "zlink"),
            f"symlinked folder leading to a folder already walked as {survey / 'link' / 'sub'}; not walked again",
        ),
        (
            str(survey / "real" / "up"),
            f"symlinked folder leading back to {survey.resolve()}, which holds it (a loop); not followed",
        ),
    ]


def test_every_command_that_walks_folders_follows_links(linked_survey: Path, tmp_path: Path) -> None:
    """predict, sort and map find photos with `find_photos`, training and the data check with `list_images`: the
    same photos and the same reasons."""
    from heritage_cnn.inference.classifier import find_photos

    assert find_photos([linked_survey]) == walk_files(linked_survey, hidden=True)
    (tmp_path / "classes" / "apse").mkdir(parents=True)
    (tmp_path / "classes" / "apse" / "more").symlink_to(linked_survey / "real", target_is_directory=True)
    listed = list_images(tmp_path / "classes")
    assert listed.files == [tmp_path / "classes" / "apse" / "more" / "a.png"]
    assert listed.skipped == [
        (
            str(tmp_path / "classes" / "apse" / "more" / "up"),
            f"symlinked folder leading back to {linked_survey.resolve()}, which holds it (a loop); not followed",
        )
    ]


def test_sort_follows_links_and_still_refuses_an_out_inside_in(classifier, linked_survey: Path, tmp_path: Path) -> None:
    """sort files the photos behind a link, lists the links it did not follow in skipped.csv, and refuses an output
    folder that is a link into the input folder (it resolves inside it)."""
    from heritage_cnn.inference.sort import sort_photos

    summary = sort_photos(classifier, linked_survey, tmp_path / "sorted", min_confidence=0.0, progress=False)
    assert summary.placed == 4 and [path for path, _ in summary.skipped] == [
        str(linked_survey.resolve() / name) for name in ("again", "zlink", "real/up")
    ]
    (tmp_path / "outlink").symlink_to(linked_survey / "real", target_is_directory=True)
    with pytest.raises(ValueError, match="must not be inside the input folder"):
        sort_photos(classifier, linked_survey, tmp_path / "outlink", progress=False)
    assert sorted(p.name for p in (linked_survey / "real").iterdir()) == ["a.png", "up"]  # nothing written there
