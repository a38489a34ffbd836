"""`heritage data none-fit` names each file of --data it could not read, as `heritage evaluate` does (on stderr,
then a count), and fits without them; `evaluate --split val`, which rebuilds the same split, lists them too."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from heritage_cnn.base.io import read_json
from heritage_cnn.cli.main import main


@pytest.fixture(scope="module")
def data(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = Path(shutil.copytree(synthetic_root, tmp_path_factory.mktemp("none_fit") / "sub_c"))
    (root / "altar" / "zz_corrupt.jpg").write_bytes(b"not a jpeg")
    (root / "apse" / "empty.jpg").write_bytes(b"")
    return root


def test_none_fit_names_the_files_it_skips(tiny_run, data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "nf" / "none"
    assert main(["data", "none-fit", "--model", str(tiny_run.out), "--data", str(data), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    for name in ("altar/zz_corrupt.jpg", "apse/empty.jpg"):
        [line] = [line for line in captured.err.splitlines() if name in line]
        assert line.startswith(f"heritage: skipped {data / name}: ") and len(line) > len(f"{data / name}: ") + 20
    assert f"skipped 2 unreadable file(s) of {data}: left out of the fit" in captured.out
    assert read_json(Path(f"{out}.json"))["open_set"]["fitted_on"]["skipped_files"] == 2  # and the record says so


def test_evaluate_val_lists_them_too(tiny_run, data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(tiny_run.out), "--data", str(data), "--split", "val", "--out", str(out)]
    assert main(args) == 0
    listed = {Path(entry["path"]).name for entry in read_json(out / "metrics.json")["skipped"]}
    assert listed == {"zz_corrupt.jpg", "empty.jpg"}
    assert capsys.readouterr().err.count("heritage: skipped ") == 2
