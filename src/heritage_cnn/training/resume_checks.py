"""What `--resume` checks before a run folder is written to: the run's recipe (config.json), its data (split.json)
and its --outliers (the resume state).

"--resume continues bit-exactly" is the promise, so a resumed run takes its saved recipe, and the photos, labels and
split it trains on must be those it began with: a data folder that gained, lost or changed a photo, a relabel file
that was edited, or an --outliers folder whose photos changed, is refused in one line naming what changed, unless the
recorded split is rebuilt exactly (a file that cannot be read, added, changes nothing). The split record of a run
(`split_record`) is what those checks read."""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from heritage_cnn.base.io import CheckpointError, read_json
from heritage_cnn.base.names import first_few
from heritage_cnn.data.decode import DECODE_REVISION
from heritage_cnn.data.folders import ImageSet
from heritage_cnn.training.config import RUNTIME_FIELDS, Log, TrainConfig, read_config
from heritage_cnn.training.prepare import relabel_digest
from heritage_cnn.training.state import (
    CONFIG_FILE,
    RUN_FILES,
    SPLIT_FILE,
    has_resume_state,
    holds_checkpoint,
    resume_record,
)


def run_config(out: Path, config: TrainConfig, log: Log, processes: int = 1) -> tuple[TrainConfig, bool]:
    """(the run's config, whether it resumes): a resumed run is the same run, so a changed recipe is refused and
    the saved recipe is taken, with this config's runtime settings. Another number of `processes` than the run's
    is taken, with the note --threads and --device get (`cli.recipe.resume_config`)."""
    resuming = config.resume and has_resume_state(out)
    if config.resume and not resuming and holds_checkpoint(out):  # trained weights that a fresh start would replace
        raise FileExistsError(
            f"{_nothing_to_resume(out)} (resume.safetensors was removed?): --resume cannot continue it and would "
            "train over its weights; --overwrite starts again in its place, or choose another --out"
        )
    if config.resume and not resuming:
        log(f"--resume: {_nothing_to_resume(out)}, starting from scratch")
    if not resuming:
        return config, False
    recorded = resume_record(out).get("processes")  # None: a run from before it was recorded
    if recorded is not None and recorded != processes:
        log(
            f"note: --nproc {processes} differs from the run's ({recorded}): the result will not be bit-identical to "
            "an uninterrupted run"
        )
    saved = read_config(out / CONFIG_FILE)
    changed = config.recipe_differences(saved)
    if changed:
        raise ValueError(
            f"{out}: --resume with a recipe other than the run's: {'; '.join(changed)} (a run of the new recipe "
            "needs another folder, or this one emptied)"
        )
    resumed = replace(saved, **{k: getattr(config, k) for k in RUNTIME_FIELDS})  # `out` too: where it is now
    return replace(resumed, data=config.data), True  # the same folder (`recipe_differences`), as it is reached now


def _nothing_to_resume(out: Path) -> str:
    """What `out`, without a resume state, holds: in the words a fresh run's refusal uses (`claim_run_folder`)."""
    if holds_checkpoint(out):
        return f"{out} holds checkpoints but no resume state to continue from"
    if any((out / name).exists() for name in RUN_FILES):
        return f"{out} holds the records of a run that stopped before its first checkpoint"
    return f"no earlier run in {out}"


def split_record(config: TrainConfig, train_set: ImageSet, val_set: ImageSet) -> dict[str, Any]:
    """split.json: the split's recipe and sizes, its validation photos, and what `check_same_data` compares on
    resume: every photo's digest (of its decoded pixels) by its path in the data folder, and the relabel file's."""
    return {
        "recipe": asdict(config.split),
        "folds": config.split.folds,  # the validation side is 1/folds of the photos, whatever val_fraction says
        "train": len(train_set),
        "val": len(val_set),
        "data": config.data,  # as spelled here: the folder `val_paths` begin with
        "val_paths": val_set.paths,
        "photos": {**_digests(train_set, config.data), **_digests(val_set, config.data)},
        "relabel_sha256": relabel_digest(config.relabel),
        "decode_revision": DECODE_REVISION,  # photos that decode otherwise after a decoder change: said as that
    }


