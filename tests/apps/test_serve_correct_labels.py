"""`POST /api/correct`'s label and form: names teach would refuse are a 400, variants of a class's name are that
class, two spellings of one new class sent at once land in one folder, and a form in the wrong shape is refused
naming the field; on the tiny model."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from _correction_helpers import client_for, correct, manifest, photos, prediction_of
from _serve_helpers import png_bytes

from conftest import CLASSES
from heritage_cnn.apps.corrections import Corrections
from heritage_cnn.inference.sort_manifest import MANIFEST_FIELDS
from heritage_cnn.inference.teach_photos import read_corrections


@pytest.mark.parametrize("label", [None, "", "_uncertain", "_none", "../outside", "a/b", ".hidden", "manifest.csv"])
def test_a_label_that_cannot_name_a_class_is_400(tiny_run, tmp_path: Path, label: str | None) -> None:
    (tmp_path / "manifest.csv").write_text(",".join(MANIFEST_FIELDS) + "\n")
    client = client_for(tiny_run, tmp_path)
    response = correct(client, png_bytes(2), label)
    assert response.status_code == 400, response.text
    assert list(response.json()) == ["detail"] and "\n" not in response.json()["detail"]
    assert photos(tmp_path) == [] and manifest(tmp_path) == []
    assert not (tmp_path.parent / "outside").exists()


# any case or Unicode spelling of sort's folders and of the files beside them (`manifest.csv` on a folder with no manifest
# yet: a class folder of that name would stand where the manifest goes), blank names, names with blanks around them
@pytest.mark.parametrize(
    "label",
    [
        *("_None", "_UNCERTAIN", "\uff3fnone", "\uff3f\uff35NCERTAIN"),
        *("manifest.csv", "SKIPPED.CSV", "sort-settings.json"),
        *("   ", " portal", "portal ", "\tportal"),
    ],
)
def test_a_label_teach_would_refuse_is_400(tiny_run, tmp_path: Path, label: str) -> None:
    """Any case of sort's folders, blank names, names with blanks around them: teach would refuse the folder."""
    client = client_for(tiny_run, tmp_path)
    response = correct(client, png_bytes(2), label)
    assert response.status_code == 400, response.text
    assert list(response.json()) == ["detail"] and "\n" not in response.json()["detail"]
    assert photos(tmp_path) == []


def test_two_spellings_of_one_new_class_at_once_land_in_one_folder(tiny_run, tmp_path: Path) -> None:
    """Two requests each name the new class before either has made its folder (`class_of` finds none); the second to
    store is filed in the first one's folder, as teach reads them: one class, not two folders teach refuses."""
    kept = Corrections(tmp_path, CLASSES)
    first, second = kept.class_of("Portál"), kept.class_of("PORTÁL")  # both asked before either is stored
    assert (first, second) == ("Portál", "PORTÁL")
    for n, label in enumerate([first, second]):
        data = png_bytes(n + 1)
        assert kept.save(data, "a.png", label, prediction_of(tiny_run, data))["label"] == "Portál"
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == ["Portál"]
    assert read_corrections(tmp_path, known=CLASSES).labels == ["Portál", "Portál"]


def _form(*parts: tuple[str, str | None, bytes]) -> tuple[bytes, dict[str, str]]:
    """A multipart body written by hand: each part (field name, file name or None for a text field, bytes)."""
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--b\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return body + b"--b--\r\n", {"content-type": "multipart/form-data; boundary=b"}


