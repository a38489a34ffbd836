"""The files `heritage generate` and the web page's class images write: one file per class whatever the class names,
the shipped classes' files under the names their packaged folders hold."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from heritage_cnn.cli.main import main
from heritage_cnn.inside.classimages import PACKAGED, PACKAGED_FAST, drawn_for, find_class_images
from heritage_cnn.inside.synthesis import files as synthesis_files
from heritage_cnn.inside.synthesis.draw import Settings, draw_classes
from heritage_cnn.inside.synthesis.files import MANIFEST, write_generated
from heritage_cnn.models.checkpoint import load_checkpoint, save_checkpoint

# Ten names, pairs of which had one slug (`портал` and `купол` none at all): each pair wrote one file, the second
# class's image over the first's, and class_images.json gave both classes that file
NAMES = ["портал", "купол", "portàl", "portál", "-portal", "portal", "Dome", "dome", "!!", "ναός"]


def _records(folder: Path) -> list[dict]:
    return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["images"]


def test_every_class_gets_its_own_files_whatever_its_name(tiny_run, tmp_path: Path) -> None:
    checkpoint = replace(load_checkpoint(tiny_run.checkpoint), classes=NAMES)
    generated = draw_classes(checkpoint, range(len(NAMES)), n=2, settings=replace(Settings(), steps=1), progress=False)
    write_generated(tmp_path, generated, checkpoint, seed=0, n=2)
    records = _records(tmp_path)
    files = [record["file"] for record in records]
    assert len(set(files)) == len(files) == 2 * len(NAMES), files
    assert len(list(tmp_path.glob("*_[01].png"))) == len(files)  # none written over another
    assert [record["class"] for record in records[::2]] == NAMES
    assert {"портал_0.png", "купол_1.png", "portàl_0.png", "portál_0.png", "ναός_0.png"} <= set(files)  # any script
    # the page and the report read a class's images by the JSON: every class has its own two
    assert {name: len(found) for name, found in find_class_images(tmp_path).per_class.items()} == dict.fromkeys(
        NAMES, 2
    )


def test_one_class_drawn_alone_gets_the_file_name_it_gets_among_all(tiny_run, tmp_path: Path) -> None:
    """The QA case through the command: `heritage generate --all` with `портал` and `купол` wrote one `_0.png`."""
    model = save_checkpoint(tmp_path / "m", replace(load_checkpoint(tiny_run.checkpoint), classes=NAMES))
    argv = ["generate", "--model", str(model), "--n", "1", "--steps", "1", "-q"]
    assert main([*argv, "--all", "--out", str(tmp_path / "all")]) == 0
    every = {record["class"]: record["file"] for record in _records(tmp_path / "all")}
    assert len(set(every.values())) == len(NAMES) and set(every) == set(NAMES)
    assert all(Image.open(tmp_path / "all" / file).size == (64, 64) for file in every.values())
    assert main([*argv, "--class=-portal", "--out", str(tmp_path / "one")]) == 0
    (alone,) = _records(tmp_path / "one")
    assert alone["class"] == "-portal" and alone["file"] == every["-portal"] != every["portal"]


def test_a_stem_keeps_letters_of_any_script_and_is_never_another_classes() -> None:
    assert synthesis_files.class_stems(
        ["神殿", "dome(inner)", "e\u0301glise", "église", "Straße", "strasse", "😀"]
    ) == [
        "神殿",
        "dome_inner",
        "église-2",  # one name, its accent composed or not: two classes still, two stems
        "église-3",
        "straße-4",  # one name to a file system that folds case
        "strasse-5",
        "class-6",  # nothing to keep: the class's index
    ]


def test_the_shipped_classes_keep_the_file_names_their_packaged_folders_hold() -> None:
    for folder in (PACKAGED, PACKAGED_FAST):
        records = _records(folder)
        stems = synthesis_files.class_stems([record["class"] for record in records])
        assert [f"{stem}_0.png" for stem in stems] == [record["file"] for record in records]


def test_a_folder_that_gave_two_classes_one_file_shows_neither_and_is_drawn_again(tmp_path: Path) -> None:
    """A folder an earlier version drew (the server's cache of a taught model's class images): the file shows the
    class drawn last, so neither class is shown with it, and the cache counts as not drawn for these weights."""
    for name in ("_0.png", "altar_0.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    records = [{"file": "_0.png", "class": "портал"}, {"file": "_0.png", "class": "купол"}]
    records.append({"file": "altar_0.png", "class": "altar"})
    (tmp_path / MANIFEST).write_text(json.dumps({"images": records, "weights_sha256": "k"}), encoding="utf-8")
    assert find_class_images(tmp_path).per_class == {"altar": ["altar_0.png"]}
    assert not drawn_for(tmp_path, "k")
    (tmp_path / MANIFEST).write_text(json.dumps({"images": records[2:], "weights_sha256": "k"}), encoding="utf-8")
    assert drawn_for(tmp_path, "k")


def test_an_interrupted_generate_leaves_no_folder_and_the_next_run_writes_it_whole(
    tiny_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Ctrl-C in the write phase left 160 PNGs and no class_images.json in --out, and the rerun was refused (not
    empty). The folder appears whole or not at all, and a temporary one a killed run left is removed."""
    save = synthesis_files.save_png
    written: list[Path] = []

    def interrupted(image, path):
        if len(written) == 5:
            raise KeyboardInterrupt
        written.append(save(image, path))
        return written[-1]

    argv = ["generate", "--model", str(tiny_run.checkpoint), "--all", "--n", "2", "--steps", "1", "-q"]
    out = tmp_path / "runs" / "w11"
    monkeypatch.setattr(synthesis_files, "save_png", interrupted)
    assert main([*argv, "--out", str(out)]) == 130
    assert capsys.readouterr().err == "heritage: interrupted\n"
    assert len(written) == 5 and not out.exists() and not list(out.parent.iterdir())  # nor a temporary folder
    monkeypatch.setattr(synthesis_files, "save_png", save)
    killed = out.parent / ".w11.partial-999999999-abc"  # a run killed outright: its process is gone
    running = out.parent / f".w11.partial-{os.getpid()}-abc"  # a run still writing: left alone
    for folder in (killed, running):
        folder.mkdir()
        (folder / "altar_0.png").write_bytes(b"")
    assert main([*argv, "--out", str(out)]) == 0
    assert len(_records(out)) == 20 and len(list(out.glob("*.png"))) == 21  # every image and the grid
    assert sorted(p.name for p in out.parent.iterdir()) == [running.name, "w11"]
    empty = tmp_path / "empty"  # an empty folder is still taken, its files published into it whole
    empty.mkdir()
    inode = empty.stat().st_ino  # the folder itself is kept: `--out .` left the shell in a removed folder
    monkeypatch.chdir(empty)
    assert main([*argv, "--out", "."]) == 0 and empty.stat().st_ino == inode
    assert len(_records(empty)) == 20 and sorted(p.name for p in tmp_path.iterdir()) == ["empty", "runs"]


def test_an_empty_out_is_filled_from_inside_it(tiny_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The temporary folder was made beside --out: an empty --out that is a mount point (another disk: "Invalid
    cross-device link") or whose parent is read-only failed once every image was drawn. It is made inside it, and a
    killed run's left there does not make --out "not empty"."""
    save = synthesis_files.save_png
    homes: set[Path] = set()

    def recorded(image, path):
        homes.add(Path(path).parent.parent)
        return save(image, path)

    mine = tmp_path / "parent" / "mine"
    mine.mkdir(parents=True)
    (mine / ".mine.partial-999999999-abc").mkdir()  # a run killed outright: its process is gone
    monkeypatch.setattr(synthesis_files, "save_png", recorded)
    argv = ["generate", "--model", str(tiny_run.checkpoint), "--all", "--n", "1", "--steps", "1", "-q"]
    assert main([*argv, "--out", str(mine)]) == 0
    assert homes == {mine} and sorted(p.name for p in mine.iterdir() if p.name.startswith(".")) == []
    assert len(_records(mine)) == 10 and sorted(p.name for p in (tmp_path / "parent").iterdir()) == ["mine"]
