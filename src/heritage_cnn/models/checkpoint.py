"""Checkpoints: weights as safetensors, everything else (classes, normalisation, config) as JSON.

A checkpoint is a pair `NAME.safetensors` + `NAME.json`. Loading never executes code from a file,
and checks the JSON as a whole before building anything: an edited or hostile file is refused with
one line naming the file and the field. Both halves carry the same `generation` (a hash of the
weights), so a pair whose halves come from different saves is refused rather than silently mixed.
The package ships two models, named on every command with `--model NAME`: `default` (also what no
--model means), an ensemble of networks (`heritage_cnn.models.ensemble`: one pair holding every member), and
`fast`, a single network distilled from ensemble members (`heritage_cnn/weights/{default,fast}.*`).
`load_checkpoint` takes either kind; tools that look inside a network take `checkpoint.member(i)`. A checkpoint
may carry its "none of these" operating point (`open_set` in the JSON, its statistics as tensors beside the
weights: `heritage_cnn.models.openset_point`); one without it loads as before and cannot reject a photo.
"""

from __future__ import annotations

import hashlib
import math
import os
import unicodedata
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from heritage_cnn import __version__
from heritage_cnn.base.io import CheckpointError, atomic_write_json, read_json, read_safetensors, save_tensors
from heritage_cnn.data.folders import display_name
from heritage_cnn.models.network import MAX_PARAMETERS, Ensemble, HeritageNet, ModelConfig
from heritage_cnn.models.openset_point import (
    OPEN_SET,
    OperatingPoint,
    check_record,
    fitted_for,
    load_point,
    split_tensors,
)
from heritage_cnn.models.views import TTA_MODES

FORMAT = "heritage-cnn-checkpoint/1"
MAX_CLASSES = 10_000
ENSEMBLE_FORMAT = "heritage-cnn-ensemble/1"  # several networks in one pair: heritage_cnn.models.ensemble describes it
MAX_MEMBERS = 16
SHARED = ("classes", "normalisation", "image_size")  # one value for an ensemble, never per member
NOT_PER_MEMBER = {"format", "package_version", "display_names", "generation", "trained_on", OPEN_SET, *SHARED}
SHIPPED = ("default", "fast")  # names of the packaged models: the ensemble, and a single distilled network
# fields read into the Checkpoint itself, not into its info (`open_set`: the "none of these" operating point)
_RESERVED = {
    "format",
    "package_version",
    "classes",
    "display_names",
    "normalisation",
    "image_size",
    "model_config",
    OPEN_SET,
}
_MODEL_FIELDS: dict[str, type | tuple[type, ...]] = {
    "num_classes": int,
    "widths": list,
    "blocks": list,
    "stem_kernel": int,
    "residual": bool,
    "hidden": int,
    "dropout": (int, float),
    "input_scale": (int, float),
}


@dataclass
class Checkpoint:
    """A trained network (or an ensemble of them) and what is needed to use it: classes, normalisation, provenance."""

    model: nn.Module  # a HeritageNet, or an Ensemble whose output is the log of its members' mean softmax
    classes: list[str]
    mean: list[float]
    std: list[float]
    image_size: int = 64
    info: dict[str, Any] = field(default_factory=dict)  # training recipe, metrics, seed, version
    path: Path | None = None
    index: int | None = None  # which member of the ensemble file at `path` this is; None: a single-network file
    open_set: OperatingPoint | None = None  # "none of these" (heritage_cnn.models.openset_point); None: cannot reject

    @property
    def member_count(self) -> int:
        return len(self.model.members) if isinstance(self.model, Ensemble) else 1

    def member(self, index: int = 0) -> Checkpoint:
        """Network `index` as an ordinary single-network Checkpoint, for the tools that look inside a network.
        A single network is its own member 0."""
        count = self.member_count
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
            networks = "1 network: --member 0" if count == 1 else f"{count} networks: --member 0 to {count - 1}"
            raise ValueError(f"{self.path}: no member {index!r}; this model has {networks}")
        if not isinstance(self.model, Ensemble):
            return self
        info = dict(self.model.infos[index])
        return Checkpoint(
            self.model.members[index], self.classes, self.mean, self.std, self.image_size, info, self.path, index
        )

    @property
    def views(self) -> str:
        """The test-time views the model is meant to be used with (`augment.tta_views` mode), from an ensemble's
        `views` field: what `Classifier`, `heritage predict/sort/serve/evaluate` average when not told otherwise.
        A single network, and so a member taken out of an ensemble, uses "none"."""
        return str(self.info.get("views", "none")) if isinstance(self.model, Ensemble) else "none"

    @property
    def display_names(self) -> list[str]:
        return [display_name(c) for c in self.classes]

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 1] float images -> the network's input scale."""
        if images.dtype == torch.uint8:
            images = images.float().div_(255.0)
        mean = torch.tensor(self.mean, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
        return (images - mean) / std

    def metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "package_version": __version__,
            "classes": self.classes,
            "display_names": self.display_names,
            "normalisation": {"mean": self.mean, "std": self.std},
            "image_size": self.image_size,
            "model_config": self.model.config.to_dict(),
            **self.info,
            **({OPEN_SET: self.open_set.to_dict()} if self.open_set is not None else {}),
        }


