"""Checkpoints: weights as safetensors, everything else (classes, normalisation, config) as JSON.

A checkpoint is a pair `NAME.safetensors` + `NAME.json`. Loading never executes code from a file.
The model that ships with the package lives in `heritage_cnn/weights/default.*`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from heritage_cnn import __version__
from heritage_cnn.data import display_name
from heritage_cnn.io import CheckpointError, atomic_write_json, load_tensors, read_json, save_tensors
from heritage_cnn.model import HeritageNet, ModelConfig

FORMAT = "heritage-cnn-checkpoint/1"


@dataclass
class Checkpoint:
    """A trained network and what is needed to use it: classes, normalisation, provenance."""

    model: HeritageNet
    classes: list[str]
    mean: list[float]
    std: list[float]
    image_size: int = 64
    info: dict[str, Any] = field(default_factory=dict)  # training recipe, metrics, seed, version
    path: Path | None = None

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
        }


def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_suffix(".safetensors"), path.with_suffix(".json")


def save_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint) -> Path:
    """Write `path.safetensors` and `path.json` atomically; returns the weights path."""
    weights_path, meta_path = _paths(path)
    state = {name: t for name, t in checkpoint.model.state_dict().items()}
    save_tensors(weights_path, state, metadata={"format": FORMAT})
    atomic_write_json(meta_path, checkpoint.metadata())
    return weights_path


def load_checkpoint(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint (default: the model shipped with the package) in eval mode."""
    if path is None:
        path = default_checkpoint_path()
    weights_path, meta_path = _paths(path)
    if not weights_path.exists():
        raise CheckpointError(f"{weights_path}: no such checkpoint")
    if not meta_path.exists():
        raise CheckpointError(f"{weights_path}: its metadata file {meta_path.name} is missing")
    meta = read_json(meta_path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path}: not a heritage-cnn checkpoint (format {FORMAT!r} expected)")
    try:
        config = ModelConfig.from_dict(meta["model_config"])
        config = ModelConfig.from_dict({**config.to_dict(), "num_classes": len(meta["classes"])})
        model = HeritageNet(config)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{meta_path}: invalid model config ({error})") from None
    state = load_tensors(weights_path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[0] if str(error) else "shape or key mismatch"
        raise CheckpointError(
            f"{weights_path}: weights do not match the model config in {meta_path.name} ({first})"
        ) from None
    model.to(device).eval()
    info = {
        k: v
        for k, v in meta.items()
        if k
        not in {"format", "package_version", "classes", "display_names", "normalisation", "image_size", "model_config"}
    }
    return Checkpoint(
        model,
        list(meta["classes"]),
        list(meta["normalisation"]["mean"]),
        list(meta["normalisation"]["std"]),
        int(meta.get("image_size", 64)),
        info,
        weights_path,
    )


def default_checkpoint_path() -> Path:
    """The network trained by this project and shipped inside the package."""
    return Path(str(resources.files("heritage_cnn") / "weights" / "default.safetensors"))


def copy_model(model: nn.Module) -> HeritageNet:
    """An independent copy of a network (same config and weights)."""
    assert isinstance(model, HeritageNet)
    clone = HeritageNet(model.config)
    clone.load_state_dict(model.state_dict())
    return clone
