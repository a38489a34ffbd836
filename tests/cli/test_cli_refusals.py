"""Bad outputs and inputs end a command with exit 2 and one line naming the file, before any work, nothing written:
an output folder or file with a file in its way, an input that is missing or unreadable, a folder with no photos."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CLASSES, make_dataset, without_permission_override
from heritage_cnn.base.io import output_problem
from heritage_cnn.cli.main import main

MODEL = ["--model", "fast"]  # never loaded by a refusal: the check comes first
# Every command that writes an output folder or file, with that output (OUT) below or at `afile`, a file. DATA is a
# data folder, PHOTO a photo.
WRITERS = {
    "predict -o": ["predict", "PHOTO", *MODEL, "-o", "AFILE/p.csv"],
    "map --out": ["map", "PHOTO", *MODEL, "--out", "AFILE"],
    "map --out below": ["map", "PHOTO", *MODEL, "--out", "AFILE/sub"],
    "sort": ["sort", "DATA", *MODEL, "--out", "AFILE"],
    "explain": ["explain", "PHOTO", *MODEL, "--out", "AFILE"],
    "visualize features": ["visualize", "features", "PHOTO", *MODEL, "--out", "AFILE"],
    "visualize kernels": ["visualize", "kernels", *MODEL, "--out", "AFILE"],
    "visualize deconv": ["visualize", "deconv", "PHOTO", *MODEL, "--out", "AFILE"],
    "visualize units": ["visualize", "units", "--layer", "stage1", "--steps", "1", *MODEL, "--out", "AFILE"],
    "generate": ["generate", "--all", "--n", "1", "--steps", "1", *MODEL, "--out", "AFILE"],
    "review": ["review", "DATA", *MODEL, "--out", "AFILE"],
    "evaluate": ["evaluate", "--data", "DATA", *MODEL, "--out", "AFILE"],
    "report": ["report", "--data", "DATA", *MODEL, "--out", "AFILE/r"],
    "demo": ["demo", "--data", "DATA", "--no-train", "--out", "AFILE/d"],
    "train": ["train", "--data", "DATA", "--epochs", "1", "--out", "AFILE/t"],
    "teach": ["teach", "DATA", *MODEL, "--out", "AFILE/m"],
    "data none-fit": ["data", "none-fit", *MODEL, "--data", "DATA", "--out", "AFILE/m"],
    "data check --json": ["data", "check", "DATA", "--json", "AFILE/c.json"],
    "data download": ["data", "download", "--dest", "AFILE"],
    "serve --corrections": ["serve", *MODEL, "--port", "0", "--corrections", "AFILE"],
}


def _files(root: Path) -> list[Path]:
    return sorted(root.rglob("*"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inputs")
    data = make_dataset(root / "data", per_class=3, classes=CLASSES[:2])
    return {"DATA": data, "PHOTO": data / CLASSES[0] / "000.png"}


@pytest.mark.parametrize("command", WRITERS.values(), ids=WRITERS.keys())
def test_an_output_with_a_file_in_its_way_is_refused_first_naming_that_file(
    command: list[str], inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was mkdir's "File exists" or "Not a directory", after the work for some (`data check --json` checked the
    whole data set first), or generate's and review's "already exists and is not empty" for an empty file."""
    afile = tmp_path / "afile"
    afile.write_bytes(b"")  # empty: a file, not a folder that holds something
    argv = [str(afile) + arg[5:] if arg.startswith("AFILE") else str(inputs.get(arg, arg)) for arg in command]
    before = _files(tmp_path)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1, err  # nothing done, nothing printed but the one line
    assert err.startswith("heritage: error: ") and str(afile) in err
    assert "is a file" in err or "not a folder" in err, err
    assert _files(tmp_path) == before and afile.read_bytes() == b""


