"""The "none of these" part of an evaluation: the open-set score on the evaluated photos (and on photos of none of
the model's classes, given a folder of them), the operating point and what it costs on the model's classes.

`heritage evaluate` (`evaluation.evaluate_on`) scores the photos in the same float32 pass as its logits
(`scored_logits`), then `open_set_section` writes `open_set_scores.png` (the histogram of the score, the threshold
drawn), `open_set_roc.png` (given negatives: the ROC curve, its AUROC and the operating point on it) and
`open_set.md`, and returns the figures that metrics.json keeps under `open_set`; the HTML report shows them
(`report_rows`, `OPEN_SET_FIGURES`). Positives are the evaluated photos (label 1), negatives the folder's photos; higher
scores mean "one of the model's classes", as everywhere in `heritage_cnn.models.openset`. The texts name those
classes by their count (`known_classes`: "the ten" of the shipped models, "the 12 classes" of a taught one).

With a noise check in the record (`OperatingPoint.noise_threshold`), the decision is the score's and the check's
together: the shares called none and filed count both, and the AUROC and FPR@95 %TPR are those of the decision's
score (`decision_scores`: the score, with a photo the check calls noise below every other), the score's own beside
them (`score_auroc`, `score_fpr_at_95_tpr`). The histogram shows the score.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from heritage_cnn.base.io import atomic_write_text, inside_input
from heritage_cnn.base.names import first_few, markdown_cell, shown
from heritage_cnn.data.decode import try_decode
from heritage_cnn.data.folders import display_name
from heritage_cnn.inference.classifier import find_photos
from heritage_cnn.models.checkpoint import Checkpoint
from heritage_cnn.models.network import eval_mode
from heritage_cnn.models.openset_point import OperatingPoint
from heritage_cnn.models.views import tta_views

SCORES_FIGURE, ROC_FIGURE, OPEN_SET_TABLE = "open_set_scores.png", "open_set_roc.png", "open_set.md"
OPEN_SET_FIGURES = (SCORES_FIGURE, ROC_FIGURE)
OPEN_SET_FILES = (*OPEN_SET_FIGURES, OPEN_SET_TABLE)  # every file `open_set_section` may write
TPR = 0.95  # the FPR@95%TPR figure, as docs/open_set.md reports it


@dataclass(frozen=True)
class Negatives:
    """The photos of a folder of none of the model's classes, read (`read_negatives`): uint8 N x 3 x size x size, the
    path of each, and the files that could not be read (path, reason)."""

    folder: str | os.PathLike
    images: torch.Tensor
    paths: list[Path]
    skipped: list[tuple[str, str]]


def known_classes(count: int | None) -> str:
    """How the texts name the photos' classes, by the model's count: "the ten" (a ten-class model, the shipped ones:
    the texts read as they always have), "the 12 classes" (a model taught more), "the model's classes" (an
    evaluation written before its summary recorded the count)."""
    if count is None:
        return "the model's classes"
    return "the ten" if count == 10 else f"the {count} classes"


def open_set_captions(count: int | None) -> dict[str, str]:
    """The captions of the OPEN_SET_FIGURES in the HTML report, for a model of `count` classes (`known_classes`)."""
    known = known_classes(count)
    return {
        SCORES_FIGURE: f"How much each photo looks like one of {known} (the open-set score; higher: more alike), on "
        f"the evaluated photos and, when given, on photos of none of {known}. Left of the dashed line a photo is "
        "called 'none of these'.",
        ROC_FIGURE: f"Telling {known} from none of them at every threshold: the share of photos of {known} kept "
        "against the share of none-photos still filed into a class; the dot is the operating point.",
    }


def written_files(summary: dict[str, Any] | None) -> list[str]:
    """The files `open_set_section` wrote for `summary` (none without one): the ROC only given negatives."""
    if not summary:
        return []
    return [SCORES_FIGURE, *([ROC_FIGURE] if summary.get("negatives") else []), OPEN_SET_TABLE]


@torch.no_grad()
def scored_logits(
    checkpoint: Checkpoint,
    point: OperatingPoint,
    images: torch.Tensor,
    tta: str = "none",
    batch_size: int = 64,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, C), as `evaluate.predict_logits` computes them (float32, the model in eval mode, `tta` views
    averaged), and the open-set score (N,) of the same forward passes (the mean over the views). The model is left
    in the mode it came in, as predict_logits leaves it: a caller's training model stays in training mode."""
    model = checkpoint.model
    device = next(model.parameters()).device
    logits, scores = [], []
    starts: Any = range(0, len(images), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="predict", unit="batch", leave=False, dynamic_ncols=True)
    with eval_mode(model):
        for start in starts:
            x = checkpoint.normalise(images[start : start + batch_size].to(device))
            outputs = [point.forward(model, view) for view in tta_views(x, tta)]
            logits.append(sum(o[0] for o in outputs) / len(outputs))
            scores.append((sum(o[1] for o in outputs) / len(outputs)).cpu())
    if not logits:
        return torch.empty(0, len(checkpoint.classes)), torch.empty(0)
    return torch.cat(logits).cpu(), torch.cat(scores)


