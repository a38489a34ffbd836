"""Symbolic links among the class folders of a data root: a real folder, or photo, gives its photos to one class,
and a link that leads back to the root or to another class folder is no class (`list_images`, `class_folders`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import make_dataset
from heritage_cnn.cli.main import main
from heritage_cnn.data.folders import DatasetError, class_folders, list_images


def _counts(root: Path) -> dict[str, int]:
    listed = list_images(root)
    return {name: listed.labels.count(label) for label, name in enumerate(listed.classes)}


@pytest.mark.parametrize("link", ["vault/more", "altar/more"])
def test_a_folder_linked_into_another_class_folder_gives_its_photos_to_its_own_class(tmp_path: Path, link: str) -> None:
    """`vault/more -> ../altar` counted altar's photos again as vault's (each class folder was walked on its own);
    `altar/more -> ../vault` gave vault's photos to altar too. The class folders are walked together, the real ones
    first: the link is listed, not followed."""
    root = make_dataset(tmp_path / "data", per_class=3, classes=["altar", "vault"])
    target = "vault" if link.startswith("altar") else "altar"
    (root / link).symlink_to(f"../{target}", target_is_directory=True)
    listed = list_images(root)
    assert _counts(root) == {"altar": 3, "vault": 3}
    assert all(
        path.parent.name == listed.classes[label] for path, label in zip(listed.files, listed.labels, strict=True)
    )
    assert listed.skipped == [
        (str(root / link), f"symlinked folder leading to a folder already walked as {root / target}; not walked again")
    ]


def test_a_class_folder_linked_to_the_root_above_it_or_another_class_is_no_class(tmp_path: Path) -> None:
    """`loop -> .` was a class holding the other classes' photos, `up -> ..` one holding every photo of the folder
    above, `copy -> vault` a second vault. Each is listed with why and left out, by `class_folders` too (training's
    check of the class folders, `evaluate`); a link to a folder elsewhere stays a class: people link data in."""
    root = make_dataset(tmp_path / "data", per_class=2, classes=["altar", "vault"])
    make_dataset(tmp_path / "elsewhere", per_class=2, classes=["portal"])
    for name, target in [("loop", "."), ("up", ".."), ("copy", "vault"), ("inner", "vault/sub")]:
        (root / name).symlink_to(target, target_is_directory=True)
    (root / "vault" / "sub").mkdir()
    (root / "linked").symlink_to(tmp_path / "elsewhere" / "portal", target_is_directory=True)
    assert [path.name for path in class_folders(root)] == ["altar", "linked", "vault"]
    listed = list_images(root)
    assert _counts(root) == {"altar": 2, "linked": 2, "vault": 2}
    loop = "which holds it (a loop); not a class folder"
    assert listed.skipped == [
        (str(root / "copy"), f"symlinked folder leading to the class folder {root / 'vault'}; not a class of its own"),
        (
            str(root / "inner"),
            f"symlinked folder leading to {root.resolve() / 'vault' / 'sub'}, inside the class folder "
            f"{root / 'vault'}; not a class of its own",
        ),
        (str(root / "loop"), f"symlinked folder leading back to {root.resolve()}, {loop}"),
        (str(root / "up"), f"symlinked folder leading back to {tmp_path.resolve()}, {loop}"),
    ]
    for name in ("altar", "vault", "linked"):
        os.rename(root / name, tmp_path / name)  # the loops alone (the others dangle): the first one left out is said
    with pytest.raises(DatasetError, match=rf"no class folders inside .*\(left out: {root / 'loop'}: symlinked"):
        class_folders(root)


def test_two_class_folders_linked_to_one_folder_elsewhere_are_one_class(tmp_path: Path) -> None:
    """The first link keeps the folder's photos; the second is no class of its own."""
    root = make_dataset(tmp_path / "data", per_class=2, classes=["altar"])
    make_dataset(tmp_path / "elsewhere", per_class=2, classes=["portal"])
    for name in ("portal", "portal2"):
        (root / name).symlink_to(tmp_path / "elsewhere" / "portal", target_is_directory=True)
    assert _counts(root) == {"altar": 2, "portal": 2}
    assert list_images(root).skipped == [
        (
            str(root / "portal2"),
            f"symlinked folder leading to the class folder {root / 'portal'}; not a class of its own",
        )
    ]


def test_a_linked_photo_is_read_as_the_photo_wherever_it_is_linked(tmp_path: Path) -> None:
    """A symbolic link to a photo is that photo, as in `predict` and `sort`: leaving out links to photos listed
    already made a run trained on such a folder unable to resume ("1 photo removed"), and a relabel row naming the
    link "unreadable". Only folders are walked once; identical photos in two classes are what `data check` reports."""
    root = make_dataset(tmp_path / "data", per_class=2, classes=["altar", "vault"])
    make_dataset(tmp_path / "elsewhere", per_class=1, classes=["portal"])
    (root / "altar" / "from_vault.png").symlink_to("../vault/000.png")
    outside = tmp_path / "elsewhere" / "portal" / "000.png"
    (root / "altar" / "outside.png").symlink_to(outside)
    (root / "vault" / "outside.png").symlink_to(outside)
    listed = list_images(root)
    assert [str(path.relative_to(root)) for path in listed.files] == [
        "altar/000.png",
        "altar/001.png",
        "altar/from_vault.png",
        "altar/outside.png",
        "vault/000.png",
        "vault/001.png",
        "vault/outside.png",
    ]
    assert listed.skipped == []


def test_data_check_counts_each_photo_once_and_lists_the_links(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command QA ran: `data check` said altar 3, vault 6, and called the link loop a class."""
    root = make_dataset(tmp_path / "data", per_class=3, classes=["altar", "vault"])
    (root / "vault" / "more").symlink_to("../altar", target_is_directory=True)
    (root / "loop").symlink_to(".", target_is_directory=True)
    assert main(["data", "check", str(root), "--json", str(tmp_path / "check.json"), "-q"]) == 0
    train = json.loads((tmp_path / "check.json").read_text())["splits"]["train"]
    assert train["per_class"] == {"altar": 3, "vault": 3} and train["images"] == 6
    assert [bad["path"] for bad in train["unreadable"]] == [str(root / "loop"), str(root / "vault" / "more")]
    assert "byte-identical files: 0 in 0 groups" in capsys.readouterr().out
