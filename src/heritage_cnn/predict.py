"""Use a trained network on real photos: `Classifier` for Python, `heritage predict` and `heritage sort`.

Photos of any size, aspect ratio and common format are decoded with the same policy as in training
and evaluation (`data.decode_image`: EXIF orientation honoured, any mode to RGB, shorter side to 64 px,
centre crop), then classified in batches. `sort` copies (never moves, never deletes) each photo into a
folder per class and keeps a manifest, so it can be stopped and run again.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
import sys
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from heritage_cnn.checkpoint import Checkpoint, load_checkpoint
from heritage_cnn.data import IMAGE_EXTENSIONS, ImageError, decode_image, fit_square, to_rgb
from heritage_cnn.evaluate import tta_views
from heritage_cnn.io import atomic_path, atomic_write_text
from heritage_cnn.model import fold_batch_norm

ImageLike = str | os.PathLike | Image.Image | np.ndarray


@dataclass(frozen=True)
class Prediction:
    """The network's answer for one photo."""

    label: str  # class folder name, e.g. dome(inner)
    name: str  # readable name, e.g. dome (inner)
    probability: float
    top: list[tuple[str, float]]  # (readable name, probability), best first
    path: str | None = None


class Classifier:
    """A trained network ready for photos: `Classifier.load(path).predict(images)`."""

    def __init__(self, checkpoint: Checkpoint, batch_size: int = 64, tta: str = "none") -> None:
        tta_views(torch.empty(0, 3, 1, 1), tta)  # an unknown mode fails here, not at the first photo
        self.checkpoint = checkpoint
        self.tta = tta  # "flip" or "multi" average the logits of 2 or 7 views: more accurate, 2x or 7x slower
        # Batch norm folded into the convs: the same outputs (to ~1e-6) with one pass less per layer,
        # about 25 % faster on this CPU.
        self.model = fold_batch_norm(checkpoint.model).eval().to(memory_format=torch.channels_last)
        self.device = next(self.model.parameters()).device
        self.batch_size = batch_size

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, device: str = "cpu", tta: str = "none") -> Classifier:
        """Load a checkpoint; without a path, the model shipped with the package."""
        return cls(load_checkpoint(path, device=device), tta=tta)

    @property
    def classes(self) -> list[str]:
        return self.checkpoint.classes

    def _to_array(self, image: ImageLike) -> np.ndarray:
        size = self.checkpoint.image_size
        if isinstance(image, (str, os.PathLike)):
            return decode_image(image, size)
        if isinstance(image, Image.Image):
            return np.asarray(fit_square(to_rgb(image), size), dtype=np.uint8)
        array = np.asarray(image)
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
            raise ImageError(f"array input must be HxWx3 uint8, got shape {array.shape} dtype {array.dtype}")
        return np.asarray(fit_square(Image.fromarray(array), size), dtype=np.uint8)

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities for a uint8 batch (N, 3, H, W) already at the network's size."""
        outputs = []
        for start in range(0, len(images), self.batch_size):
            x = self.checkpoint.normalise(images[start : start + self.batch_size].to(self.device))
            views = tta_views(x, self.tta)
            outputs.append(torch.softmax(sum(self.model(view).float() for view in views) / len(views), 1))
        return torch.cat(outputs) if outputs else torch.empty(0, len(self.classes))

    def _predictions(self, arrays: Sequence[np.ndarray], paths: Sequence[str | None], top: int) -> list[Prediction]:
        if not arrays:
            return []
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        probs = self.probabilities(batch)
        k = min(top, len(self.classes))
        values, indices = probs.topk(k, dim=1)
        names = self.checkpoint.display_names
        result = []
        for path, vals, idxs in zip(paths, values.tolist(), indices.tolist(), strict=True):
            ranked = [(names[i], float(v)) for i, v in zip(idxs, vals, strict=True)]
            result.append(Prediction(self.classes[idxs[0]], names[idxs[0]], float(vals[0]), ranked, path))
        return result

    def predict(self, images: ImageLike | Sequence[ImageLike], top: int = 3) -> list[Prediction]:
        """Predict photos given as paths, PIL images or HxWx3 uint8 arrays; raises ImageError on a bad one."""
        if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray)):
            images = [images]
        arrays = [self._to_array(image) for image in images]
        paths = [str(i) if isinstance(i, (str, os.PathLike)) else None for i in images]
        return self._predictions(arrays, paths, top)

    def predict_files(
        self, paths: Iterable[str | os.PathLike], top: int = 3, workers: int = 4, chunk: int = 512
    ) -> Iterator[Prediction | tuple[str, str]]:
        """Predict many files in batches, decoding in threads; yields a Prediction or (path, reason)."""
        paths = [str(p) for p in paths]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for start in range(0, len(paths), chunk):
                part = paths[start : start + chunk]
                decoded = list(pool.map(_decode_or_reason, part, [self.checkpoint.image_size] * len(part)))
                good = [(p, d) for p, d in zip(part, decoded, strict=True) if not isinstance(d, str)]
                predictions = iter(self._predictions([d for _, d in good], [p for p, _ in good], top))
                for path, item in zip(part, decoded, strict=True):
                    yield (path, item) if isinstance(item, str) else next(predictions)


