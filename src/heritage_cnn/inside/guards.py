"""What every tool that looks inside a network shares: it works on one network. `one_network(checkpoint or model)`
refuses an ensemble, in one line that says how to pick a member, at the top of each public entry point that reads a
network's layers (an ensemble's are its members', side by side). The caller's model is left in its own mode by
`models.network.eval_mode`, which every tool that runs a model shares.
"""

from __future__ import annotations

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


__all__ = ["one_network"]