def load_negatives(
    folder: str | os.PathLike, size: int, flag: str = "--negatives"
) -> tuple[torch.Tensor, list[tuple[str, str]]]:
    """Every readable photo below `folder` (uint8, N x 3 x size x size), and the files that could not be read;
    errors name the folder after `flag`, the option that gave it."""
    negatives = read_negatives(folder, size, flag)
    return negatives.images, negatives.skipped


def read_negatives(folder: str | os.PathLike, size: int, flag: str = "--negatives") -> Negatives:
    """`load_negatives`, with the path of each photo read, in its order. A folder without one readable photo is
    refused in one line naming the first files that could not be read, and why."""
    if not Path(folder).is_dir():
        raise ValueError(f"{flag} {folder}: not a folder")
    photos, problems = find_photos([folder])
    with ThreadPoolExecutor(max_workers=4) as pool:
        decoded = list(pool.map(try_decode, photos, [size] * len(photos)))
    good = [d for d in decoded if not isinstance(d, str)]
    read = [p for p, d in zip(photos, decoded, strict=True) if not isinstance(d, str)]
    skipped = problems + [(str(p), d) for p, d in zip(photos, decoded, strict=True) if isinstance(d, str)]
    if not good:
        raise ValueError(f"{flag} {folder}: no readable photos in it{_first_unreadable(skipped)}")
    images = torch.from_numpy(np.stack(good)).permute(0, 3, 1, 2).contiguous()
    return Negatives(folder, images, read, skipped)


def _first_unreadable(skipped: list[tuple[str, str]]) -> str:
    """The first few of `skipped` for a one-line refusal ("" when there are none), the rest counted."""
    if not skipped:
        return ""
    named = first_few([f"{shown(path)}: {reason}" for path, reason in skipped], "; ")
    return f" ({len(skipped)} file(s) could not be read: {named})"


def check_negatives(negatives: str | os.PathLike, data: str | os.PathLike, where: str) -> None:
    """Before anything is read: `negatives` (named `where` in the refusal) a folder holding photo files, none of them
    the data set's (`data`): a ValueError in one line. Whether the photos can be read is known once they are read
    (`read_negatives`), which an evaluation does before it scores the data."""
    if not Path(negatives).is_dir():
        raise ValueError(f"{where}: {'not a folder' if Path(negatives).exists() else 'no such folder'}")
    if inside_input(negatives, [data]) is not None or inside_input(data, [negatives]) is not None:
        raise ValueError(f"{where}: is or overlaps the data folder {data}; give photos of none of the classes")
    photos, problems = find_photos([negatives])
    if not photos:
        raise ValueError(f"{where}: no photos in it{_first_unreadable(problems)}")
    shared = photos_shared(negatives, data)
    if shared:
        raise ValueError(
            f"{where}: {shared} of its photos are files of the data folder {data} (the same bytes); give photos of "
            "none of the classes"
        )


def photos_shared(negatives: str | os.PathLike, data: str | os.PathLike) -> int:
    """How many photos below `negatives` have the bytes of a photo below `data`: none-photos that are photos of the
    labelled data set (a copy of it, or some of its files) would be counted as "none" and their filing as a leak.
    Only files of a size both sides hold are hashed, so a true negatives folder costs a walk and a stat of each."""
    from heritage_cnn.base.io import file_sha256

    def sizes(folder: str | os.PathLike) -> dict[int, list[Path]]:
        found: dict[int, list[Path]] = {}
        for photo in find_photos([folder])[0]:
            with contextlib.suppress(OSError):  # an unreadable file: the reading says so later
                found.setdefault(photo.stat().st_size, []).append(photo)
        return found

    ours, theirs = sizes(negatives), sizes(data)
    common = set(ours) & set(theirs)
    digests = {file_sha256(p) for size in common for p in theirs[size]}
    return sum(file_sha256(p) in digests for size in common for p in ours[size])


