"""The figure steps of the report and the demo: a look inside the network, one drawn image per class, and what is
where in mosaics of validation photos (the element map).

Each step takes the loaded model and the data folder's layout, as `heritage_cnn.apps.pipeline` hands them on,
and writes its figures under the output folder, where `heritage_cnn.apps.report` finds them; `progress` says
whether a step may show progress bars (off under `-q`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from heritage_cnn.base.io import atomic_write_json, read_json
from heritage_cnn.base.names import shown
from heritage_cnn.data.folders import DatasetError, Layout, list_images
from heritage_cnn.models.checkpoint import Checkpoint

Log = Callable[[str], None]

# A report folder (`heritage report`, `heritage demo`), each entry named once: the steps and the pipeline write
# them, `heritage_cnn.apps.report` reads them.
REPORT_PAGE = "index.html"
TRAIN_FOLDER = "train"  # the training curves, drawn from the model's history
SHIPPED_FOLDER = "shipped"  # the demo: the shipped model's evaluation beside the network it trained
INSIDE_FOLDER, CLASS_IMAGES_FOLDER, ELEMENT_MAP_FOLDER = "inside", "class_images", "element_map"  # the figure steps
INSIDE_FIGURES = ("feature_maps_*.png", "kernels_*.png", "deconv_*.png", "explain_*.png")  # what inside_step draws
INSIDE_SKIPPED_FILE = "skipped.json"  # in INSIDE_FOLDER: the photos the inside step could not read, and why


def eval_folder(split: str) -> str:
    """The evaluation of one split ("val" or "test")."""
    return f"eval-{split}"


def demo_run_folder(recipe: str) -> str:
    """The run folder the demo trains `recipe` into, resumed by the next demo."""
    return f"train-{recipe}"


def photo_folder(layout: Layout) -> Path:
    """The class-folder root the figure steps draw photos from: the training folder, or test/ in a layout that holds
    test/ alone (the Kaggle test split downloaded by itself, a layout every command takes)."""
    return layout.train if layout.train.is_dir() or layout.test is None else layout.test


def validation_photo(checkpoint: Checkpoint, layout: Layout) -> tuple[str, list[tuple[str, str]]]:
    """A readable photo of the model's validation split (from its run's split.json), else the first readable
    photo of the folder the figures draw on (`photo_folder`); and the unreadable ones tried before it, (path, why)
    each."""
    from heritage_cnn.data.decode import try_decode

    def candidates():
        if checkpoint.path is not None:
            from heritage_cnn.training.state import SPLIT_FILE

            split = Path(checkpoint.path).parent / SPLIT_FILE
            if split.exists():  # photos moved since the training are not the data's to list
                yield from (p for p in read_json(split).get("val_paths") or [] if Path(p).exists())
        yield from map(str, list_images(photo_folder(layout), checkpoint.classes).files)

    skipped = []
    for path in candidates():
        why = try_decode(path)  # as the figures decode it (`visualize.load_photo`)
        if not isinstance(why, str):
            return path, skipped
        skipped.append((path, why))
    raise DatasetError(f"{photo_folder(layout)}: no readable photo to look inside the network with")


def inside_step(
    checkpoint: Checkpoint,
    data: str,
    layout: Layout,
    out: Path,
    log: Log = print,
    member: int = 0,
    progress: bool = False,
) -> None:
    """Look inside network `member` of the model: first-layer feature maps, kernels, a deconvnet sheet, an
    explanation. Unreadable photos are skipped, each logged."""
    from heritage_cnn.inside import deconvnet, explain, visualize

    inside = Path(out) / INSIDE_FOLDER
    network = checkpoint.member(member)
    photo, skipped = validation_photo(checkpoint, layout)
    for stale in [path for pattern in INSIDE_FIGURES for path in inside.glob(pattern)]:  # an earlier run's, of
        stale.unlink()  # another photo or layer: the report shows every figure of these names as this model's
    log(f"\n== look inside the network -> {shown(inside)}  (photo: {shown(photo)})")
    layers = deconvnet.deconv_layers(network.model)
    visualize.write_feature_maps(network, photo, inside, [layers[0]])
    visualize.write_kernels(network, inside)
    sample = visualize.sample_images(photo_folder(layout), network.classes, limit=2000)
    middle = [layers[len(layers) // 2]]
    source = f" (of {sample.total})"
    visualize.write_deconv(network, sample.images, middle, inside, top_channels=6, source=source, progress=progress)
    explain.write_explanation(network, photo, inside)
    skipped += [item for item in sample.skipped if item not in skipped]
    for path, why in skipped:
        log(f"skipped {shown(path)}: {why}")
    if skipped:
        log(f"{len(skipped)} unreadable file(s) skipped")
    atomic_write_json(inside / INSIDE_SKIPPED_FILE, {"skipped": skipped})  # the report lists them; empty: none


def class_images_step(
    checkpoint: Checkpoint,
    data: str,
    layout: Layout,
    out: Path,
    log: Log = print,
    member: int = 0,
    progress: bool = False,
) -> None:
    """One generated image per class by network `member`, fewer steps than `heritage generate` (well under a
    minute on 2 cores). The shipped models' images come with the package (drawn with the full 160 steps by the
    `fast` network and by the ensemble's member 0): copied, not redrawn."""
    from heritage_cnn.base.io import atomic_write_bytes
    from heritage_cnn.inside import classimages
    from heritage_cnn.inside.synthesis.files import GRID, MANIFEST

    log("\n== class images (gradient ascent, heritage generate)")
    network = checkpoint.member(member)
    packaged = classimages.packaged_for(classimages.model_key(network))
    if packaged is not None:
        for path in sorted(packaged.iterdir()):
            atomic_write_bytes(Path(out) / CLASS_IMAGES_FOLDER / path.name, path.read_bytes())
        log(f"{Path(out) / 'class_images'}: the shipped model's, from the package ({packaged})")
        return
    folder = classimages.draw_into(network, Path(out) / CLASS_IMAGES_FOLDER, steps=96, progress=progress)
    drawn = read_json(folder / MANIFEST)
    log(f"{folder / GRID} ({drawn['seconds']:.0f} s, mean target probability {drawn['mean_probability']:.3f})")