def _decode_or_reason(path: str, size: int) -> np.ndarray | str:
    try:
        return decode_image(path, size)
    except ImageError as error:
        return str(error).removeprefix(f"{path}: ")


def find_photos(inputs: Iterable[str | os.PathLike]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Image files named directly or found below folders (symlinked folders not followed), sorted."""
    photos: list[Path] = []
    problems: list[tuple[str, str]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                photos += [Path(dirpath) / f for f in sorted(filenames) if Path(f).suffix.lower() in IMAGE_EXTENSIONS]
        elif path.exists():
            photos.append(path)
        else:
            problems.append((str(path), "no such file or folder"))
    return photos, problems


# --------------------------------------------------------------------------------------------
# predict: output formats
# --------------------------------------------------------------------------------------------


def printable(path: str | None) -> str | None:
    """A file name fit for any terminal or file: bytes that are not UTF-8 (an old camera's Latin-1
    name, say) are shown as U+FFFD instead of crashing the output."""
    if path is None:
        return None
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def format_predictions(predictions: Sequence[Prediction], fmt: str) -> str:
    predictions = [replace(p, path=printable(p.path)) for p in predictions]
    if fmt == "json":
        import json

        return json.dumps([asdict(p) for p in predictions], indent=2, ensure_ascii=False)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["path", "class", "probability", "top"])
        for p in predictions:
            writer.writerow([p.path, p.label, f"{p.probability:.4f}", "; ".join(f"{n} {v:.3f}" for n, v in p.top)])
        return buffer.getvalue().rstrip("\n")
    width = max([len(str(p.path)) for p in predictions] + [4])
    lines = [f"{'path'.ljust(width)}  {'class':<16} {'prob':>5}  top"]
    for p in predictions:
        others = ", ".join(f"{n} {v:.2f}" for n, v in p.top[1:])
        lines.append(f"{str(p.path).ljust(width)}  {p.name:<16} {p.probability:5.2f}  {others}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# sort: copy photos into class folders, resumably
# --------------------------------------------------------------------------------------------

MANIFEST_FIELDS = ["source", "destination", "class", "probability", "top3"]
UNCERTAIN = "_uncertain"


def _same_file_content(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False

    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    return digest(a) == digest(b)


def _free_name(folder: Path, name: str, source: Path) -> tuple[Path, bool]:
    """Where `source` goes in `folder`: (path, already_there). Never overwrites another file."""
    stem, suffix = Path(name).stem, Path(name).suffix
    candidate, n = folder / name, 1
    while candidate.exists() or candidate.is_symlink():
        if candidate.is_file() and _same_file_content(candidate, source):
            return candidate, True
        candidate, n = folder / f"{stem}-{n}{suffix}", n + 1
    return candidate, False


def _place(source: Path, destination: Path, mode: str) -> None:
    """Copy (or link) atomically: the destination appears whole or not at all."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    if mode == "link":
        try:
            os.link(source, destination)
            return
        except OSError:  # another file system: a symbolic link instead
            destination.symlink_to(source.resolve())
            return
    with atomic_path(destination) as tmp:
        shutil.copy2(source, tmp)


def _read_manifest(path: Path) -> dict[str, dict[str, str]]:
    if not path.exists():
        return {}
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["source"]: row for row in csv.DictReader(handle)}