def _where_filed(
    folder: str | os.PathLike, paths: list[Path], filed: np.ndarray, answers: np.ndarray, classes: list[str]
) -> dict[str, Any]:
    """Which classes the filed none-photos went to (most first), and the filed share of each first-level subfolder
    of `folder` (photos directly in it: "."): the kinds of photo a survey folder holds, apart."""
    counts = np.bincount(answers[filed], minlength=len(classes))
    filed_as = {display_name(classes[k]): int(counts[k]) for k in np.argsort(-counts, kind="stable") if counts[k]}
    parts = [p.relative_to(folder).parts for p in paths]
    groups = [part[0] if len(part) > 1 else "." for part in parts]
    by_folder = {}
    for group in sorted(set(groups)):
        mask = np.array([g == group for g in groups])
        by_folder[group] = {
            "photos": int(mask.sum()),
            "filed": int(filed[mask].sum()),
            "filed_share": float(filed[mask].mean()),
        }
    return {"filed_as": filed_as, "by_folder": by_folder}


def decision_scores(scores: np.ndarray, noise: np.ndarray, floor: float) -> np.ndarray:
    """The scores a decision with a noise check ranks photos by: `scores`, those of photos called noise replaced by
    `floor` (below every score ranked with them), since such a photo is none of these whatever its score."""
    return np.where(noise, floor, scores)


