"""`POST /api/correct` on folders that `heritage teach --corrections` must still read afterwards: a `heritage sort`
output whose photos the page corrects by moving sort's file, a manifest teach refuses (left as it is), an upload name
too long to look up, and what the answer says teach will do with the photo; on the tiny model."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from _correction_helpers import client_for, correct, manifest, photos, prediction_of
from _serve_helpers import png_bytes
from PIL import Image

from conftest import CLASSES
from heritage_cnn.apps.corrections import Corrections
from heritage_cnn.data.split import perceptual_hashes
from heritage_cnn.inference.classifier import Classifier
from heritage_cnn.inference.sort import sort_photos
from heritage_cnn.inference.teach_photos import MIN_NEW_PHOTOS, read_corrections
from heritage_cnn.models.checkpoint import load_checkpoint
from heritage_cnn.training.teach import known_already

RESERVED = ("_none", "_uncertain")


def _sorted(tiny_run, tmp_path: Path, count: int = 3) -> tuple[Path, dict[str, bytes], dict[str, Path]]:
    """`count` drawn photos (IMG_0.png, ...) sorted by the tiny model into `sorted/`: the folder, each photo's bytes
    and where sort filed it, by name."""
    survey, out = tmp_path / "survey", tmp_path / "sorted"
    survey.mkdir()
    data = {f"IMG_{i}.png": png_bytes(i, seed=i) for i in range(count)}
    for name, content in data.items():
        (survey / name).write_bytes(content)
    sort_photos(Classifier.load(tiny_run.checkpoint), survey, out, min_confidence=0.0, progress=False)
    filed = {Path(row["source"]).name: Path(row["destination"]) for row in manifest(out)}
    return out, data, filed


def _taught(folder: Path) -> dict[str, tuple[str, str]]:
    """What teach reads from the folder: each photo's file name -> (class, kind)."""
    taught = read_corrections(folder, known=CLASSES)
    return {
        Path(p).name: (label, kind) for p, label, kind in zip(taught.paths, taught.labels, taught.kinds, strict=True)
    }


def test_a_photo_sort_filed_is_moved_to_the_right_class_not_copied(tiny_run, tmp_path: Path) -> None:
    """Marking a photo of a sort output folder does what a person does by hand: sort's file moves into the right class
    folder under its own name, and no second copy is stored (teach refused the folder: "one photo (the same content) as
    two classes"). Marked back as sort's class, it moves back and reads as confirmed."""
    out, data, filed = _sorted(tiny_run, tmp_path)
    name = next(n for n, f in filed.items() if f.parent.name not in RESERVED)
    was = filed[name].parent.name
    right = next(c for c in CLASSES if c != was)
    written = (out / "manifest.csv").read_bytes()
    client = client_for(tiny_run, out)
    response = correct(client, data[name], right, name="phone upload.png")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["kind"], body["file"], body["moved_from"]) == ("moved", f"{right}/{name}", [f"{was}/{name}"])
    assert [p for p in photos(out) if p.read_bytes() == data[name]] == [out / right / name]
    assert len(photos(out)) == len(data)  # nothing stored beside sort's files
    assert (out / "manifest.csv").read_bytes() == written  # sort's row still says where it filed the photo
    assert _taught(out)[name] == (right, "moved")

    back = correct(client, data[name], was).json()
    assert (back["kind"], back["file"], back["moved_from"]) == ("confirmed", f"{was}/{name}", [f"{right}/{name}"])
    assert _taught(out)[name] == (was, "confirmed") and len(photos(out)) == len(data)


