"""The photos and forward passes of benchmarks/open_set.py, every score at every grid setting, and the settings
chosen on `NEG/tuning`."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from _open_set_metrics import auroc_fpr
from heritage_cnn.data.decode import decode_image
from heritage_cnn.data.split import group_near_duplicates
from heritage_cnn.inference.classifier import Classifier
from heritage_cnn.inference.evaluate import near_any, trained_on
from heritage_cnn.models import openset

LAYERS = (openset.PENULTIMATE, openset.POOLED)
TEMPERATURES = (0.5, 1.0, 2.0, 5.0, 10.0)
RIDGES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
STEP = 0.1


# ------------------------------------------------------------------------------------------------
# photos and forward passes
# ------------------------------------------------------------------------------------------------


def load_negatives(root: Path) -> dict[str, dict[str, np.ndarray | torch.Tensor]]:
    """Per side (tuning, reporting): uint8 images, kind and cluster (source picture; a drawn image is its own)."""
    manifest = json.loads((root / "manifest.json").read_text())
    sides: dict[str, dict] = {}
    for side in ("tuning", "reporting"):
        files = sorted((f for f in manifest["files"] if f["split"] == side), key=lambda f: f["file"])
        images = np.stack([decode_image(root / f["file"], 64) for f in files])
        sides[side] = {
            "images": torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
            "kind": np.array([f["kind"] for f in files]),
            "cluster": np.array([f.get("sha256") or f["file"] for f in files]),
            # a drawn image's generator, else kind and package (a package can hold photos and artworks)
            "source": np.array([f.get("generator") or f"{f['kind']}:{f['package']}" for f in files]),
        }
    return sides


def forward(classifier: Classifier, images: torch.Tensor, layers: tuple[str, ...] = LAYERS) -> openset.ForwardRecord:
    """`openset.forward_with_features` in batches, as `Classifier.probabilities` runs the model."""
    parts = []
    for start in range(0, len(images), classifier.batch_size):
        x = classifier.checkpoint.normalise(images[start : start + classifier.batch_size].to(classifier.device))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=classifier.bf16):
            parts.append(openset.forward_with_features(classifier.model, x, layers))
    return openset.ForwardRecord(
        torch.cat([p.logits for p in parts]),
        torch.cat([p.member_logits for p in parts], 1),
        {name: torch.cat([p.features[name] for p in parts], 1) for name in layers},
    )


def model_records(
    name: str, classifier: Classifier, photos, hashes: np.ndarray, negatives: dict, records: Path | None
) -> dict[str, openset.ForwardRecord | torch.Tensor]:
    """Forward records of the fit set (photos the model trained on), the positives and both negative sides."""
    cached = records / f"{name}.pt" if records else None
    if cached and cached.exists():
        return torch.load(cached, weights_only=False)
    reference, distance = trained_on(classifier.checkpoint)
    seen = near_any(hashes, reference, distance)
    fit, val = np.flatnonzero(seen), np.flatnonzero(~seen)
    result = {
        "fit": forward(classifier, photos.images[fit]),
        "fit_labels": photos.labels[fit],
        "val": forward(classifier, photos.images[val]),
        "val_groups": torch.from_numpy(group_near_duplicates(hashes[val])),
        **{side: forward(classifier, negatives[side]["images"]) for side in ("tuning", "reporting")},
    }
    if cached:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.save(result, cached)
    return result


# ------------------------------------------------------------------------------------------------
# scores and the choices made on tuning
# ------------------------------------------------------------------------------------------------

SETS = ("fit", "val", "tuning", "reporting")


def raw_scores(records: dict) -> dict[str, dict[str, np.ndarray]]:
    """Every score at every grid setting, on every set: {variant: {set: scores}}."""
    labels = records["fit_labels"]
    table: dict[str, dict[str, np.ndarray]] = {}

    def put(variant: str, fn: Callable[[openset.ForwardRecord], torch.Tensor]) -> None:
        table[variant] = {s: fn(records[s]).numpy().astype(np.float64) for s in SETS}

    put("max_softmax", lambda r: openset.max_softmax(r.logits))
    put("max_logit", lambda r: openset.max_logit(r.member_logits.flatten(0, 1)).view(len(r.member_logits), -1).mean(0))
    for t in TEMPERATURES:
        put(f"energy@T={t:g}", lambda r, t=t: torch.stack([openset.energy(m, t) for m in r.member_logits]).mean(0))
    if len(records["fit"].member_logits) > 1:
        put("disagreement", lambda r: openset.disagreement(torch.softmax(r.member_logits, 2)))
    for layer in LAYERS:
        fit_features = records["fit"].features[layer]
        for ridge in RIDGES:
            stats = [openset.mahalanobis_fit(f, labels, num_classes=10, ridge=ridge) for f in fit_features]
            put(
                f"mahalanobis[{layer}]@ridge={ridge:g}",
                lambda r, s=stats, layer=layer: torch.stack(
                    [openset.mahalanobis(f, st) for f, st in zip(r.features[layer], s, strict=True)]
                ).mean(0),
            )
    return table


def tuning_auroc(scores: dict[str, np.ndarray]) -> float:
    return auroc_fpr(scores["val"], scores["tuning"])[0]


def best_of(table: dict, prefix: str) -> tuple[str, float]:
    candidates = {v: tuning_auroc(s) for v, s in table.items() if v.startswith(prefix)}
    variant = max(candidates, key=lambda v: candidates[v])
    return variant, candidates[variant]


def combination(table: dict, parts: list[str], weights: tuple[float, ...]) -> dict[str, np.ndarray]:
    """The z-scored weighted sum (`openset.combine`), z-scores against the fit set's scores."""
    reference = openset.zscore_reference([torch.from_numpy(table[p]["fit"]) for p in parts])
    return {
        s: openset.combine([torch.from_numpy(table[p][s]) for p in parts], weights, reference)
        .numpy()
        .astype(np.float64)
        for s in SETS
    }


