"""Checkpoints: weights as safetensors, everything else (classes, normalisation, config) as JSON.

A checkpoint is a pair `NAME.safetensors` + `NAME.json`. Loading never executes code from a file,
and checks the JSON as a whole before building anything: an edited or hostile file is refused with
one line naming the file and the field. Both halves carry the same `generation` (a hash of the
weights), so a pair whose halves come from different saves is refused rather than silently mixed, and the loader
computes it again from the tensors it read, so that weights edited or damaged after the save are refused too. What
the loader refuses is never written: a save checks its JSON and tensors as a load would, before either file.
The package ships two models, named on every command with `--model NAME`: `default` (also what no
--model means), an ensemble of networks (`heritage_cnn.models.ensemble`: one pair holding every member), and
`fast`, a single network distilled from ensemble members (`heritage_cnn/weights/{default,fast}.*`).
`load_checkpoint` takes either kind; tools that look inside a network take `checkpoint.member(i)`. A checkpoint
may carry its "none of these" operating point (`open_set` in the JSON, its statistics as tensors beside the
weights: `heritage_cnn.models.openset_point`); one without it files every photo into a class.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from heritage_cnn import __version__
from heritage_cnn.base.io import CheckpointError, atomic_write_json, read_json, read_safetensors, save_tensors
from heritage_cnn.base.names import json_text
from heritage_cnn.data.decode import IMAGE_SIZE
from heritage_cnn.data.folders import display_name
from heritage_cnn.models.ensemble import (
    ENSEMBLE_FORMAT,
    MAX_MEMBERS,
    SHARED,
    Ensemble,
    loaded_infos,
    member_prefix,
    networks,
    stored_state,
)
from heritage_cnn.models.metadata import FORMAT, validate_metadata
from heritage_cnn.models.network import HeritageNet, ModelConfig
from heritage_cnn.models.openset_point import OPEN_SET, OperatingPoint, fitted_for, load_point, split_tensors
from heritage_cnn.models.tensor_checks import check_tensors, negative_variance, state_mismatch
from heritage_cnn.models.views import TTA_MODES, TTA_VIEWS

SHIPPED = ("default", "fast")  # names of the packaged models: the ensemble, and a single distilled network
# fields read into the Checkpoint itself, not into its info (`open_set`: the "none of these" operating point);
# nor is the field that holds the networks' configs, `model_config` or an ensemble's `members`
_NOT_INFO = {"format", "package_version", "display_names", "generation", OPEN_SET, *SHARED}
# an ensemble records its members' shared split once, and what `heritage teach` taught them together
_NOT_PER_MEMBER = {*_NOT_INFO, "trained_on", "taught"}


@dataclass
class Checkpoint:
    """A trained network (or an ensemble of them) and what is needed to use it: classes, normalisation, provenance."""

    model: nn.Module  # a HeritageNet, or an Ensemble whose output is the log of its members' mean softmax
    classes: list[str]
    mean: list[float]
    std: list[float]
    image_size: int = IMAGE_SIZE
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
    (weights .safetensors, metadata .json) pair, whether or not they exist.

    The stem is the whole name less a final `.safetensors` or `.json`: `M1.v2` names `M1.v2.safetensors` and
    `M1.v2.json` (a dot is part of a name, never an extension to replace), so the function gives the same pair for
    a stem and for either of its files, however often it is applied. A name ending in a path separator (`out/`)
    names a folder, existing or not: its `last` pair."""
    text = os.fspath(path)
    folder = text.endswith(("/", os.sep)) or bool(os.altsep and text.endswith(os.altsep))
    path = Path(text)
    if folder or path.is_dir():  # a run folder stands for its last checkpoint
        path = path / "last"
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


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
    path. What `load_checkpoint` would refuse (metadata it rejects, classes that are not the network's outputs,
    non-finite weights) is refused before either file is touched: a diverged network or a bad field is never written
    over a good pair. The "none of these"
    record is written only when it was fitted for these weights (`openset_point.fitted_for`)."""
    if isinstance(checkpoint.model, Ensemble):
        raise CheckpointError(
            f"{path}: not written: an ensemble is saved with heritage_cnn.models.checkpoint.save_ensemble"
        )
    meta = replace(checkpoint, open_set=None).metadata()
    state = dict(checkpoint.model.state_dict())
    return _write_pair(path, state, meta, checkpoint.open_set, [checkpoint.model.config])


def _shared(checkpoint: Checkpoint) -> dict[str, Any]:
    return {
        "classes": checkpoint.classes,
        "normalisation": {"mean": checkpoint.mean, "std": checkpoint.std},
        "image_size": checkpoint.image_size,
    }


def _member_record(checkpoint: Checkpoint, name: str, command: str) -> dict[str, Any]:
    """What the ensemble's JSON keeps of one network: its name, command, config and checkpoint metadata."""
    info = {k: v for k, v in checkpoint.info.items() if k not in _NOT_PER_MEMBER and k not in ("name", "command")}
    return {"name": name, "command": command, "model_config": checkpoint.model.config.to_dict(), **info}