def _roc(positives: np.ndarray, negatives: np.ndarray) -> tuple[float, float, np.ndarray, np.ndarray]:
    """AUROC, FPR at 95 % TPR (the share of negatives at or above the highest threshold that keeps 95 % of the
    positives), and the ROC curve (scikit-learn; the photos of the model's classes are the positives)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    truth = np.r_[np.ones(len(positives)), np.zeros(len(negatives))]
    scores = np.r_[positives, negatives]
    # every threshold: the default drops collinear points (ties of positives and negatives), among them the one
    # where TPR reaches 95 %, and the search would land on a later one with more negatives
    fpr, tpr, _ = roc_curve(truth, scores, drop_intermediate=False)
    return float(roc_auc_score(truth, scores)), float(fpr[np.searchsorted(tpr, TPR)]), fpr, tpr


def open_set_section(
    checkpoint: Checkpoint,
    point: OperatingPoint,
    scores: torch.Tensor,
    noise: torch.Tensor,
    probabilities: np.ndarray,
    labels: np.ndarray,
    out: str | os.PathLike,
    negatives: str | os.PathLike | Negatives | None = None,
    tta: str = "none",
    overridden: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The operating point on the evaluated photos (`scores`, and `noise`: which of them the noise check calls noise)
    and on `negatives`, a folder of photos of none of the model's classes (or its photos, read already: an
    evaluation reads them before it scores its data, so that a folder without one is refused before): figures,
    open_set.md, and the summary metrics.json keeps (`classes`: the model's count, which the texts name them by;
    `negatives.skipped`: the files of `negatives` that could not be read, each a path and a reason)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    positives = scores.numpy().astype(np.float64)
    positive_noise = noise.numpy()
    kept = point.keeps(scores, noise).numpy()
    correct = probabilities.argmax(1) == labels
    summary: dict[str, Any] = {
        "score": point.name,
        "ridge": point.ridge if point.reads_statistics else None,  # a score that reads no statistics has none
        "threshold": point.threshold,
        "threshold_from": "--none-threshold" if overridden else "the model",
        "noise_threshold": point.noise_threshold,
        "fitted_on": point.fitted_on,
        "photos": len(positives),
        "called_none": int((~kept).sum()),
        "called_none_share": float((~kept).mean()),
        "called_noise": int(positive_noise.sum()),
        "accuracy_all": float(correct.mean()),
        "accuracy_kept": float(correct[kept].mean()) if kept.any() else None,
        "misclassified_among_none": int((~correct[~kept]).sum()),
        "classes": len(checkpoint.classes),
        "negatives": None,
    }
    negative_scores = None
    if negatives is not None:
        if not isinstance(negatives, Negatives):
            negatives = read_negatives(negatives, checkpoint.image_size)
        images, skipped, paths = negatives.images, negatives.skipped, negatives.paths
        negative_logits, negative_scores = scored_logits(checkpoint, point, images, tta)
        negative_scores = negative_scores.numpy().astype(np.float64)
        negative_noise = point.noise(images).numpy()
        floor = min(positives.min(), negative_scores.min()) - 1
        auroc, fpr95, fpr, tpr = _roc(
            decision_scores(positives, positive_noise, floor), decision_scores(negative_scores, negative_noise, floor)
        )
        score_auroc, score_fpr95, _, _ = _roc(positives, negative_scores)
        filed = point.keeps(torch.from_numpy(negative_scores), torch.from_numpy(negative_noise)).numpy()
        summary["negatives"] = {
            "folder": str(negatives.folder),
            "photos": len(negative_scores),
            "unreadable": len(skipped),
            "skipped": [{"path": path, "reason": reason} for path, reason in skipped],
            "called_noise": int(negative_noise.sum()),
            "filed": int(filed.sum()),
            "filed_share": float(filed.mean()),
            "auroc": auroc,
            "fpr_at_95_tpr": fpr95,
            "score_auroc": score_auroc,
            "score_fpr_at_95_tpr": score_fpr95,
            **_where_filed(negatives.folder, paths, filed, negative_logits.argmax(1).numpy(), checkpoint.classes),
        }
        known = known_classes(len(checkpoint.classes))
        _plot_roc(fpr, tpr, auroc, 1 - summary["called_none_share"], float(filed.mean()), known, out / ROC_FIGURE)
    _plot_scores(positives, negative_scores, point, out / SCORES_FIGURE)
    rows = "\n".join(f"| {markdown_cell(name)} | {markdown_cell(value)} |" for name, value in report_rows(summary))
    atomic_write_text(out / OPEN_SET_TABLE, f"# None of these\n\n| figure | value |\n|---|---|\n{rows}\n")
    log(_log_line(summary))
    return summary


def _log_line(summary: dict[str, Any]) -> str:
    kept = summary["accuracy_kept"]
    noise = summary.get("noise_threshold")
    check = f", or noise below {noise:.4f}" if noise is not None else ""
    line = (
        f"none of these ({summary['score']} below {summary['threshold']:.6g}{check}): {summary['called_none']} of "
        f"{summary['photos']} photos ({summary['called_none_share']:.2%}) called none; accuracy on the rest "
        + (f"{kept:.4f}" if kept is not None else "-")
        + f" (all: {summary['accuracy_all']:.4f})"
    )
    negatives = summary["negatives"]
    if negatives:
        line += (
            f"; of {negatives['photos']} none-photos {negatives['filed']} ({negatives['filed_share']:.2%}) filed into "
            f"a class, AUROC {negatives['auroc']:.3f}"
        )
    return line


def report_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The summary as (figure, value) rows, for open_set.md and the HTML report."""
    ridge = f" (ridge {summary['ridge']:g})" if summary.get("ridge") is not None else ""
    fitted = summary.get("fitted_on") or {}
    source = summary["threshold_from"]
    if source == "the model" and fitted.get("val_photos"):
        source += f", fitted to call {fitted['val_called_none']} of its {fitted['val_photos']} validation photos none"
    kept = summary["accuracy_kept"]
    known = known_classes(summary.get("classes"))
    rows = [
        ("score", f"{summary['score']}{ridge}"),
        ("threshold", f"{summary['threshold']:.6g} ({source})"),
    ]
    noise = summary.get("noise_threshold")
    if noise is not None:
        rows.append(
            ("noise check", f"pixel correlation below {noise:.4f} ({summary['called_noise']} photos called noise)")
        )
    rows += [
        (
            f"photos of {known} called none",
            f"{summary['called_none']} of {summary['photos']} ({100 * summary['called_none_share']:.2f} %)",
        ),
        ("  of them misclassified anyway", str(summary["misclassified_among_none"])),
        ("accuracy on the photos kept", f"{100 * kept:.2f} %" if kept is not None else "-"),
        ("accuracy on all photos", f"{100 * summary['accuracy_all']:.2f} %"),
    ]
    negatives = summary.get("negatives")
    if negatives:
        rows += [
            (
                "none-photos",
                f"{negatives['photos']} in {shown(Path(negatives['folder']).name)} "
                f"({negatives['unreadable']} unreadable skipped)",
            ),
            ("none-photos filed into a class", f"{negatives['filed']} ({100 * negatives['filed_share']:.2f} %)"),
            *_filed_rows(negatives),
            (f"AUROC ({known} against the none-photos)", f"{negatives['auroc']:.3f}"),
            (f"none-photos filed at 95 % of {known} kept (FPR@95%TPR)", f"{100 * negatives['fpr_at_95_tpr']:.1f} %"),
        ]
        if noise is not None:  # the decision's figures above; the score's alone, and what the check caught
            rows += [
                ("  of the none-photos, called noise", str(negatives["called_noise"])),
                (
                    "  the score alone: AUROC, FPR@95%TPR",
                    f"{negatives['score_auroc']:.3f}, {100 * negatives['score_fpr_at_95_tpr']:.1f} %",
                ),
            ]
    return rows


