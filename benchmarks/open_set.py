"""Open-set scores measured: which score tells "none of these" from the ten classes, per model and kind of negative.

    python benchmarks/open_set.py --data DATA --negatives data/negatives [--models default fast] [--out benchmarks]

The protocol, declared before it was measured, is in docs/open_set.md ("Open-set scores, declared before measured").
Positives are the training folder's photos each model did not train on (its `trained_on` record, as `heritage
evaluate --split unseen` chooses them: the validation split); Mahalanobis statistics are fitted on the photos it did
train on. Every setting (energy temperature, ridge, layer, combination weights) is chosen on `NEG/tuning` against
the positives; `NEG/reporting` is reported, per kind and overall, with clustered bootstrap intervals (validation
photos by near-duplicate group, negatives by source picture) and paired AUROC differences against max softmax. Writes
OUT/open_set.json and OUT/open_set.md (the tables of docs/open_set.md). Everything is seeded; `--records DIR` keeps
the forward passes (features and logits) so a second run only redoes the statistics.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' own modules

from heritage_cnn.base.devices import machine_description
from heritage_cnn.base.io import atomic_write_json
from heritage_cnn.data.decode import decode_image
from heritage_cnn.data.folders import find_layout, load_images
from heritage_cnn.data.split import group_near_duplicates, perceptual_hashes
from heritage_cnn.inference.classifier import Classifier
from heritage_cnn.inference.evaluate import near_any, trained_on
from heritage_cnn.models import openset
from heritage_cnn.models.checkpoint import Checkpoint, load_checkpoint
from run import default_data

HERE = Path(__file__).resolve().parent
KINDS = ("photo", "artwork", "synthetic")
LAYERS = (openset.PENULTIMATE, openset.POOLED)
TEMPERATURES = (0.5, 1.0, 2.0, 5.0, 10.0)
RIDGES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
STEP = 0.1
TPR = 0.95
REJECT_AT_MOST = 0.03  # share of validation photos the operating point may call "none"
FILED_AT_MOST = 0.05  # the target share of negatives filed into a class
TIME_PHOTOS, TIME_REPEATS = 256, 5  # declared 1,024: cut when the shared cores made one pass of default 30 s


# ------------------------------------------------------------------------------------------------
# metrics: scikit-learn for the figures, a weighted numpy twin for the bootstrap (tested equal)
# ------------------------------------------------------------------------------------------------


def auroc_fpr(positives: np.ndarray, negatives: np.ndarray, tpr: float = TPR) -> tuple[float, float]:
    """AUROC (positives = one of the ten = 1) and the share of negatives at or above the highest threshold that
    keeps `tpr` of the positives, by scikit-learn."""
    labels = np.r_[np.ones(len(positives)), np.zeros(len(negatives))]
    scores = np.r_[positives, negatives]
    fpr, tprs, _ = roc_curve(labels, scores)
    return float(roc_auc_score(labels, scores)), float(fpr[np.argmax(tprs >= tpr - 1e-12)])


def weighted_auroc_fpr(
    positives: np.ndarray, negatives: np.ndarray, w_pos: np.ndarray, w_neg: np.ndarray, tpr: float = TPR
) -> tuple[np.ndarray, np.ndarray]:
    """`auroc_fpr` for R weightings at once (w_pos (R, P), w_neg (R, N): how often each item was drawn), so a
    bootstrap is a few array operations: the ROC curve is built on the distinct scores, highest first."""
    scores = np.r_[positives, negatives]
    order = np.argsort(-scores, kind="stable")
    ordered = scores[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    is_pos = np.r_[np.ones(len(positives)), np.zeros(len(negatives))][order]
    weights = np.concatenate([w_pos, w_neg], 1)[:, order].astype(np.float64)
    tp = np.cumsum(np.add.reduceat(weights * is_pos, starts, axis=1), 1)
    fp = np.cumsum(np.add.reduceat(weights * (1 - is_pos), starts, axis=1), 1)
    tpr_curve = np.c_[np.zeros(len(tp)), tp / tp[:, -1:]]
    fpr_curve = np.c_[np.zeros(len(fp)), fp / fp[:, -1:]]
    auroc = (np.diff(fpr_curve, axis=1) * (tpr_curve[:, 1:] + tpr_curve[:, :-1]) / 2).sum(1)
    first = np.argmax(tpr_curve >= tpr - 1e-12, axis=1)
    return auroc, fpr_curve[np.arange(len(fpr_curve)), first]


def cluster_weights(clusters: np.ndarray, rounds: int, rng: np.random.Generator) -> np.ndarray:
    """(rounds, n) draw counts of a bootstrap that resamples whole clusters (with replacement) instead of items."""
    _, inverse = np.unique(clusters, return_inverse=True)
    k = int(inverse.max()) + 1
    draws = rng.integers(0, k, size=(rounds, k)) + np.arange(rounds)[:, None] * k
    counts = np.bincount(draws.ravel(), minlength=rounds * k).reshape(rounds, k)
    return counts[:, inverse]


def interval(values: np.ndarray) -> list[float]:
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def reject_threshold(positives: np.ndarray, share: float = REJECT_AT_MOST) -> float:
    """The highest threshold below which at most `share` of the positives fall (they are called "none")."""
    ordered = np.sort(positives)
    return float(ordered[int(np.floor(share * len(ordered)))])


def filed_threshold(negatives: np.ndarray, share: float = FILED_AT_MOST) -> float:
    """The lowest threshold at or above which at most `share` of the negatives stay (are filed into a class)."""
    ordered = np.sort(negatives)[::-1]
    allowed = int(np.floor(share * len(ordered)))
    return float(np.nextafter(ordered[allowed], np.inf)) if allowed < len(ordered) else float(ordered[-1])


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


# ------------------------------------------------------------------------------------------------
# the report: reporting negatives, per kind, with clustered bootstrap intervals
# ------------------------------------------------------------------------------------------------


def bootstrap_weights(records: dict, side: dict, rounds: int, seed: int) -> tuple[np.ndarray, dict]:
    """Validation weights (by near-duplicate group) and, per kind and "all", the negatives' indices and weights (by
    source picture, drawn per kind: "all" is the kinds' draws side by side)."""
    rng = np.random.default_rng(seed)
    w_val = cluster_weights(records["val_groups"].numpy(), rounds, rng)
    kinds = {}
    for kind in KINDS:
        index = np.flatnonzero(side["kind"] == kind)
        kinds[kind] = (index, cluster_weights(side["cluster"][index], rounds, rng))
    kinds["all"] = (np.concatenate([kinds[k][0] for k in KINDS]), np.concatenate([kinds[k][1] for k in KINDS], 1))
    return w_val, kinds