def _write_rows(path: Path, fields: list[str], rows: Iterable[dict[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


@dataclass
class SortSummary:
    placed: int
    already_done: int
    uncertain: int
    skipped: list[tuple[str, str]]
    per_class: dict[str, int]
    manifest: Path


def sort_photos(
    classifier: Classifier,
    in_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    min_confidence: float = 0.6,
    mode: str = "copy",
    progress: bool = True,
) -> SortSummary:
    """Copy every photo below `in_dir` into `out_dir/<class>/` (or `_uncertain/`), with a manifest.

    The source photos are only read. Running it again skips photos already in the manifest whose copy
    exists, so an interrupted sort resumes; name collisions get a numbered suffix, never an overwrite.
    """
    if mode not in ("copy", "link"):
        raise ValueError(f"--mode must be copy or link, got {mode!r}")
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"--min-confidence must be between 0 and 1, got {min_confidence}")
    source_root, target_root = Path(in_dir).resolve(), Path(out_dir).resolve()
    if not source_root.is_dir():
        raise ValueError(f"{in_dir}: not a folder")
    if target_root == source_root or source_root in target_root.parents:
        raise ValueError(f"{out_dir}: the output folder must not be inside the input folder {in_dir}")
    if target_root in source_root.parents:
        raise ValueError(f"{in_dir}: the input folder must not be inside the output folder {out_dir}")
    target_root.mkdir(parents=True, exist_ok=True)
    manifest_path = target_root / "manifest.csv"
    manifest = _read_manifest(manifest_path)
    photos, _ = find_photos([source_root])
    todo = [p for p in photos if not (str(p) in manifest and Path(manifest[str(p)]["destination"]).exists())]
    summary = SortSummary(0, len(photos) - len(todo), 0, [], {}, manifest_path)
    bar = None
    if progress and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="sort", unit="photo")
    try:
        for count, item in enumerate(classifier.predict_files(todo), start=1):
            if isinstance(item, tuple):
                summary.skipped.append(item)
            else:
                source = Path(str(item.path))
                folder = target_root / (item.label if item.probability >= min_confidence else UNCERTAIN)
                destination, already = _free_name(folder, source.name, source)
                if not already:
                    _place(source, destination, mode)
                summary.placed += 1
                summary.uncertain += folder.name == UNCERTAIN
                summary.per_class[folder.name] = summary.per_class.get(folder.name, 0) + 1
                manifest[str(source)] = {
                    "source": str(source),
                    "destination": str(destination),
                    "class": item.label,
                    "probability": f"{item.probability:.4f}",
                    "top3": "; ".join(f"{n} {v:.3f}" for n, v in item.top[:3]),
                }
            if bar is not None:
                bar.update(1)
            if count % 256 == 0:  # progress survives an interruption
                _write_rows(manifest_path, MANIFEST_FIELDS, manifest.values())
    finally:
        if bar is not None:
            bar.close()
        _write_rows(manifest_path, MANIFEST_FIELDS, manifest.values())
        _write_rows(
            target_root / "skipped.csv", ["source", "reason"], ({"source": p, "reason": r} for p, r in summary.skipped)
        )
    return summary
