"""Where `heritage predict` writes (-o, --format) and the one-line errors that name the file: a broken model,
a full disk, an output that is an input photo, one that cannot be made, a symbolic-link loop."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from heritage_cnn.cli.main import main


def test_predict_output_file_format_and_device(
    tiny_run, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, photo = str(tiny_run.checkpoint), str(synthetic_root / "apse" / "000.png")
    assert main(["predict", photo, "--model", model, "--device", "cpu", "-o", str(tmp_path / "p.json")]) == 0
    assert "written to" in capsys.readouterr().err
    rows = json.loads((tmp_path / "p.json").read_text())
    assert len(rows) == 1 and rows[0]["path"] == photo
    assert main(["predict", photo, "--model", model, "--output", str(tmp_path / "p.csv")]) == 0
    data = (tmp_path / "p.csv").read_bytes()
    assert data.startswith(b"path") and data.endswith(b"\r\n")  # every row in CRLF, the last one too
    assert data.count(b"\n") == data.count(b"\r\n") == 2
    assert main(["predict", photo, "--model", model, "-o", str(tmp_path / "p.txt"), "--format", "json"]) == 0
    assert json.loads((tmp_path / "p.txt").read_text())[0]["path"] == photo
    assert not list(tmp_path.glob(".*.tmp"))
    capsys.readouterr()
    assert main(["predict", photo, "--model", model, "-o", str(tmp_path / "p.xyz")]) == 2
    assert "p.xyz" in capsys.readouterr().err


def test_a_format_that_contradicts_the_output_extension_is_refused(
    tiny_run, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`-o y.json --format csv` wrote CSV into y.json (and `-o y.csv --format table` a table into y.csv): a usage
    error naming both, before any work; a --format that agrees is written, and .txt takes any format."""
    model, photo = str(tiny_run.checkpoint), str(synthetic_root / "apse" / "000.png")
    for name, fmt in (("y.json", "csv"), ("y.csv", "table"), ("y.CSV", "json")):
        assert main(["predict", photo, "--model", model, "-o", str(tmp_path / name), "--format", fmt]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"--format {fmt}" in err and name in err, err
        assert not (tmp_path / name).exists()
    assert main(["predict", photo, "--model", model, "-o", str(tmp_path / "y.csv"), "--format", "csv"]) == 0
    assert (tmp_path / "y.csv").read_bytes().startswith(b"path")
    assert main(["predict", photo, "--model", model, "-o", str(tmp_path / "y.txt"), "--format", "csv"]) == 0
    assert (tmp_path / "y.txt").read_bytes().startswith(b"path")


def test_one_line_errors_name_the_file(
    tiny_run, synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    photo = str(synthetic_root / "apse" / "000.png")
    broken = tmp_path / "broken.safetensors"
    shutil.copy(tiny_run.checkpoint, broken)
    meta = json.loads(tiny_run.checkpoint.with_suffix(".json").read_text())
    del meta["normalisation"]
    broken.with_suffix(".json").write_text(json.dumps(meta))
    assert main(["predict", photo, "--model", str(broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert "broken" in err and err != "heritage: error: normalisation" and len(err.splitlines()) == 1

    def full_disk(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    target = tmp_path / "out.json"
    assert main(["predict", photo, "--model", str(tiny_run.checkpoint), "-o", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"heritage: error: {target}: No space left on device"


def test_predict_output_is_never_a_photo_it_reads(
    tiny_run, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `predict --format json -o ovr/g.jpg ovr/g.jpg` wrote the JSON over the photo and exited 0
    survey = tmp_path / "survey"
    survey.mkdir()
    for name in ("000.png", "001.png"):
        shutil.copy(synthetic_root / "apse" / name, survey / name)
    photo, old = survey / "000.png", tmp_path / "old.png"
    shutil.copy(photo, old)
    before = {p: p.read_bytes() for p in (photo, old)}
    model = ["--model", str(tiny_run.checkpoint), "--format", "json"]
    cases = [
        ([str(photo)], photo, f"is the input {photo}; write the predictions elsewhere"),
        ([str(photo)], survey / ".." / "survey" / "000.png", f"is the input {photo}; write the predictions elsewhere"),
        ([str(survey)], photo, "an image file already there; predictions are never written over an image"),
        ([str(survey)], survey / "new.jpg", f"an image's name inside the input folder {survey}; use .csv or .json"),
    ]
    for inputs, output, why in cases:
        assert main(["predict", *inputs, *model, "-o", str(output)]) == 2
        err = capsys.readouterr().err
        assert err == f"heritage: error: -o {output}: {why}\n"
    assert main(["predict", str(photo), *model, "-o", str(old)]) == 2  # an image elsewhere: never replaced
    err = capsys.readouterr().err
    assert (
        err == f"heritage: error: -o {old}: an image file already there; predictions are never written over an image\n"
    )
    assert {p: p.read_bytes() for p in (photo, old)} == before and sorted(survey.iterdir()) == [
        photo,
        survey / "001.png",
    ]
    assert main(["predict", str(survey), *model, "-o", str(tmp_path / "p.json")]) == 0  # beside it: written
    # in the survey folder itself, a CSV is written and is not read as a photo on the next run
    assert main(["predict", str(survey), *model[:2], "-o", str(survey / "p.csv")]) == 0  # CSV, by its extension
    assert main(["predict", str(survey), *model, "-o", str(tmp_path / "again.json")]) == 0
    assert len(json.loads((tmp_path / "again.json").read_text())) == 2


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc, where no file can be made")
def test_an_output_that_cannot_be_made_is_named_not_its_temporary_file(
    tiny_run, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = str(synthetic_root / "apse" / "000.png")
    assert main(["predict", photo, "--model", str(tiny_run.checkpoint), "-o", "/proc/x.csv"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("heritage: error: /proc/x.csv: ") and ".tmp" not in err and err.count("\n") == 1


def test_a_symbolic_link_loop_gives_its_true_reason(
    tiny_run, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import errno
    import os

    loop = tmp_path / "loopA.jpg"
    loop.symlink_to("loopB.jpg")
    (tmp_path / "loopB.jpg").symlink_to("loopA.jpg")
    reason = f"cannot read ({os.strerror(errno.ELOOP)})"
    assert main(["predict", str(loop), "--model", str(tiny_run.checkpoint)]) == 2  # given directly
    assert capsys.readouterr().err.splitlines()[0] == f"heritage: {loop}: {reason}"  # was "no such file or folder"
    shutil.copy(synthetic_root / "apse" / "000.png", tmp_path / "good.png")
    assert main(["predict", str(tmp_path), "--model", str(tiny_run.checkpoint)]) == 0  # found in a folder
    assert f"heritage: skipped {loop}: {reason}" in capsys.readouterr().err.splitlines()
    assert main(["predict", str(tmp_path / "gone.jpg"), "--model", str(tiny_run.checkpoint)]) == 2
    assert capsys.readouterr().err.splitlines()[0] == f"heritage: {tmp_path / 'gone.jpg'}: no such file or folder"
