"""The model-randomisation sanity check of Adebayo et al. (2018), "Sanity checks for saliency maps".

Re-initialise the network from the top down (logits, then the hidden layer, then the last stage's
blocks, ...) and ask whether an attribution map changes. A map that stays the same once the layers
that choose the class are random cannot be explaining the class: it shows the photo (its edges)
more than the network. The criterion is judged where the paper sees the difference, at the TOP:

    RULE: a method passes when the median, over photos, of the Spearman rank correlation between
    the trained model's map and the map of the model with head.fc2 AND head.fc1 re-initialised
    is below 0.5; a photo whose map (either one) is constant or nearly constant scores 1.0, a
    failure, never 0.

So a method passes exactly when more than half the photos give two informative maps that rank the
pixels differently. Gradient maps are compared as |map| summed over colour channels, as the paper
does (`explain.attribute(..., channels="sum")`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from heritage_cnn.inside.guards import one_network
from heritage_cnn.models.network import HeritageNet

TOP_LAYERS = ("head.fc2", "head.fc1")  # the criterion is read once both are re-initialised
THRESHOLD = 0.5  # median rank correlation must fall below this
FAILED = 1.0  # score of a photo whose map is (nearly) constant: counts as "did not decorrelate"
FLAT_STD = 0.01  # a map whose std is below this fraction of its mean magnitude is (nearly) constant
MIN_ACTIVE = 0.01  # ... as is one with fewer than this fraction of pixels above 1e-6 of its peak


def cascading_randomisation(model: HeritageNet, seed: int = 0) -> Iterator[tuple[str, HeritageNet]]:
    """Copies of the model with its layers re-initialised from the top down, one more block each time.

    Yields (name of the last block re-initialised, model): head.fc2, head.fc1, then every block of
    the last stage (last first), then the stage before, ... Conv, linear and batch-norm layers get
    their PyTorch default initialisation (batch norm: identity statistics).

    The new weights are drawn from a random stream of their own, seeded with `seed`: they depend on nothing
    else, and the caller's random draws, between steps too, are those it would make without this generator.
    """
    one_network(model)
    groups: list[str] = list(TOP_LAYERS)
    for stage_name in reversed(model.stage_names):
        stage = getattr(model, stage_name)
        groups += [f"{stage_name}.{name}" for name, _ in reversed(list(stage.named_children())) if name != "pool"]
    return _cascade(copy.deepcopy(model).eval(), groups, _own_stream(next(model.parameters()).device, seed))


def _cascade(
    randomised: HeritageNet, groups: list[str], stream: Callable[[], AbstractContextManager[None]]
) -> Iterator[tuple[str, HeritageNet]]:
    """`cascading_randomisation`'s steps: re-initialise each group in turn inside `stream`, yield a copy."""
    modules = dict(randomised.named_modules())
    for name in groups:
        with stream():
            for module in modules[name].modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
                if isinstance(module, nn.BatchNorm2d):
                    module.reset_running_stats()
        yield name, copy.deepcopy(randomised)


def _own_stream(device: torch.device, seed: int) -> Callable[[], AbstractContextManager[None]]:
    """A context manager factory: inside each `with`, the default generators that layer initialisation draws from
    (the CPU's, and the device's for a CUDA model) continue a stream seeded with `seed`, carried from one `with`
    to the next; after each, they are back where the caller left them."""
    generators = [torch.default_generator]
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        generators.append(torch.cuda.default_generators[index])
    carried = [torch.Generator(device=g.device).manual_seed(seed).get_state() for g in generators]

    @contextmanager
    def active() -> Iterator[None]:
        callers = [g.get_state() for g in generators]
        try:
            for g, state in zip(generators, carried, strict=True):
                g.set_state(state)
            yield
            carried[:] = [g.get_state() for g in generators]
        finally:
            for g, state in zip(generators, callers, strict=True):
                g.set_state(state)

    return active


