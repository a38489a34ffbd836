"""Checking a checkpoint's JSON half before anything is built from it.

One validator for both kinds of file: a single network's (`format` "heritage-cnn-checkpoint/1", its network's
config in `model_config`) and an ensemble's (`heritage_cnn.models.ensemble`: one `model_config` per member). The
fields every file has (classes, normalisation, image size, the "none of these" record) are checked once, and every
network's config by the same code, an ensemble member's errors naming it (`members[2].model_config: ...`). An edited
or hostile file is refused in one line naming the file and the field.
"""

from __future__ import annotations

import math
import typing
import unicodedata
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

from heritage_cnn.base.io import CheckpointError
from heritage_cnn.base.names import is_hidden
from heritage_cnn.data.decode import IMAGE_SIZE
from heritage_cnn.models.ensemble import ENSEMBLE_FORMAT, MAX_MEMBERS, SHARED
from heritage_cnn.models.network import MAX_PARAMETERS, ModelConfig
from heritage_cnn.models.openset_point import OPEN_SET, check_record
from heritage_cnn.models.views import TTA_MODES

FORMAT = "heritage-cnn-checkpoint/1"
MAX_CLASSES = 10_000


def _json_type(hint: object) -> type | tuple[type, ...]:
    """The JSON type a ModelConfig field arrives as: a tuple as a list, a float as any number."""
    if typing.get_origin(hint) is tuple:
        return list
    if hint is float:
        return (int, float)
    assert isinstance(hint, type), hint
    return hint


_HINTS = typing.get_type_hints(ModelConfig)
_MODEL_FIELDS = {f.name: _json_type(_HINTS[f.name]) for f in fields(ModelConfig)}


def class_name_problem(name: object) -> str | None:
    """Why `name` cannot be a class name (tools use class names as folder names), or None."""
    if not isinstance(name, str) or not name:
        return "is not a non-empty string"
    if is_hidden(name):
        return "starts with '.'"
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if any(unicodedata.category(c) == "Cs" for c in name):  # how Python reads a file name's undecodable bytes
        return "is not valid UTF-8 (rename the folder: a checkpoint's JSON holds text only)"
    if any(unicodedata.category(c) == "Cc" for c in name):
        return "contains a control character"
    if len(name.encode("utf-8", "surrogatepass")) > 255:
        return "is longer than a file name may be"
    return None


def _numbers(value: object, count: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == count
        and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    )


def validate_metadata(meta: object, where: Path) -> list[ModelConfig]:
    """Check a checkpoint's JSON as a whole (types, ranges, safe class names), a single network's or an ensemble's;
    return the config of each network it holds (one for a single network)."""
    ensemble = isinstance(meta, dict) and meta.get("format") == ENSEMBLE_FORMAT
    if not isinstance(meta, dict) or not (ensemble or meta.get("format") == FORMAT):
        raise CheckpointError(f"{where}: not a heritage-cnn checkpoint (format {FORMAT!r} expected)")
    if ensemble:
        _check_ensemble(meta, where)
    num_classes, size = _check_shared(meta, where)
    configs = [_network_config(raw, num_classes, size, where, label) for label, raw in _raw_configs(meta, where)]
    check_record(meta.get(OPEN_SET), where)
    total = sum(config.weight_count() for config in configs)
    if total > MAX_PARAMETERS:  # the members together, not only each, stay within what one network may allocate
        raise CheckpointError(
            f"{where}: members: {total:,} parameters in all, more than the {MAX_PARAMETERS:,} allowed"
        )
    return configs


