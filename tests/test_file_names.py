"""Any file name the file system allows works in every command and output (`heritage_cnn.base.names`).

The photos get hostile names as bytes (Linux names are bytes): not UTF-8, a newline, a terminal escape, commas and
quotes, a leading dash, pure spaces, 255 bytes, emoji, NFC and NFD spellings of the same word, and names that
collide once `sort` makes them valid. Every output must name each photo exactly (CSV: the bytes;
JSON: `\\udcXX` escapes that `json.loads` turns back into the same `str`) or show it safely (terminal, HTML)."""

from __future__ import annotations

import csv
import filecmp
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from conftest import CLASSES, draw
from heritage_cnn.base.names import NAME_MAX, cell_items, cell_text, is_hidden, portable_name, shown, visible_subfolders
from heritage_cnn.cli.main import main

LONG = b"L" * 200 + b"\xe9" + b"x" * 50 + b".jpg"  # 255 bytes, one of them not UTF-8
HOSTILE = [
    b"ok_latin1_\xe9t\xe9.jpg",
    b"caf\xe9.jpg",  # these three are one name once sort makes them valid: caf_.jpg
    b"caf\xe8.jpg",
    b"caf_.jpg",
    b"new\nline.jpg",
    b"esc\x1b[31mred.jpg",  # a terminal escape sequence
    b"comma, \"quote\" 'and'.jpg",
    b"-leading-dash.jpg",
    b"   .jpg",
    b"   /inside pure spaces.png",  # a folder whose name is three spaces
    "🏛️ façade.png".encode(),
    "café_nfc.png".encode(),
    "cafe\u0301_nfd.png".encode(),
    b"<b>bold &amp; <i>.png",
    b"back\\slash.png",
    LONG,
    b"other/" + LONG,  # the same 255-byte name in another folder: its copy needs a suffix
]
BROKEN = b"broken_\xff\n.jpg"  # an unreadable photo with a hostile name: listed, exactly


def write_photos(root: Path, names: list[bytes] = HOSTILE, seed: int = 0) -> list[str]:
    """A photo (distinct pixels) under each name, and the broken one; returns the photos' paths as Python sees them."""
    base = os.fsencode(root)
    rng = np.random.default_rng(seed)
    paths = []
    for i, name in enumerate(names):
        path = base + b"/" + name
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(draw(i % len(CLASSES), rng)).save(path, format="PNG")  # PNG content whatever the suffix
        paths.append(os.fsdecode(path))
    with open(base + b"/" + BROKEN, "wb") as handle:
        handle.write(b"\xff\xd8\xff not really")
    return sorted(paths)


def read_csv(data: bytes) -> list[dict[str, str]]:
    """The one way to read the tool's CSVs: UTF-8 with surrogateescape (names.CSV_ERRORS)."""
    return list(csv.DictReader(io.StringIO(data.decode("utf-8", "surrogateescape"), newline="")))


def assert_valid_name(path: Path) -> None:
    """A name fit for any file system and tool: UTF-8, no control characters, at most 255 bytes."""
    raw = os.fsencode(path.name)
    raw.decode("utf-8")
    assert len(raw) <= NAME_MAX and not any(c < 32 or c == 127 for c in raw), raw


def test_policy_helpers() -> None:
    latin = os.fsdecode(b"caf\xe9\n.jpg")
    assert shown(latin) == "caf\\xe9\\n.jpg" and shown("esc\x1b.png") == "esc\\x1b.png"
    # invisible characters escaped (a right-to-left override would reorder the line), visible ones kept as they are
    assert shown("x\u202egpj \u200b\U000e0041.png") == "x\\u202egpj \\u200b\\U000e0041.png"
    assert shown("portál ａltar\xa0é.png") == "portál ａltar\xa0é.png"
    assert portable_name(latin) == "caf__.jpg" and portable_name("a.jpg", 2) == "a-2.jpg"
    long = os.fsdecode(LONG)
    assert len(os.fsencode(portable_name(long, 12))) == NAME_MAX and portable_name(long, 12).endswith("-12.jpg")
    cut = portable_name("é" * 200 + ".jpg", 1)  # cut on a character boundary, never inside an é
    assert cut.endswith("é-1.jpg") and len(cut.encode()) == NAME_MAX - 1
    assert portable_name("   .jpg") == "   .jpg" and portable_name("-x.jpg") == "-x.jpg"
    fields = [["a;b", "c:d%3B"], [latin], [""]]  # the cell's own separators, an escape's look-alike, a lone surrogate
    assert cell_text(fields) == "a%3Bb:c%3Ad%253B;caf\udce9\n.jpg;"
    assert cell_items(cell_text(fields)) == fields and cell_items("") == []


