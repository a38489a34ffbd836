"""Use a trained network on real photos: `Classifier` for Python, and the one prediction schema.

Photos of any size, aspect ratio and common format are decoded with the same policy as in training
and evaluation (`decode.read_image`: EXIF orientation honoured, any mode to RGB, shorter side to 64 px,
centre crop), then classified in batches. A `Prediction` has one shape everywhere: the Python API, the
CLI's JSON (`Prediction.to_dict`), the HTTP API and, flattened to `top1_label, top1_name, ...` columns,
the CSV output and `sort`'s manifest. Sorting photos into class folders lives in `sort.py`.

"None of these": when the model carries an operating point (`heritage_cnn.models.openset_point`), each prediction also
says whether the photo is `known` (one of the ten: its open-set score at or above the threshold, and its pixels not
noise) and gives the score and the threshold, and for a photo that is none of them why (`none_reason`: `noise` or
`score`, `openset_point.NONE_REASONS`); the score comes from the same forward pass as the probabilities. `label` is always the
best of the ten, so for a photo that is none of them it is the closest class. A model without the record gives
`known = None`: it cannot reject, and every photo is filed into a class.

Elements: asked for (`heritage predict --elements`, `element_map.with_elements`), a prediction also lists the elements
the element map finds in the whole photo; JSON gains `elements` (the schema of `heritage map`'s), CSV one
`elements` column (`elements_cell`). Not asked, neither appears: one schema, with one optional field.
"""

from __future__ import annotations

import csv
import io
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from heritage_cnn.base.devices import mixed_precision
from heritage_cnn.base.names import cell_items, cell_text, json_text, shown
from heritage_cnn.data.decode import ImageError, decode_image, os_reason, try_decode
from heritage_cnn.data.folders import IMAGE_EXTENSIONS
from heritage_cnn.data.resize import fit_square, upright_rgb
from heritage_cnn.data.walk import walk_files
from heritage_cnn.models.checkpoint import Checkpoint, load_checkpoint
from heritage_cnn.models.network import fold_batch_norm
from heritage_cnn.models.openset import PENULTIMATE, forward_with_features
from heritage_cnn.models.openset_point import NOISE, with_override
from heritage_cnn.models.views import tta_views

ImageLike = str | os.PathLike | bytes | Image.Image | np.ndarray | torch.Tensor
_ONE_PHOTO = (str, os.PathLike, bytes, bytearray, memoryview, Image.Image)  # never iterated as several
_ENCODED = (str, os.PathLike, bytes, bytearray, memoryview)  # decoded by `decode.decode_image`
FLOAT_TOLERANCE = 1 / 255  # how far outside [0, 1] a float pixel may lie (one uint8 level): rounding, not a scale
NONE_OF_THESE = "none of these"  # how the table shows a photo that is none of the ten classes


@dataclass(frozen=True)
class TopClass:
    """One of the best classes for a photo."""

    label: str  # class folder name, e.g. dome(inner)
    name: str  # readable name, e.g. dome (inner)
    probability: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "name": self.name, "probability": self.probability}