def save_ensemble(
    path: str | os.PathLike,
    members: Sequence[Checkpoint],
    names: Sequence[str] | None = None,
    commands: Sequence[str] | None = None,
    views: str = "none",
    open_set: OperatingPoint | None = None,
) -> Path:
    """Write an ensemble pair (`heritage_cnn.models.ensemble`) atomically, tagged with one generation; returns the
    weights path.

    `members`: single-network checkpoints with the same classes, normalisation and image size (trained on one
    split); `names` and `commands` default to what each member's info records (`name`, `command`); `views` is
    the model's own test-time views (`augment.TTA_MODES`); `open_set`: the ensemble's "none of these" operating
    point (`heritage_cnn.models.openset_point`), its statistics stored in float32 beside the members' weights; written
    only when it was fitted for these members' weights."""
    _check_members(checkpoint_files(path)[0], members, views)
    first = members[0]
    names = (
        list(names) if names is not None else [str(m.info.get("name") or f"member{i}") for i, m in enumerate(members)]
    )
    commands = list(commands) if commands is not None else [str(m.info.get("command", "")) for m in members]
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
        "members": [_member_record(m, n, c) for m, n, c in zip(members, names, commands, strict=True)],
    }
    for key in ("trained_on", "taught"):
        if first.info.get(key) is not None:
            meta[key] = first.info[key]
    configs = [m.model.config for m in members]
    return _write_pair(path, stored_state([m.model for m in members]), meta, open_set, configs)


def _check_members(weights_path: Path, members: Sequence[Checkpoint], views: str) -> None:
    """Refuse, before anything is written, members that cannot make one ensemble."""
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


def _write_pair(
    path: str | os.PathLike,
    state: dict[str, torch.Tensor],
    meta: dict[str, Any],
    open_set: OperatingPoint | None,
    configs: Sequence[ModelConfig],
) -> Path:
    """Write a checkpoint's tensors and JSON, both tagged with the generation of the tensors; the open-set record
    and its statistics go with them only when it was fitted for these weights. `configs`: each network's own."""
    weights_path, meta_path = checkpoint_files(path)
    open_set = fitted_for(open_set, state)  # none fitted for other weights
    if open_set is not None:
        state |= open_set.tensors(ensemble=meta["format"] == ENSEMBLE_FORMAT)
        meta |= {OPEN_SET: open_set.to_dict()}
    _check_writable(weights_path, meta_path, state, meta, configs)
    generation = weights_generation(state)
    save_tensors(weights_path, state, metadata={"format": meta["format"], "generation": generation})
    atomic_write_json(meta_path, {**meta, "generation": generation})
    return weights_path


def _check_writable(
    weights_path: Path,
    meta_path: Path,
    state: dict[str, torch.Tensor],
    meta: dict[str, Any],
    configs: Sequence[ModelConfig],
) -> None:
    """Refuse, before either file is touched, a pair that `load_checkpoint` would refuse: its JSON as the loader
    checks it (`validate_metadata`), networks other than the ones that JSON describes, tensors no network may hold."""
    try:  # the JSON as the loader will read it back: tuples as lists, say
        read_back = json.loads(json_text(meta, indent=None))
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{weights_path}: not written: its metadata is not JSON ({error})") from None
    try:
        described = validate_metadata(read_back, meta_path)
    except CheckpointError as error:
        raise CheckpointError(f"{weights_path}: not written: {str(error).removeprefix(f'{meta_path}: ')}") from None
    for ours, theirs in zip(configs, described, strict=True):
        if ours.num_classes != theirs.num_classes:
            raise CheckpointError(
                f"{weights_path}: not written: classes: {theirs.num_classes} names for a network with "
                f"{ours.num_classes} outputs"
            )
        if ours != theirs:
            raise CheckpointError(f"{weights_path}: not written: model_config: does not describe the network")
    bad = first_non_finite(state)
    if bad is not None:
        ensemble = meta["format"] == ENSEMBLE_FORMAT
        problem = "is NaN or infinite (in float16)" if ensemble else "holds NaN or infinite values"
        raise CheckpointError(f"{weights_path}: not written: tensor {bad} {problem}")
    bad = negative_variance(state)
    if bad is not None:
        raise CheckpointError(f"{weights_path}: not written: tensor {bad} holds a negative variance")