def test_hidden_names_and_visible_subfolders(tmp_path: Path) -> None:
    assert (
        is_hidden(".cache") and is_hidden(".") and is_hidden("..") and not is_hidden("a.b") and not is_hidden("_none")
    )
    for name in ("vault", ".cache", "Apse", "_none", ".git"):
        (tmp_path / name).mkdir()
    (tmp_path / "altar").write_bytes(b"")  # a file, not a folder
    assert [p.name for p in visible_subfolders(tmp_path)] == ["Apse", "_none", "vault"]


def test_predict_table_csv_and_json(tiny_run, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    photos = write_photos(tmp_path / "survey")
    model = ["--model", str(tiny_run.checkpoint), "-q"]
    assert main(["predict", *model, str(tmp_path / "survey")]) == 0
    out, err = capsysbinary.readouterr()
    table = out.decode("utf-8").splitlines()  # valid UTF-8, one line a photo: no name breaks a line
    assert len(table) == 1 + len(photos) and b"\x1b" not in out
    for path in photos:
        assert sum(line.startswith(shown(path) + " ") for line in table) == 1, shown(path)
    assert b"ok_latin1_\\xe9t\\xe9.jpg" in out and b"new\\nline.jpg" in out
    skipped = [line for line in err.decode("utf-8").splitlines() if "skipped" in line]
    assert len(skipped) == 1 and "broken_\\xff\\n.jpg" in skipped[0]
    for fmt in ("csv", "json"):
        assert main(["predict", *model, str(tmp_path / "survey"), "-o", str(tmp_path / f"p.{fmt}")]) == 0
        assert main(["predict", *model, str(tmp_path / "survey"), "--format", fmt]) == 0
        written = (tmp_path / f"p.{fmt}").read_bytes()
        assert capsysbinary.readouterr().out == written  # `> file` and `-o file` give the same bytes
        if fmt == "csv":
            assert sorted(row["path"] for row in read_csv(written)) == photos  # the exact names, bytes and all
        else:
            assert sorted(row["path"] for row in json.loads(written.decode("utf-8"))) == photos


def test_sort_folders_and_manifest(tiny_run, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    photos = write_photos(tmp_path / "survey")
    out = tmp_path / "sorted"
    # one folder, _uncertain/ (none is called none of the ten, and none is certain): names collide
    model = ["--model", str(tiny_run.checkpoint), "--none-threshold=-1e30", "--min-confidence", "1", "-q"]
    command = ["sort", str(tmp_path / "survey"), "--out", str(out), *model]
    assert main(command) == 0
    assert "manifest: " in capsysbinary.readouterr().out.decode("utf-8")
    rows = read_csv((out / "manifest.csv").read_bytes())
    assert sorted(row["source"] for row in rows) == photos  # every good photo, under its exact name
    destinations = [Path(row["destination"]) for row in rows]
    assert len(set(destinations)) == len(photos)  # names that collide once made valid get -1, -2
    for row, destination in zip(rows, destinations, strict=True):
        assert destination.parent.parent == out.resolve() and destination.is_file()
        assert filecmp.cmp(row["source"], destination, shallow=False)
        assert_valid_name(destination)
    caf = sorted(d.name for d in destinations if d.name.startswith("caf_"))
    assert caf == ["caf_-1.jpg", "caf_-2.jpg", "caf_.jpg"], caf
    assert [row["source"] for row in read_csv((out / "skipped.csv").read_bytes())] == [
        os.fsdecode(os.fsencode(tmp_path / "survey") + b"/" + BROKEN)
    ]
    assert main(command) == 0  # a second run finds every photo done from the manifest
    assert f"0 photo(s) sorted (0 none of the ten in _none/, 0 below 1.00 in _uncertain/), {len(photos)} already" in (
        capsysbinary.readouterr().out.decode("utf-8")
    )
    assert sorted(p for p in out.rglob("*") if p.is_file() and p.parent != out) == sorted(destinations)


@pytest.fixture(scope="module")
def hostile_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A labelled folder whose own name, class folders' files and broken file have hostile names."""
    root = Path(os.fsdecode(os.fsencode(tmp_path_factory.mktemp("data")) + b"/data <b>\xe9"))
    for label, name in enumerate(CLASSES):
        write_photos(root / name, [b"plain_%d.png" % i for i in range(2)], seed=label)
        write_photos(root / name, [h for h in HOSTILE[label::5] if b"/" not in h], seed=10 + label)
    return root


def test_evaluate_outputs(tiny_run, hostile_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    model = str(tiny_run.checkpoint)
    assert main(["evaluate", "--model", model, "--data", str(hostile_data), "--split", "all", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_bytes().decode("utf-8"))
    assert metrics["data"] == str(hostile_data)  # exact, through the \udcXX escapes
    broken = {os.fsdecode(os.fsencode(hostile_data / c) + b"/" + BROKEN) for c in CLASSES}
    assert {s["path"] for s in metrics["skipped"]} == broken
    assert shown(hostile_data) in metrics["title"]
    (out / "metrics.md").read_bytes().decode("utf-8")
    read_csv((out / "confusion_matrix.csv").read_bytes())
    assert (out / "errors.png").stat().st_size and (out / "confusion_matrix.png").stat().st_size


def test_report_escapes_names(tiny_run, hostile_data: Path, tmp_path: Path) -> None:
    from heritage_cnn.apps.evaluation import evaluate_on
    from heritage_cnn.apps.report import build_html_report
    from heritage_cnn.base.io import atomic_write_json
    from heritage_cnn.data.check import check_dataset
    from heritage_cnn.inside.explain import write_explanation
    from heritage_cnn.models.checkpoint import load_checkpoint

    folder = tmp_path / "report"
    atomic_write_json(folder / "data_check.json", check_dataset(hostile_data))
    evaluate_on(tiny_run.checkpoint, hostile_data, "all", folder / "eval-val", log=lambda _: None)
    photo = next(p for p in hostile_data.rglob("*") if os.fsencode(p.name) == LONG)
    figure = write_explanation(load_checkpoint(tiny_run.checkpoint), photo, folder / "inside")  # titled by the name
    assert_valid_name(figure)
    page = build_html_report(folder, folder / "index.html", load_checkpoint(tiny_run.checkpoint), data=hostile_data)
    html = page.read_bytes().decode("utf-8")
    assert "data <b>" not in html and "data &lt;b&gt;\\xe9" in html


def test_train_and_data_check_record_exact_names(hostile_data: Path, tmp_path: Path, capsysbinary) -> None:
    out = tmp_path / "run"
    tiny = ["--epochs", "1", "--widths", "8,16", "--batch-size", "8", "-q"]
    assert main(["train", "--data", str(hostile_data), "--out", str(out), *tiny]) == 0
    split = json.loads((out / "split.json").read_bytes().decode("utf-8"))
    every = {str(p) for p in hostile_data.rglob("*.*") if p.is_file()}
    assert split["val_paths"] and set(split["val_paths"]) <= every
    skipped = json.loads((out / "skipped.json").read_bytes().decode("utf-8"))
    assert {s["path"] for s in skipped} == {p for p in every if os.fsencode(p).endswith(BROKEN)}
    capsysbinary.readouterr()
    assert main(["data", "check", str(hostile_data), "--format", "json"]) == 0
    report = json.loads(capsysbinary.readouterr().out.decode("utf-8"))
    assert report["root"] == str(hostile_data)


def raw_upload(client: TestClient, filename: bytes, content: bytes):
    """A multipart upload whose file name is raw bytes, as a browser or curl may send them."""
    body = (
        b'--b0\r\nContent-Disposition: form-data; name="photo"; filename="' + filename + b'"\r\n'
        b"Content-Type: image/png\r\n\r\n" + content + b"\r\n--b0--\r\n"
    )
    return client.post("/api/predict", content=body, headers={"content-type": "multipart/form-data; boundary=b0"})


def test_serve_answers_whatever_the_names(tiny_run, tmp_path: Path) -> None:
    """Uploads under hostile names are answered (the name is never used), and a model file with a non-UTF-8 name
    is named exactly in /api/info."""
    from heritage_cnn.apps.serve import create_app

    stem = os.fsencode(tmp_path) + b"/mod\xe9l <i>"
    for suffix in (".safetensors", ".json"):
        shutil.copy(Path(tiny_run.checkpoint).with_suffix(suffix), os.fsdecode(stem + suffix.encode()))
    app = create_app(os.fsdecode(stem + b".safetensors"), draw_class_images=False)
    client = TestClient(app, base_url="http://127.0.0.1")
    buffer = io.BytesIO()
    Image.fromarray(draw(3, np.random.default_rng(0))).save(buffer, format="PNG")
    for name in [*HOSTILE, b"%0Aencoded.png", b'quote\\".png']:
        response = raw_upload(client, name.replace(b"\n", b" "), buffer.getvalue())  # a raw LF would end the header
        assert response.status_code == 200, (name, response.text)
        assert response.json()["path"] is None and response.json()["label"] in CLASSES
    info = client.get("/api/info")
    assert info.status_code == 200 and info.json()["model"] == os.fsdecode(b"mod\xe9l <i>.safetensors")
