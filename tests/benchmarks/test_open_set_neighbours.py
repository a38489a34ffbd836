"""What the kNN and ReAct benchmark computes, on values worked out by hand: the k-th neighbour's distance, the clipped
head's energy, the class-stratified bank sample and the declared rule."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from heritage_cnn.models.openset import PENULTIMATE, POOLED
from open_set_neighbours import bank_sample, decide, kth_distances, react_energy, unit


def test_the_kth_neighbour_distance_is_read_on_the_unit_sphere() -> None:
    # a bank of the unit vectors e1, e2 and -e1; the query 2*e1 normalises to e1: distances 0, sqrt 2, 2
    bank = unit(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    distances = kth_distances(bank, torch.tensor([[2.0, 0.0]]), ks=(1, 2, 3))
    assert distances[1].item() == pytest.approx(0.0, abs=1e-6)
    assert distances[2].item() == pytest.approx(math.sqrt(2))
    assert distances[3].item() == pytest.approx(2.0)


class Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(2, 2)
        self.fc2 = nn.Linear(2, 2)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.eye(2))
            self.fc1.bias.zero_()
            self.fc2.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
            self.fc2.bias.zero_()


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = Head()


def test_react_clips_the_features_then_takes_the_energy() -> None:
    # features (5, -1): clipped at 2 -> (2, -1); at the penultimate layer the logits are (2, 0): log(e^2 + 1)
    features = torch.tensor([[5.0, -1.0]])
    assert react_energy(Net(), PENULTIMATE, features, 2.0).item() == pytest.approx(math.log(math.exp(2) + 1))
    # at the pooled layer fc1 (identity) and its ReLU come first: (2, 0), then the same logits
    assert react_energy(Net(), POOLED, features, 2.0).item() == pytest.approx(math.log(math.exp(2) + 1))
    # unclipped (a clip above every value) it is the plain energy: log(e^5 + 1)
    assert react_energy(Net(), PENULTIMATE, features, 10.0).item() == pytest.approx(math.log(math.exp(5) + 1))


def test_the_bank_sample_keeps_each_class_in_proportion_and_is_seeded() -> None:
    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    index = bank_sample(labels, 20)
    assert torch.bincount(labels[index]).tolist() == [12, 6, 2]
    assert torch.equal(index, bank_sample(labels, 20))
    assert len(set(index.tolist())) == len(index)


def family_row(merit: float, ratio: float = 1.0) -> dict:
    return {"merit": merit, "time_ratio": ratio}


def test_the_rule_needs_a_margin_over_energy_and_the_time_budget() -> None:
    assert decide({"energy": family_row(0.80), "knn[x]": family_row(0.805)})["pick"] == "energy"
    assert decide({"energy": family_row(0.80), "knn[x]": family_row(0.811)})["pick"] == "knn[x]"
    assert decide({"energy": family_row(0.80), "knn[x]": family_row(0.85, ratio=1.2)})["pick"] == "energy"
    assert decide({"energy": family_row(0.80), "knn[x]": family_row(0.70)})["pick"] == "energy"