def checkpoint_files(path: str | os.PathLike) -> tuple[Path, Path]:
    """The two files of a checkpoint named by its stem, either file, or a run folder (its `last`): the
    (weights .safetensors, metadata .json) pair, whether or not they exist."""
    path = Path(path)
    if path.is_dir():  # a run folder stands for its last checkpoint
        path = path / "last"
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_suffix(".safetensors"), path.with_suffix(".json")


def weights_generation(state: dict[str, torch.Tensor]) -> str:
    """A short hash of names, types, shapes and bytes of the tensors: the id both halves of a pair carry."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def first_non_finite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding a NaN or an infinity, if any."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def save_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint) -> Path:
    """Write `path.safetensors` and `path.json` atomically, tagged with one generation; returns the weights
    path. Non-finite weights are refused: a diverged network is never written over a good one. The "none of these"
    record is written only when it was fitted for these weights (`openset_point.fitted_for`)."""
    if isinstance(checkpoint.model, Ensemble):
        raise CheckpointError(
            f"{path}: not written: an ensemble is saved with heritage_cnn.models.ensemble.save_ensemble"
        )
    weights_path, meta_path = checkpoint_files(path)
    state = dict(checkpoint.model.state_dict())
    checkpoint = replace(checkpoint, open_set=fitted_for(checkpoint.open_set, state))  # none fitted for other weights
    if checkpoint.open_set is not None:
        state |= checkpoint.open_set.tensors(ensemble=False)
    bad = first_non_finite(state)
    if bad is not None:
        raise CheckpointError(f"{weights_path}: not written: tensor {bad} holds NaN or infinite values")
    generation = weights_generation(state)
    save_tensors(weights_path, state, metadata={"format": FORMAT, "generation": generation})
    atomic_write_json(meta_path, {**checkpoint.metadata(), "generation": generation})
    return weights_path


def class_name_problem(name: object) -> str | None:
    """Why `name` cannot be a class name (tools use class names as folder names), or None."""
    if not isinstance(name, str) or not name:
        return "is not a non-empty string"
    if name in (".", "..") or name.startswith("."):
        return "starts with '.'"
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in name):
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


def validate_metadata(meta: object, where: Path) -> ModelConfig:
    """Check a checkpoint's JSON as a whole (types, ranges, safe class names); return its model config."""

    def fail(field: str, problem: str) -> CheckpointError:
        return CheckpointError(f"{where}: {field}: {problem}")

    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{where}: not a heritage-cnn checkpoint (format {FORMAT!r} expected)")
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
    size = meta.get("image_size", 64)
    if not isinstance(size, int) or isinstance(size, bool) or not 8 <= size <= 512:
        raise fail("image_size", f"must be a whole number from 8 to 512, got {size!r}")
    raw = meta.get("model_config")
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
        config = ModelConfig.from_dict({**raw, "num_classes": len(classes)})
    except (TypeError, ValueError) as error:
        raise fail("model_config", str(error)) from None
    if size < 2 ** len(config.widths):
        raise fail("image_size", f"{size} px is too small for {len(config.widths)} stages of 2x2 pooling")
    check_record(meta.get(OPEN_SET), where)
    return config


