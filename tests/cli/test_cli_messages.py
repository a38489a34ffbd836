"""What the `heritage` command says besides its results: warnings, help examples, progress bars."""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import warnings
from pathlib import Path

import pytest

from conftest import CLASSES, make_dataset
from heritage_cnn.cli.main import build_parser, main


def test_a_warning_inside_a_command_is_one_line_without_file_or_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_dataset(tmp_path / "data", per_class=3, classes=CLASSES[:2])
    (root / "empty_class").mkdir()
    (root / "zw\u200bc").mkdir()  # a name shown escaped, not as a Python list's repr
    before = warnings.showwarning
    assert main(["data", "check", str(root)]) == 0
    assert warnings.showwarning is before  # only the command's own warnings are reworded, not a library user's
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "no readable images" in line]
    assert lines == [f"heritage: warning: {root}: class folders with no readable images: empty_class, zw\\u200bc"]
    assert ".py:" not in err and "UserWarning" not in err and "warnings.warn" not in err


def _corrupt_exif_jpeg(path: Path, colour: tuple[int, int, int]) -> None:
    """A JPEG whose EXIF block declares a tag longer than it holds (Pillow warns "Corrupt EXIF data")."""
    from io import BytesIO

    from PIL import Image

    data = BytesIO()
    Image.new("RGB", (64, 64), colour).save(data, format="JPEG")
    exif = b"Exif\0\0MM\0\x2a\0\0\0\x08\xff\xff" + b"\0" * 10
    jpeg = data.getvalue()
    path.write_bytes(jpeg[:2] + b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif + jpeg[2:])


def test_pillows_warnings_name_the_photo_each_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Three photos with a damaged EXIF block gave one line, once a run, naming none of them."""
    root = make_dataset(tmp_path / "data", per_class=3, classes=CLASSES[:2])
    bad = [root / CLASSES[0] / "exif_a.jpg", root / CLASSES[0] / "exif_b.jpg", root / CLASSES[1] / "exif_c.jpg"]
    for n, path in enumerate(bad):
        _corrupt_exif_jpeg(path, (40 * n, 90, 200))
    assert main(["data", "check", str(root)]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "Corrupt EXIF" in line]
    assert sorted(lines) == [
        f"heritage: warning: {path}: Corrupt EXIF data.  Expecting to read 12 bytes but only got 10." for path in bad
    ]


def test_every_pillow_warning_names_each_photo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Pillow's other warnings ("Tag data larger than file") were said for the first photo only."""
    import struct
    from io import BytesIO

    from PIL import Image

    data = BytesIO()
    Image.new("RGB", (64, 64), (30, 90, 200)).save(data, format="JPEG")
    # one IFD entry, the image description (tag 270), whose 100 bytes lie past the end of the EXIF block
    tiff = b"MM\x00\x2a" + struct.pack(">IHHHIII", 8, 1, 0x010E, 2, 100, 0x100, 0)
    exif = b"Exif\0\0" + tiff
    jpeg = data.getvalue()
    photos = [tmp_path / "t1.jpg", tmp_path / "t2.jpg"]
    for path in photos:
        path.write_bytes(jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + jpeg[2:])
    root = make_dataset(tmp_path / "data", per_class=2, classes=CLASSES[:2])
    shutil.copy(photos[0], root / CLASSES[0])
    shutil.copy(photos[1], root / CLASSES[1])
    assert main(["data", "check", str(root)]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "Skipping tag 270" in line]
    assert sorted(lines) == [
        f"heritage: warning: {root / name / path.name}: Tag data larger than file. Skipping tag 270"
        for name, path in zip(CLASSES[:2], photos, strict=True)
    ]


def _help_examples(parser: argparse.ArgumentParser) -> list[str]:
    """Every example line (`heritage ...`, a comment after two spaces or a shell redirection dropped) of a parser and its subcommands."""
    examples = [
        re.split(r"\s{2,}|\s[>|]\s", line.strip())[0]
        for line in parser.format_help().splitlines()
        if line.strip().startswith("heritage ")
    ]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases share one parser
                examples += _help_examples(sub)
    return examples


def test_every_help_example_parses_and_names_what_the_shipped_models_have() -> None:
    from heritage_cnn.cli.options import inside_model
    from heritage_cnn.data.labels import resolve_class
    from heritage_cnn.inside.deconvnet import resolve_layer

    parser = build_parser()
    examples = _help_examples(parser)
    assert any("--member" in line for line in examples) and len(examples) > 40
    for line in examples:
        args = parser.parse_args(shlex.split(line)[1:])  # argparse exits on a flag the command does not take
        names = [getattr(args, "target", None), getattr(args, "cls", None)]
        if getattr(args, "member", None) is None and not getattr(args, "layer", None) and not any(names):
            continue
        if not hasattr(args, "member") or getattr(args, "model", None) not in (None, "default", "fast"):
            continue  # not a look-inside command, or a run of the reader's own (runs/a): nothing shipped to check
        network = inside_model(args)  # the member, or a one-line error naming the ones there are
        layers = getattr(args, "layer", None)
        for name in [layers] if isinstance(layers, str) else layers or []:
            resolve_layer(network.model, name)
        for name in filter(None, names):
            resolve_class(name, network.classes)


@pytest.mark.parametrize("value", ["-1e3", "-1.5E-2", "-.5e+1", "-7", "-7.25"])
def test_a_negative_number_in_exponent_notation_is_a_value_in_every_command(value: str) -> None:
    """argparse alone takes `-1e3` for an unknown option ("expected one argument"); energies are negative numbers."""
    parser = build_parser()
    for command in (["predict", "p.jpg"], ["sort", "in", "--out", "o"], ["map", "p.jpg"]):
        args = parser.parse_args([*command, "--none-threshold", value])
        assert args.none_threshold == float(value), command
    with pytest.raises(SystemExit):  # an option that looks like a number is still refused where none is expected
        parser.parse_args(["predict", "p.jpg", "-1e3x"])
