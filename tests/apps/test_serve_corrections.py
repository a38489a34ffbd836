"""`heritage serve --corrections DIR`: "mark wrong" keeps the photo and a manifest row in DIR, in sort's layout, so that
`heritage teach --corrections DIR` (`teach_photos.read_corrections`) reads it as a correction; on the tiny model."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from _correction_helpers import answer_of, client_for, correct, manifest, photos, prediction_of
from _serve_helpers import cards, open_page, overflow, png_bytes, settled
from fastapi.testclient import TestClient

from conftest import CLASSES, cli_server
from heritage_cnn.apps.corrections import Corrections, looks_trained_on
from heritage_cnn.apps.serve import create_app
from heritage_cnn.apps.upload import decode_upload
from heritage_cnn.inference.classifier import Classifier, Prediction, TopClass
from heritage_cnn.inference.sort import sort_photos
from heritage_cnn.inference.sort_manifest import MANIFEST_FIELDS
from heritage_cnn.inference.teach_photos import MIN_NEW_PHOTOS, read_corrections
from heritage_cnn.models.checkpoint import load_checkpoint

STRICT = 1e9  # a none-of-these threshold no photo reaches: every answer is "none of these"


def test_a_correction_is_read_by_teach_as_a_moved_photo(tiny_run, tmp_path: Path) -> None:
    folder = tmp_path / "fixes" / "new"  # created by the server
    client = client_for(tiny_run, folder)
    data = png_bytes(3, size=80)
    answer = answer_of(tiny_run, data)
    right = next(c for c in CLASSES if c != answer)
    response = correct(client, data, right, top1_label=right)  # the client's say on the model's answer is ignored
    assert response.status_code == 200, response.text
    name = hashlib.sha256(data).hexdigest()[:16] + ".png"
    assert response.json() | {"folder": None, "looks_trained_on": None} == {
        "label": right,
        "answer": answer,
        "kind": "moved",
        "file": f"{right}/{name}",
        "replaced": 0,
        "moved_from": [],  # the folder held no file of the photo: the page's own copy
        "folder": None,
        "class_photos": 1,
        "new_class_needs": None,  # a class of the model: no minimum
        "looks_trained_on": None,
    }
    assert photos(folder) == [folder / right / name] and (folder / right / name).read_bytes() == data
    [row] = manifest(folder)
    assert row["source"] == "upload:west front.png"
    assert row["destination"] == str(folder.resolve() / answer / name) and row["top1_label"] == answer
    taught = read_corrections(folder)
    assert (taught.labels, taught.kinds, taught.paths) == ([right], ["moved"], [str(folder.resolve() / right / name)])
    assert taught.found["moved"] == 1 and taught.digests == [hashlib.sha256(data).hexdigest()]


def test_new_class_and_confirmation(tiny_run, tmp_path: Path) -> None:
    """A new class name is a photo moved into a new folder; the model's own answer is kept as a confirmation."""
    client = client_for(tiny_run, tmp_path)
    new, same = png_bytes(1), png_bytes(5)
    assert correct(client, new, "portal", name="door.JPEG").json()["kind"] == "moved"
    answer = answer_of(tiny_run, same)
    assert correct(client, same, answer).json()["kind"] == "confirmed"
    taught = read_corrections(tmp_path)
    found = sorted(zip(taught.labels, taught.kinds, [Path(p).name for p in taught.paths], strict=True))
    door = hashlib.sha256(new).hexdigest()[:16] + ".jpeg"  # the upload's extension, in lower case
    assert found == sorted(
        [("portal", "moved", door), (answer, "confirmed", hashlib.sha256(same).hexdigest()[:16] + ".png")]
    )


def test_the_same_photo_marked_twice_keeps_one_file_and_the_latest_label(tiny_run, tmp_path: Path) -> None:
    client = client_for(tiny_run, tmp_path)
    data = png_bytes(7)
    answer = answer_of(tiny_run, data)
    first, second = [c for c in CLASSES if c != answer][:2]
    assert correct(client, data, first).json()["replaced"] == 0
    assert correct(client, data, second, name="again.webp").json()["replaced"] == 1
    name = hashlib.sha256(data).hexdigest()[:16]
    assert photos(tmp_path) == [tmp_path / second / f"{name}.webp"]
    [row] = manifest(tmp_path)
    assert row["source"] == "upload:again.webp"
    taught = read_corrections(tmp_path)
    assert (taught.labels, taught.kinds) == ([second], ["moved"])


