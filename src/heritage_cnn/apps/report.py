"""The one-file HTML report: the figures of the steps before it (evaluation, training curves, inside the network), gathered.

The page is written for a colleague who was not there: what model, what data, when, the headline figure
and its split first; then a table of contents; every figure embedded (one file to send), captioned with
what the reader sees; deeper layers' kernel figures linked as files rather than inlined.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

from heritage_cnn.apps.steps import (
    CLASS_IMAGES_FOLDER,
    ELEMENT_MAP_FILE,
    ELEMENT_MAP_FOLDER,
    INSIDE_FOLDER,
    INSIDE_SKIPPED_FILE,
    TRAIN_FOLDER,
    eval_folder,
)
from heritage_cnn.base.figures import png_data_url
from heritage_cnn.base.io import atomic_write_text
from heritage_cnn.base.names import shown
from heritage_cnn.data.check import DATA_CHECK_FILE
from heritage_cnn.data.folders import display_name
from heritage_cnn.inference.evaluate import (
    CALIBRATION_FIGURE,
    CONFUSION_FIGURE,
    ERRORS_FIGURE,
    METRICS_FILE,
    macro_note,
    shown_figure,
)
from heritage_cnn.inference.openset_eval import open_set_captions, report_rows, written_files
from heritage_cnn.inside.synthesis.files import GRID, MANIFEST
from heritage_cnn.models.checkpoint import Checkpoint
from heritage_cnn.models.views import TTA_WORDS
from heritage_cnn.training.teach_out import taught_chain

# --------------------------------------------------------------------------------------------
# The one-file HTML report
# --------------------------------------------------------------------------------------------

STYLE = """
body{font:16px/1.5 system-ui,sans-serif;max-width:1100px;margin:1.5em auto;padding:0 16px;color:#1d1d1d}
h1{font-size:26px;margin:0 0 .2em}h2{margin-top:2em;border-bottom:1px solid #ddd}h3{margin-top:1.4em}
img{max-width:100%;height:auto;border:1px solid #ddd}figure{margin:1.2em 0}
figcaption{color:#444;font-size:15px;max-width:900px}
table{border-collapse:collapse;margin:.8em 0;font-variant-numeric:tabular-nums}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}td:first-child,th:first-child{text-align:left}
.scroll{overflow-x:auto;max-width:100%}.facts{color:#444}.headline{font-size:19px;margin:.6em 0}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.1em 1em;margin:.5em 0}dd{margin:0}
dt{font-weight:600}nav ol{columns:2;column-gap:2em;padding-left:1.4em}@media (max-width:600px){nav ol{columns:1}}
code{overflow-wrap:anywhere}ul.classes{list-style:none;padding:0;display:grid;gap:10px;
grid-template-columns:repeat(auto-fill,minmax(96px,1fr))}ul.classes li{text-align:center}
ul.classes img{display:block;width:100%;image-rendering:pixelated}
"""


@dataclass
class Section:
    """One numbered section of the page: an anchor, a heading and its HTML."""

    anchor: str
    heading: str
    body: list[str] = field(default_factory=list)


def _figure(path: Path, caption: str, alt: str, width: int | None = None) -> str:
    """An embedded PNG with its caption; `width`: at most this many CSS px (figures drawn larger than useful)."""
    style = f" style='width:{width}px'" if width else ""
    image = f"<img src='{png_data_url(path)}' alt='{escape(alt)}'{style}>"
    return f"<figure>{image}<figcaption>{escape(caption)}</figcaption></figure>"


def _links(paths: Sequence[Path], root: Path, what: str) -> str:
    """Files shown as links relative to the page (deeper layers' figures: there, not inlined)."""
    if not paths:
        return ""
    items = ", ".join(f"<a href='{escape(p.relative_to(root).as_posix())}'>{escape(p.stem)}</a>" for p in paths)
    return f"<p>{escape(what)}: {items}.</p>"


def _ci(metric: dict[str, Any]) -> str:
    low, high = metric["ci95"]
    return f"{100 * metric['value']:.1f} % (95 % CI {100 * low:.1f}–{100 * high:.1f})"


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = "".join("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<div class='scroll'><table><tr>{''.join(f'<th>{escape(h)}</th>' for h in head)}</tr>{cells}</table></div>"


# What an evaluation scored, by the split its metrics.json records (`--split`, `auto` resolved): a model that cannot
# rebuild its validation split is evaluated on `auto` into eval-val, which then holds all photos, not validation ones
SCORED = {"test": "the test split", "val": "the validation split", "all": "all photos of the folder"}
SCORED["unseen"] = "the photos the model did not train on"


def _scored(metrics: dict[str, Any], folder_split: str) -> str:
    """What the evaluation in eval-`folder_split` scored ("the test split"), from its metrics.json; an older one that
    records no split: the folder's."""
    return SCORED.get(metrics.get("split") or folder_split, SCORED["val"])


def _evaluation(sub: Path, split: str) -> Section | None:
    """Metrics, per-class table (display names), confusion matrix, calibration and the error gallery."""
    metrics_path = sub / METRICS_FILE
    if not metrics_path.exists():
        return None
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    scored = _scored(metrics, split).removeprefix("the ")
    section = Section(eval_folder(split), scored[0].upper() + scored[1:])
    section.body.append(f"<p>{escape(metrics.get('title', ''))}: {metrics['n_images']} images.{_trained(metrics)}</p>")
    names = {"accuracy": "accuracy", "top3_accuracy": "top-3 accuracy", "balanced_accuracy": "balanced accuracy"}
    rows = [(label, _ci(metrics[key])) for key, label in (names | {"macro_f1": "macro F1"}).items() if key in metrics]
    section.body.append(_table(["figure", "value (bootstrap CI)"], rows))
    per_class = [
        (display_name(r["class"]), *(shown_figure(r[k]) for k in ("precision", "recall", "f1")), r["support"])
        for r in metrics["per_class"]
    ]
    section.body.append(_table(["class", "precision", "recall", "F1", "photos"], per_class))
    if macro_note(metrics):
        section.body.append(f"<p>{escape(macro_note(metrics))}</p>")
    if metrics.get("open_set"):  # the model's "none of these" operating point on these photos
        rows = report_rows({"classes": len(metrics["per_class"])} | metrics["open_set"])  # an older one: no count
        section.body.append("<h3>None of these</h3>" + _table(["figure", "value"], rows))
    captions = {
        CONFUSION_FIGURE: "Each row is a true class, each column a predicted class; each cell gives the count of "
        "photos and their share of the row, so the diagonal is each class's recall.",
        CALIBRATION_FIGURE: "Is a 0.9 probability right 90 % of the time? Bars on the diagonal mean yes; the lower panel "
        "shows how many photos fall at each confidence.",
        ERRORS_FIGURE: "The mistakes the network was most sure of: worth a look for mislabelled photos and genuinely "
        "ambiguous scenes.",
    }
    drawn = set(captions) | set(written_files(metrics.get("open_set")))  # never an earlier evaluation's figure
    count = (metrics.get("open_set") or {}).get("classes") or len(metrics["per_class"])  # the model's classes
    for name, caption in (captions | open_set_captions(count)).items():
        if name in drawn and (sub / name).exists():
            section.body.append(_figure(sub / name, caption, f"{name[:-4].replace('_', ' ')}, {scored}"))
    return section


def _trained(metrics: dict[str, Any]) -> str:
    """A sentence when the photos scored include some the model trained on (`--split all`, a test/ holding copies of
    training photos), or may and cannot be told apart (the warning `heritage evaluate` prints: a model that does not
    record its training photos, scored on a folder other than test/), else nothing."""
    included = (metrics.get("trained_on_included") or {}).get("count")
    if included:
        return f" {included} of them the model trained on, which may overstate accuracy."
    if metrics.get("trained_on_known") is False and metrics.get("split") != "test":
        return (
            " Warning: the model does not record which images trained it, so trained-on images cannot be told "
            "apart: these figures may include them and overstate accuracy."
        )
    return ""


def _headline(folder: Path) -> tuple[str, str]:
    """(the headline sentence, the folder split it comes from): the test split if evaluated, else eval-val's."""
    for split in ("test", "val"):
        path = folder / eval_folder(split) / METRICS_FILE
        if path.exists():
            m = json.loads(path.read_text(encoding="utf-8"))
            figures = f"Accuracy {_ci(m['accuracy'])}, macro F1 {100 * m['macro_f1']['value']:.1f} %"
            return f"{figures} on {_scored(m, split)} ({m['n_images']} images).{_trained(m)}", split
    return "No evaluation in this folder.", ""


def training_history(checkpoint: Checkpoint, member: int = 0) -> list[dict[str, Any]] | None:
    """Epoch records to plot: the network's own, or for an ensemble its member `member`'s."""
    return checkpoint.info.get("history") or checkpoint.member(member).info.get("history")


def _epochs(count: int) -> str:
    return f"{count} epoch" if count == 1 else f"{count} epochs"


def _epochs_trained(checkpoint: Checkpoint) -> str:
    """How long the network trained; a run stopped before its recipe's last epoch says so, and how to finish it."""
    from heritage_cnn.training.state import has_resume_state

    epochs = checkpoint.info.get("epochs_trained")
    if not epochs:
        return ""
    planned = (checkpoint.info.get("recipe") or {}).get("epochs")
    if not isinstance(planned, int) or epochs >= planned:
        return f", trained {_epochs(epochs)}"
    run = Path(str(checkpoint.path)).parent if checkpoint.path is not None else None
    how = f": resume with heritage train --out {shown(run)} --resume" if run and has_resume_state(run) else ""
    return f", trained {epochs} of {_epochs(planned)} (interrupted{how})"


def _parents(chain: list[dict[str, Any]]) -> list[str]:
    """The models a taught one descends from (its `teach_out.taught_chain`), its parent first, as the page names them
    (`fast.safetensors (generation f581e7f75d386d40)`): the last is the trained one whose epochs it carries."""
    names: list[str] = []
    for record in chain:
        parent = record.get("parent") if isinstance(record.get("parent"), dict) else {}
        path, generation = parent.get("path"), parent.get("generation")
        name = shown(Path(str(path)).name) if path else "a model it does not name"
        names.append(f"{name} (generation {generation})" if generation else name)
    return names


def _taught_text(chain: list[dict[str, Any]]) -> str:
    """What the Training section says of a taught model: its parent, what it added, from how many photos."""
    record, parents = chain[0], _parents(chain)
    added = [display_name(c) for c in record.get("classes_added") or [] if isinstance(c, str)]
    photos = record.get("photos")
    text = f"This model was taught from {parents[0]} by heritage teach"
    text += f", which added {len(added)} class{'es' if len(added) != 1 else ''}: {', '.join(added)}" if added else ""
    text += f" (from {len(photos)} photos)" if isinstance(photos, list) else ""
    text += f"; its chain of {len(parents)} teaches started from {parents[-1]}" if len(parents) > 1 else ""
    return text + ". Teaching fits the network's head again, in seconds, with no epochs."


def _training_section(checkpoint: Checkpoint, curves: Path, history: list | None, member: int) -> Section | None:
    """The curves of the model's training; for a taught model, what it was taught from, and the curves (its info
    carries the history of the trained model it descends from) labelled as that model's, not its own."""
    chain = taught_chain(checkpoint, member)
    section = Section("training", "Training", [f"<p>{escape(_taught_text(chain))}</p>"] if chain else [])
    if curves.exists() and history:  # no history: the curves in the folder are an earlier model's
        epochs = f"loss and accuracy per epoch ({_epochs(len(history))})"
        whose = f"Before teaching, the training of {_parents(chain)[-1]}: {epochs}" if chain else epochs.capitalize()
        caption = (
            f"{whose}. Training figures are on augmented images; validation on the untouched duplicate-aware split."
        )
        section.body.append(_figure(curves, caption, "training curves" + (" before teaching" if chain else "")))
    return section if section.body else None


def _model_facts(checkpoint: Checkpoint) -> str:
    from heritage_cnn.models.network import parameter_count

    mflop = checkpoint.info.get("forward_mflop")
    flops = f", {mflop:.0f} MFLOP per image" if isinstance(mflop, (int, float)) else ""
    chain = taught_chain(checkpoint)
    trained = "" if chain else _epochs_trained(checkpoint)  # a taught model's epochs are its parent's
    if checkpoint.member_count > 1:
        trained = f", an ensemble of {checkpoint.member_count} networks (the mean of their probabilities)"
    trained += f", taught from {_parents(chain)[0]}" if chain else ""
    if checkpoint.views != "none":
        trained += f", test-time views averaged ({TTA_WORDS[checkpoint.views]})"
    name = shown(Path(str(checkpoint.path)).name)
    return f"{name}: {parameter_count(checkpoint.model) / 1e6:.2f} M parameters{flops}{trained}"


def _data_section(folder: Path) -> Section | None:
    check = folder / DATA_CHECK_FILE
    if not check.exists():
        return None
    report = json.loads(check.read_text(encoding="utf-8"))
    splits = report["splits"]
    classes = sorted({c for s in splits.values() for c in s["per_class"]})
    rows = [(display_name(c), *(s["per_class"].get(c, 0) for s in splits.values())) for c in classes]
    ident, near = report["identical_files"], report["near_duplicates"]
    text = (
        f"<p><code>{escape(shown(Path(report['root']).name))}</code> ({escape(report['layout'])} layout): "
        f"{ident['files']} byte-identical files in {ident['groups']} groups, {len(ident['conflicting_labels'])} with "
        f"conflicting labels; {near['pairs']} near-duplicate pairs ({escape(near['method'])}).</p>"
    )
    if "train" not in splits:  # the Kaggle test split downloaded alone: what the page can and cannot show
        text += (
            "<p>The folder holds test/ alone: no training folder to rebuild the model's validation split from, so "
            "there is no validation section; the evaluation and the figures below are of the test photos.</p>"
        )
    return Section("data", "Data", [text, _table(["class", *splits], rows)])


def _inside_section(folder: Path, checkpoint: Checkpoint | None) -> Section | None:
    """First-layer kernels and maps inline; deconvnet sheets with true captions; deeper kernels linked."""
    from heritage_cnn.inside import deconvnet
    from heritage_cnn.inside.visualize import CONTACT_SHEET_FILE, FIRST_KERNELS_FILE

    inside = folder / INSIDE_FOLDER
    if not inside.is_dir():
        return None
    section = Section(INSIDE_FOLDER, "Inside the network")
    for path in sorted(inside.glob("feature_maps*.png"))[:1]:
        caption = "What the first layer responds to in one photo: each tile is one filter's activation map."
        section.body.append(_figure(path, caption, "first-layer activation maps"))
    if (inside / FIRST_KERNELS_FILE).exists():
        caption = "The first layer's learned filters as colour tiles (grey is zero): mostly edges and colour blobs."
        section.body.append(_figure(inside / FIRST_KERNELS_FILE, caption, "first-layer kernels", width=480))
    deeper = [p for p in sorted(inside.glob("kernels_*.png")) if p.name != FIRST_KERNELS_FILE]
    section.body.append(_links(deeper, folder, "Deeper layers' strongest kernel slices (files beside this page)"))
    layers = deconvnet.deconv_layers(checkpoint.model) if checkpoint is not None else []
    for path in sorted(inside.glob("deconv_*.png")):
        layer = next((name for name in layers if path.stem == "deconv_" + name.replace(".", "_")), None)
        if layer is None:
            continue
        top, left, bottom, right = deconvnet.receptive_field(checkpoint.model, layer, 0, 0)
        caption = (
            f"Layer {layer} (layer {layers.index(layer) + 1} of {len(layers)}), deconvnet. For each channel shown "
            "(titled with its number and its strongest activation): its nine strongest activations over the sampled "
            "photos, each cropped to what the unit sees (its receptive field, "
            f"{bottom - top} x {right - left} px), shown as pairs: on the left of each pair the photo patch, on "
            "the right the deconvnet projection of that activation back to pixels (grey is zero, clipped at the "
            "99th percentile)."
        )
        section.body.append(_figure(path, caption, f"deconvnet top-9 sheet, {layer}"))
    others = sorted(inside.glob("deconv_*projections.png")) + sorted(inside.glob(CONTACT_SHEET_FILE))
    section.body.append(_links(others, folder, "Projections without the photos"))
    for path in sorted(inside.glob("explain_*.png")):
        caption = "Attribution maps for one photo: which pixels drove the prediction, by several methods."
        section.body.append(_figure(path, caption, "attribution maps"))
    record = inside / INSIDE_SKIPPED_FILE  # the photos the step could not read
    skipped = json.loads(record.read_text(encoding="utf-8"))["skipped"] if record.exists() else []
    if skipped:
        listed = "; ".join(f"{shown(path)}: {why}" for path, why in skipped[:10])
        more = (
            f" and {len(skipped) - 10} more (all in {INSIDE_FOLDER}/{INSIDE_SKIPPED_FILE})" if len(skipped) > 10 else ""
        )
        section.body.append(f"<p>{len(skipped)} unreadable file(s) skipped: {escape(listed)}{more}.</p>")
    return section


def _class_images(sub: Path, checkpoint: Checkpoint) -> Section | None:
    """One grid in class order: each class's drawn image with its display name (HTML text: legible at any width)."""
    manifest = sub / MANIFEST
    if not manifest.exists():
        return None
    records = {r["class"]: r for r in json.loads(manifest.read_text(encoding="utf-8"))["images"]}
    tiles = [
        f"<li><img src='{png_data_url(sub / records[c]['file'])}' alt='drawn for {escape(display_name(c))}'>"
        f"{escape(display_name(c))}<br><small>p = {records[c]['probability']:.2f}</small></li>"
        for c in checkpoint.classes
        if c in records and (sub / records[c]["file"]).exists()
    ]
    grid = sub / GRID
    text = (
        "<p>One image per class, drawn by the network itself (gradient ascent from noise, no photo), in class "
        "order; p is the probability the network gives the class it was drawn for.</p>"
    )
    link = _links([grid], sub.parent, "The same images as one PNG") if grid.exists() else ""
    return Section("class-images", "Class images", [text, f"<ul class='classes'>{''.join(tiles)}</ul>", link])


def _element_map(sub: Path) -> Section:
    """The element maps of a few mosaics of validation photos (`apps.steps.element_map_step`), or one line saying
    why there are none."""
    section = Section("element-map", "What is where")
    record = sub / ELEMENT_MAP_FILE
    if not record.exists():
        reason = "this folder holds no element maps (heritage report and heritage demo draw them from the data)"
    else:
        found = json.loads(record.read_text(encoding="utf-8"))
        reason = found.get("skipped")
    if reason:
        section.body.append(f"<p>Skipped: {escape(reason)}.</p>")
        return section
    mosaics = found["mosaics"]
    px = found["cell_px"]
    section.body.append(
        f"<p>A survey photo holds several elements; <code>heritage map</code> lists them, each with a box, from the "
        f"network scanned over tiles at several scales (docs/element_map.md). Here: {len(mosaics)} mosaics of 2 x 2 "
        f"{escape(found['photos'])}, drawn with seed {found['seed']}, each cell one 64 px photo enlarged to {px} px, "
        f"so the element in each quarter is known. Mapping and drawing them took {found['seconds']:.0f} s.</p>"
    )
    for i, mosaic in enumerate(mosaics, 1):
        listed = ", ".join(f"{e['name']} ({e['confidence']:.2f})" for e in mosaic["listed"]) or "nothing"
        caption = (
            f"Mosaic {i}: {', '.join(mosaic['cells'])} (left to right, top to bottom). Listed: {listed}. Each element "
            "found is outlined and named with its confidence; below, each class's map from 0 to 1."
        )
        section.body.append(_figure(sub / mosaic["figure"], caption, f"element map of mosaic {i}"))
    return section


def _recorded_data(folder: Path) -> str | None:
    """The data folder an evaluation in `folder` recorded (metrics.json), else the data check's root."""
    for split in ("val", "test"):
        path = folder / eval_folder(split) / METRICS_FILE
        if path.exists():
            return json.loads(path.read_text(encoding="utf-8")).get("data")
    check = folder / DATA_CHECK_FILE
    return json.loads(check.read_text(encoding="utf-8"))["root"] if check.exists() else None


def build_html_report(
    folder: str | os.PathLike,
    out_file: str | os.PathLike,
    checkpoint: Checkpoint,
    title: str | None = None,
    data: str | os.PathLike | None = None,
    member: int = 0,
) -> Path:
    """One self-contained HTML page (images embedded) from a demo/report folder's figures and metrics.

    `checkpoint`: the model the figures are of, for the header, the training curves (drawn here from its
    history when the folder has none: `demo --no-train` too) and the deconvnet captions. `data`: the data
    folder (default: the one the folder's evaluation recorded); the page names it, and shows its path only
    when relative (an absolute path says little to a reader)."""
    from heritage_cnn import __version__
    from heritage_cnn.training.curves import plot_training_curves
    from heritage_cnn.training.state import CURVES_FILE

    folder = Path(folder)
    data = data if data is not None else _recorded_data(folder)
    curves = folder / TRAIN_FOLDER / CURVES_FILE
    history = training_history(checkpoint, member)
    if not curves.exists() and history:
        plot_training_curves(history, curves)  # saved atomically
    headline, _ = _headline(folder)
    data_name = shown(Path(str(data)).name) if data else "?"  # file names as text: `names.shown`
    title = title or f"heritage-cnn report: {shown(Path(str(checkpoint.path)).name)} on {data_name}"
    facts = [
        ("model", _model_facts(checkpoint)),
        ("data", f"{data_name} ({shown(data)})" if data and not Path(str(data)).is_absolute() else data_name),
        ("made", f"{datetime.now().astimezone():%Y-%m-%d %H:%M %Z} with heritage-cnn {__version__}"),
    ]
    sections = [_data_section(folder), _training_section(checkpoint, curves, history, member)]
    sections += [_evaluation(folder / eval_folder(split), split) for split in ("val", "test")]
    sections.append(_inside_section(folder, checkpoint.member(member)))
    sections.append(_class_images(folder / CLASS_IMAGES_FOLDER, checkpoint))
    sections.append(_element_map(folder / ELEMENT_MAP_FOLDER))
    present = [s for s in sections if s is not None]
    count = checkpoint.member_count  # the sections of one network of an ensemble say which
    for section in (s for s in present if count > 1 and s.anchor in ("training", INSIDE_FOLDER, "class-images")):
        section.body.insert(
            0,
            f"<p>This section shows one network of the ensemble: member {member} of {count} (numbered from 0; heritage "
            f"report --member picks another). The evaluations are of all {count} together.</p>",
        )
    toc = "".join(f"<li><a href='#{s.anchor}'>{escape(s.heading)}</a></li>" for s in present)
    header = (
        f"<header><h1>{escape(title)}</h1><p class='headline'>{escape(headline)}</p><dl class='facts'>"
        + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in facts)
        + f"</dl></header><nav aria-label='contents'><h2 id='contents'>Contents</h2><ol>{toc}</ol></nav>"
    )
    body = "".join(f"<section id='{s.anchor}'><h2>{escape(s.heading)}</h2>{''.join(s.body)}</section>" for s in present)
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>{header}<main>{body}</main></body></html>\n"
    )
    out_file = Path(out_file)
    atomic_write_text(out_file, page)
    return out_file


__all__ = ["build_html_report", "training_history"]
