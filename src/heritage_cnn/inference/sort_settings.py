"""What decides where `heritage sort` puts a photo, recorded in OUT/sort-settings.json by the first run and checked by
every later one once a photo was placed (`inference.sort`).

The record: the model (the SHA-256 of its weights and metadata files, its ensemble member and classes),
--min-confidence, the none-of-these threshold, the views (--tta), --multi and the element map's settings. A later run
with other settings is refused in one line naming each difference: the photos sorted earlier would keep the old ones.
A folder sorted before the record existed is resumed, its settings unchecked, and gets no record. --mode is not
recorded: a copy and a hard link are the same photo.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from heritage_cnn.base.io import atomic_write_json, file_sha256
from heritage_cnn.base.names import shown
from heritage_cnn.inference.classifier import Classifier
from heritage_cnn.inference.tiles import MapConfig
from heritage_cnn.models.checkpoint import Checkpoint, checkpoint_files, weights_generation

SETTINGS_NAME = "sort-settings.json"  # beside manifest.csv: the settings the folder was sorted with
SETTINGS_FORMAT = 1


def _model_identity(checkpoint: Checkpoint) -> dict[str, object]:
    """The model as sort records it: its path (for people) and what is compared, the SHA-256 of its weights and
    metadata files (any change to either may change where a photo goes), its ensemble member and classes."""
    digest = hashlib.sha256()
    files = checkpoint_files(checkpoint.path) if checkpoint.path is not None else ()
    if files and all(f.is_file() for f in files):
        for name in files:
            digest.update(bytes.fromhex(file_sha256(name)))
    else:  # a model built in memory: its tensors
        digest.update(weights_generation(checkpoint.model.state_dict()).encode())
    return {
        "path": None if checkpoint.path is None else str(checkpoint.path),
        "sha256": digest.hexdigest(),
        "member": checkpoint.index,
        "classes": list(checkpoint.classes),
    }


def settings_of(classifier: Classifier, min_confidence: float, map_config: MapConfig | None) -> dict[str, object]:
    """Everything that decides where a photo goes, as JSON values (compared after a JSON round trip)."""
    point = classifier.open_set
    settings = {
        "format": SETTINGS_FORMAT,
        "model": _model_identity(classifier.checkpoint),
        "min_confidence": float(min_confidence),
        "none_threshold": None if point is None else float(point.threshold),
        "tta": classifier.tta,
        "multi": map_config is not None,
        "map": None if map_config is None else dataclasses.asdict(map_config),
    }
    return json.loads(json.dumps(settings))


def _differences(then: dict, now: dict) -> list[str]:
    """Each setting that differs, for people: `--min-confidence 0.6 then, 0.95 now`."""
    found = []
    old_model, new_model = then.get("model") or {}, now["model"]
    if any(old_model.get(key) != new_model[key] for key in ("sha256", "member", "classes")):
        old_path, new_path = old_model.get("path"), new_model["path"]
        if old_path == new_path:
            found.append(f"--model {shown(str(new_path))}: its files changed since")
        else:
            found.append(f"--model {shown(str(old_path))} then, {shown(str(new_path))} now")

    def text(value: object) -> str:
        return "none" if value is None else repr(value) if isinstance(value, float) else str(value)

    options = {"min_confidence": "--min-confidence", "none_threshold": "--none-threshold"}
    for key, option in options.items():
        if then.get(key) != now[key]:
            found.append(f"{option} {text(then.get(key))} then, {text(now[key])} now")
    if then.get("tta") != now["tta"]:  # the views, by the flag that asks for them
        flags = {"none": "--one-view", "flip": "--tta", "multi": "--tta-multi"}
        old_views, new_views = (flags.get(str(v), str(v)) for v in (then.get("tta"), now["tta"]))
        found.append(f"views {old_views} then, {new_views} now")
    if bool(then.get("multi")) != now["multi"]:
        found.append(
            f"{'with' if then.get('multi') else 'without'} --multi then, {'with' if now['multi'] else 'without'} now"
        )
    elif now["multi"]:
        old_map = then.get("map") or {}
        for key, value in now["map"].items():
            if old_map.get(key) != value:
                option = "--presence" if key == "presence" else f"element map {key}"
                found.append(f"{option} {text(old_map.get(key))} then, {text(value)} now")
    return found


def recorded_settings(root: Path) -> dict | None:
    """The settings OUT (`root`) was sorted with, None when it has no record; ValueError, one line, for a record that
    is not sort's."""
    path = root / SETTINGS_NAME
    if not path.exists():
        return None
    try:
        then = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ValueError(f"{shown(path)}: not sort's settings record ({error}); sort into a new --out") from None
    if not isinstance(then, dict) or then.get("format") != SETTINGS_FORMAT or not isinstance(then.get("model"), dict):
        raise ValueError(
            f"{shown(path)}: not sort's settings record (edited, or a newer version's); sort into a new --out"
        )
    return then


def check_settings(root: Path, settings: dict, then: dict | None, sorted_before: bool, placed: bool) -> bool:
    """Compare `settings` with those OUT was sorted with (`then`, from `recorded_settings`; ValueError, one line,
    when they differ), or record them. OUT in which no photo was `placed` yet (a first run, or one that could read
    none) takes them whatever it recorded: no photo keeps the old ones. False: OUT has a manifest's rows
    (`sorted_before`) but no record, sorted by a version that kept none, so they could not be checked, and none is
    written (it would claim settings the photos sorted then were not sorted with)."""
    if then is None and sorted_before:
        return False
    if then is None or not placed:
        atomic_write_json(root / SETTINGS_NAME, settings)
        return True
    differences = _differences(then, settings)
    if differences:
        raise ValueError(
            f"{shown(root)} was sorted with other settings ({'; '.join(differences)}): the photos sorted then would "
            "keep them; sort into a new --out, or run again with the settings it was sorted with"
        )
    return True