def test_an_output_that_cannot_be_written_is_refused_first_naming_the_folder(
    inputs: dict[str, Path], tmp_path: Path
) -> None:
    """Was found only when the results were written (predict -o after classifying every photo): every command,
    as root too (`without_permission_override`), with its output in or at a read-only folder."""
    locked = tmp_path / "read-only"
    locked.mkdir()
    argvs = [
        [str(locked) + a[5:] if a.startswith("AFILE") else str(inputs.get(a, a)) for a in c] for c in WRITERS.values()
    ]
    script = (
        "import json, sys\nfrom heritage_cnn.cli.main import main\nfor argv in json.load(sys.stdin): print(main(argv))"
    )
    locked.chmod(0o555)
    try:
        result = subprocess.run(
            [sys.executable, "-c", script],
            input=json.dumps(argvs),
            capture_output=True,
            text=True,
            timeout=120,  # the refusals take seconds; without them serve would listen and train would train
            **without_permission_override(),
        )
    finally:
        locked.chmod(0o755)
    errors = result.stderr.splitlines()
    assert result.stdout.split() == ["2"] * len(WRITERS) and len(errors) == len(WRITERS), result.stderr
    for key, err in zip(WRITERS, errors, strict=True):
        assert err.startswith("heritage: error: ") and err.endswith(
            f"{locked} is not writable (permissions or a read-only disk)"
        ), (key, err)
    assert list(locked.iterdir()) == []


EMPTY = {key: command for key, command in WRITERS.items() if key != "map --out below"}