def _check_tensors(tensors: dict[str, torch.Tensor], model: nn.Module, where: Path) -> None:
    """Float parameters must come as finite floats: an integer or NaN tensor would predict garbage."""
    for name, expected in model.state_dict().items():
        tensor = tensors.get(name)
        if tensor is None or not expected.is_floating_point():
            continue
        if not tensor.is_floating_point():
            raise CheckpointError(f"{where}: tensor {name} is {tensor.dtype}, not floating point")
        if not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{where}: tensor {name} holds NaN or infinite values")


def validate_ensemble_metadata(meta: object, where: Path) -> list[ModelConfig]:
    """Check an ensemble's JSON as a whole; return each member's model config."""
    if not isinstance(meta, dict) or meta.get("format") != ENSEMBLE_FORMAT:
        raise CheckpointError(f"{where}: not a heritage-cnn ensemble (format {ENSEMBLE_FORMAT!r} expected)")
    members = meta.get("members")
    if not isinstance(members, list) or not 1 <= len(members) <= MAX_MEMBERS:
        raise CheckpointError(f"{where}: members: must be a list of 1 to {MAX_MEMBERS} networks")
    if meta.get("views", "none") not in TTA_MODES:
        raise CheckpointError(f"{where}: views: must be one of {', '.join(TTA_MODES)}, got {meta['views']!r}")
    shared = {key: meta[key] for key in SHARED if key in meta}
    validate_metadata({"format": FORMAT, **shared, "model_config": {}}, where)  # the shared fields, named as such
    check_record(meta.get(OPEN_SET), where)
    configs = []
    for i, member in enumerate(members):
        if not isinstance(member, dict):
            raise CheckpointError(f"{where}: members[{i}]: not an object")
        for key in ("name", "command"):
            if not isinstance(member.get(key), str) or len(member[key]) > 2000:
                raise CheckpointError(f"{where}: members[{i}].{key}: must be a string")
        for key in SHARED:
            if key in member and member[key] != shared.get(key):
                raise CheckpointError(f"{where}: members[{i}].{key}: differs from the ensemble's {key}")
        single = {"format": FORMAT, **shared, "model_config": member.get("model_config")}
        try:
            configs.append(validate_metadata(single, where))
        except CheckpointError as error:  # name the member: "FILE: members[2].model_config: ..."
            raise CheckpointError(str(error).replace(f"{where}: ", f"{where}: members[{i}].", 1)) from None
    total = sum(config.weight_count() for config in configs)
    if total > MAX_PARAMETERS:  # the members together, not only each, stay within what one network may allocate
        raise CheckpointError(
            f"{where}: members: {total:,} parameters in all, more than the {MAX_PARAMETERS:,} allowed"
        )
    return configs


def load_ensemble(
    weights_path: Path, meta_path: Path, meta: dict[str, Any], device: str | torch.device = "cpu"
) -> Checkpoint:
    """An ensemble pair as one Checkpoint; `.model` is an Ensemble (log of the members' mean softmax)."""
    configs = validate_ensemble_metadata(meta, meta_path)
    infos = [{k: v for k, v in m.items() if k != "model_config"} for m in meta["members"]]
    model = Ensemble([HeritageNet(config) for config in configs], infos)
    state, tensor_meta = read_safetensors(weights_path)
    state, statistics = split_tensors(state)
    _check_tensors(state, model, weights_path)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[0] if str(error) else "shape or key mismatch"
        raise CheckpointError(
            f"{weights_path}: weights do not match the members' configs in {meta_path.name} ({first})"
        ) from None
    check_generation(weights_path, meta_path, tensor_meta, meta)
    point = load_point(meta.get(OPEN_SET), statistics, model.members, len(meta["classes"]), True, weights_path)
    model.to(device).eval()
    info = {k: v for k, v in meta.items() if k not in ("members", "generation", *NOT_PER_MEMBER)}
    if meta.get("trained_on") is not None:
        info["trained_on"] = meta["trained_on"]
    for member_info in model.infos:  # each member shares the split, so each knows what trained it
        if "trained_on" in info:
            member_info["trained_on"] = info["trained_on"]
    info["members"] = len(configs)
    norm = meta["normalisation"]
    return Checkpoint(
        model,
        list(meta["classes"]),
        [float(v) for v in norm["mean"]],
        [float(v) for v in norm["std"]],
        int(meta.get("image_size", 64)),
        info,
        weights_path,
        open_set=point,
    )


