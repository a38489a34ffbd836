"""The report of benchmarks/open_set.py: the reporting negatives, per kind, with clustered bootstrap intervals,
per source, and as the tables of docs/open_set.md."""

from __future__ import annotations

import numpy as np
import torch

from _open_set_metrics import (
    auroc_fpr,
    cluster_weights,
    filed_threshold,
    interval,
    reject_threshold,
    weighted_auroc_fpr,
)

KINDS = ("photo", "artwork", "synthetic")


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
# the tables
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