@dataclass(frozen=True)
class Prediction:
    """The network's answer for one photo; `to_dict()` is the schema of the CLI's JSON and the HTTP API."""

    label: str  # class folder name, e.g. dome(inner)
    name: str  # readable name, e.g. dome (inner)
    probability: float
    top: tuple[TopClass, ...]  # best first; top[0] is the answer itself
    path: str | None = None
    known: bool | None = None  # one of the ten (True) or none of them (False); None: the model cannot tell
    open_set_score: float | None = None  # higher: more like the ten (heritage_cnn.models.openset)
    none_threshold: float | None = None  # below it, "none of these"
    none_reason: str | None = None  # why known is False: "noise" (the pixels) or "score"; None otherwise
    # The elements of the whole photo (`element_map.Element`, most confident first: not imported, as element_map
    # builds on this module); None: not asked for, and then absent from every output.
    elements: tuple[Any, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        row = {
            "path": self.path,
            "label": self.label,
            "name": self.name,
            "probability": self.probability,
            "known": self.known,
            "open_set_score": self.open_set_score,
            "none_threshold": self.none_threshold,
            "none_reason": self.none_reason,
            "top": [t.to_dict() for t in self.top],
        }
        if self.elements is not None:
            row["elements"] = [e.to_dict() for e in self.elements]
        return row

    def flat(self, k: int | None = None) -> dict[str, Any]:
        """One CSV row: the answer, `known` (true, false or empty), the score and threshold, then `top1_label,
        top1_name, top1_probability, top2_...` (k of them), and `elements` when they were asked for."""
        row: dict[str, Any] = {"path": self.path, "label": self.label, "name": self.name}
        row["probability"] = f"{self.probability:.4f}"
        row["known"] = "" if self.known is None else str(self.known).lower()
        for key in ("open_set_score", "none_threshold"):
            value = getattr(self, key)
            row[key] = "" if value is None else f"{value:.7g}"
        row["none_reason"] = self.none_reason or ""
        for i, t in enumerate(self.top[:k], start=1):
            row |= {f"top{i}_label": t.label, f"top{i}_name": t.name, f"top{i}_probability": f"{t.probability:.4f}"}
        if self.elements is not None:
            row["elements"] = elements_cell(self.elements)
        return row


def flat_fields(k: int, elements: bool = False) -> list[str]:
    """The CSV columns of `Prediction.flat` for `k` top classes (and the elements, when asked for)."""
    fields = ["path", "label", "name", "probability", "known", "open_set_score", "none_threshold", "none_reason"]
    for i in range(1, k + 1):
        fields += [f"top{i}_label", f"top{i}_name", f"top{i}_probability"]
    return [*fields, "elements"] if elements else fields


def elements_cell(elements: Iterable[Any]) -> str:
    """The elements in one CSV cell: `label:confidence:left,top,right,bottom` each, most confident first, joined by
    ";" (`bell_tower:0.9100:120,0,980,760;gargoyle:0.5512:40,300,260,610`); empty when none was found.

    Compact text rather than JSON in a cell: a spreadsheet shows it on one readable line, and `parse_elements_cell`
    (or splitting on ";" and ":", then percent-decoding the label) reads it back. The label, not the display
    name, as in `top1_label`: it is the class's key and `sort`'s folder name. The JSON output has every field."""
    return cell_text([[e.label, f"{e.confidence:.4f}", ",".join(map(str, e.box))] for e in elements])


def parse_elements_cell(text: str) -> list[tuple[str, float, tuple[int, int, int, int]]]:
    """`elements_cell`'s inverse: (label, confidence, box) per element; ValueError for a cell it did not write."""
    parsed = []
    for item in cell_items(text):
        label, confidence, box = item  # three fields, else ValueError
        left, top, right, bottom = (int(v) for v in box.split(","))
        parsed.append((label, float(confidence), (left, top, right, bottom)))
    return parsed


def _array_error(shape: Sequence[int], dtype: Any) -> ImageError:
    return ImageError(
        f"array input must be HxWx3 uint8 (or 3xHxW; a batch NxHxWx3 or Nx3xHxW), got shape {tuple(shape)} dtype {dtype}"
    )


def _pixels(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """One photo's pixels (H, W, 3) uint8 from an array or tensor, channels last (HxWx3) or first (3xHxW); channels
    last when both could be."""
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8:
            raise _array_error(image.shape, image.dtype)
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] != 3 and array.shape[0] == 3:
        array = array.transpose(1, 2, 0)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise _array_error(array.shape, array.dtype)
    return np.ascontiguousarray(array)


def photo_items(images: ImageLike | Iterable[ImageLike]) -> list[ImageLike]:
    """What `Classifier.predict` was given, as one list of photos, read once (a generator is consumed here): a path,
    encoded bytes or a PIL image is one photo; an array or tensor of 4 dimensions is a batch of photos, of 3 one
    photo, and a 1-d array of strings or objects (`df.path.values`) a list of photos; anything else is iterated."""
    if isinstance(images, _ONE_PHOTO):
        return [images]
    if isinstance(images, (np.ndarray, torch.Tensor)):
        if isinstance(images, np.ndarray) and images.ndim == 1 and images.dtype.kind in "OUS":
            return list(images)
        return list(images) if images.ndim == 4 else [images]
    return list(images)


def check_top(top: int) -> None:
    """`top` is how many classes a prediction lists: a whole number, at least 1 (more than the model has: all)."""
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise ValueError(f"top must be a whole number of classes, at least 1, got {top!r}")


class Classifier:
    """A trained network (or ensemble) ready for photos: `Classifier.load(path).predict(images)`."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        batch_size: int = 64,
        tta: str | None = None,
        bf16: bool = True,
        none_threshold: float | None = None,
    ) -> None:
        # "flip" or "multi" average the logits of 2 or 7 views: more accurate, 2x or 7x slower. None: the views
        # the model was shipped with (`Checkpoint.views`, "none" for a single network).
        self.tta = checkpoint.views if tta is None else tta
        tta_views(torch.empty(0, 3, 1, 1), self.tta)  # an unknown mode fails here, not at the first photo
        self.checkpoint = checkpoint
        # Batch norm folded into the convs: the same outputs (to ~1e-6) with one pass less per layer.
        # An ensemble has every member folded.
        self.model = fold_batch_norm(checkpoint.model).eval().to(memory_format=torch.channels_last)
        self.device = next(self.model.parameters()).device
        # bf16 autocast on CPUs that run it natively (mixed_precision): faster (`make bench`), same top class on
        # test batches; float32 elsewhere (GPUs too). Outputs are float32 either way.
        self.bf16 = self.device.type == "cpu" and mixed_precision(self.device, bf16)[0]
        self.batch_size = batch_size
        # "none of these": the model's operating point, its threshold replaced by `none_threshold` if given
        self.open_set = with_override(checkpoint.open_set, none_threshold, checkpoint.path)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike | None = None,
        device: str = "cpu",
        tta: str | None = None,
        bf16: bool = True,
        none_threshold: float | None = None,
    ) -> Classifier:
        """Load a checkpoint; without a path, the shipped `default` ensemble (`"fast"`: one distilled network)."""
        return cls(load_checkpoint(path, device=device), tta=tta, bf16=bf16, none_threshold=none_threshold)

    @property
    def classes(self) -> list[str]:
        return self.checkpoint.classes

    def _to_array(self, image: ImageLike) -> np.ndarray:
        size = self.checkpoint.image_size
        if isinstance(image, _ENCODED):
            return decode_image(image, size)
        if isinstance(image, Image.Image):
            return np.asarray(fit_square(upright_rgb(image), size), dtype=np.uint8)
        return np.asarray(fit_square(Image.fromarray(_pixels(image)), size), dtype=np.uint8)

    def check_batch(self, images: torch.Tensor) -> None:
        """Refuse what `scored` cannot read as photos: not (N, 3, S, S) at the network's size S, or float pixels
        outside [0, 1] (photos at the 0-255 scale must be uint8)."""
        size = self.checkpoint.image_size
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else None
        if shape is None or len(shape) != 4 or shape[1] != 3:
            raise ValueError(f"images must be a (N, 3, {size}, {size}) tensor, got {shape or type(images).__name__}")
        if shape[2:] != (size, size):
            raise ValueError(
                f"images are {shape[3]}x{shape[2]} px, the model's input is {size}x{size} px: resize them (predict does)"
            )
        if images.dtype == torch.uint8 or not len(images):
            return
        if not images.is_floating_point():
            raise ValueError(f"images must be uint8 (0-255) or float in [0, 1], got dtype {images.dtype}")
        low, high = (float(v) for v in images.aminmax())
        if not (low >= -FLOAT_TOLERANCE and high <= 1 + FLOAT_TOLERANCE):  # NaN fails too
            raise ValueError(
                f"float images must lie in [0, 1] (uint8 for 0-255), got values from {low:.4g} to {high:.4g}"
            )

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities for a batch (N, 3, H, W) already at the network's size: uint8 (0-255) or float in
        [0, 1]; ValueError for another size, or float pixels outside [0, 1]."""
        return self.scored(images, with_score=False)[0]

    @torch.no_grad()
    def scored(self, images: torch.Tensor, with_score: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Class probabilities (N, C) and, when the model has an operating point, the open-set score (N,) of a
        batch as `probabilities` takes it, both from one forward pass per view (the score: the mean over the views);
        CPU tensors whatever the model's device."""
        self.check_batch(images)
        point = self.open_set if with_score else None
        outputs, scores = [], []
        for start in range(0, len(images), self.batch_size):
            x = self.checkpoint.normalise(images[start : start + self.batch_size].to(self.device))
            views = tta_views(x, self.tta)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                if point is None:
                    logits = [self.model(view).float() for view in views]
                else:
                    logits, score = zip(*(point.forward(self.model, view) for view in views), strict=True)
                    scores.append((sum(score) / len(views)).float().cpu())
            outputs.append(torch.softmax(sum(logits) / len(views), 1).cpu())  # on the CPU, as the scores
        probabilities = torch.cat(outputs) if outputs else torch.empty(0, len(self.classes))
        if point is None:
            return probabilities, None
        return probabilities, torch.cat(scores) if scores else torch.empty(0)

    def _predictions(self, arrays: Sequence[np.ndarray], paths: Sequence[str | None], top: int) -> list[Prediction]:
        if not arrays:
            return []
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        probs, scores = self.scored(batch)
        k = min(top, len(self.classes))  # more than the model has: all of them
        values, indices = probs.topk(k, dim=1)
        names, labels = self.checkpoint.display_names, self.classes
        point = self.open_set
        threshold = point.threshold if point is not None else None
        known, reasons = point.decide(scores, batch) if point is not None and scores is not None else (None, None)
        result = []
        for n, (path, vals, idxs) in enumerate(zip(paths, values.tolist(), indices.tolist(), strict=True)):
            ranked = tuple(TopClass(labels[i], names[i], float(v)) for i, v in zip(idxs, vals, strict=True))
            score = float(scores[n]) if scores is not None else None
            answer = ranked[0]
            result.append(
                Prediction(
                    answer.label,
                    answer.name,
                    answer.probability,
                    ranked,
                    path,
                    known=None if known is None else bool(known[n]),
                    open_set_score=score,
                    none_threshold=threshold,
                    none_reason=None if reasons is None else reasons[n],
                )
            )
        return result

    def predict(self, images: ImageLike | Iterable[ImageLike], top: int = 3) -> list[Prediction]:
        """Predict photos given as paths, encoded bytes, PIL images (turned upright by their EXIF orientation, as a
        file is), or uint8 arrays or tensors (HxWx3 or 3xHxW; a batch NxHxWx3 or Nx3xHxW): one of them, or any
        iterable of them (`photo_items`). `top` classes are listed (at least 1; more than the model has: all).
        Raises ImageError on a bad photo, ValueError on a bad `top`."""
        check_top(top)
        items = photo_items(images)
        arrays = [self._to_array(image) for image in items]
        paths = [str(i) if isinstance(i, (str, os.PathLike)) else None for i in items]
        return self._predictions(arrays, paths, top)

    def predict_files(
        self, paths: Iterable[str | os.PathLike], top: int = 3, workers: int = 4, chunk: int = 512
    ) -> Iterator[Prediction | tuple[str, str]]:
        """Predict many files in batches, decoding in threads; yields a Prediction or (path, reason)."""
        check_top(top)
        paths = [str(p) for p in paths]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for start in range(0, len(paths), chunk):
                part = paths[start : start + chunk]
                decoded = list(pool.map(try_decode, part, [self.checkpoint.image_size] * len(part)))
                good = [(p, d) for p, d in zip(part, decoded, strict=True) if not isinstance(d, str)]
                predictions = iter(self._predictions([d for _, d in good], [p for p, _ in good], top))
                for path, item in zip(part, decoded, strict=True):
                    yield (path, item) if isinstance(item, str) else next(predictions)


@torch.no_grad()
def network_features(classifier: Classifier, images: torch.Tensor, layer: str = PENULTIMATE) -> torch.Tensor:
    """Each network's input to `layer` (M, N, D) for uint8 photos (N, 3, H, W), as `Classifier` runs them (batch norm
    folded, its autocast; one view): what the none-of-these fit and `heritage review` learn from."""
    classifier.check_batch(images)
    parts = []
    for start in range(0, len(images), classifier.batch_size):
        x = classifier.checkpoint.normalise(images[start : start + classifier.batch_size].to(classifier.device))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=classifier.bf16):
            parts.append(forward_with_features(classifier.model, x, (layer,)).features[layer].float().cpu())
    return torch.cat(parts, 1)


def find_photos(inputs: Iterable[str | os.PathLike]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Image files named directly or found below folders (symlinked folders followed once each, loops listed), sorted;
    and what could not be looked at (a missing input, a folder without read permission)."""
    photos: list[Path] = []
    problems: list[tuple[str, str]] = []
    for item in inputs:
        path = Path(item)
        try:  # os.stat, not Path.exists: it says why (a symbolic link loop, a folder without permission)
            is_dir = stat.S_ISDIR(os.stat(path).st_mode)
        except OSError as error:
            missing = isinstance(error, FileNotFoundError)
            problems.append((str(path), "no such file or folder" if missing else os_reason(error)))
            continue
        if is_dir:
            found, unreadable = walk_files(path, IMAGE_EXTENSIONS, hidden=True)
            photos += found
            problems += unreadable
        else:
            photos.append(path)
    return photos, problems


# --------------------------------------------------------------------------------------------
# predict: output formats
# --------------------------------------------------------------------------------------------


def format_predictions(predictions: Sequence[Prediction], fmt: str) -> str:
    """Predictions as text: "table" (for people), "json" (a list of `to_dict()`), "csv" (flat top-k columns).

    File names follow `heritage_cnn.base.names`: exact in JSON and CSV (write CSV text with `names.CSV_ERRORS`),
    shown safely in the table. No format ends with a line end: CSV rows are separated by CRLF, the caller ends the
    last line."""
    if fmt == "json":
        return json_text([p.to_dict() for p in predictions])
    if fmt == "csv":
        buffer = io.StringIO()
        elements = any(p.elements is not None for p in predictions)
        fields = flat_fields(max([len(p.top) for p in predictions] + [0]), elements)
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(p.flat() for p in predictions)
        return buffer.getvalue().removesuffix("\r\n")  # rows end CRLF; the last one's end is the writer's
    if fmt != "table":
        raise ValueError(f"unknown output format {fmt!r}: choose table, json or csv")
    predictions = [replace(p, path=shown(p.path) if p.path is not None else None) for p in predictions]
    width = max([len(str(p.path)) for p in predictions] + [4])
    lines = [f"{'path'.ljust(width)}  {'class':<16} {'prob':>5}  top"]
    for p in predictions:
        if p.known is False:  # none of the ten: why, and the closest classes beside it
            closest = ", ".join(f"{t.name} {t.probability:.2f}" for t in p.top)
            why = "noise, not a photo; " if p.none_reason == NOISE else ""
            lines.append(f"{str(p.path).ljust(width)}  {NONE_OF_THESE:<16} {'-':>5}  {why}closest: {closest}")
        else:
            others = ", ".join(f"{t.name} {t.probability:.2f}" for t in p.top[1:])
            lines.append(f"{str(p.path).ljust(width)}  {p.name:<16} {p.probability:5.2f}  {others}")
        if p.elements is not None:  # under the answer, indented: the table keeps one answer per photo
            found = ", ".join(f"{e.name} {e.confidence:.2f} {e.box}" for e in p.elements) or "none found"
            lines.append(f"{''.ljust(width)}  elements: {found}")
    return "\n".join(lines)
