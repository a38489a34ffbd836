"""`base.io`'s atomic writes: the file is replaced whole or not at all, and no temporary file is left behind, whenever
the write is interrupted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from heritage_cnn.base import io


def test_a_write_replaces_the_file_whole_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    target = tmp_path / "manifest.csv"
    target.write_bytes(b"old")
    io.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["manifest.csv"]
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~io.umask())  # the usual permissions, not mkstemp's


@pytest.mark.parametrize("moment", ["after the temporary file is made", "while writing"])
def test_ctrl_c_at_any_moment_leaves_the_old_file_and_no_temporary_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moment: str
) -> None:
    """Ctrl-C the instant the temporary file exists (before its name reached the code that removes it) left a hidden
    `.manifest.csv.XXXX.tmp` behind; the next run removed it only under the folder's lock."""
    target = tmp_path / "manifest.csv"
    target.write_bytes(b"old")
    real_close = os.close

    def interrupted_close(fd: int) -> None:  # the first close after the temporary file is made
        monkeypatch.setattr(os, "close", real_close)
        real_close(fd)
        raise KeyboardInterrupt

    if moment == "after the temporary file is made":
        monkeypatch.setattr(os, "close", interrupted_close)
    with pytest.raises(KeyboardInterrupt), io.atomic_path(target) as temp:
        temp.write_bytes(b"half")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["manifest.csv"]
    assert io.stale_temps(tmp_path) == []


def test_only_atomic_paths_own_temporary_files_are_stale(tmp_path: Path) -> None:
    """Any hidden `*.tmp` of the user's in a run folder was taken for a half-written file and removed."""
    names = [".fieldnotes.tmp", ".last.json.backup.tmp", ".last.json.0123456789abcdef.tmp", ".x.fedcba9876543210.tmp"]
    for name in names:
        (tmp_path / name).write_text("x")
    assert sorted(p.name for p in io.stale_temps(tmp_path)) == names[2:]
    assert [p.name for p in io.stale_temps(tmp_path, "last.json")] == [names[2]]