def check_generation(
    weights_path: Path, meta_path: Path, tensor_meta: dict[str, str], meta: dict, tensors: dict[str, torch.Tensor]
) -> None:
    """Both halves of a pair must carry the same generation (a pair written without generations carries neither),
    and it must be that of the file's tensors as stored: weights edited or damaged after the save are refused rather
    than loaded under a JSON, and a none-of-these record, that describe others."""
    ours, theirs = tensor_meta.get("generation"), meta.get("generation")
    if (ours or theirs) and ours != theirs:
        raise CheckpointError(
            f"{weights_path}: its weights (generation {ours}) and {meta_path.name} (generation {theirs}) "
            "come from different saves"
        )
    if ours and weights_generation(tensors) != ours:
        raise CheckpointError(
            f"{weights_path}: its tensors are not the weights of generation {ours} that both halves record "
            "(edited or damaged after the save)"
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
    layout = _layout(meta, validate_metadata(meta, meta_path))
    model = layout.model
    stored, tensor_meta = read_safetensors(weights_path)
    state, statistics = split_tensors(stored)
    check_tensors(state, model, weights_path)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}  # an ensemble's are float16
    mismatch = state_mismatch(state, model)
    try:
        if mismatch is None:
            model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        mismatch = str(error).splitlines()[0] if str(error) else "shape or key mismatch"
    if mismatch is not None:
        raise CheckpointError(f"{weights_path}: weights do not match {layout.matches} in {meta_path.name} ({mismatch})")
    check_generation(weights_path, meta_path, tensor_meta, meta, stored)
    nets, classes = networks(model), len(meta["classes"])
    point = load_point(meta.get(OPEN_SET), statistics, nets, layout.prefixes, classes, weights_path)
    model.to(device).eval()
    norm = meta["normalisation"]
    return Checkpoint(
        model,
        list(meta["classes"]),
        [float(v) for v in norm["mean"]],
        [float(v) for v in norm["std"]],
        int(meta.get("image_size", IMAGE_SIZE)),
        layout.info,
        weights_path,
        open_set=point,
    )


@dataclass(frozen=True)
class _Layout:
    """What differs between loading a single network and an ensemble, as data: the model its checked JSON describes
    (before its weights are loaded), each network's key prefix in the weights file, the info it loads with (what the
    JSON holds beyond the Checkpoint's own fields), and what its weights must match, named when they do not."""

    model: nn.Module
    prefixes: list[str]
    info: dict[str, Any]
    matches: str


def _layout(meta: dict[str, Any], configs: list[ModelConfig]) -> _Layout:
    # their initial weights are overwritten: loading draws nothing from the caller's random stream
    with torch.random.fork_rng(devices=[]):
        nets = [HeritageNet(config) for config in configs]
    if meta["format"] != ENSEMBLE_FORMAT:
        info = {k: v for k, v in meta.items() if k not in _NOT_INFO and k != "model_config"}
        return _Layout(nets[0], [""], info, "the model config")
    own = {k: v for k, v in meta.items() if k not in _NOT_INFO and k != "members"}
    info, member_infos = loaded_infos(own, meta["members"])
    prefixes = [member_prefix(i) for i in range(len(nets))]
    return _Layout(Ensemble(nets, member_infos), prefixes, info, "the members' configs")


def shipped_checkpoint_path(name: str = "default") -> Path:
    """A model shipped inside the package: `default` (the ensemble) or `fast` (one network)."""
    if name not in SHIPPED:
        raise CheckpointError(f"{name}: no such shipped model (choose {' or '.join(SHIPPED)})")
    return Path(str(resources.files("heritage_cnn") / "weights" / f"{name}.safetensors"))


def default_checkpoint_path() -> Path:
    """The model trained by this project and shipped inside the package: what no --model means."""
    return shipped_checkpoint_path("default")