@pytest.mark.parametrize("command", EMPTY.values(), ids=EMPTY.keys())
def test_an_empty_output_is_refused_first_naming_the_flag(
    command: list[str], inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Was: `data check --json ""` exit 0 with no JSON and nothing said, `explain --out ""` (and the other folders)
    written into the current folder, `predict -o ""` printed as if no -o were given."""
    from heritage_cnn.apps import serve

    monkeypatch.chdir(tmp_path)  # where "" wrote, before
    monkeypatch.setattr(serve, "run", lambda *args: None)  # before, `serve --corrections ""` served until stopped
    at = next(i for i, arg in enumerate(command) if arg.startswith("AFILE"))
    argv = [str(inputs.get(arg, arg)) for arg in command[:at]] + [""] + command[at + 1 :]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"heritage: error: {command[at - 1]}") and " empty" in err, err
    assert len(err.splitlines()) == 1 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "command",
    [
        ["generate", "--all", "--out", "g"],
        ["data", "none-fit", "--data", "DATA", "--out", "n"],
        ["predict", "PHOTO"],
        ["visualize", "kernels", "--out", "k"],
    ],
)
def test_an_empty_model_is_refused_naming_the_flag(
    command: list[str], inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Was `.: a folder without last.safetensors` (the current folder taken for a run folder), --model unnamed."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main([*(str(inputs.get(arg, arg)) for arg in command), "--model", ""])
    out, err = capsys.readouterr()
    assert info.value.code == 2 and out == "" and "error: argument --model: empty; " in err.splitlines()[-1], err
    assert list(tmp_path.iterdir()) == []


def test_what_is_in_the_way_is_named_as_typed(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    (tmp_path / "folder").mkdir()
    assert output_problem(afile, flag="--out") == f"--out {afile}: is a file; the output folder must be a folder"
    assert (
        output_problem(afile / "sub")
        == f"{afile}/sub: cannot be made: {afile} is a file; the output folder must be a folder"
    )
    assert (
        output_problem(afile / "p.csv", folder=False)
        == f"{afile}/p.csv: cannot be made: {afile} is a file, not a folder"
    )
    assert output_problem(tmp_path / "folder", folder=False) == f"{tmp_path}/folder: is a folder: give a file name"
    assert output_problem(afile, folder=False) is None  # an output file already there is replaced
    assert output_problem(tmp_path / "new" / "sub") is None and output_problem(tmp_path / "folder") is None


def test_a_link_to_nothing_is_refused_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Was mkdir's "danglink: File exists", once every image was drawn (`generate`, `explain`, `visualize kernels`)."""
    link = tmp_path / "danglink"
    link.symlink_to(tmp_path / "notyet")
    assert output_problem(link, flag="--out") == (
        f"--out {link}: cannot be made: {link} is a link to {tmp_path}/notyet, which does not exist; make that folder "
        "or choose another"
    )
    assert output_problem(link / "sub").startswith(f"{link}/sub: cannot be made: {link} is a link to ")
    assert output_problem(link / "p.csv", folder=False).endswith("make its folder or choose another name")
    assert output_problem(link, folder=False) is None  # an output file's link is replaced, as a file is
    code = main(["visualize", "kernels", "--model", "nowhere.safetensors", "--out", str(link / "k")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"is a link to {tmp_path}/notyet" in err, err
    assert not (tmp_path / "notyet").exists()


@pytest.mark.parametrize("command", ["predict", "map"])
def test_one_input_that_cannot_be_read_is_one_line(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was that line, then "no photos found in missing.jpg" or "1 of 1 file(s) could not be read"."""
    text = tmp_path / "notimage.jpg"
    text.write_text("not a photo")
    missing = tmp_path / "missing.jpg"
    for given, line in ((missing, f"{missing}: no such file or folder"), (text, f"skipped {text}: not a recognised")):
        assert main([command, str(given), *MODEL]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and err.startswith(f"heritage: {line}"), err
    # several: each named, and the count, which is what matters in a long run
    assert main([command, str(missing), str(tmp_path / "gone.jpg"), *MODEL]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("heritage: error: no photos found in")
    shutil.copy(text, tmp_path / "second.jpg")
    assert main([command, str(text), str(tmp_path / "second.jpg"), *MODEL]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == "heritage: 2 of 2 file(s) could not be read"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notimage.jpg", "second.jpg"]
    if command == "map":  # no photo read, no figure: --out is not made
        assert main([command, str(text), *MODEL, "--out", str(tmp_path / "maps")]) == 2
        assert not (tmp_path / "maps").exists()


@pytest.mark.parametrize("command", ["predict", "map"])
def test_the_closing_count_holds_the_inputs_that_were_not_there(
    command: str, inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The count said "1 of 2 file(s)" for three inputs, one of them missing: the missing one was left out."""
    broken = tmp_path / "broken.jpg"
    broken.write_text("not a photo")
    given = [str(inputs["PHOTO"]), str(tmp_path / "gone.jpg"), str(broken)]
    assert main([command, *given, *MODEL, "-q"]) == 0
    last = capsys.readouterr().err.splitlines()[-1]
    assert (
        last
        == "heritage: 1 of 2 file(s) could not be read; 1 input(s) named, or folder(s) or link(s) below them, could not be looked at"
    )
    assert main([command, given[0], given[1], *MODEL, "-q"]) == 0
    assert (
        capsys.readouterr().err.splitlines()[-1]
        == "heritage: 1 input(s) named, or folder(s) or link(s) below them, could not be looked at"
    )


def test_sort_with_nothing_to_sort_exits_2_but_a_finished_sort_run_again_does_not(
    inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sort empty_dir` and `sort onlybad` exited 0 ("0 photo(s) sorted"), the empty one making OUT/manifest.csv."""
    empty, notes, broken, good = (tmp_path / name for name in ("empty", "notes", "broken", "good"))
    for folder in (empty, notes, broken, good):
        folder.mkdir()
    (notes / "notes.txt").write_text("no photo")
    (broken / "b.jpg").write_text("not a jpeg")
    shutil.copy(inputs["PHOTO"], good / "a.png")
    for folder in (empty, notes):  # refused before OUT is made
        assert main(["sort", str(folder), "--out", str(tmp_path / "out"), *MODEL, "-q"]) == 2
        assert capsys.readouterr().err == f"heritage: error: no photos found in {folder}\n"
        assert not (tmp_path / "out").exists()
    out = tmp_path / "sorted_broken"  # read, and listed: exit 2 after
    assert main(["sort", str(broken), "--out", str(out), *MODEL, "-q"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and f"no photo of {broken} could be read ({broken / 'b.jpg'}: " in err
    assert "b.jpg" in (out / "skipped.csv").read_text()
    out = tmp_path / "sorted_good"
    assert main(["sort", str(good), "--out", str(out), *MODEL, "-q"]) == 0
    capsys.readouterr()
    assert main(["sort", str(good), "--out", str(out), *MODEL, "-q"]) == 0  # every photo done earlier: no error
    printed, err = capsys.readouterr()
    assert printed.startswith("0 photo(s) sorted") and "1 already done earlier" in printed and err == ""
