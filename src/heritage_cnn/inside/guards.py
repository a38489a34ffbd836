"""What every tool that looks inside a network shares: it works on one network, and leaves the caller's model as
it found it.

- `one_network(checkpoint or model)`: the refusal of an ensemble, in one line that says how to pick a member, at
  the top of each public entry point that reads a network's layers (an ensemble's are its members', side by side);
- `eval_mode(*models)`: eval mode for the duration of a `with` block, each module's own mode given back after,
  also when the block raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from heritage_cnn.models.checkpoint import Checkpoint
from heritage_cnn.models.ensemble import Ensemble


def one_network(network: Checkpoint | nn.Module) -> None:
    """Refuse an ensemble (a Checkpoint holding one, or the module itself) where a single network is needed."""
    model = network.model if isinstance(network, Checkpoint) else network
    if isinstance(model, Ensemble):
        count = len(model.members)
        networks = "1 network" if count == 1 else f"{count} networks"
        raise ValueError(
            f"an ensemble of {networks}: pass one of them, checkpoint.member(i) with i from 0 to {count - 1} "
            f"(the command line's --member 0 to {count - 1})"
        )


@contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Every module of `models` in eval mode inside the block; after it, each module back in its own mode."""
    modes = [(module, module.training) for model in models for module in model.modules()]
    try:
        for model in models:
            model.eval()
        yield
    finally:
        for module, training in modes:
            module.training = training


__all__ = ["eval_mode", "one_network"]