def check_generation(weights_path: Path, meta_path: Path, tensor_meta: dict[str, str], meta: dict) -> None:
    """Both halves of a pair must carry the same generation (pairs older than generations carry neither)."""
    ours, theirs = tensor_meta.get("generation"), meta.get("generation")
    if (ours or theirs) and ours != theirs:
        raise CheckpointError(
            f"{weights_path}: its weights (generation {ours}) and {meta_path.name} (generation {theirs}) "
            "come from different saves"
        )


def _missing_checkpoint(given: Path, weights_path: Path, meta_path: Path) -> str:
    """What to tell the user when `given` leads to no weights: a run folder that has not finished an epoch, a
    metadata file without its weights, some other file, or nothing at all (then the forms a model can take)."""
    forms = f"a model is a .safetensors file, a run folder, or one of: {', '.join(SHIPPED)}"
    if given.is_dir():
        return (
            f"{given}: a folder without {weights_path.name} (not a run folder, or a run stopped before its first epoch)"
        )
    if meta_path.exists():
        return f"{weights_path}: missing (its metadata is there; a checkpoint is the pair .safetensors + .json)"
    if given.exists():
        return f"{given}: not a checkpoint; {forms}"
    return f"{given}: no such checkpoint; {forms}"


def load_checkpoint(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint in eval mode: a pair, a run folder (its last pair), an ensemble pair, or a shipped
    model's name (`default`, the ensemble, which is also what None means; `fast`, the single distilled network)."""
    if path is None or str(path) in SHIPPED:
        path = shipped_checkpoint_path(str(path) if path is not None else "default")
    weights_path, meta_path = checkpoint_files(path)
    if not weights_path.exists():
        raise CheckpointError(_missing_checkpoint(Path(path), weights_path, meta_path))
    if not meta_path.exists():
        raise CheckpointError(f"{weights_path}: its metadata file {meta_path.name} is missing")
    meta = read_json(meta_path)
    if isinstance(meta, dict) and meta.get("format") == ENSEMBLE_FORMAT:
        return load_ensemble(weights_path, meta_path, meta, device)
    config = validate_metadata(meta, meta_path)
    model = HeritageNet(config)
    state, tensor_meta = read_safetensors(weights_path)
    state, statistics = split_tensors(state)
    _check_tensors(state, model, weights_path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[0] if str(error) else "shape or key mismatch"
        raise CheckpointError(
            f"{weights_path}: weights do not match the model config in {meta_path.name} ({first})"
        ) from None
    check_generation(weights_path, meta_path, tensor_meta, meta)
    point = load_point(meta.get(OPEN_SET), statistics, [model], len(meta["classes"]), False, weights_path)
    model.to(device).eval()
    info = {k: v for k, v in meta.items() if k not in _RESERVED and k != "generation"}
    return Checkpoint(
        model,
        list(meta["classes"]),
        [float(v) for v in meta["normalisation"]["mean"]],
        [float(v) for v in meta["normalisation"]["std"]],
        int(meta.get("image_size", 64)),
        info,
        weights_path,
        open_set=point,
    )


def shipped_checkpoint_path(name: str = "default") -> Path:
    """A model shipped inside the package: `default` (the ensemble) or `fast` (one network)."""
    if name not in SHIPPED:
        raise CheckpointError(f"{name}: no such shipped model (choose {' or '.join(SHIPPED)})")
    return Path(str(resources.files("heritage_cnn") / "weights" / f"{name}.safetensors"))


def default_checkpoint_path() -> Path:
    """The model trained by this project and shipped inside the package: what no --model means."""
    return shipped_checkpoint_path("default")


def copy_model(model: nn.Module) -> nn.Module:
    """An independent copy of a network or an ensemble (same configs and weights)."""
    if isinstance(model, Ensemble):
        return Ensemble([copy_model(member) for member in model.members], model.infos)
    assert isinstance(model, HeritageNet)
    clone = HeritageNet(model.config)
    clone.load_state_dict(model.state_dict())
    return clone
