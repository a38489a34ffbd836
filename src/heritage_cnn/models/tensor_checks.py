"""What a checkpoint's tensors must be for a network to be built from them: checked when a pair is loaded
(`heritage_cnn.models.checkpoint.load_checkpoint`) and, where a rule holds for any tensors, before one is written.

A float parameter arrives as finite floats, a batch norm's running variance is never below 0 (its square root would
make every output NaN), and the file names exactly the network's tensors, each of its shape; a refusal is one line
naming the file and the tensors.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from heritage_cnn.base.io import CheckpointError

SHOWN_NAMES = 3  # tensor names a mismatch lists of each kind, then a count


def negative_variance(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first batch norm's running variance below 0, if any."""
    for name, tensor in tensors.items():
        if name.endswith("running_var") and bool((tensor < 0).any()):
            return name
    return None


def check_tensors(tensors: dict[str, torch.Tensor], model: nn.Module, where: Path) -> None:
    """Float parameters must come as finite floats, a batch norm's variances not below 0: an integer or NaN tensor
    would predict garbage."""
    expected = model.state_dict()
    for name, wanted in expected.items():
        tensor = tensors.get(name)
        if tensor is None or not wanted.is_floating_point():
            continue
        if not tensor.is_floating_point():
            raise CheckpointError(f"{where}: tensor {name} is {tensor.dtype}, not floating point")
        if not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{where}: tensor {name} holds NaN or infinite values")
    bad = negative_variance({k: v for k, v in tensors.items() if k in expected})
    if bad is not None:
        raise CheckpointError(f"{where}: tensor {bad} holds a negative variance (the outputs would be NaN)")


def state_mismatch(tensors: dict[str, torch.Tensor], model: nn.Module) -> str | None:
    """How `tensors` differ from the model's by name or shape (a few names of each kind), or None."""

    def names(keys: list[str]) -> str:
        more = f" and {len(keys) - SHOWN_NAMES} more" if len(keys) > SHOWN_NAMES else ""
        return ", ".join(keys[:SHOWN_NAMES]) + more

    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = sorted(set(tensors) - set(expected))
    problems = [f"missing tensors {names(missing)}"] if missing else []
    problems += [f"unexpected tensors {names(unexpected)}"] if unexpected else []
    for name, wanted in expected.items():
        if name in tensors and tensors[name].shape != wanted.shape:
            problems.append(f"tensor {name} is {tuple(tensors[name].shape)}, expected {tuple(wanted.shape)}")
            break
    return "; ".join(problems) or None


__all__ = ["check_tensors", "negative_variance", "state_mismatch"]