@pytest.mark.parametrize(
    ("parts", "detail"),
    [
        (
            [("label", None, b"vault"), ("label", None, b"apse"), ("photo", "a.png", b"P")],
            "the form field 'label' was sent 2 times; send it once",
        ),
        (
            [("label", "l.txt", b"vault"), ("photo", "a.png", b"P")],
            "the form field 'label' holds a file; only 'photo' does",
        ),
        (
            [("photo", "a.png", b"P"), ("label", "l.txt", b"vault")],
            "the form field 'label' holds a file; only 'photo' does",
        ),
        (
            [("label", None, b"vault"), ("photo", None, b"P")],
            "the form field 'photo' holds text: send the photo as a file (curl -F photo=@FILE)",
        ),
        (
            [("photo", "a.png", b"P"), ("photo", "b.png", b"P")],
            "more than one file in the form field 'photo': send one photo",
        ),
        (  # a limit of Starlette's own, in its own words (not taken for a file in the wrong field)
            [("photo", "a.png", b"P"), *((f"f{n}", None, b"x") for n in range(9))],
            "Too many fields. Maximum number of fields is 8.",
        ),
    ],
)
def test_a_form_in_the_wrong_shape_is_400_saying_which_field(tiny_run, tmp_path: Path, parts, detail: str) -> None:
    """Two labels (which one was meant?), the label as a file, the photo as text, two photos: each refused in words
    that name the field, nothing stored."""
    photo = png_bytes(2)
    body, headers = _form(*[(name, filename, photo if data == b"P" else data) for name, filename, data in parts])
    response = client_for(tiny_run, tmp_path).post("/api/correct", content=body, headers=headers)
    assert (response.status_code, response.json()) == (400, {"detail": detail})
    assert photos(tmp_path) == []


def test_a_label_that_is_not_utf8_is_400(tiny_run, tmp_path: Path) -> None:
    client = client_for(tiny_run, tmp_path)
    parts = [  # written by hand: a client's form with the label's raw bytes, not text
        b'--b\r\nContent-Disposition: form-data; name="label"\r\n\r\n\xff\xfe\r\n',
        b'--b\r\nContent-Disposition: form-data; name="photo"; filename="a.png"\r\n\r\n' + png_bytes(2) + b"\r\n",
        b"--b--\r\n",
    ]
    headers = {"content-type": "multipart/form-data; boundary=b"}
    response = client.post("/api/correct", content=b"".join(parts), headers=headers)
    assert response.status_code == 400, response.text
    assert response.json() == {"detail": "the form field 'label' is not valid UTF-8"}
    assert photos(tmp_path) == []
    accented = correct(client, png_bytes(2), "café")  # UTF-8 beyond ASCII is a name like any other
    assert accented.status_code == 200 and accented.json()["label"] == "café"


def test_a_variant_of_a_class_name_is_that_class_and_teach_reads_the_folder(tiny_run, tmp_path: Path) -> None:
    """The page shows display names (`bell tower`): typing one, or another case, files the photo in the class's own
    folder, for the model's classes and for a new class already kept; teach then reads the folder."""
    client = client_for(tiny_run, tmp_path)
    known = "bell_tower"
    variants = ["bell tower", "Bell Tower", "BELL_TOWER", "Bell_tower"]
    for n, label in enumerate([*variants, "Portal", "portal", "PORTAL"]):
        response = correct(client, png_bytes(n + 1), label)
        assert response.status_code == 200, response.text
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == sorted({known, "Portal"})
    taught = read_corrections(tmp_path, known=CLASSES)
    assert sorted(taught.labels) == sorted([known] * 4 + ["Portal"] * 3)


def test_a_label_that_prints_like_a_class_is_that_class(tiny_run, tmp_path: Path) -> None:
    """Unicode spellings of one name (NFC and NFD `portál`, a fullwidth `ａltar`) are one class, as teach reads them:
    the photo goes to the folder already there, never to a second folder that looks the same."""
    client = client_for(tiny_run, tmp_path)
    for n, label in enumerate(["portál", unicodedata.normalize("NFD", "portál"), "ａltar"]):
        response = correct(client, png_bytes(n + 1), label)
        assert response.status_code == 200, response.text
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["altar", "portál"]
    assert sorted(read_corrections(tmp_path, known=CLASSES).labels) == ["altar", "portál", "portál"]


@pytest.mark.parametrize("label", ["vault\u200b", "x\u202egpj", "nave\u2029aisle"])
def test_a_label_with_an_invisible_character_is_400(tiny_run, tmp_path: Path, label: str) -> None:
    response = correct(client_for(tiny_run, tmp_path), png_bytes(2), label)
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert f"the class name {label!r} holds the invisible character U+" in detail and detail.isprintable()
    assert photos(tmp_path) == [] and not (tmp_path / "manifest.csv").exists()