def report_variant(scores: dict[str, np.ndarray], w_val: np.ndarray, kinds: dict) -> tuple[dict, dict]:
    """Figures of one variant on the reporting side, and its bootstrap AUROCs per kind (for paired differences)."""
    pos, neg = scores["val"], scores["reporting"]
    threshold = reject_threshold(pos)
    strict = filed_threshold(scores["tuning"])
    result: dict = {
        "tuning": dict(zip(("auroc", "fpr95"), auroc_fpr(pos, scores["tuning"]), strict=True)),
        "operating_point": {"threshold": threshold, "val_called_none": float((pos < threshold).mean())},
        "strict_point": {"threshold": strict, "val_called_none": float((pos < strict).mean())},
        "reporting": {},
    }
    boots = {}
    for kind, (index, w_neg) in kinds.items():
        auroc, fpr = auroc_fpr(pos, neg[index])
        b_auroc, b_fpr = weighted_auroc_fpr(pos, neg[index], w_val, w_neg)
        filed = neg[index] >= threshold
        b_filed = (w_neg * filed).sum(1) / w_neg.sum(1)
        result["reporting"][kind] = {
            "n": len(index),
            "auroc": auroc,
            "auroc_ci95": interval(b_auroc),
            "fpr95": fpr,
            "fpr95_ci95": interval(b_fpr),
            "filed_at_operating_point": float(filed.mean()),
            "filed_ci95": interval(b_filed),
            "filed_at_strict_point": float((neg[index] >= strict).mean()),
        }
        boots[kind] = b_auroc
    return result, boots


