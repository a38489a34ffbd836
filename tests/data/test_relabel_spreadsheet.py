"""A relabel file as a spreadsheet saves it: semicolons or tabs between the cells (Excel where the decimal separator
is a comma), header names in another case or with spaces, cleared rows of empty cells."""

from __future__ import annotations

from pathlib import Path

import pytest

from heritage_cnn.data.folders import DatasetError, load_images
from heritage_cnn.data.relabel import apply_relabel, read_relabel


@pytest.fixture(scope="module")
def images(synthetic_root: Path):
    return load_images(synthetic_root)


@pytest.mark.parametrize(
    "text",
    [
        "path;new_label\r\naltar/000.png;apse\r\nvault/003.png;gargoyle\r\n",  # Excel's CSV where 1,5 is a number
        "path\tnew_label\naltar/000.png\tapse\nvault/003.png\tgargoyle\n",  # a tab-separated export
        '"path";"new_label"\n"altar/000.png";"apse"\n"vault/003.png";"gargoyle"\n',  # every cell quoted
        "Path,New_Label\naltar/000.png,apse\nvault/003.png,gargoyle\n",  # the header typed in another case
        " PATH ; New_label \naltar/000.png;apse\nvault/003.png;gargoyle\n",
        "path,new_label\naltar/000.png,apse\n,\nvault/003.png,gargoyle\n,\n",  # rows cleared in a spreadsheet
        "path;new_label;note\naltar/000.png;apse;x\n;;\nvault/003.png;gargoyle;\n ; ; \n",
    ],
)
def test_a_spreadsheets_csv_is_read(images, synthetic_root: Path, tmp_path: Path, text: str) -> None:
    file = tmp_path / "relabel.csv"
    file.write_bytes(text.encode())
    relabel = read_relabel(file, images.classes, synthetic_root)
    assert set(relabel.rows) == {"altar/000.png", "vault/003.png"} and not relabel.kept
    _, changed = apply_relabel(images, relabel, synthetic_root)
    assert changed == 2


def test_a_semicolon_in_a_name_is_not_a_delimiter(images, synthetic_root: Path, tmp_path: Path) -> None:
    """Only the header decides the delimiter: a comma-separated file whose row holds a semicolon keeps its cells."""
    file = tmp_path / "relabel.csv"
    file.write_text("path,new_label\naltar/000;x.png,apse\n")
    with pytest.raises(DatasetError, match=r"row 2: altar/000;x\.png is not a photo of"):
        apply_relabel(images, read_relabel(file, images.classes, synthetic_root), synthetic_root)


def test_a_header_of_other_names_says_which_delimiters_are_read(images, synthetic_root: Path, tmp_path: Path) -> None:
    file = tmp_path / "relabel.csv"
    file.write_text("file;class\naltar/000.png;apse\n")
    with pytest.raises(DatasetError, match=r'row 1: expected the header path,new_label \(or with ";" or tabs'):
        read_relabel(file, images.classes, synthetic_root)


def test_a_binary_file_given_as_relabel_file_is_a_short_line(images, synthetic_root: Path, tmp_path: Path) -> None:
    """A photo given for the relabel file printed some 500 escaped bytes of its first line in the error."""
    file = tmp_path / "photo.jpg"
    file.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(128, 256)) * 4)  # no line break: all one "header"
    with pytest.raises(DatasetError) as caught:
        read_relabel(file, images.classes, synthetic_root)
    assert len(str(caught.value)) < len(str(file)) + 200 and str(caught.value).endswith('..."'), caught.value
