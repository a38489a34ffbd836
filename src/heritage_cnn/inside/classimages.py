"""Class images for the web page: the shipped model's, packaged; any other model's, drawn once and cached.

A folder of class images is what `heritage generate --all --n 1 --out DIR` writes: one PNG per class,
`class_images.png` (the grid) and `class_images.json` (which file shows which class). The page must show
them without any flag, so:

- the shipped models' folders ship inside the package, about 100 KB each: `weights/default.class_images/`,
  drawn by the `default` ensemble's member 0 (its JSON names that member's key, `model_key`; an older folder may
  list further keys under `also_for`), and `weights/fast.class_images/`, drawn by the `fast` network;
- any other model gets its own folder under the cache (`~/.cache/heritage-cnn/class-images/<hash>/`, or
  `$HERITAGE_CACHE`), keyed by the SHA-256 of its weights file (plus `:member<i>` for a member of an
  ensemble), drawn once in a background thread while the server already answers. A folder counts only once
  its JSON, written last, names the same key: a half-written folder or one drawn for other weights is never
  shown.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from heritage_cnn.base.io import atomic_path, atomic_write_json, file_sha256, umask
from heritage_cnn.data.decode import IMAGE_SIZE
from heritage_cnn.inside.synthesis.files import GRID, MANIFEST
from heritage_cnn.models.checkpoint import Checkpoint, load_checkpoint

PACKAGED = Path(__file__).parents[1] / "weights" / "default.class_images"  # the default ensemble's member 0
PACKAGED_FAST = PACKAGED.with_name("fast.class_images")  # the fast network


def packaged_for(key: str) -> Path | None:
    """The packaged folder of class images drawn for the network with this key (`model_key`), if any."""
    return next((folder for folder in (PACKAGED, PACKAGED_FAST) if drawn_for(folder, key)), None)


@dataclass
class ClassImages:
    """The PNGs the page may show, by file name (nothing else under the folder is reachable)."""

    files: dict[str, Path] = field(default_factory=dict)
    grid: str | None = None
    per_class: dict[str, list[str]] = field(default_factory=dict)  # class folder name -> file names
    note: str = ""
    state: str = "ready"  # ready | drawing | failed | none


def find_class_images(path: str | Path | None) -> ClassImages:
    """A `heritage generate --all` folder, or one grid PNG, given explicitly; without one, none (and a note)."""
    if path is None:
        return ClassImages(note="no class images for this model", state="none")
    path = Path(path)
    if path.is_file():
        return ClassImages({path.name: path}, path.name)
    if not path.is_dir():
        raise ValueError(f"--class-images {path}: no such folder or PNG file")
    files = {p.name: p for p in sorted(path.glob("*.png")) if p.is_file()}
    found = ClassImages(files, GRID if GRID in files else None)
    manifest = path / MANIFEST
    if manifest.is_file():
        records = json.loads(manifest.read_text(encoding="utf-8")).get("images", [])
        shared = _shared_files(records)  # an older generate wrote two classes to one file: it shows only one of them
        for record in records:
            if record.get("file") in files and record["file"] not in shared:
                found.per_class.setdefault(record["class"], []).append(record["file"])
    if not files:
        found.note = f"no PNG files in {path}: make them with `heritage generate --all --out {path}`"
        found.state = "none"
    return found


def _shared_files(records: list[dict]) -> set[str]:
    """The files a manifest lists for more than one class (a version before `files.class_stems` wrote `портал` and
    `купол` both to `_0.png`, the last drawn over the first)."""
    classes: dict[str, set] = {}
    for record in records:
        classes.setdefault(record.get("file"), set()).add(record.get("class"))
    return {file for file, names in classes.items() if len(names) > 1}


def default_cache_dir() -> Path:
    """`$HERITAGE_CACHE`, else `$XDG_CACHE_HOME/heritage-cnn`, else `~/.cache/heritage-cnn`."""
    if os.environ.get("HERITAGE_CACHE"):
        return Path(os.environ["HERITAGE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "heritage-cnn"


def model_key(checkpoint: Checkpoint) -> str:
    """What class images are drawn for: the weights file's SHA-256, plus `:member<i>` for a member of an ensemble."""
    sha = file_sha256(checkpoint.path)
    return sha if checkpoint.index is None else f"{sha}:member{checkpoint.index}"


