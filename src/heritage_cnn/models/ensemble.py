"""The ensemble: several networks answering as one model, and the one pair of files that holds them all.

Averaging the softmax of networks trained on the same split with different recipes makes fewer mistakes than
any of them (benchmarks/recipes.md); the shipped `default` model is such an ensemble, and `fast` one network
distilled from its members.

The pair, like a single network's (`heritage_cnn.models.checkpoint`), is `NAME.safetensors` + `NAME.json`:

- `NAME.safetensors`: every member's tensors under `members.<i>.` (`members.0.stage1.block1.conv.weight`, ...), the
  names of the `Ensemble` module's own state dict. Floats are stored as float16 (half the package size; accuracy
  unchanged) and loaded as float32. Its metadata holds `format` and `generation`.
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

An ensemble is written by `checkpoint.save_ensemble` and read by `checkpoint.load_checkpoint`, the write and load
paths of a single network, and its JSON is checked by `metadata.validate_metadata`, each member's config by the
code that checks a single network's. Loading refuses in one line that names the file: another format, too many
members, a member whose classes, normalisation or image size differ, halves from different saves, weights that do
not match a member's config. What is particular to an ensemble is here: the module, its format's name and limits,
where each member's tensors are, and the info an ensemble and its members load with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from heritage_cnn.models.network import HeritageNet

ENSEMBLE_FORMAT = "heritage-cnn-ensemble/1"
MAX_MEMBERS = 16
SHARED = ("classes", "normalisation", "image_size")  # one value for an ensemble, never per member


class Ensemble(nn.Module):
    """Several networks answering as one. The output is the log of the mean of the members' softmax, so every
    consumer of a network's logits (softmax, argmax, cross-entropy) sees the ensemble's probabilities unchanged."""

    def __init__(self, members: Sequence[nn.Module], infos: Sequence[dict[str, Any]] | None = None) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.infos = [dict(info) for info in infos] if infos is not None else [{} for _ in members]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_probs = torch.stack([member(x).float().log_softmax(1) for member in self.members])
        return torch.logsumexp(log_probs, 0) - math.log(len(self.members))


def networks(model: nn.Module) -> list[nn.Module]:
    """The networks of an Ensemble, or the network itself."""
    return list(model.members) if isinstance(model, Ensemble) else [model]


def member_prefix(index: int) -> str:
    """Where member `index`'s tensors are named in an Ensemble's state dict, and so in its file."""
    return f"members.{index}."


def stored_state(models: Sequence[nn.Module]) -> dict[str, torch.Tensor]:
    """The members' tensors as an ensemble file stores them: under their prefixes, floats as float16."""
    state = Ensemble(models).state_dict()
    return {k: v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu() for k, v in state.items()}


def loaded_infos(info: dict[str, Any], records: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], list[dict]]:
    """The info of a loaded ensemble and of each member, from the file's own fields (`info`) and its member records.
    The members share one split, so the file's `trained_on` is given to each member as its own."""
    trained_on = info.pop("trained_on", None)
    if trained_on is not None:
        info["trained_on"] = trained_on
    member_infos = [{k: v for k, v in record.items() if k != "model_config"} for record in records]
    for member_info in member_infos:
        if trained_on is not None:
            member_info["trained_on"] = trained_on
    info["members"] = len(member_infos)
    return info, member_infos


def copy_model(model: nn.Module) -> nn.Module:
    """An independent copy of a network or an ensemble (same configs and weights)."""
    if isinstance(model, Ensemble):
        return Ensemble([copy_model(member) for member in model.members], model.infos)
    assert isinstance(model, HeritageNet)
    with torch.random.fork_rng(devices=[]):  # its initial weights are overwritten: a copy draws nothing
        clone = HeritageNet(model.config)
    clone.load_state_dict(model.state_dict())
    return clone


__all__ = [
    "ENSEMBLE_FORMAT",
    "MAX_MEMBERS",
    "SHARED",
    "Ensemble",
    "copy_model",
    "loaded_infos",
    "member_prefix",
    "networks",
    "stored_state",
]
