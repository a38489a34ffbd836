"""What updates a run's weights: the optimizer (`make_optimizer`), its per-step learning rate (`Schedule`) and
the weight average (`make_ema`).

Muon for convolution filters (`--optimizer muon`): torch.optim.Muon orthogonalises each update of a matrix;
here each filter bank (out, in, k, k) is that matrix as (out, in x k x k), updated through a view of its own
storage so the weights keep their shape and channels_last layout. The stem, the batch-norm parameters and the
fully connected head stay with AdamW, as Muon's authors advise for input, output and scalar parameters.

The learning rate is torch's "match_rms_adamw" one: Muon's update is scaled to AdamW's typical size, so the
recipe's rate, schedule and weight decay carry over unchanged (benchmarks/recipes.md, "Muon").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from heritage_cnn.training.config import TrainConfig


def _is_channels_last(param: torch.Tensor) -> bool:
    return param.ndim == 4 and not param.is_contiguous() and param.is_contiguous(memory_format=torch.channels_last)


def _as_matrix(tensor: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A filter bank (out, in, k, k) as an (out, in*k*k) matrix, in the order its memory holds it (the column
    order does not matter: orthogonalising commutes with permuting columns)."""
    if tensor.ndim == 4 and channels_last:
        tensor = tensor.permute(0, 2, 3, 1)
    return tensor.reshape(tensor.shape[0], -1)


class FilterMuon(torch.optim.Muon):
    """torch.optim.Muon that also takes convolution filters (any parameter of 2 or more dimensions)."""

    def __init__(self, params: list[torch.Tensor], **options: Any) -> None:
        probe = torch.optim.Muon([torch.zeros(1, 1, requires_grad=True)], **options)  # torch's checks and defaults
        torch.optim.Optimizer.__init__(self, params, probe.defaults)  # without Muon's 2-D-only check
        for group in self.param_groups:
            for param in group["params"]:
                if param.ndim < 2:
                    raise ValueError(
                        f"Muon updates matrices and filters, not a parameter of shape {tuple(param.shape)}"
                    )

    def _init_group(
        self,
        group: dict[str, Any],
        params_with_grad: list[torch.Tensor],
        grads: list[torch.Tensor],
        muon_momentum_bufs: list[torch.Tensor],
    ) -> bool:
        for param in group["params"]:
            if param.grad is None:
                continue
            channels_last = _is_channels_last(param)
            matrix = _as_matrix(param.detach(), channels_last)
            if matrix.data_ptr() != param.data_ptr() or not matrix.is_contiguous():
                raise RuntimeError(f"a parameter of shape {tuple(param.shape)} cannot be viewed as a matrix in place")
            grad = _as_matrix(param.grad, channels_last)
            params_with_grad.append(matrix)
            grads.append(grad)
            state = self.state[param]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(grad)
            muon_momentum_bufs.append(state["momentum_buffer"])
        return False  # no complex parameters


class MuonWithAdamW:
    """Muon on the hidden filters and AdamW on the rest, behind one optimizer's interface: `param_groups` (the
    training loop sets every group's rate), `step`, `zero_grad`, and a `state_dict` in torch's flat format, so
    that resume files and loss scaling need nothing new."""

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer) -> None:
        self.parts = (muon, adamw)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for part in self.parts for group in part.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def step(self, closure: None = None) -> None:
        if closure is not None:
            raise ValueError("MuonWithAdamW.step takes no closure")
        for part in self.parts:
            part.step()

    def state_dict(self) -> dict[str, Any]:
        state: dict[int, Any] = {}
        groups: list[dict[str, Any]] = []
        offset = 0
        for part in self.parts:
            own = part.state_dict()
            state.update({index + offset: value for index, value in own["state"].items()})
            groups += [{**group, "params": [i + offset for i in group["params"]]} for group in own["param_groups"]]
            offset += sum(len(group["params"]) for group in own["param_groups"])
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        if len(saved["param_groups"]) != len(self.param_groups):
            raise ValueError(
                f"the saved optimizer has {len(saved['param_groups'])} parameter groups, this one "
                f"{len(self.param_groups)}: not the same recipe"
            )
        groups = iter(saved["param_groups"])
        for part in self.parts:
            own = [next(groups) for _ in part.param_groups]
            indices = {i for group in own for i in group["params"]}
            part.load_state_dict(
                {"state": {i: v for i, v in saved["state"].items() if int(i) in indices}, "param_groups": own}
            )


def muon_with_adamw(model: torch.nn.Module, lr: float, weight_decay: float) -> MuonWithAdamW:
    """Muon for every convolution after the first, AdamW (weight decay on weights only) for everything else."""
    convolutions = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    hidden = [conv.weight for conv in convolutions[1:]]
    if not hidden:
        raise ValueError("--optimizer muon needs a network with more than one convolution")
    in_muon = {id(param) for param in hidden}
    decay = [p for p in model.parameters() if p.ndim > 1 and id(p) not in in_muon]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    muon = FilterMuon(hidden, lr=lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw")
    adamw = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    return MuonWithAdamW(muon, adamw)


Optimizer = torch.optim.Optimizer | MuonWithAdamW  # what the training loop steps


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> Optimizer:
    """AdamW, Nesterov SGD, or Muon on the hidden filters with AdamW on the rest (`muon_with_adamw`); weight decay
    on conv/linear weights only (not on batch norm or biases)."""
    decay, no_decay = [], []
    for param in model.parameters():
        (decay if param.ndim > 1 else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True)
    if config.optimizer == "muon":
        return muon_with_adamw(model, config.lr, config.weight_decay)
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.999))


def learning_rate(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Linear warm-up to `peak`, then cosine decay to zero."""
    if warmup_steps and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@dataclass(frozen=True)
class Schedule:
    """The learning rate of every step of a run (`learning_rate`), counted from the run's first step."""

    peak: float
    total_steps: int
    warmup_steps: int

    @classmethod
    def for_run(cls, config: TrainConfig, steps_per_epoch: int) -> Schedule:
        """The config's peak rate and warm-up over all its epochs."""
        return cls(config.lr, steps_per_epoch * config.epochs, round(config.warmup_epochs * steps_per_epoch))

    def __call__(self, step: int) -> float:
        return learning_rate(step, self.total_steps, self.warmup_steps, self.peak)


def make_ema(model: torch.nn.Module, decay: float) -> torch.nn.Module | None:
    """An exponential moving average of the weights and batch-norm statistics (torch's AveragedModel); None for
    a decay of 0."""
    if not decay:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


__all__ = [
    "FilterMuon",
    "MuonWithAdamW",
    "Optimizer",
    "Schedule",
    "learning_rate",
    "make_ema",
    "make_optimizer",
    "muon_with_adamw",
]