# The report's element maps: two 2 x 2 mosaics (seed 0) of photos the model did not train on, each cell one 64 px
# photo enlarged to 500 px, as the benchmark's mosaics (docs/element_map.md) at half their size; the map reduces any
# of them to 256 px a side, so a larger cell would only cost time. A few seconds on two cores.
MAP_MOSAICS, MAP_CELL_PX, MAP_SEED, MAP_PER_CLASS = 2, 500, 0, 2
ELEMENT_MAP_FILE = "element_map.json"  # what `element_map_step` drew, or why it skipped: the report reads it


def unseen_photos(checkpoint: Checkpoint, layout: Layout, per_class: int = MAP_PER_CLASS, seed: int = MAP_SEED):
    """(photos (N, 64, 64, 3) uint8, labels, what they are) for up to `per_class` photos of each class of the
    folder the figures draw on (`photo_folder`: the training folder, or test/ alone) that the model did not train on
    (its `trained_on` record: no photo within that pHash distance of a training photo), tried in a seeded order and
    decoded a batch at a time until every class has its share; or the reason there are none (a str)."""
    import torch

    from heritage_cnn.data.decode import try_decode
    from heritage_cnn.data.split import perceptual_hashes
    from heritage_cnn.inference.evaluate import near_any, trained_on

    record = trained_on(checkpoint)
    if record is None:
        return "the model does not record the photos it trained on, so no photo can be shown as one it did not see"
    try:
        listed = list_images(photo_folder(layout), checkpoint.classes)
    except DatasetError as error:
        return f"no photos to draw from ({error})"
    order = np.random.default_rng(seed).permutation(len(listed.files))
    kept: list[list[np.ndarray]] = [[] for _ in checkpoint.classes]
    for start in range(0, len(order), 64):
        batch = [
            (listed.files[i], listed.labels[i])
            for i in order[start : start + 64]
            if len(kept[listed.labels[i]]) < per_class
        ]
        decoded = [
            (pixels, label)
            for path, label in batch
            if not isinstance(pixels := try_decode(path, checkpoint.image_size), str)
        ]
        if decoded:
            tensor = torch.from_numpy(np.stack([p for p, _ in decoded])).permute(0, 3, 1, 2)
            seen = near_any(perceptual_hashes(tensor), *record)
            for (pixels, label), trained in zip(decoded, seen, strict=True):
                if not trained and len(kept[label]) < per_class:
                    kept[label].append(pixels)
        if all(len(k) == per_class for k in kept):
            break
    labels = np.array([c for c, photos in enumerate(kept) for _ in photos], dtype=np.int64)
    if len(set(labels.tolist())) < 4:
        return f"fewer than 4 classes of {shown(listed.root)} have a photo the model did not train on"
    photos = np.stack([p for photos in kept for p in photos])
    return photos, labels, f"photos of {shown(listed.root)} the model did not train on (pHash distance > {record[1]})"