def test_a_photo_of_none_of_the_ten_is_recorded_as_sort_and_a_move_out_of_none_would_be(
    tiny_run, tmp_path: Path
) -> None:
    """The model said "none of these" (sort files the photo in `_none/`) and the user names its closest class: the
    page's record reads, in teach, as that photo sorted by `heritage sort` and moved by hand out of `_none/` (a
    correction, "moved"), never as the class confirmed."""
    data = png_bytes(3, size=80)
    prediction = prediction_of(tiny_run, data, none_threshold=STRICT)
    closest = prediction.top[0].label
    assert prediction.known is False and prediction.label == closest

    # the reference: heritage sort with the same model, then the photo moved by hand from _none/ to its closest class
    survey, by_hand = tmp_path / "survey", tmp_path / "sorted"
    survey.mkdir()
    (survey / "west front.png").write_bytes(data)
    sort_photos(Classifier.load(tiny_run.checkpoint, none_threshold=STRICT), survey, by_hand, progress=False)
    [sorted_row] = manifest(by_hand)
    filed = Path(sorted_row["destination"])
    assert filed.parent.name == "_none" and sorted_row["top1_label"] == closest
    (by_hand / closest).mkdir()
    filed.rename(by_hand / closest / filed.name)
    reference = read_corrections(by_hand)

    folder = tmp_path / "fixes"
    response = correct(client_for(tiny_run, folder, none_threshold=STRICT), data, closest)
    assert response.status_code == 200, response.text
    name = hashlib.sha256(data).hexdigest()[:16] + ".png"
    assert response.json() | {"folder": None, "looks_trained_on": None} == {
        "label": closest,
        "answer": "_none",  # what the model answered: sort's folder for none of the ten, as in the destination
        "kind": "moved",
        "file": f"{closest}/{name}",
        "replaced": 0,
        "moved_from": [],
        "folder": None,
        "class_photos": 1,
        "new_class_needs": None,
        "looks_trained_on": None,
    }
    assert photos(folder) == [folder / closest / name]
    [row] = manifest(folder)
    assert row["destination"] == str(folder.resolve() / "_none" / name)
    same = ("label", "known", "none_reason", "top1_label", "top2_label", "top3_label")
    assert {k: row[k] for k in same} == {k: sorted_row[k] for k in same}  # the model's answer, as sort wrote it
    taught = read_corrections(folder, known=CLASSES)
    assert (taught.labels, taught.kinds) == (reference.labels, reference.kinds) == ([closest], ["moved"])
    assert taught.found == reference.found == {"moved": 1}


def test_the_recorded_answer_is_the_folder_sort_would_choose(tmp_path: Path) -> None:
    """`Corrections.save` on predictions made by hand: none of the ten goes to `_none`, whatever its closest class;
    a model that cannot tell (`known` None) and a known photo go to their top-1 class, which a label confirms."""
    top = (TopClass("altar", "altar", 0.5), TopClass("apse", "apse", 0.3), TopClass("vault", "vault", 0.2))

    def prediction(known: bool | None, reason: str | None = None) -> Prediction:
        return Prediction("altar", "altar", 0.5, top, known=known, none_threshold=1.0, none_reason=reason)

    corrections = Corrections(tmp_path, CLASSES)
    cases = [(png_bytes(1), False, "score"), (png_bytes(2), False, "noise"), (png_bytes(4), None, None)]
    cases += [(png_bytes(5), True, None)]
    saved = [corrections.save(data, "p.png", "altar", prediction(known, reason)) for data, known, reason in cases]
    assert [(s["answer"], s["kind"]) for s in saved] == [
        ("_none", "moved"),
        ("_none", "moved"),
        ("altar", "confirmed"),
        ("altar", "confirmed"),
    ]
    rows = manifest(tmp_path)
    assert [Path(r["destination"]).parent.name for r in rows] == ["_none", "_none", "altar", "altar"]
    assert [r["top1_label"] for r in rows] == ["altar"] * 4 and [r["known"] for r in rows] == [
        "false",
        "false",
        "",
        "true",
    ]
    taught = read_corrections(tmp_path, known=CLASSES)
    assert sorted(taught.kinds) == ["confirmed", "confirmed", "moved", "moved"] and taught.labels == ["altar"] * 4