def check_same_data(
    out: Path, config: TrainConfig, train_set: ImageSet, val_set: ImageSet, outliers: dict[str, Any]
) -> None:
    """Refuse (ValueError, one line) a resume whose relabel file, photos, split or --outliers photos (`outliers`:
    what `load_outliers` records of them now) are not those the run recorded."""
    if (out / SPLIT_FILE).exists():
        _check_same_photos(out, config, train_set, val_set)
    began_with, now = resume_record(out).get("outliers_sha256"), outliers.get("outliers", {}).get("sha256")
    if began_with != now:
        raise ValueError(
            f"{out}: --resume: the photos of --outliers {config.outliers} are not those the run began with "
            "(a file was added, removed or changed); restore them, or train into another folder"
        )


def _check_same_photos(out: Path, config: TrainConfig, train_set: ImageSet, val_set: ImageSet) -> None:
    recorded = _split_record(out / SPLIT_FILE)
    # the folder the recorded paths begin with, as spelled then (before split.json said: config.json's)
    then_root = recorded.get("data") or read_json(out / CONFIG_FILE)["data"]
    refuse = f"{out}: --resume: "
    fix = "restore them, or train into another --out"
    if "relabel_sha256" in recorded:
        relabel_then = recorded["relabel_sha256"]
    else:  # a run from before split.json recorded it: its checkpoint did
        relabel_then = (
            read_json(out / "last.json").get("relabel", {}).get("sha256") if (out / "last.json").exists() else None
        )
    if relabel_digest(config.relabel) != relabel_then:
        raise ValueError(
            refuse + f"the relabel file {config.relabel or '(none)'} is not the one the run began with "
            f"(SHA-256 {(relabel_then or 'none')[:12]} then, {(relabel_digest(config.relabel) or 'none')[:12]} now); {fix}"
        )
    if "photos" in recorded:
        then, now = recorded["photos"], {**_digests(train_set, config.data), **_digests(val_set, config.data)}
        changes = [
            _named(sorted(set(now) - set(then)), "added"),
            _named(sorted(set(then) - set(now)), "removed"),
            _named(sorted(k for k in set(now) & set(then) if now[k] != then[k]), "changed"),
        ]
        decoder_then = recorded.get("decode_revision", 1)  # the revision before split.json recorded it
        if changes[2] and not any(changes[:2]) and decoder_then != DECODE_REVISION:
            raise ValueError(
                refuse + f"{changes[2]} in {config.data}: this version decodes photos otherwise than the one the run "
                f"began with (decoder revision {decoder_then} then, {DECODE_REVISION} now), so the run cannot go on "
                "with the same photos; train into another --out"
            )
        if any(changes):
            raise ValueError(
                refuse + f"the photos of {config.data} are not those the run began with: "
                f"{'; '.join(c for c in changes if c)}; {fix}"
            )
    val_then = {_key(p, then_root) for p in recorded["val_paths"]}
    val_now = {_key(p, config.data) for p in val_set.paths}
    if val_then != val_now or recorded["train"] != len(train_set):
        raise ValueError(
            refuse + f"the photos of {config.data} give another split than split.json records "
            f"({len(val_then - val_now)} of {len(val_then)} validation photos are others now; {recorded['train']} "
            f"training photos then, {len(train_set)} now: photos were added, removed or moved); {fix}"
        )


def _split_record(path: Path) -> dict:
    """split.json as the run wrote it; one edited or damaged into another shape is one line naming it (a bare
    KeyError said only "input: missing entry 'val_paths'")."""
    recorded = read_json(path)
    shapes = {"val_paths": list, "train": int, "photos": dict}
    wrong = [
        key
        for key, kind in shapes.items()
        if not isinstance(recorded, dict)
        or not (isinstance(recorded.get(key), kind) or (key == "photos" and key not in recorded))
    ]
    if wrong:
        raise CheckpointError(
            f"{path}: not the split record this run wrote ({', '.join(wrong)} missing or of another type); restore "
            "it, or train into another --out"
        )
    return recorded


def _key(path: str, root: str) -> str:
    """A photo's path inside the data folder (both as spelled in the same directory), with forward slashes."""
    return Path(os.path.relpath(path, root)).as_posix()


def _digests(images: ImageSet, root: str) -> dict[str, str]:
    return {
        _key(path, root): hashlib.sha256(images.images[i].numpy().tobytes()).hexdigest()[:16]
        for i, path in enumerate(images.paths)
    }


def _named(keys: list[str], what: str) -> str:
    """'2 photos removed (a.jpg, b.jpg)', or '' for none."""
    if not keys:
        return ""
    return f"{len(keys)} photo{'s' if len(keys) > 1 else ''} {what} ({first_few(keys)})"


__all__ = ["check_same_data", "run_config", "split_record"]