def _filed_rows(negatives: dict[str, Any]) -> list[tuple[str, str]]:
    """Where the filed none-photos went, and each subfolder's share filed when there are several."""
    rows = []
    if negatives.get("filed_as"):
        rows.append(("  filed as", ", ".join(f"{name} {count}" for name, count in negatives["filed_as"].items())))
    folders = negatives.get("by_folder") or {}
    if len(folders) > 1:
        for name, part in folders.items():
            share = f"{part['filed']} of {part['photos']} ({100 * part['filed_share']:.2f} %)"
            rows.append(
                (f"  filed, of those in {shown(name)}/" if name != "." else "  filed, of those at the top", share)
            )
    return rows


def _plot_scores(positives: np.ndarray, negatives: np.ndarray | None, point: OperatingPoint, path: Path) -> None:
    from heritage_cnn.base.figures import new_figure, save_figure

    every = positives if negatives is None else np.r_[positives, negatives]
    low = float(np.percentile(every, 1))  # a long tail of very unlike photos would squeeze the rest
    edges = np.linspace(min(low, point.threshold), max(float(every.max()), point.threshold), 51)
    fig, ax = new_figure(figsize=(7, 3.6))
    for scores, label, alpha in ((positives, "evaluated photos", 0.7), (negatives, "none-photos", 0.6)):
        if scores is not None:  # each set as shares of itself: sets of different sizes side by side
            weights = np.full(len(scores), 1 / len(scores))
            ax.hist(
                np.clip(scores, edges[0], None), edges, weights=weights, alpha=alpha, label=f"{label} ({len(scores)})"
            )
    ax.axvline(point.threshold, color="k", ls="--", lw=1.2, label=f"threshold {point.threshold:.4g}")
    ax.set(xlabel=f"open-set score: {point.name} (lower ones in the first bin)", ylabel="share of the set")
    ax.set_title("None of these: where the threshold falls", fontsize=11)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def _plot_roc(
    fpr: np.ndarray, tpr: np.ndarray, auroc: float, kept: float, filed: float, known: str, path: Path
) -> None:
    from heritage_cnn.base.figures import new_figure, save_figure

    fig, ax = new_figure(figsize=(4.4, 4.2))
    ax.plot(fpr, tpr, label=f"AUROC {auroc:.3f}")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.plot([filed], [kept], "o", color="tab:red", label=f"operating point: {kept:.1%} kept, {filed:.1%} filed")
    ax.set(xlabel="none-photos filed into a class", ylabel=f"photos of {known} kept", xlim=(0, 1), ylim=(0, 1.01))
    ax.set_title(f"ROC: {known} against none of them", fontsize=11)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


__all__ = [
    "OPEN_SET_FIGURES",
    "OPEN_SET_FILES",
    "OPEN_SET_TABLE",
    "Negatives",
    "check_negatives",
    "known_classes",
    "load_negatives",
    "open_set_captions",
    "open_set_section",
    "read_negatives",
    "report_rows",
    "scored_logits",
    "written_files",
]
