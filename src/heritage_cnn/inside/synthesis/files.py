"""Saving drawn classes: one PNG per image, the grid `class_images.png` and `class_images.json`; `heritage generate`
publishes its folder whole (`publish_generated`)."""

from __future__ import annotations

import errno
import glob
import os
import shutil
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from heritage_cnn.base.figures import image_grid, save_png
from heritage_cnn.base.io import atomic_write_json, umask
from heritage_cnn.data.folders import display_name
from heritage_cnn.inside.synthesis.draw import Generated
from heritage_cnn.models.checkpoint import Checkpoint

SLUG_BYTES = 200  # a stem's most UTF-8 bytes: "_<sample>.png" still fits the 255 bytes of a file name


def _slug(folder: str) -> str:
    """The display name in lower case, its letters, digits and marks in any script kept (NFC: an accent composed or
    not is one name), every other run of characters one "_": `dome(inner)` -> `dome_inner`, `портал` -> `портал`.
    It never holds "-", which `class_stems` keeps for telling apart classes whose slugs are one."""
    name = unicodedata.normalize("NFC", display_name(folder)).lower()
    kept = "".join(c if unicodedata.category(c)[0] in "LMN" else " " for c in name)
    return "_".join(kept.split()).encode()[:SLUG_BYTES].decode("utf-8", "ignore").strip("_")


def class_stems(names: Sequence[str]) -> list[str]:
    """The stem of each class's files (`<stem>_<sample>.png`), one per class whatever the names: its slug where no
    other class has it (the shipped classes' files, `dome_inner_0.png`, keep their names), else, and for a slug that
    is empty, `<slug or "class">-<class index>`. A slug holds no "-", so no stem is another's: `portàl` and `portál`
    get their own files, and so do `-portal` and `portal` (`portal-0`, `portal-1`). Slugs are compared case-folded,
    as a file system that ignores case would."""
    slugs = [_slug(name) for name in names]
    count = Counter(slug.casefold() for slug in slugs)
    return [slug if slug and count[slug.casefold()] == 1 else f"{slug or 'class'}-{i}" for i, slug in enumerate(slugs)]


GRID_ROWS = 16  # samples per class in the grid figure (every image still gets its own PNG)
# The grid's and the JSON's names, which the web page's class images and the report read them by
GRID, MANIFEST = "class_images.png", "class_images.json"


def drawn_by(checkpoint: Checkpoint) -> str:
    """Whose probabilities the JSON records: the networks' that drew (a member's are not the ensemble's)."""
    if checkpoint.index is not None:
        return f"member {checkpoint.index} of the model (one network of its ensemble, --member {checkpoint.index})"
    count = checkpoint.member_count
    return f"the model's {count} networks together (their mean softmax)" if count > 1 else "the model (one network)"


def write_generated(out: str | Path, generated: Generated, checkpoint: Checkpoint, seed: int, n: int) -> Path:
    """One PNG per image, the grid `class_images.png` (a column per class, its first `GRID_ROWS` images: a
    figure of thousands of panels would take minutes and gigabytes) and `class_images.json`, which records what
    reproduces them: the model and its member (`checkpoint.index`), the seed, settings, size and images per class."""
    out = Path(out)
    names = checkpoint.classes
    stems = class_stems(names)  # of every class, not only those drawn: `--class X` writes the files `--all` does
    records = []
    for i, (image, target) in enumerate(zip(generated.images, generated.targets, strict=True)):
        file = f"{stems[target]}_{i % n}.png"
        save_png(image, out / file)
        records.append(
            {
                "file": file,
                "class": names[target],
                "probability": round(generated.probabilities[i], 6),
                "predicted": names[generated.predicted[i]],
            }
        )
    # column per class, row per sample: reorder class-major images to row-major
    k = len(generated.targets) // n
    order = [c * n + r for r in range(min(n, GRID_ROWS)) for c in range(k)]
    image_grid(
        generated.images[order],
        [display_name(names[generated.targets[i]]) if j < k else "" for j, i in enumerate(order)],
        k,
        out / GRID,
        [f"p = {generated.probabilities[i]:.2f}" for i in order],
    )
    atomic_write_json(
        out / MANIFEST,
        {
            "model": str(checkpoint.path),
            "member": checkpoint.index,  # the network of the ensemble at `model` that drew (None: the whole model)
            "probabilities_of": drawn_by(checkpoint),
            "seed": seed,
            "size": int(generated.images.shape[-1]),
            "per_class": n,
            "settings": asdict(generated.settings),
            "seconds": round(generated.seconds, 2),
            "mean_probability": round(sum(generated.probabilities) / len(generated.probabilities), 6),
            "images": records,
        },
    )
    return out / GRID


def publish_generated(out: str | Path, generated: Generated, checkpoint: Checkpoint, seed: int, n: int) -> Path:
    """`write_generated` into a temporary folder, published as `out` once every file is there: `out` holds a whole run
    or nothing, never PNGs without their JSON. A new `out` is the temporary folder renamed (made beside it); an empty
    folder the user made is kept and filled, the temporary folder inside it (on its disk, even a mount point, and
    whatever its parent allows). An interrupt or an error removes the temporary folder; one a killed run left behind
    is removed by the next run into `out` (`remove_abandoned`). Returns the grid's path under `out` as given."""
    target = Path(os.path.realpath(out))  # a link to an empty folder: the folder it names is filled
    made = target.is_dir()
    home = target if made else target.parent
    home.mkdir(parents=True, exist_ok=True)
    remove_abandoned(target)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_partial_prefix(target.name)}{os.getpid()}-", dir=home))
    try:
        write_generated(tmp, generated, checkpoint, seed, n)
        try:
            if made:
                _move_files(tmp, target)
                tmp.rmdir()
            else:
                tmp.chmod(0o777 & ~umask())  # mkdtemp makes 0700; give the usual permissions
                os.replace(tmp, target)
        except OSError as error:  # written into meanwhile: name `out`, not the temporary folder
            raise OSError(
                error.errno, f"{error.strerror}; generate writes into a new or empty folder", str(out)
            ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Path(out) / GRID


def _move_files(source: Path, target: Path) -> None:
    """Each file of `source` renamed into `target` (one file system: no copy), the JSON last: it is what readers take
    for a whole run. Milliseconds, against the minutes of drawing that the temporary folder protects."""
    for path in sorted(source.iterdir(), key=lambda p: p.name == MANIFEST):
        if (target / path.name).exists():
            raise FileExistsError(errno.EEXIST, "File exists", str(target / path.name))
        os.replace(path, target / path.name)


def _partial_prefix(name: str) -> str:
    """How a folder being written for the folder `name` begins (hidden, named for it); cut to fit 255 bytes."""
    return f".{os.fsdecode(os.fsencode(name)[:200])}.partial-"


def remove_abandoned(target: Path) -> None:
    """Remove the temporary folders (beside `target` or inside it) that runs into `target` left when killed (SIGKILL, SIGTERM: no chance to clean
    up), known by the process id in their names being no process's now; a running one's is left alone."""
    prefix = _partial_prefix(target.name)
    homes = [target.parent, *([target] if target.is_dir() and not target.is_symlink() else [])]
    for folder in [found for home in homes for found in home.glob(glob.escape(prefix) + "*")]:
        pid = folder.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and folder.is_dir() and not folder.is_symlink() and not _running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, another user's
        pass
    return True
