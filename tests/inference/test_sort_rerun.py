"""`heritage sort` run again into a sorted folder: the user's moves and deletions are kept, other settings are
refused, identical photos share one copy, and a link to OUT inside IN is not sorted again."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from _sort_helpers import _copies, _manifest, _tree_digest

from conftest import file_digest, make_survey, without_permission_override
from heritage_cnn.cli.main import main
from heritage_cnn.inference.classifier import Classifier
from heritage_cnn.inference.sort import LOCK_NAME, sort_photos
from heritage_cnn.inference.sort_settings import SETTINGS_NAME
from heritage_cnn.models.checkpoint import checkpoint_files


@pytest.fixture(scope="module")
def filing(old_checkpoint: Path) -> Classifier:
    """The tiny network without a none-of-these threshold: every photo goes to a class or `_uncertain/`."""
    return Classifier.load(old_checkpoint)


def test_a_rerun_never_undoes_the_users_moves_and_deletions(
    filing: Classifier, synthetic_root: Path, tmp_path: Path
) -> None:
    """A photo the manifest lists is done, wherever its copy is now: not copied again when moved or deleted, and its
    file name is never given to a new photo (teach would read that one as the row's photo, confirmed)."""
    from heritage_cnn.inference.teach_photos import read_corrections

    survey = make_survey(synthetic_root, tmp_path / "survey")
    out = tmp_path / "sorted"
    sort_photos(filing, survey, out, min_confidence=0.0, progress=False)
    rows = _manifest(out)
    # deleted: a copy under its source's own name, which a new photo of that name would be given first
    deleted_row = next(r for r in rows if Path(r["destination"]).name == Path(r["source"]).name)
    deleted = Path(deleted_row["destination"])
    moved = Path(next(r["destination"] for r in rows if Path(r["destination"]).parent != deleted.parent))
    target = next(n for n in ("vault", "apse") if n != moved.parent.name)
    (out / target).mkdir(exist_ok=True)
    moved.rename(out / target / moved.name)  # a correction: another class
    deleted.unlink()  # a correction: not one of these
    # a new photo of the deleted copy's name, other bytes, that the model files in the deleted copy's folder
    label = deleted.parent.name
    used = {file_digest(p) for p in survey.rglob("*.*")}
    newcomer = next(
        p
        for p in sorted((synthetic_root / label).glob("*.png"))
        if file_digest(p) not in used and filing.predict(p)[0].label == label
    )
    (survey / "day3").mkdir()
    (survey / "day3" / deleted.name).write_bytes(newcomer.read_bytes())

    again = sort_photos(filing, survey, out, min_confidence=0.0, progress=False)
    assert (again.placed, again.already_done, again.moved_or_deleted, again.copied) == (1, 9, 2, 1)
    assert (
        "1 photo(s) sorted (0 below 0.00 in _uncertain/), 9 already done earlier (2 of them moved or deleted from "
        "where sort put them: left so, not copied again); copied 1"
    ) in again.describe(0.0)
    assert not moved.exists() and not deleted.exists()  # neither correction undone
    new_row = next(r for r in _manifest(out) if Path(r["source"]).parent.name == "day3")
    assert Path(new_row["destination"]).parent == deleted.parent
    assert new_row["destination"] not in {r["destination"] for r in rows}  # a name no row holds
    assert len(_copies(out)) == 9  # 9 copies, one moved, one deleted, one new
    found = read_corrections(out).found
    assert found["moved"] == 1 and found["deleted"] == 1  # what teach reads: the corrections, as made


def test_a_rerun_with_other_settings_is_refused_in_one_line(
    tiny_run, old_checkpoint: Path, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What decides where a photo goes is recorded beside the manifest; a run with other settings would file the
    new photos one way and leave the old ones the other: refused, exit 2, nothing written. A folder sorted before
    the record existed resumes, saying its settings could not be checked."""
    survey = make_survey(synthetic_root, tmp_path / "survey")
    model = tmp_path / "model"
    for source, suffix in zip(checkpoint_files(tiny_run.checkpoint), (".safetensors", ".json"), strict=True):
        (tmp_path / f"model{suffix}").write_bytes(source.read_bytes())
    out = tmp_path / "sorted"
    base = ["sort", str(survey), "--out", str(out), "-q"]
    assert main([*base, "--model", str(model)]) == 0
    record = out / SETTINGS_NAME
    settings = json.loads(record.read_text(encoding="utf-8"))
    assert (settings["min_confidence"], settings["multi"], settings["tta"]) == (0.6, False, "none")
    assert settings["none_threshold"] == pytest.approx(Classifier.load(model).open_set.threshold)
    capsys.readouterr()
    before = _tree_digest(out)

    def refused(*options: str) -> str:
        assert main([*base, *options]) == 2
        # one line (after the note an old model without a none-of-these threshold gets)
        (err,) = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("heritage: note:")]
        assert err.startswith(f"heritage: error: {out.resolve()} was sorted with ")
        assert err.endswith("sort into a new --out, or run again with the settings it was sorted with")
        assert _tree_digest(out) == before  # nothing written, nothing moved
        return err

    assert "(--min-confidence 0.6 then, 0.95 now)" in refused("--model", str(model), "--min-confidence", "0.95")
    assert "--none-threshold " in refused("--model", str(model), "--none-threshold", "-5")
    assert "(views --one-view then, --tta now)" in refused("--model", str(model), "--tta")
    assert f"--model {model}.safetensors then, {old_checkpoint} now" in refused("--model", str(old_checkpoint))
    # the same path, other files: a model retrained or taught into it
    for source, suffix in zip(checkpoint_files(old_checkpoint), (".safetensors", ".json"), strict=True):
        (tmp_path / f"model{suffix}").write_bytes(source.read_bytes())
    assert f"--model {model}.safetensors: its files changed since" in refused("--model", str(model))
    for source, suffix in zip(checkpoint_files(tiny_run.checkpoint), (".safetensors", ".json"), strict=True):
        (tmp_path / f"model{suffix}").write_bytes(source.read_bytes())
    assert main([*base, "--model", str(tiny_run.checkpoint)]) == 0  # the same model elsewhere: the same settings
    assert "9 already done earlier" in capsys.readouterr().out

    record.write_text("{not json", encoding="utf-8")  # damaged: refused, naming the file
    assert main([*base, "--model", str(model)]) == 2
    assert (
        capsys.readouterr().err.strip().startswith(f"heritage: error: {record.resolve()}: not sort's settings record")
    )
    record.unlink()  # as an earlier version left it: resumed, said so, and no record written after the fact
    assert main([*base, "--model", str(model), "--min-confidence", "0.95"]) == 0
    assert f"settings not checked: {out.resolve()} has no {SETTINGS_NAME}" in capsys.readouterr().out
    assert not record.exists()


def test_identical_photos_share_one_copy_and_are_counted_so(
    filing: Classifier, synthetic_root: Path, tmp_path: Path
) -> None:
    """Two sources of one name and one content in a new folder: one file, a row each, counted as identical (not
    as done earlier), and the per-class counts are the files."""
    survey = tmp_path / "dup"
    picture = (synthetic_root / "apse" / "000.png").read_bytes()
    for folder in ("a", "b"):
        (survey / folder).mkdir(parents=True)
        (survey / folder / "IMG_1.png").write_bytes(picture)
    out = tmp_path / "sorted"
    first = sort_photos(filing, survey, out, min_confidence=0.0, progress=False)
    assert (first.placed, first.identical, first.already_done, first.copied) == (1, 1, 0, 1)
    assert "1 photo(s) sorted (0 below 0.00 in _uncertain/), 1 identical to a photo sorted before it" in (
        first.describe(0.0)
    )
    files = Counter(p.parent.name for p in _copies(out))
    assert first.per_class == dict(files) and sum(files.values()) == 1
    rows = _manifest(out)
    assert len(rows) == 2 and rows[0]["destination"] == rows[1]["destination"]
    (survey / "c").mkdir()  # a third, added later: shares the copy sorted earlier
    (survey / "c" / "IMG_1.png").write_bytes(picture)
    again = sort_photos(filing, survey, out, min_confidence=0.0, progress=False)
    assert (again.placed, again.identical, again.already_done, again.copied, again.per_class) == (0, 1, 2, 0, {})
    assert len(_copies(out)) == 1 and len({r["destination"] for r in _manifest(out)}) == 1


def test_a_link_to_out_inside_in_is_not_sorted_again(filing: Classifier, synthetic_root: Path, tmp_path: Path) -> None:
    """IN holding a symbolic link to OUT: the copies it reaches are left out, counted, on every run."""
    survey = make_survey(synthetic_root, tmp_path / "survey")
    out = tmp_path / "sorted"
    (survey / "shortcut").symlink_to(out, target_is_directory=True)  # dangling until OUT exists
    first = sort_photos(filing, survey, out, min_confidence=0.0, progress=False)
    assert first.placed == 9 and first.inside_out == 0
    second = sort_photos(filing, survey, out, min_confidence=0.0, progress=False)
    assert (second.placed, second.already_done, second.inside_out) == (0, 9, 9)
    assert "9 file(s) left out: their real path is inside the output folder" in second.describe(0.0)
    rows = _manifest(out)
    assert len(rows) == 9 and not any(out.resolve() in Path(os.path.realpath(r["source"])).parents for r in rows)
    assert len(_copies(out)) == 9


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one error line of a sort that exits 2 (after the note an old model without a none-of-these threshold
    gets)."""
    assert main(argv) == 2
    (err,) = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("heritage: note:")]
    return err


def test_a_manifest_or_skipped_list_that_sort_did_not_write_is_refused_before_any_work(
    old_checkpoint: Path, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was read as no rows and overwritten: the user's own manifest.csv lost, or sort's own, saved again by a
    spreadsheet with `;` between cells, read as empty and every photo copied again (the user's moves undone). Teach
    refuses the same file. A column the user added to sort's manifest is kept."""
    survey = make_survey(synthetic_root, tmp_path / "survey")
    argv = ["sort", str(survey), "--model", str(old_checkpoint), "--min-confidence", "0", "-q", "--out"]
    cases = {
        "manifest.csv": ("name,notes\r\nIMG_1.jpg,the west door\r\n", "has no source or destination column"),
        "skipped.csv": ("file;why\r\nIMG_2.jpg;blurred\r\n", "has no source or reason column"),
    }
    for name, (text, problem) in cases.items():
        out = tmp_path / name
        out.mkdir()
        (out / name).write_bytes(text.encode())
        err = _refused([*argv, str(out)], capsys)
        assert err.startswith(f"heritage: error: {out.resolve() / name}: {problem}"), err
        assert err.endswith("which sort would overwrite; move it away, or sort into another --out")
        assert [p.name for p in out.iterdir()] == [name] and (out / name).read_bytes() == text.encode()

    out = tmp_path / "sorted"
    assert main([*argv, str(out)]) == 0
    manifest = out / "manifest.csv"
    with open(manifest, newline="", encoding="utf-8") as handle:
        lines = list(csv.reader(handle))
    with open(manifest, "w", newline="", encoding="utf-8") as handle:  # as a spreadsheet set to `;` saves it
        csv.writer(handle, delimiter=";").writerows(lines)
    moved = Path(lines[1][1])
    moved.rename(moved.with_name("moved_" + moved.name))  # a correction, which a re-copy would undo
    before = _tree_digest(out)
    err = _refused([*argv, str(out)], capsys)
    assert f"{manifest.resolve()}: has no source or destination column (its first line: 'source;destination;" in err
    assert _tree_digest(out) == before

    with open(manifest, "w", newline="", encoding="utf-8") as handle:  # back to commas, with a column of notes
        csv.writer(handle).writerows([[*lines[0], "notes"], *([*row, f"note {n}"] for n, row in enumerate(lines[1:]))])
    assert main([*argv, str(out)]) == 0
    rows = _manifest(out)
    assert [r["notes"] for r in rows] == [f"note {n}" for n in range(len(rows))] and len(rows) == 9
    assert not moved.exists() and len(_copies(out)) == 9


def test_a_class_folder_sort_cannot_write_is_refused_before_any_work(
    old_checkpoint: Path, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A class folder replaced by a file, or a broken link: sort copied a new photo first, then stopped with
    `out/altar: File exists`. Each is now refused before any photo is read, naming the folder; nothing is written.
    A read-only one is no refusal when nothing goes there."""
    survey = make_survey(synthetic_root, tmp_path / "survey")
    out = tmp_path / "sorted"
    argv = ["sort", str(survey / "day1"), "--model", str(old_checkpoint), "--min-confidence", "0", "-q", "--out"]
    assert main([*argv, str(out)]) == 0
    argv[1] = str(survey)  # day2's photos are new
    first, second = sorted(p for p in out.resolve().iterdir() if p.is_dir())[:2]
    shutil.rmtree(first)
    first.write_text("x\n")
    shutil.rmtree(second)
    second.symlink_to(tmp_path / "nowhere")
    before = _tree_digest(out)
    err = _refused([*argv, str(out)], capsys)
    assert err == (
        f"heritage: error: {first}: is a file, where sort puts the photos of {first.name}; move it away, or sort "
        "into another --out"
    )
    first.unlink()
    err = _refused([*argv, str(out)], capsys)
    assert err.startswith(f"heritage: error: {second}: is a link to nothing, where sort puts the photos of ")
    assert _tree_digest(out) == {k: v for k, v in before.items() if k != first.name}
    second.unlink()

    # a read-only class folder (one the user reviewed and locked) stops no run that files nothing there: refusing it
    # up front blocked every later sort into this folder
    argv[1] = str(survey / "day1")  # every photo done already
    locked = next(p for p in out.resolve().iterdir() if p.is_dir())
    before = _tree_digest(out)
    script = "import json, sys\nfrom heritage_cnn.cli.main import main\nprint(main(json.load(sys.stdin)))"
    locked.chmod(0o555)
    try:
        result = subprocess.run(
            [sys.executable, "-c", script],
            input=json.dumps([*argv, str(out)]),
            capture_output=True,
            text=True,
            timeout=600,
            **without_permission_override(),
        )
    finally:
        locked.chmod(0o755)
    assert result.stdout.split()[-1:] == ["0"], result.stderr
    assert {k: v for k, v in _tree_digest(out).items() if k != LOCK_NAME} == {
        k: v for k, v in before.items() if k != LOCK_NAME
    }  # the lock file holds the pid of the run


def test_a_sort_that_placed_no_photo_does_not_hold_the_folder_to_its_settings(
    filing: Classifier, synthetic_root: Path, tmp_path: Path
) -> None:
    """A first run that could read no photo recorded its settings all the same, and the next run, with a readable
    photo and another --min-confidence, was refused as "sorted with other settings" though nothing was sorted."""
    survey = tmp_path / "survey"
    survey.mkdir()
    (survey / "empty.jpg").write_bytes(b"")
    out = tmp_path / "sorted"
    assert sort_photos(filing, survey, out, min_confidence=0.6, progress=False).placed == 0  # exit 2 on the CLI
    assert json.loads((out / SETTINGS_NAME).read_text(encoding="utf-8"))["min_confidence"] == 0.6
    shutil.copy(next((synthetic_root / "apse").glob("*.png")), survey / "apse.png")
    summary = sort_photos(filing, survey, out, min_confidence=0.8, progress=False)
    assert (
        summary.placed == 1 and json.loads((out / SETTINGS_NAME).read_text(encoding="utf-8"))["min_confidence"] == 0.8
    )
    with pytest.raises(ValueError, match=r"--min-confidence 0\.8 then, 0\.6 now"):  # a photo keeps them now
        sort_photos(filing, survey, out, min_confidence=0.6, progress=False)


def test_a_first_sort_into_a_folder_with_files_of_its_own_records_its_settings(
    filing: Classifier, synthetic_root: Path, tmp_path: Path
) -> None:
    """A user's photo already in a class folder of OUT (no manifest) was taken for a sort of an earlier version: no
    record was written, and a second run with another --min-confidence was accepted."""
    survey = tmp_path / "survey"
    survey.mkdir()
    shutil.copy(next((synthetic_root / "apse").glob("*.png")), survey / "apse.png")
    out = tmp_path / "library"
    (out / "altar").mkdir(parents=True)
    shutil.copy(next((synthetic_root / "altar").glob("*.png")), out / "altar" / "my_altar.png")
    summary = sort_photos(filing, survey, out, min_confidence=0.6, progress=False)
    assert not summary.settings_unchecked and (out / SETTINGS_NAME).exists()
    with pytest.raises(ValueError, match=r"--min-confidence 0\.6 then, 0\.9 now"):
        sort_photos(filing, survey, out, min_confidence=0.9, progress=False)
