"""Muon on convolution filters (heritage_cnn.training.optim): it must be torch's Muon on the filters as matrices, leave the
stem, batch norm and head to AdamW, and keep every parameter's layout. Resuming is tested in test_loop.py."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from conftest import TINY
from heritage_cnn.models.network import build_model
from heritage_cnn.training.config import TrainConfig
from heritage_cnn.training.optim import FilterMuon, MuonWithAdamW, learning_rate, make_optimizer


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_filter_muon_is_torch_muon_on_the_flattened_filters(layout: torch.memory_format) -> None:
    torch.manual_seed(0)
    weights, grads = torch.randn(8, 4, 3, 3), [torch.randn(8, 4, 3, 3) for _ in range(3)]
    filters = torch.nn.Parameter(weights.clone().contiguous(memory_format=layout))
    matrix = torch.nn.Parameter(weights.clone().reshape(8, -1))
    options = {"lr": 0.01, "weight_decay": 0.05, "adjust_lr_fn": "match_rms_adamw"}
    ours, reference = FilterMuon([filters], **options), torch.optim.Muon([matrix], **options)
    for grad in grads:
        filters.grad = grad.clone().contiguous(memory_format=layout)
        matrix.grad = grad.reshape(8, -1).clone()
        ours.step()
        reference.step()
    assert not torch.equal(filters.detach(), weights)  # it moved
    torch.testing.assert_close(filters.detach().reshape(8, -1), matrix.detach(), atol=1e-6, rtol=0)
    assert filters.is_contiguous(memory_format=layout)


def test_filter_muon_refuses_vectors_and_torch_muon_s_own_bad_settings() -> None:
    with pytest.raises(ValueError, match="not a parameter of shape"):
        FilterMuon([torch.nn.Parameter(torch.zeros(4))])
    with pytest.raises(ValueError):
        FilterMuon([torch.nn.Parameter(torch.zeros(4, 4))], lr=-1.0)


def test_muon_recipe_gives_hidden_filters_to_muon_and_the_rest_to_adamw() -> None:
    model = build_model(widths=(8, 16), blocks=(1, 1), hidden=16).to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, TrainConfig(data="d", out="o", optimizer="muon", weight_decay=0.05))
    assert isinstance(optimizer, MuonWithAdamW)
    convolutions = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    muon_group, decayed, undecayed = optimizer.param_groups
    assert [id(p) for p in muon_group["params"]] == [id(c.weight) for c in convolutions[1:]]
    assert {id(p) for p in decayed["params"]} == {id(convolutions[0].weight)} | {
        id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear)
    }
    assert all(p.ndim == 1 for p in undecayed["params"]) and undecayed["weight_decay"] == 0.0
    assert muon_group["weight_decay"] == decayed["weight_decay"] == 0.05
    total = sum(len(group["params"]) for group in optimizer.param_groups)
    assert total == len(list(model.parameters()))
    torch.manual_seed(0)
    model(torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)).sum().backward()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer.step()
    moved = [not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True) if b.grad.any()]
    assert moved and all(moved)  # (a residual branch starts switched off, so its parameters get no gradient yet)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in muon_group["params"] if p.ndim == 4)
    optimizer.zero_grad(set_to_none=True)
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="parameter groups"):
        optimizer.load_state_dict({"state": {}, "param_groups": optimizer.param_groups[:2]})


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_optimizer_decays_weights_only(name: str, tmp_path: Path) -> None:
    """Both optimizers leave batch norm and biases undecayed; SGD is Nesterov's, as the fast recipes use it."""
    from heritage_cnn.models.network import build_model
    from heritage_cnn.training.optim import make_optimizer

    model = build_model(**TINY)
    config = TrainConfig(data="x", out=str(tmp_path), optimizer=name, lr=0.1, weight_decay=5e-4)
    optimizer = make_optimizer(model, config)
    assert type(optimizer).__name__ == {"adamw": "AdamW", "sgd": "SGD"}[name]
    decayed, undecayed = optimizer.param_groups
    assert decayed["weight_decay"] == 5e-4 and undecayed["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decayed["params"]) and all(p.ndim == 1 for p in undecayed["params"])
    assert len(decayed["params"]) + len(undecayed["params"]) == len(list(model.parameters()))
    if name == "sgd":
        assert decayed["nesterov"] and decayed["momentum"] == 0.9


def test_learning_rate_warms_up_then_decays_to_zero() -> None:
    rates = [learning_rate(s, 100, 10, 1.0) for s in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(rates[10:]))
    assert learning_rate(100, 100, 10, 1.0) == pytest.approx(0.0)
