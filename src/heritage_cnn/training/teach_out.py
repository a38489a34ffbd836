"""Where `heritage teach` writes, checked before any photo is read: the new model's pair of files, never over an
existing one, and the `--cache-dir` folder. `teach` checks both again before it writes. And what of the parent's
info the taught model does not carry as its own (`own_info`)."""

from __future__ import annotations

import os
from pathlib import Path

from heritage_cnn.base.io import CheckpointError, file_in_the_way, holds_anything, read_json, writable_problem
from heritage_cnn.models.checkpoint import Checkpoint, checkpoint_files


def teach_files(out: str | os.PathLike) -> tuple[Path, Path]:
    """The (weights, metadata) pair `teach` writes for `out`, checked before any work: `OUT.safetensors` +
    `OUT.json` (the whole name is the stem, `models.checkpoint.checkpoint_files`: `M1.v2` writes `M1.v2.safetensors`;
    a final `.safetensors` or `.json` names the same pair), or for a folder (one that exists, or a name ending in
    `/`) its `last.safetensors` + `last.json`. Refused, with a CheckpointError naming the path: an empty name, an
    existing folder that holds anything, a file of the pair that exists (teach never overwrites a model, its parent
    or any other), and a pair whose folder cannot be made because a file stands in the way."""
    text = os.fspath(out)
    if not text.strip():
        raise CheckpointError("--out is empty: name the new model (OUT writes OUT.safetensors + OUT.json)")
    folder = Path(text)
    if holds_anything(folder):
        raise CheckpointError(
            f"{folder}: a folder that holds files; teach writes a model into a new or empty folder (as last.safetensors "
            "+ last.json) or as OUT.safetensors + OUT.json: choose another --out"
        )
    weights_path, meta_path = checkpoint_files(text)
    for path in (weights_path, meta_path):
        if path.exists() or path.is_symlink():
            raise CheckpointError(f"{path}: exists; teach never overwrites a model: choose another --out")
    blocker = file_in_the_way(weights_path.parent)
    if blocker is not None:
        raise CheckpointError(f"{blocker}: not a folder, so {weights_path} cannot be written: choose another --out")
    problem = writable_problem(weights_path.parent, f"--out {text}")
    if problem is not None:
        raise CheckpointError(problem)
    return weights_path, meta_path


# What a parent's info records of its own weights as measured, which the taught weights are not: the taught model
# records it under `taught.parent` instead, so that no reader (the web page's "94.5% right") takes it for its own
PARENTS_OWN = ("validation",)


def own_info(parent_info: dict) -> dict:
    """A parent's (or a parent member's) info less what it measured of its own weights (`PARENTS_OWN`)."""
    return {key: value for key, value in parent_info.items() if key not in PARENTS_OWN}


def taught_chain(checkpoint: Checkpoint, member: int = 0) -> list[dict]:
    """The `taught` records of a model and of each model it descends from, its own first (each nests its parent's
    under `parent.taught`); [] for a model no teach wrote. An ensemble's record is on the model or on its members.
    Readers check each field they use: the record grows with the tool, so an older one may lack a field."""
    record = checkpoint.info.get("taught") or checkpoint.member(member).info.get("taught")
    chain: list[dict] = []
    while isinstance(record, dict) and len(chain) < 1000:  # a bound on a file's nesting, not a count anyone reaches
        chain.append(record)
        parent = record.get("parent")
        record = parent.get("taught") if isinstance(parent, dict) else None
    return chain


def parent_record(parent: Checkpoint) -> dict:
    """What the taught model records of its parent: its weights' resolved path (not relative to wherever teach ran:
    `fast.safetensors` from inside a folder would read as the shipped model), its `generation`, its own `taught`
    record and its own validation figure (`PARENTS_OWN`; None for a taught parent, whose copy may be its parent's)."""
    generation = where = None
    if parent.path is not None:
        where = str(Path(parent.path).resolve())
        meta = checkpoint_files(parent.path)[1]
        generation = read_json(meta).get("generation") if meta.exists() else None
    measured = None if "taught" in parent.info else parent.info.get("validation")
    return {"path": where, "generation": generation, "taught": parent.info.get("taught"), "validation": measured}


def check_cache_dir(cache_dir: str | os.PathLike | None) -> None:
    """Refuse, before any photo is decoded, a `--cache-dir` that is not a folder and cannot be made one."""
    if cache_dir is None:
        return
    text = os.fspath(cache_dir)
    if not text.strip():
        raise CheckpointError("--cache-dir is empty: name a folder")
    blocker = file_in_the_way(text)
    if blocker is not None:
        where = text if blocker == Path(os.path.realpath(text)) else f"{text} ({blocker} is a file)"
        raise CheckpointError(f"--cache-dir {where}: not a folder")


__all__ = ["PARENTS_OWN", "check_cache_dir", "own_info", "parent_record", "taught_chain", "teach_files"]
