"""The cost of each open-set score in benchmarks/open_set.py, timed beside a plain prediction, and the declared
rule that picks one."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from heritage_cnn.inference.classifier import Classifier
from heritage_cnn.models import openset

TIME_PHOTOS, TIME_REPEATS = 256, 5  # declared 1,024: cut when the shared cores made one pass of default 30 s


# ------------------------------------------------------------------------------------------------
# timing and the rule
# ------------------------------------------------------------------------------------------------


def scorers(records: dict, settings: dict, table: dict) -> dict[str, tuple[tuple[str, ...], Callable]]:
    """For each chosen variant, the layers its forward pass records and the computation of its score from it."""
    labels = records["fit_labels"]

    def single(variant: str) -> tuple[tuple[str, ...], Callable]:
        if variant == "max_logit":
            return (), lambda r: torch.stack([openset.max_logit(m) for m in r.member_logits]).mean(0)
        if variant.startswith("energy@T="):
            t = float(variant.split("=")[1])
            return (), lambda r: torch.stack([openset.energy(m, t) for m in r.member_logits]).mean(0)
        if variant == "disagreement":
            return (), lambda r: openset.disagreement(torch.softmax(r.member_logits, 2))
        layer, ridge = variant[len("mahalanobis[") :].split("]@ridge=")
        stats = [openset.mahalanobis_fit(f, labels, 10, float(ridge)) for f in records["fit"].features[layer]]
        return (layer,), lambda r: torch.stack(
            [openset.mahalanobis(f, s) for f, s in zip(r.features[layer], stats, strict=True)]
        ).mean(0)

    result = {}
    for name, setting in settings.items():
        if name == "max_softmax":
            continue
        if setting["parts"] == 1:
            result[name] = single(setting["variant"])
            continue
        parts = [single(v) for v in setting["of"]]
        reference = openset.zscore_reference([torch.from_numpy(table[v]["fit"]) for v in setting["of"]])
        layers = tuple(sorted({layer for p in parts for layer in p[0]}))
        result[name] = (
            layers,
            lambda r, p=parts, w=setting["weights"], ref=reference: openset.combine([fn(r) for _, fn in p], w, ref),
        )
    return result


def timing(classifier: Classifier, images: torch.Tensor, how: dict) -> dict[str, dict[str, float]]:
    """Seconds for `images`: a plain prediction, and one pass with hooks plus each score. Batch by batch, the plain
    prediction and every score take turns, so that other work on shared cores slows them alike; the ratio is the
    median over `TIME_REPEATS` repetitions of each one's time over the plain prediction's in that repetition.
    `score_share` is the score's own computation (after the forward pass) over the plain prediction: the part of
    the cost that contention on shared cores blurs least."""
    scoring = {name: [0.0] * TIME_REPEATS for name in how}

    def with_score(batch: torch.Tensor, repeat: int, name: str) -> None:
        layers, fn = how[name]
        x = classifier.checkpoint.normalise(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=classifier.bf16):
            record = openset.forward_with_features(classifier.model, x, layers)
        torch.softmax(record.logits, 1)
        began = time.perf_counter()
        fn(record)
        scoring[name][repeat] += time.perf_counter() - began

    batches = list(images.split(classifier.batch_size))
    classifier.probabilities(batches[0])  # warm-up
    runs: dict[str, list[float]] = {name: [] for name in ("plain", *how)}
    for repeat in range(TIME_REPEATS):
        totals = dict.fromkeys(runs, 0.0)
        for batch in batches:
            for name in runs:
                began = time.perf_counter()
                classifier.probabilities(batch) if name == "plain" else with_score(batch, repeat, name)
                totals[name] += time.perf_counter() - began
        for name in runs:
            runs[name].append(totals[name])
    plain = statistics.median(runs["plain"])
    result = {"max_softmax": {"seconds": plain, "ratio": 1.0, "note": "computed from the prediction itself"}}
    for name in how:
        ratios = [t / p for t, p in zip(runs[name], runs["plain"], strict=True)]
        shares = [t / p for t, p in zip(scoring[name], runs["plain"], strict=True)]
        result[name] = {
            "seconds": statistics.median(runs[name]),
            "ratio": statistics.median(ratios),
            "score_share": statistics.median(shares),
        }
    return {"plain": {"seconds": plain, "photos": len(images), "all_runs": runs}, **result}


def pick(settings: dict, times: dict, tolerance: float = 0.005, max_ratio: float = 1.10) -> dict:
    """The declared rule: the best tuning AUROC among variants within the time budget, unless a variant with fewer
    parts is within `tolerance` of it (then the fewest parts, best AUROC among them)."""
    eligible = [n for n in settings if times[n]["ratio"] <= max_ratio]
    best = max(eligible, key=lambda n: settings[n]["tuning_auroc"])
    close = [
        n
        for n in eligible
        if settings[n]["parts"] < settings[best]["parts"]
        and settings[n]["tuning_auroc"] >= settings[best]["tuning_auroc"] - tolerance
    ]
    if close:
        best = min(close, key=lambda n: (settings[n]["parts"], -settings[n]["tuning_auroc"]))
    return {
        "picked": best,
        "eligible": eligible,
        "best_before_simplicity": max(eligible, key=lambda n: settings[n]["tuning_auroc"]),
    }