def test_a_copy_the_page_stored_beside_sorts_file_is_removed(tiny_run, tmp_path: Path, monkeypatch) -> None:
    """A folder a server wrote before this was fixed: the page's copy of a photo beside sort's, under another class.
    Marking the photo again leaves one file, sort's, in the class marked, and drops the page's copy and row."""
    out, data, filed = _sorted(tiny_run, tmp_path)
    name = next(n for n, f in filed.items() if f.parent.name not in RESERVED)
    first, second = [c for c in CLASSES if c != filed[name].parent.name][:2]
    blind = Corrections(out, CLASSES)
    monkeypatch.setattr(blind, "_filed_copies", lambda *_: {}, raising=False)  # as it was: blind to sort's file
    blind.save(data[name], "x.png", first, prediction_of(tiny_run, data[name]))
    assert len(manifest(out)) == len(data) + 1 and len(photos(out)) == len(data) + 1
    body = correct(client_for(tiny_run, out), data[name], second).json()
    assert (body["file"], body["replaced"]) == (f"{second}/{name}", 1)
    assert [p for p in photos(out) if p.read_bytes() == data[name]] == [out / second / name]
    assert len(manifest(out)) == len(data) and _taught(out)[name] == (second, "moved")


def test_a_filed_photo_that_cannot_be_moved_is_409_and_nothing_changes(tiny_run, tmp_path: Path) -> None:
    """Another file with the photo's name in the class folder: never replaced; a file of the photo that no sort row
    lists (put there by hand): not the page's to move. Each answer names the file and what to do."""
    out, data, filed = _sorted(tiny_run, tmp_path)
    name = next(n for n, f in filed.items() if f.parent.name not in RESERVED)
    right = next(c for c in CLASSES if c != filed[name].parent.name)
    (out / right).mkdir(exist_ok=True)
    (out / right / name).write_bytes(b"the user's own file")
    before = {p: p.read_bytes() for p in photos(out)} | {out / "manifest.csv": (out / "manifest.csv").read_bytes()}
    client = client_for(tiny_run, out)
    response = correct(client, data[name], right)
    assert response.status_code == 409
    assert response.json()["detail"] == (
        f"{out.resolve() / filed[name].parent.name / name}: this photo; {out.resolve() / right / name} is another file "
        f"of that name, so it was not moved: move it into {right}/ by hand under another name"
    )
    (out / right / name).unlink()
    del before[out / right / name]
    by_hand = out / right / "mine.png"
    by_hand.write_bytes(data[name])  # the same photo, also put in a class folder by hand
    before[by_hand] = data[name]
    response = correct(client, data[name], filed[name].parent.name)
    assert response.status_code == 409 and response.json()["detail"].startswith(f"{out.resolve() / right}/mine.png:")
    assert "move it into" in response.json()["detail"]
    assert {p: p.read_bytes() for p in photos(out)} | {out / "manifest.csv": (out / "manifest.csv").read_bytes()} == (
        before
    )


def test_a_file_whose_folder_is_locked_is_409_and_left_in_one_class(tiny_run, tmp_path: Path, monkeypatch) -> None:
    """A class folder the user made read-only: the new name was linked, the old one could not be removed, and the
    photo was left in two classes (teach refused the folder) behind a 500 saying nothing was stored."""
    out, data, filed = _sorted(tiny_run, tmp_path)
    name = next(n for n, f in filed.items() if f.parent.name not in RESERVED)
    was = filed[name].parent.name
    right = next(c for c in CLASSES if c != was)
    locked = (out / was / name).resolve()
    real_unlink = Path.unlink

    def unlink(self: Path, missing_ok: bool = False) -> None:  # as a read-only folder answers (root passes them all)
        if self.resolve() == locked:
            raise PermissionError(13, "Permission denied", str(self))
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    response = correct(client_for(tiny_run, out), data[name], right)
    assert response.status_code == 409, response.text
    assert response.json()["detail"] == f"{locked}: cannot be moved (Permission denied); nothing was moved"
    assert [p for p in photos(out) if p.read_bytes() == data[name]] == [out / was / name]
    assert _taught(out)[name] == (was, "confirmed")