def drawn_for(folder: Path, key: str) -> bool:
    """Whether `folder` holds a complete set of class images drawn for the network with this key (`model_key`)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if _shared_files(manifest.get("images", [])):  # drawn before each class had its own file: drawn again
            return False
        return manifest.get("weights_sha256") == key or key in (manifest.get("also_for") or [])
    except (OSError, ValueError, TypeError, AttributeError):
        return False


def draw_into(checkpoint: Checkpoint, folder: str | Path, steps: int | None = None, progress: bool = False) -> Path:
    """Draw one image per class (as `heritage generate --all --n 1`) and publish `folder` whole, by rename.

    The images are drawn into a temporary sibling folder, stamped with the weights' hash, then renamed
    onto `folder`, so a crash or a second server never leaves a half-drawn folder that looks complete."""
    from dataclasses import replace

    from heritage_cnn.inside.synthesis.draw import Settings, draw_classes
    from heritage_cnn.inside.synthesis.files import write_generated

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    sha = model_key(checkpoint)
    settings = Settings() if steps is None else replace(Settings(), steps=steps)
    generated = draw_classes(
        checkpoint, range(len(checkpoint.classes)), 1, IMAGE_SIZE, settings, seed=0, progress=progress
    )
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        write_generated(tmp, generated, checkpoint, seed=0, n=1)
        shrink_grid(tmp / GRID)
        manifest = json.loads((tmp / MANIFEST).read_text(encoding="utf-8"))
        manifest |= {"model": Path(str(checkpoint.path)).name, "weights_sha256": sha}
        atomic_write_json(tmp / MANIFEST, manifest)
        if drawn_for(folder, sha):  # another server drew the same images meanwhile (same seed): keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
            return folder
        if folder.exists():  # drawn for other weights, or left incomplete: replace it
            shutil.rmtree(folder, ignore_errors=True)
        tmp.chmod(0o777 & ~umask())  # mkdtemp makes 0700; give the usual permissions
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def shrink_grid(path: Path) -> None:
    """Store the grid with 256 colours: a third of the size (430 -> 143 KB for the shipped model's), same look."""
    from PIL import Image

    with Image.open(path) as image:
        palette = image.convert("RGB").quantize(256, dither=Image.Dither.NONE)
    with atomic_path(path) as tmp:
        palette.save(tmp, format="PNG", optimize=True)


class Gallery:
    """The class images of one model, as the page sees them: given, packaged, cached, or being drawn.

    `explicit`: a folder or PNG given with --class-images (shown as is). Otherwise the packaged folder
    when its hash matches the weights, else the cache folder, drawn in the background when missing
    (`draw=False`: never draw, say how to make them)."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        explicit: str | Path | None = None,
        cache_dir: str | Path | None = None,
        draw: bool = True,
        steps: int | None = None,
    ) -> None:
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        if explicit is not None:
            self.images = find_class_images(explicit)
            return
        sha = model_key(checkpoint)
        packaged = packaged_for(sha)
        if packaged is not None:
            self.images = find_class_images(packaged)
            return
        folder = sha[:16] if checkpoint.index is None else hashlib.sha256(sha.encode()).hexdigest()[:16]
        self.folder = Path(cache_dir or default_cache_dir()) / "class-images" / folder
        if drawn_for(self.folder, sha):
            self.images = find_class_images(self.folder)
        elif not draw:
            self.images = ClassImages(
                note="no class images for this model yet: make them with `heritage generate --all --out DIR` "
                "and start the server with --class-images DIR",
                state="none",
            )
        else:
            self.images = ClassImages(
                note="drawing this model's class images (once; a few minutes on 2 cores; cached for next time)…",
                state="drawing",
            )
            self.thread = threading.Thread(
                target=self._draw,
                args=(Path(str(checkpoint.path)), checkpoint.index or 0, steps),
                name="class-images",
                daemon=True,
            )
            self.thread.start()

    def _draw(self, weights: Path, member: int, steps: int | None) -> None:
        try:
            own = load_checkpoint(weights).member(member)  # its own copy: drawing toggles requires_grad
            found = find_class_images(draw_into(own, self.folder, steps))
        except Exception as error:  # shown on the page; the server keeps answering
            found = ClassImages(
                note=f"could not draw the class images: {type(error).__name__}: {error}", state="failed"
            )
        with self.lock:
            self.images = found

    def current(self) -> ClassImages:
        with self.lock:
            return self.images


__all__ = [
    "PACKAGED",
    "PACKAGED_FAST",
    "ClassImages",
    "Gallery",
    "default_cache_dir",
    "draw_into",
    "drawn_for",
    "find_class_images",
    "model_key",
    "packaged_for",
]