def simplex(parts: int, step: float = STEP) -> list[tuple[float, ...]]:
    n = round(1 / step)
    return [
        tuple(round(c * step, 10) for c in combo)
        for combo in itertools.product(range(n + 1), repeat=parts)
        if sum(combo) == n
    ]


def choose_variants(table: dict) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict]]:
    """The declared variants with their settings chosen on tuning: {name: scores}, {name: how it was chosen}."""
    chosen, settings = {}, {}
    for name, prefix in (
        ("max_softmax", "max_softmax"),
        ("max_logit", "max_logit"),
        ("energy", "energy@"),
        ("disagreement", "disagreement"),
        (f"mahalanobis[{openset.PENULTIMATE}]", f"mahalanobis[{openset.PENULTIMATE}]@"),
        (f"mahalanobis[{openset.POOLED}]", f"mahalanobis[{openset.POOLED}]@"),
    ):
        if any(v.startswith(prefix) for v in table):
            variant, auc = best_of(table, prefix)
            chosen[name] = table[variant]
            settings[name] = {"variant": variant, "parts": 1, "tuning_auroc": auc}
    maha = max((n for n in chosen if n.startswith("mahalanobis")), key=lambda n: settings[n]["tuning_auroc"])
    combos = [("maha+logit", [settings[maha]["variant"], "max_logit"])]
    if "disagreement" in chosen:
        combos.append(("maha+logit+disagree", [settings[maha]["variant"], "max_logit", "disagreement"]))
    for name, parts in combos:
        trials = {w: tuning_auroc(combination(table, parts, w)) for w in simplex(len(parts))}
        weights = max(trials, key=lambda w: trials[w])
        chosen[name] = combination(table, parts, weights)
        settings[name] = {"parts": len(parts), "of": parts, "weights": list(weights), "tuning_auroc": trials[weights]}
    return chosen, settings