def report(chosen: dict, settings: dict, records: dict, side: dict, rounds: int, seed: int) -> dict:
    w_val, kinds = bootstrap_weights(records, side, rounds, seed)
    figures, boots = {}, {}
    for name, scores in chosen.items():
        figures[name], boots[name] = report_variant(scores, w_val, kinds)
        figures[name]["setting"] = settings[name]
    for name in figures:
        for kind in kinds:
            delta = boots[name][kind] - boots["max_softmax"][kind]
            point = figures[name]["reporting"][kind]["auroc"] - figures["max_softmax"]["reporting"][kind]["auroc"]
            figures[name]["reporting"][kind]["auroc_vs_max_softmax"] = {"delta": point, "ci95": interval(delta)}
    return figures


def breakdown(chosen: dict, records: dict, side: dict, classes: list[str]) -> dict:
    """Per source of the reporting negatives (a drawn image's generator, else kind:package): the share each variant
    files into a class at its operating point, and the class the model answers most, with its median probability."""
    probs = torch.softmax(records["reporting"].logits, 1)
    result = {}
    for source in sorted(set(side["source"].tolist())):
        index = np.flatnonzero(side["source"] == source)
        answers = probs[index].argmax(1)
        top = int(torch.bincount(answers, minlength=len(classes)).argmax())
        result[source] = {
            "kind": str(side["kind"][index[0]]),
            "n": len(index),
            "most_answered": classes[top],
            "most_answered_share": float((answers == top).float().mean()),
            "median_probability": float(probs[index].amax(1).median()),
            "filed_at_operating_point": {
                name: float((s["reporting"][index] >= reject_threshold(s["val"])).mean()) for name, s in chosen.items()
            },
        }
    return result


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


# ------------------------------------------------------------------------------------------------
# tables and main
# ------------------------------------------------------------------------------------------------


def ci(value: float, bounds: list[float], digits: int = 3, pct: bool = False) -> str:
    if pct:
        return f"{value:.1%} ({bounds[0]:.0%}–{bounds[1]:.0%})"
    return f"{value:.{digits}f} ({bounds[0]:.{digits}f}–{bounds[1]:.{digits}f})"


def setting_text(setting: dict) -> str:
    if setting["parts"] > 1:
        names = [v.split("@")[0].replace("mahalanobis", "maha") for v in setting["of"]]
        return " + ".join(f"{w:g}·z({n})" for w, n in zip(setting["weights"], names, strict=True))
    variant = setting["variant"]
    return variant.split("@")[1] if "@" in variant else "–"


