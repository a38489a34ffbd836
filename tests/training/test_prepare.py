"""The recipe's data step: inside `reuse_decoded()` a folder is decoded and split once, again whenever it changes;
outside the block nothing is kept."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from conftest import make_dataset
from heritage_cnn.data.folders import reuse_decoded
from heritage_cnn.training import prepare
from heritage_cnn.training.config import TrainConfig
from heritage_cnn.training.prepare import prepare_data


def test_a_folder_is_prepared_once_and_again_when_it_changes(tmp_path: Path, monkeypatch) -> None:
    root = make_dataset(tmp_path / "data", per_class=8)
    decoded: list[str] = []
    real = prepare.load_images
    monkeypatch.setattr(prepare, "load_images", lambda folder, **kw: decoded.append(str(folder)) or real(folder, **kw))
    config = TrainConfig(data=str(root), out="-", progress=False)
    with reuse_decoded():
        last = _prepared_once_inside_the_block(root, config, decoded)
    prepare_data(last, log=lambda _: None)  # the block's last folder and split: nothing outlives the block
    assert len(decoded) == 4


def _prepared_once_inside_the_block(root: Path, config: TrainConfig, decoded: list[str]) -> TrainConfig:
    first = prepare_data(config, log=lambda _: None)
    again = prepare_data(config, log=lambda _: None)
    assert len(decoded) == 1 and all(a is b for a, b in zip(first, again, strict=True))
    # a photo replaced by another with the same name is a new folder: decoded and split again
    photo = root / "altar" / "000.png"
    shutil.copy(root / "apse" / "000.png", photo)
    os.utime(photo, ns=(photo.stat().st_atime_ns, photo.stat().st_mtime_ns + 10**9))
    changed = prepare_data(config, log=lambda _: None)
    assert len(decoded) == 2 and not (changed[0].images == first[0].images).all()
    # so is another split recipe of the same folder
    other = TrainConfig.from_dict({**config.to_dict(), "split": {"seed": 1}})
    prepare_data(other, log=lambda _: None)
    assert len(decoded) == 3
    return other


def test_a_skipped_file_is_logged_on_one_line_whatever_its_name(tmp_path: Path) -> None:
    """The log names each unreadable file as every command shows names (`base.names.shown`): a newline or an
    undecodable byte in the name is escaped, so it neither breaks the line nor turns into a replacement character."""
    root = make_dataset(tmp_path / "data", per_class=8)
    bad = os.fsdecode(b"broken\nname_\xe9.jpg")
    (root / "altar" / bad).write_bytes(b"not an image")
    lines: list[str] = []
    prepare_data(TrainConfig(data=str(root), out="-", progress=False), log=lines.append)
    [line] = [line for line in lines if line.startswith("skipped ") and "broken" in line]
    assert "\n" not in line and "broken\\nname_\\xe9.jpg" in line, line