def _check_shared(meta: dict[str, Any], where: Path) -> tuple[int, int]:
    """The fields that describe the photos every network of the file takes: returns (classes, image size)."""

    def fail(field: str, problem: str) -> CheckpointError:
        return CheckpointError(f"{where}: {field}: {problem}")

    classes = meta.get("classes")
    if not isinstance(classes, list) or not 2 <= len(classes) <= MAX_CLASSES:
        raise fail("classes", f"must be a list of 2 to {MAX_CLASSES} class names")
    for name in classes:
        problem = class_name_problem(name)
        if problem:
            raise fail("classes", f"{name!r} {problem}")
    if len(set(classes)) != len(classes):
        raise fail("classes", "names repeat")
    norm = meta.get("normalisation")
    if not isinstance(norm, dict) or not _numbers(norm.get("mean"), 3) or not _numbers(norm.get("std"), 3):
        raise fail("normalisation", "must hold 'mean' and 'std', each a list of 3 finite numbers")
    if min(norm["std"]) <= 0:
        raise fail("normalisation", f"std must be positive, got {norm['std']}")
    size = meta.get("image_size", IMAGE_SIZE)  # a model that names no size sees the data set's photos
    if not isinstance(size, int) or isinstance(size, bool) or not 8 <= size <= 512:
        raise fail("image_size", f"must be a whole number from 8 to 512, got {size!r}")
    return len(classes), size


def _network_config(raw: object, num_classes: int, size: int, where: Path, label: str) -> ModelConfig:
    """One network's `model_config`, checked key by key before it is built; `label` names an ensemble's member."""

    def fail(field: str, problem: str) -> CheckpointError:
        return CheckpointError(f"{where}: {label}{field}: {problem}")

    if not isinstance(raw, dict):
        raise fail("model_config", "missing or not an object")
    for key, value in raw.items():
        kind = _MODEL_FIELDS.get(key)
        if kind is None:
            raise fail("model_config", f"unknown key {key!r}")
        ints = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        if (kind is list and not ints) or (kind is not list and not isinstance(value, kind)):
            raise fail(f"model_config.{key}", f"has the wrong type ({value!r})")
        if kind is not bool and isinstance(value, bool):
            raise fail(f"model_config.{key}", f"has the wrong type ({value!r})")
    try:
        config = ModelConfig.from_dict({**raw, "num_classes": num_classes})
    except (TypeError, ValueError) as error:
        raise fail("model_config", str(error)) from None
    if size < 2 ** len(config.widths):  # the image size is the file's, one for every member: named as such
        raise CheckpointError(
            f"{where}: image_size: {size} px is too small for {len(config.widths)} stages of 2x2 pooling"
        )
    return config


def _check_ensemble(meta: dict[str, Any], where: Path) -> None:
    """An ensemble's own fields: its list of members and its test-time views."""
    members = meta.get("members")
    if not isinstance(members, list) or not 1 <= len(members) <= MAX_MEMBERS:
        raise CheckpointError(f"{where}: members: must be a list of 1 to {MAX_MEMBERS} networks")
    if meta.get("views", "none") not in TTA_MODES:
        raise CheckpointError(f"{where}: views: must be one of {', '.join(TTA_MODES)}, got {meta['views']!r}")


def _raw_configs(meta: dict[str, Any], where: Path) -> Iterator[tuple[str, object]]:
    """Each network's unchecked `model_config`, with the label its errors carry: none for a single network,
    `members[2].` for an ensemble's member, whose own record is checked first."""
    if meta["format"] != ENSEMBLE_FORMAT:
        yield "", meta.get("model_config")
        return
    for i in range(len(meta["members"])):
        yield f"members[{i}].", _member_config(meta, i, where)


def _member_config(meta: dict[str, Any], i: int, where: Path) -> object:
    """Member `i`'s record (its name, its command, no photo field of its own that differs from the ensemble's);
    returns its raw `model_config`."""
    member = meta["members"][i]
    if not isinstance(member, dict):
        raise CheckpointError(f"{where}: members[{i}]: not an object")
    for key in ("name", "command"):
        if not isinstance(member.get(key), str) or len(member[key]) > 2000:
            raise CheckpointError(f"{where}: members[{i}].{key}: must be a string")
    for key in SHARED:
        if key in member and member[key] != meta.get(key):
            raise CheckpointError(f"{where}: members[{i}].{key}: differs from the ensemble's {key}")
    return member.get("model_config")


__all__ = ["FORMAT", "MAX_CLASSES", "class_name_problem", "validate_metadata"]
