"""The figure steps of the report and the demo: a look inside the network and one drawn image per class.

Each step takes the loaded model and the data folder's layout, as `heritage_cnn.apps.pipeline` hands them on,
and writes its figures under the output folder, where `heritage_cnn.apps.report` finds them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from heritage_cnn.base.io import read_json
from heritage_cnn.base.names import shown
from heritage_cnn.data.folders import Layout, list_images, split_folder
from heritage_cnn.models.checkpoint import Checkpoint

Log = Callable[[str], None]


def validation_photo(checkpoint: Checkpoint, layout: Layout) -> str:
    """A photo of the model's validation split (from its run's split.json), else the first training photo."""
    if checkpoint.path is not None:
        split = Path(checkpoint.path).parent / "split.json"
        if split.exists():
            paths = read_json(split).get("val_paths") or []
            if paths and Path(paths[0]).exists():
                return paths[0]
    return str(list_images(split_folder(layout, "train"), checkpoint.classes).files[0])


def inside_step(
    checkpoint: Checkpoint, data: str, layout: Layout, out: Path, log: Log = print, member: int = 0
) -> None:
    """Look inside network `member` of the model: first-layer feature maps, kernels, a deconvnet sheet, an explanation."""
    from heritage_cnn.inside import deconvnet, explain, visualize

    inside = Path(out) / "inside"
    network = checkpoint.member(member)
    photo = validation_photo(checkpoint, layout)
    log(f"\n== look inside the network -> {shown(inside)}  (photo: {shown(photo)})")
    layers = deconvnet.deconv_layers(network.model)
    visualize.write_feature_maps(network, photo, inside, [layers[0]])
    visualize.write_kernels(network, inside)
    images, total = visualize.sample_images(data, network.classes, limit=2000)
    visualize.write_deconv(network, images, [layers[len(layers) // 2]], inside, top_channels=6, source=f" (of {total})")
    explain.write_explanation(network, photo, inside)


def class_images_step(
    checkpoint: Checkpoint, data: str, layout: Layout, out: Path, log: Log = print, member: int = 0
) -> None:
    """One generated image per class by network `member`, fewer steps than `heritage generate` (well under a
    minute on 2 cores). The shipped models' images come with the package (drawn with the full 160 steps by the
    `fast` network and by the ensemble's member 0): copied, not redrawn."""
    from heritage_cnn.base.io import atomic_write_bytes
    from heritage_cnn.inside import classimages
    from heritage_cnn.inside.synthesis import draw, files

    log("\n== class images (gradient ascent, heritage generate)")
    network = checkpoint.member(member)
    packaged = classimages.packaged_for(classimages.model_key(network))
    if packaged is not None:
        for path in sorted(packaged.iterdir()):
            atomic_write_bytes(Path(out) / "class_images" / path.name, path.read_bytes())
        log(f"{Path(out) / 'class_images'}: the shipped model's, from the package ({packaged})")
        return
    settings = replace(draw.Settings(), steps=96)
    generated = draw.draw_classes(network, range(len(network.classes)), 1, 64, settings, seed=0)
    grid = files.write_generated(Path(out) / "class_images", generated, network, seed=0, n=1)
    mean = sum(generated.probabilities) / len(generated.probabilities)
    log(f"{grid} ({generated.seconds:.0f} s, mean target probability {mean:.3f})")


FIGURE_STEPS = (inside_step, class_images_step)


__all__ = ["FIGURE_STEPS", "class_images_step", "inside_step", "validation_photo"]