def element_map_step(
    checkpoint: Checkpoint,
    data: str,
    layout: Layout,
    out: Path,
    log: Log = print,
    member: int = 0,
    progress: bool = False,
) -> None:
    """What is where: the element map (`heritage map`, the whole model) of MAP_MOSAICS 2 x 2 mosaics of photos the
    model did not train on, drawn as `heritage map --out` draws it; `element_map/element_map.json` says what each
    mosaic holds and what was listed, how long it took, or why it was skipped."""
    from heritage_cnn.data.mosaics import mosaic_specs, photo_mosaic
    from heritage_cnn.inference.classifier import Classifier
    from heritage_cnn.inference.element_figure import draw_element_map
    from heritage_cnn.inference.element_map import map_elements

    folder = Path(out) / ELEMENT_MAP_FOLDER
    log(
        f"\n== what is where: the element map of {MAP_MOSAICS} mosaics of photos it did not train on -> {shown(folder)}"
    )
    started = time.perf_counter()
    found = unseen_photos(checkpoint, layout)
    if isinstance(found, str):
        log(f"skipped: {found}")
        atomic_write_json(folder / ELEMENT_MAP_FILE, {"skipped": found})
        return
    photos, labels, described = found
    classifier = Classifier(checkpoint)
    names = checkpoint.display_names
    mosaics = []
    specs = mosaic_specs(labels, 0, MAP_MOSAICS, MAP_SEED, kinds=("2x2",), negative_share=0)
    for i, spec in enumerate(specs, 1):
        emap = map_elements(classifier, photo_mosaic(spec, photos, None, MAP_CELL_PX))
        figure = draw_element_map(emap, folder / f"mosaic_{i}.map.png")
        cells = [names[c] for _, _, c in spec["cells"]]
        listed = [{"name": e.name, "confidence": e.confidence} for e in emap.elements]
        mosaics.append({"figure": figure.name, "cells": cells, "listed": listed, "size": [emap.width, emap.height]})
    seconds = time.perf_counter() - started
    record = {"photos": described, "seed": MAP_SEED, "cell_px": MAP_CELL_PX, "mosaics": mosaics, "seconds": seconds}
    atomic_write_json(folder / ELEMENT_MAP_FILE, record)
    log(f"{len(mosaics)} mosaics mapped and drawn in {seconds:.1f} s")


FIGURE_STEPS = (inside_step, class_images_step, element_map_step)


__all__ = [
    "CLASS_IMAGES_FOLDER",
    "ELEMENT_MAP_FILE",
    "ELEMENT_MAP_FOLDER",
    "FIGURE_STEPS",
    "INSIDE_FIGURES",
    "INSIDE_FOLDER",
    "INSIDE_SKIPPED_FILE",
    "MAP_CELL_PX",
    "MAP_MOSAICS",
    "MAP_PER_CLASS",
    "MAP_SEED",
    "REPORT_PAGE",
    "SHIPPED_FOLDER",
    "TRAIN_FOLDER",
    "class_images_step",
    "demo_run_folder",
    "element_map_step",
    "eval_folder",
    "inside_step",
    "photo_folder",
    "unseen_photos",
    "validation_photo",
]