def markdown(model: str, result: dict) -> str:
    figures, times, picked = result["variants"], result["timing"], result["rule"]["picked"]
    lines = [
        f"**`{model}`** ({result['counts']['val']} validation photos; reporting negatives: "
        + ", ".join(f"{k} {figures['max_softmax']['reporting'][k]['n']}" for k in (*KINDS, "all"))
        + ")",
        "",
        "| score | setting (tuning) | tuning AUROC | AUROC photo | AUROC artwork | AUROC synthetic | AUROC all "
        "| Δ all vs max softmax | FPR@95 photo | FPR@95 all | filed at 3 % none | time (the score alone) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, f in figures.items():
        rep = f["reporting"]
        delta = rep["all"]["auroc_vs_max_softmax"]
        shown = f"**{name}**" if name == picked else name
        lines.append(
            f"| {shown} | {setting_text(f['setting'])} | {f['tuning']['auroc']:.3f} | "
            + " | ".join(ci(rep[k]["auroc"], rep[k]["auroc_ci95"]) for k in (*KINDS, "all"))
            + f" | {delta['delta']:+.3f} ({delta['ci95'][0]:+.3f}…{delta['ci95'][1]:+.3f})"
            + f" | {ci(rep['photo']['fpr95'], rep['photo']['fpr95_ci95'], pct=True)}"
            + f" | {ci(rep['all']['fpr95'], rep['all']['fpr95_ci95'], pct=True)}"
            + f" | {ci(rep['all']['filed_at_operating_point'], rep['all']['filed_ci95'], pct=True)}"
            + f" | {times[name]['ratio']:.2f}x ({times[name].get('score_share', 0.0):.1%}) |"
        )
    return "\n".join(lines) + "\n"


def measure_model(name: str, photos, hashes: np.ndarray, negatives: dict, args: argparse.Namespace) -> dict:
    checkpoint: Checkpoint = load_checkpoint(name)
    if checkpoint.classes != photos.classes:
        raise SystemExit(f"{name}: classes {checkpoint.classes} differ from the data's {photos.classes}")
    classifier = Classifier(checkpoint)
    began = time.perf_counter()
    records = model_records(name, classifier, photos, hashes, negatives, args.records)
    print(f"{name}: forward passes {time.perf_counter() - began:.0f} s", flush=True)
    table = raw_scores(records)
    chosen, settings = choose_variants(table)
    figures = report(chosen, settings, records, negatives["reporting"], args.rounds, args.seed)
    if args.reuse_timing:  # the statistics again (they are seeded), the timing of the run that wrote OUT's JSON
        times = json.loads((args.out / "open_set.json").read_text())["models"][name]["timing"]
    else:
        val_images = photos.images[np.flatnonzero(~near_any(hashes, *trained_on(checkpoint)))][:TIME_PHOTOS]
        times = timing(classifier, val_images, scorers(records, settings, table))
    grid = {v: {"tuning_auroc": tuning_auroc(s)} for v, s in table.items()}
    counts = {"fit": len(records["fit_labels"]), "val": len(records["val"].logits)}
    counts |= {side: len(negatives[side]["kind"]) for side in ("tuning", "reporting")}
    return {
        "counts": counts,
        "grid": grid,
        "variants": figures,
        "by_source": breakdown(chosen, records, negatives["reporting"], checkpoint.classes),
        "timing": times,
        "rule": pick(settings, times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=default_data())
    parser.add_argument("--negatives", type=Path, default=HERE.parent / "data" / "negatives")
    parser.add_argument("--models", nargs="+", default=["default", "fast"])
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--records", type=Path, default=None, help="keep the forward passes here (a rerun reuses them)")
    parser.add_argument(
        "--reuse-timing", action="store_true", help="keep the timing of OUT/open_set.json (a busy machine's rerun)"
    )
    parser.add_argument("--cache-dir", default=None, help="the decoded training photos' cache (heritage --cache-dir)")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    began = time.perf_counter()
    photos = load_images(find_layout(args.data).train, cache_dir=args.cache_dir)
    hashes = perceptual_hashes(photos.images)
    negatives = load_negatives(args.negatives)
    print(f"decoded and hashed in {time.perf_counter() - began:.0f} s", flush=True)
    results = {
        "command": "python benchmarks/open_set.py " + " ".join(sys.argv[1:]),
        "machine": machine_description(torch.device("cpu"), torch.bfloat16),
        "torch_threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "seed": args.seed,
        "models": {},
    }
    for name in args.models:
        results["models"][name] = measure_model(name, photos, hashes, negatives, args)
        print(markdown(name, results["models"][name]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "open_set.json", results)
    text = "\n".join(markdown(name, result) for name, result in results["models"].items())
    (args.out / "open_set.md").write_text(text)
    print(f"wrote {args.out / 'open_set.json'} and open_set.md in {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