def test_a_manifest_teach_refuses_is_409_and_left_as_it_is(tiny_run, tmp_path: Path) -> None:
    """A manifest cut off mid-row: teach refuses it naming the line; the page must not pad the row with empty cells
    (teach would no longer see the damage). The answer names the line; nothing is written. The server does not start
    on such a folder either."""
    client = client_for(tiny_run, tmp_path)
    assert correct(client, png_bytes(2), "vault").status_code == 200
    cut = (tmp_path / "manifest.csv").read_bytes() + b"/survey/IMG_7.png,/sorted/altar/IMG_7.png\r\n"
    (tmp_path / "manifest.csv").write_bytes(cut)
    stored = photos(tmp_path)
    response = correct(client, png_bytes(3), "apse")
    assert response.status_code == 409
    detail = response.json()["detail"]
    assert detail.startswith(
        f"{tmp_path.resolve() / 'manifest.csv'}: line 3: is incomplete, 2 of the header's 18 cells"
    )
    assert "\n" not in detail
    assert (tmp_path / "manifest.csv").read_bytes() == cut and photos(tmp_path) == stored
    try:
        Corrections(tmp_path, CLASSES)
    except ValueError as error:
        assert str(error) == detail
    else:
        raise AssertionError("a server started on a manifest teach refuses")


def test_a_long_upload_name_is_bounded_and_teach_reads_the_folder(tiny_run, tmp_path: Path) -> None:
    """A 254-byte upload name (valid on ext4): the row's source keeps the name, cut to a file name's 255 bytes with
    `upload:` and the extension kept; teach reads the folder (it stopped with "File name too long")."""
    long_name = "é" * 125 + ".jpg"
    data = png_bytes(4)
    response = correct(client_for(tiny_run, tmp_path), data, "portal", name=long_name)
    assert response.status_code == 200, response.text
    [row] = manifest(tmp_path)
    source = row["source"]
    assert len(source.encode()) <= 255 and source.startswith("upload:éé") and source.endswith("é.jpg")
    assert read_corrections(tmp_path, known=CLASSES).labels == ["portal"]


def test_the_answer_says_how_many_photos_a_new_class_holds_and_needs(tiny_run, tmp_path: Path) -> None:
    """teach refuses the whole folder while a new class holds fewer than MIN_NEW_PHOTOS: the answer carries the
    class's photos in DIR and what a new class needs (none for a class of the model), for the page to say so."""
    client = client_for(tiny_run, tmp_path)
    answers = [correct(client, png_bytes(label, seed=label), "portal").json() for label in (1, 2)]
    assert [(a["class_photos"], a["new_class_needs"]) for a in answers] == [(1, MIN_NEW_PHOTOS), (2, MIN_NEW_PHOTOS)]
    known = correct(client, png_bytes(3), "vault").json()
    assert (known["class_photos"], known["new_class_needs"]) == (1, None)


def test_the_answer_says_when_teach_skips_the_photo_as_training_data(tiny_run, synthetic_root: Path, tmp_path) -> None:
    """teach skips a photo whose perceptual hash is near one of the model's `trained_on` record; the answer says so,
    by the same rule on the same pixels: it agrees with teach's own `known_already` photo by photo."""
    gradient = np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[:, None, None], (1, 64, 3))
    buffer = io.BytesIO()
    Image.fromarray(gradient).save(buffer, format="PNG")
    uploads = [buffer.getvalue(), *((synthetic_root / c / "000.png").read_bytes() for c in CLASSES[:6])]
    client = client_for(tiny_run, tmp_path)
    said = {}
    for data in uploads:
        body = correct(client, data, "altar").json()
        said[Path(body["file"]).name] = body["looks_trained_on"]
    taught = read_corrections(tmp_path, known=CLASSES)
    _, _, skipped = known_already(taught, perceptual_hashes(taught.images), load_checkpoint(tiny_run.checkpoint))
    assert said == {Path(p).name: str(p) in {s for s, _ in skipped} for p in taught.paths}
    assert True in said.values() and False in said.values()