def test_a_photo_the_user_filed_deeper_is_replaced_when_marked_again(tiny_run, tmp_path: Path) -> None:
    """teach reads the folders a user makes inside a class folder: a photo moved into one and then marked again keeps
    one file, under the latest label, not a second copy teach would refuse as one photo of two classes."""
    client = client_for(tiny_run, tmp_path)
    data = png_bytes(7)
    answer = answer_of(tiny_run, data)
    first, second = [c for c in CLASSES if c != answer][:2]
    stored = tmp_path / correct(client, data, first).json()["file"]
    (tmp_path / first / "maybe").mkdir()
    stored.rename(tmp_path / first / "maybe" / stored.name)
    assert correct(client, data, second).json()["replaced"] == 1
    assert photos(tmp_path) == [tmp_path / second / stored.name]
    assert read_corrections(tmp_path, known=CLASSES).labels == [second]


def test_a_folder_removed_while_the_server_runs_is_made_again(tiny_run, tmp_path: Path) -> None:
    folder = tmp_path / "fixes"
    client = client_for(tiny_run, folder)
    folder.rename(tmp_path / "moved away")
    for label in ("vault", "portal"):  # a class of the model, a new class
        response = correct(client, png_bytes(len(label)), label)
        assert response.status_code == 200, response.text
    assert len(manifest(folder)) == 2
    shutil.rmtree(folder)
    folder.write_text("a file where the folder was")
    response = correct(client, png_bytes(2), "vault")
    assert response.status_code == 409 and response.json()["detail"].endswith("cannot hold corrections (File exists)")


def test_a_fault_of_the_server_is_one_line_of_json(tiny_run, tmp_path: Path, monkeypatch) -> None:
    client = TestClient(
        create_app(tiny_run.checkpoint, draw_class_images=False, corrections=tmp_path),
        base_url="http://127.0.0.1",
        raise_server_exceptions=False,
    )

    def broken(*args, **kwargs):
        raise RuntimeError("the disk\nwent away")

    monkeypatch.setattr(Corrections, "save", broken)
    response = correct(client, png_bytes(2), "vault")
    assert response.status_code == 500
    assert response.json() == {"detail": "the server failed: RuntimeError: the disk went away"}


def test_a_manifest_saved_with_a_byte_order_mark_takes_corrections(tiny_run, tmp_path: Path) -> None:
    """Read as sort and teach read it (`sort_manifest.MANIFEST_ENCODING`), not refused as a manifest without `source`."""
    (tmp_path / "manifest.csv").write_bytes(b"\xef\xbb\xbf" + ",".join(MANIFEST_FIELDS).encode() + b"\r\n")
    response = correct(client_for(tiny_run, tmp_path), png_bytes(2), "vault")
    assert response.status_code == 200, response.text
    assert len(manifest(tmp_path)) == 1


def test_the_upload_is_checked_as_for_a_prediction(tiny_run, tmp_path: Path) -> None:
    client = client_for(tiny_run, tmp_path)
    response = correct(client, b"just some notes\n" * 20, CLASSES[0], name="photo.jpg")
    assert response.status_code == 415 and "not an image" in response.json()["detail"]
    assert correct(client, b"", CLASSES[0]).status_code == 400
    assert photos(tmp_path) == [] and not (tmp_path / "manifest.csv").exists()


def test_without_corrections_correct_is_404_and_info_says_so(tiny_run, tmp_path: Path) -> None:
    plain = client_for(tiny_run, None)
    response = correct(plain, png_bytes(2), CLASSES[0])
    assert response.status_code == 404 and "--corrections DIR" in response.json()["detail"]
    assert plain.get("/api/info").json()["corrections"] is False
    assert client_for(tiny_run, tmp_path).get("/api/info").json()["corrections"] is True


def test_nothing_is_written_through_a_link_out_of_the_folder(tiny_run, tmp_path: Path) -> None:
    folder, outside = tmp_path / "fixes", tmp_path / "elsewhere"
    outside.mkdir()
    folder.mkdir()
    (folder / "portal").symlink_to(outside)
    response = correct(client_for(tiny_run, folder), png_bytes(4), "portal")
    assert response.status_code == 409 and "link" in response.json()["detail"]
    assert list(outside.iterdir()) == [] and not (folder / "manifest.csv").exists()


