"""Ensemble checkpoints: several networks in one pair, loaded as one model that averages their softmax.

Averaging the softmax of networks trained on the same split with different recipes makes fewer mistakes than
any of them (benchmarks/recipes.md); the shipped `default` model is such an ensemble, and `fast` one network
distilled from its members.

The pair, like a single network's (`heritage_cnn.models.checkpoint`), is `NAME.safetensors` + `NAME.json`:

- `NAME.safetensors`: every member's tensors under `members.<i>.` (`members.0.stage1.block1.conv.weight`, ...).
  Floats are stored as float16 (half the package size; accuracy unchanged) and loaded as float32. Its
  metadata holds `format` and `generation`.
- `NAME.json`: `format` ("heritage-cnn-ensemble/1"), `package_version`, `classes`, `display_names`,
  `normalisation` {mean, std}, `image_size`: shared by every member; `generation` (the hash of the stored
  tensors, as in the safetensors half); `views` (optional, default "none"), the test-time views that every
  tool averages unless told otherwise (`augment.TTA_MODES`; "flip": each photo and its mirror); `forward_mflop`
  (the cost of one photo: the members' sum times the views); `trained_on` (the first member's training images:
  the members share one split, so `evaluate --split auto/unseen` leaves the same images out); `open_set` (optional:
  the "none of these" operating point, `heritage_cnn.models.openset_point`; each member's statistics are then tensors
  `members.<i>.openset.mahalanobis.*`, float32); and `members`, a
  list (1 to 16) of objects: `name`, `command` (how it was trained, e.g. `heritage train
  --data DATA --out RUN --seed 1`), `model_config`, and its own checkpoint metadata (`seed`, `recipe`,
  `history`, `validation`, `forward_mflop`, `source_generation`, ...) without classes or normalisation.

Loading (`heritage_cnn.models.checkpoint.load_checkpoint`, which takes single networks and ensembles alike) checks
the JSON as a whole, as `validate_metadata` does for one network, and refuses in one line that
names the file: another format, too many members, a member whose classes, normalisation or image size differ,
halves from different saves, weights that do not match a member's config.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from heritage_cnn import __version__
from heritage_cnn.base.io import CheckpointError, atomic_write_json, save_tensors
from heritage_cnn.models.checkpoint import (
    ENSEMBLE_FORMAT,
    MAX_MEMBERS,
    NOT_PER_MEMBER,
    Checkpoint,
    checkpoint_files,
    first_non_finite,
    weights_generation,
)
from heritage_cnn.models.network import Ensemble, HeritageNet
from heritage_cnn.models.openset_point import OPEN_SET, OperatingPoint, fitted_for
from heritage_cnn.models.views import TTA_MODES, TTA_VIEWS


def _shared(checkpoint: Checkpoint) -> dict[str, Any]:
    return {
        "classes": checkpoint.classes,
        "normalisation": {"mean": checkpoint.mean, "std": checkpoint.std},
        "image_size": checkpoint.image_size,
    }


def member_record(checkpoint: Checkpoint, name: str, command: str) -> dict[str, Any]:
    """What the ensemble's JSON keeps of one network: its name, command, config and checkpoint metadata."""
    info = {k: v for k, v in checkpoint.info.items() if k not in NOT_PER_MEMBER and k not in ("name", "command")}
    return {"name": name, "command": command, "model_config": checkpoint.model.config.to_dict(), **info}


def save_ensemble(
    path: str | os.PathLike,
    members: Sequence[Checkpoint],
    names: Sequence[str] | None = None,
    commands: Sequence[str] | None = None,
    views: str = "none",
    open_set: OperatingPoint | None = None,
) -> Path:
    """Write an ensemble pair atomically, tagged with one generation; returns the weights path.

    `members`: single-network checkpoints with the same classes, normalisation and image size (trained on one
    split); `names` and `commands` default to what each member's info records (`name`, `command`); `views` is
    the model's own test-time views (`augment.TTA_MODES`); `open_set`: the ensemble's "none of these" operating
    point (`heritage_cnn.models.openset_point`), its statistics stored in float32 beside the members' weights; written only
    when it was fitted for these members' weights."""
    weights_path, meta_path = checkpoint_files(path)
    if views not in TTA_MODES:
        raise CheckpointError(f"{weights_path}: not written: views must be one of {', '.join(TTA_MODES)}")
    if not 1 <= len(members) <= MAX_MEMBERS:
        raise CheckpointError(
            f"{weights_path}: not written: an ensemble has 1 to {MAX_MEMBERS} members, got {len(members)}"
        )
    first = members[0]
    for i, member in enumerate(members):
        if not isinstance(member.model, HeritageNet):
            raise CheckpointError(f"{weights_path}: not written: member {i} ({member.path}) is not a single network")
        for key, value in _shared(member).items():
            if value != _shared(first)[key]:
                raise CheckpointError(f"{weights_path}: not written: member {i} ({member.path}) has other {key}")
        split = (member.info.get("recipe") or {}).get("split"), (first.info.get("recipe") or {}).get("split")
        if split[0] != split[1]:
            raise CheckpointError(
                f"{weights_path}: not written: member {i} ({member.path}) was trained on another split"
            )
    names = (
        list(names) if names is not None else [str(m.info.get("name") or f"member{i}") for i, m in enumerate(members)]
    )
    commands = list(commands) if commands is not None else [str(m.info.get("command", "")) for m in members]
    state: dict[str, torch.Tensor] = {}
    for i, member in enumerate(members):
        for key, tensor in member.model.state_dict().items():
            tensor = tensor.detach().cpu()
            state[f"members.{i}.{key}"] = tensor.half() if tensor.is_floating_point() else tensor
    open_set = fitted_for(open_set, state)  # none fitted for other weights
    if open_set is not None:
        state |= open_set.tensors(ensemble=True)
    bad = first_non_finite(state)
    if bad is not None:
        raise CheckpointError(f"{weights_path}: not written: tensor {bad} is NaN or infinite (in float16)")
    generation = weights_generation(state)
    mflop = [m.info.get("forward_mflop") for m in members]
    meta: dict[str, Any] = {
        "format": ENSEMBLE_FORMAT,
        "package_version": __version__,
        **_shared(first),
        "display_names": first.display_names,
        "forward_mflop": round(sum(mflop) * TTA_VIEWS[views], 2)
        if all(isinstance(v, int | float) for v in mflop)
        else None,
        "views": views,
        "members": [member_record(m, n, c) for m, n, c in zip(members, names, commands, strict=True)],
    }
    if first.info.get("trained_on") is not None:
        meta["trained_on"] = first.info["trained_on"]
    if open_set is not None:
        meta[OPEN_SET] = open_set.to_dict()
    save_tensors(weights_path, state, metadata={"format": ENSEMBLE_FORMAT, "generation": generation})
    atomic_write_json(meta_path, {**meta, "generation": generation})
    return weights_path


def is_ensemble(checkpoint: Checkpoint) -> bool:
    return isinstance(checkpoint.model, Ensemble)


__all__ = ["is_ensemble", "member_record", "save_ensemble"]