def flatness(heat: torch.Tensor) -> str | None:
    """Why a map is (nearly) constant and so explains nothing, or None when it is informative."""
    values = heat.detach().double().flatten()
    if not torch.isfinite(values).all():
        return "not finite"
    magnitude = values.abs()
    peak = float(magnitude.max())
    if peak == 0.0:
        return "all zero"
    active = float((magnitude > 1e-6 * peak).double().mean())
    if active < MIN_ACTIVE:
        return f"{active:.1%} of pixels non-zero"
    if float(values.std()) < FLAT_STD * float(magnitude.mean()):
        return "nearly constant"
    return None


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two maps; NaN when either is constant (it ranks nothing)."""
    from scipy.stats import spearmanr

    x, y = a.detach().cpu().flatten().double().numpy(), b.detach().cpu().flatten().double().numpy()
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(spearmanr(x, y).statistic)


def photo_score(trained: torch.Tensor, randomised: torch.Tensor) -> tuple[float, str | None]:
    """(score, why flat): Spearman rho of two maps, or FAILED when either map is (nearly) constant."""
    why = flatness(trained)
    if why is not None:
        return FAILED, f"trained map {why}"
    why = flatness(randomised)
    if why is not None:
        return FAILED, f"randomised map {why}"
    return rank_correlation(trained, randomised), None


@dataclass(frozen=True)
class Summary:
    """The per-photo scores of one method at one cascade step, summarised with their spread."""

    median: float
    q25: float
    q75: float
    q10: float
    q90: float
    photos: int
    flat: int  # photos scored FAILED because a map was (nearly) constant

    @property
    def passes(self) -> bool:
        return self.median < THRESHOLD

    def cell(self) -> str:
        """`0.42 [0.31, 0.55]` (median [quartiles]), with the count of flat maps when there are any."""
        text = f"{self.median:.2f} [{self.q25:.2f}, {self.q75:.2f}]"
        return f"{text} ({self.flat} flat)" if self.flat else text


def summarise(scores: Sequence[float], flat: int = 0) -> Summary:
    """Median, quartiles and 10th-90th percentiles of per-photo scores (flat ones already at FAILED)."""
    if not scores:
        raise ValueError("no photos to summarise")
    values = np.asarray(scores, dtype=float)
    if np.isnan(values).any():
        raise ValueError("a score is NaN: score flat maps with photo_score, which counts them as failures")
    q10, q25, median, q75, q90 = np.quantile(values, [0.1, 0.25, 0.5, 0.75, 0.9]).tolist()
    return Summary(median, q25, q75, q10, q90, len(values), flat)


Explainer = Callable[[nn.Module, torch.Tensor, int], dict[str, torch.Tensor]]


def cascade_scores(
    explainer: Explainer,
    model: HeritageNet,
    photos: Sequence[torch.Tensor],
    targets: Sequence[int],
    seed: int = 0,
    on_photo: Callable[[int], None] | None = None,
) -> dict[str, dict[str, list[tuple[float, str | None]]]]:
    """Per-photo (score, why flat) for every method the explainer returns and every cascade step.

    `explainer(model, x, target)` maps one normalised photo (1, 3, H, W) to {method: (H, W) map}; it
    gets eval-mode copies with ReLUs not in place (Captum-ready). A method it leaves out for a photo
    is simply not scored for that photo. Result: scores[method][step] = [(score, why flat), ...].
    """
    from heritage_cnn.inside.explain import captum_ready

    one_network(model)
    if len(photos) != len(targets):
        raise ValueError(f"{len(photos)} photos but {len(targets)} targets")
    trained = captum_ready(model)
    steps = [(name, captum_ready(randomised)) for name, randomised in cascading_randomisation(model, seed)]
    scores: dict[str, dict[str, list[tuple[float, str | None]]]] = {}
    for index, (x, target) in enumerate(zip(photos, targets, strict=True)):
        reference = explainer(trained, x, target)
        for name, randomised in steps:
            for method, heat in explainer(randomised, x, target).items():
                per_step = scores.setdefault(method, {step: [] for step, _ in steps})
                per_step[name].append(photo_score(reference[method], heat))
        if on_photo is not None:
            on_photo(index)
    return scores


def summarise_scores(scores: dict[str, dict[str, list[tuple[float, str | None]]]]) -> dict[str, dict[str, Summary]]:
    """`cascade_scores`' output as a Summary per method and step."""
    return {
        method: {
            step: summarise([s for s, _ in pairs], sum(why is not None for _, why in pairs))
            for step, pairs in per_step.items()
        }
        for method, per_step in scores.items()
    }


def verdict(summaries: dict[str, Summary]) -> bool:
    """The RULE: pass/fail of one method from its summaries by cascade step (read after TOP_LAYERS)."""
    return summaries[TOP_LAYERS[-1]].passes


__all__ = [
    "FAILED",
    "THRESHOLD",
    "TOP_LAYERS",
    "Summary",
    "cascade_scores",
    "cascading_randomisation",
    "flatness",
    "photo_score",
    "rank_correlation",
    "summarise",
    "summarise_scores",
    "verdict",
]