def test_a_folder_that_cannot_take_corrections_is_refused_at_start(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        Corrections(tmp_path / "file", CLASSES)
    (tmp_path / "manifest.csv").write_text("source,destination,elements,destinations\n")
    with pytest.raises(ValueError, match="--multi"):
        Corrections(tmp_path, CLASSES)


# --------------------------------------------------------------------------------------------
# The page, in Chromium, on `heritage serve --corrections DIR`
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def correcting_server(tiny_run, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    folder = tmp_path_factory.mktemp("page") / "fixes"
    with cli_server("--model", str(tiny_run.checkpoint), "--corrections", str(folder)) as (url, process):
        assert f"corrections: kept in {folder.resolve()}" in process.stdout.readline()
        yield url, folder


def test_page_saves_a_correction(correcting_server, browser, tmp_path: Path, tiny_run) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    url, folder = correcting_server
    wait = open_page(browser, url, width=400)  # a phone: the control wraps, nothing scrolls sideways
    photo = tmp_path / "door.png"
    photo.write_bytes(png_bytes(6))
    browser.find_element(By.ID, "file").send_keys(str(photo))
    wait.until(lambda d: settled(d, 1))
    control = cards(browser)[0].find_element(By.CSS_SELECTOR, ".correct")
    assert "Wrong? The right class is:" in control.text
    choice = Select(control.find_element(By.TAG_NAME, "select"))
    assert [o.get_attribute("value") for o in choice.options] == [*CLASSES, ""]  # the classes, then "other…"
    other = control.find_element(By.CSS_SELECTOR, "input[type=text]")
    assert not other.is_displayed()
    choice.select_by_value("")
    other.send_keys("portal")
    control.find_element(By.TAG_NAME, "button").click()
    wait.until(lambda d: "Saved:" in control.text)
    assert overflow(browser) == 0
    # a new class's first photo: teach refuses the whole folder until the class has its photos, and the page says so
    teach = f"heritage teach --corrections {folder.resolve()}"
    assert (
        f"Saved: 1 of the {MIN_NEW_PHOTOS} photos a new class needs; {teach} refuses the folder until" in control.text
    )
    assert "will learn it" not in control.text
    taught = read_corrections(folder)
    assert (taught.labels, taught.kinds) == (["portal"], ["moved"])
    # a class of the model: learned, unless the photo looks like one the model trained on, which teach skips
    choice.select_by_value("vault")
    control.find_element(By.TAG_NAME, "button").click()
    wait.until(lambda d: "portal" not in read_corrections(folder).labels)
    checkpoint = load_checkpoint(tiny_run.checkpoint)
    trained = looks_trained_on(checkpoint, decode_upload(photo.read_bytes(), checkpoint.image_size)[0])
    said = f"Saved: {teach} skips this photo: it looks like one the model trained on" if trained else "will learn it"
    wait.until(lambda d: said in control.text)


def test_page_offers_the_closest_class_for_a_photo_of_none_of_the_ten(tiny_run, browser, tmp_path: Path) -> None:
    """On a "none of these" card the page named no class, so the likeliest right class is the closest one; on a
    card that named a class it is the runner-up."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    photo = tmp_path / "door.png"
    photo.write_bytes(png_bytes(6))
    top = prediction_of(tiny_run, photo.read_bytes()).top
    for threshold, expected in ((STRICT, top[0].label), (None, top[1].label)):
        extra = ["--none-threshold", str(threshold)] if threshold else []
        args = ("--model", str(tiny_run.checkpoint), "--corrections", str(tmp_path / "fixes"), *extra)
        with cli_server(*args) as (url, process):
            process.stdout.readline()
            wait = open_page(browser, url)
            browser.find_element(By.ID, "file").send_keys(str(photo))
            wait.until(lambda d: settled(d, 1))
            card = cards(browser)[0]
            assert ("none" in card.get_attribute("class").split()) == (threshold is not None)
            choice = Select(card.find_element(By.CSS_SELECTOR, ".correct select"))
            assert choice.first_selected_option.get_attribute("value") == expected
