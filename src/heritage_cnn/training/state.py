"""What `--resume` needs, kept as ONE file written atomically, and what a run folder records as it goes
(metrics, curves, the checkpoint's provenance).

`resume.safetensors` holds the raw weights, the weight average, the optimizer's tensors and the
random generators' states; the rest (epoch, step, history, optimizer settings) rides along as JSON in
its string metadata. A single rename puts it in place, so a kill at any moment leaves either the
previous state or the new one, whole: never new weights with old optimizer state.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from heritage_cnn import __version__
from heritage_cnn.base.devices import machine_description
from heritage_cnn.base.io import (
    MAX_HEADER_BYTES,
    CheckpointError,
    atomic_write_csv,
    atomic_write_json,
    load_tensors,
    read_json,
    read_safetensors,
    safetensors_header,
    save_tensors,
    stale_temps,
)
from heritage_cnn.base.names import first_few
from heritage_cnn.data.folders import ImageSet
from heritage_cnn.data.split import NEAR_DUPLICATE_DISTANCE, set_hashes
from heritage_cnn.models.checkpoint import first_non_finite, load_checkpoint
from heritage_cnn.training.config import TrainConfig
from heritage_cnn.training.distributed import Ranks
from heritage_cnn.training.optim import Optimizer

RESUME_FILE = "resume.safetensors"
RESUME_FORMAT = "heritage-cnn-resume/1"
_LEGACY = ("state.json", "optimizer.safetensors")  # the two-file resume state, still read (`load_resume_state`)


RUN_LOCK = ".heritage-train.lock"  # one training process (rank 0) writes into a run folder at a time
# The run folder's files, each named once here (docs/design.md lists what each holds).
CONFIG_FILE, SKIPPED_FILE, SPLIT_FILE = "config.json", "skipped.json", "split.json"
METRICS_CSV, METRICS_JSON, CURVES_FILE = "metrics.csv", "metrics.json", "curves.png"
# Every file a run writes into its folder: what makes a folder "hold a run", and all that --overwrite removes.
RUN_FILES = (
    CONFIG_FILE,
    SKIPPED_FILE,
    SPLIT_FILE,
    RESUME_FILE,
    *_LEGACY,
    *(f"{name}.{suffix}" for name in ("last", "best") for suffix in ("safetensors", "json")),
    METRICS_CSV,
    METRICS_JSON,
    CURVES_FILE,
)
# What a run writes from its first checkpoint on: a folder without any of them holds no trained weights to keep.
CHECKPOINT_FILES = (
    RESUME_FILE,
    *_LEGACY,
    *(f"{name}.{suffix}" for name in ("last", "best") for suffix in ("safetensors", "json")),
)


def has_resume_state(out: Path) -> bool:
    return (out / RESUME_FILE).exists() or (out / _LEGACY[0]).exists()


def holds_checkpoint(out: Path) -> bool:
    """Whether `out` holds trained weights of a run (a checkpoint or a resume state), not only its records."""
    return any((out / name).exists() for name in CHECKPOINT_FILES)


def claim_run_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Make `out` this run's, with its lock held: a fresh run never writes over another run's files unless
    `overwrite` says so; those are removed by `remove_run_files` once the new run has passed its checks, so that a
    refused --overwrite leaves the earlier run as it was."""
    found = [name for name in RUN_FILES if (out / name).exists()]
    if found and not resume and not overwrite:
        listed = first_few(found)
        if not holds_checkpoint(out):  # what `run_config` says of it too: --resume starts it from scratch
            raise FileExistsError(
                f"{out} holds the records of a run that stopped before its first checkpoint ({listed}): --resume "
                "starts it again from scratch, --overwrite starts another in its place, or choose another --out"
            )
        raise FileExistsError(
            f"{out} already holds a training run ({listed}): "
            "--resume continues it, --overwrite starts again in its place, or choose another --out"
        )
    for name in RUN_FILES:  # half-written files of a killed run (the lock says none is writing); only the run's own
        for stale in stale_temps(out, name):
            stale.unlink(missing_ok=True)


def remove_run_files(out: Path) -> None:
    """--overwrite: remove an earlier run's files from `out`, exactly the files a run writes (RUN_FILES), nothing
    else."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)


def abandon_run_folder(out: Path, written: list[str], made: bool) -> None:
    """Undo a fresh run that failed before its first checkpoint, so that the same command can be run again: remove
    the run records it wrote (`written`: names in `out`), then `out` itself if this run `made` it and nothing but the
    lock is left. A folder that holds a checkpoint or a resume state keeps everything: a run to resume or look at.

    Called with the lock still held: a process that opened the lock file meanwhile is refused as busy rather than
    left holding a lock in a removed folder; one that comes later finds no folder, or a new lock file, which keeps
    the folder (rmdir removes only an empty one)."""
    if not holds_checkpoint(out):
        for name in written:
            (out / name).unlink(missing_ok=True)
    if not made or [path.name for path in out.iterdir()] != [RUN_LOCK]:
        return
    (out / RUN_LOCK).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # another process put a file there after the unlink: the folder is theirs
        out.rmdir()


def save_resume_state(
    out: Path,
    model: torch.nn.Module,
    ema: torch.nn.Module | None,
    optimizer: Optimizer,
    generator: torch.Generator,
    state: dict[str, Any],
) -> None:
    """Write the training state at (state["epoch"], state["step"]) as one file; non-finite weights are refused."""
    opt_state = optimizer.state_dict()
    tensors = {"rng.generator": generator.get_state(), "rng.global": torch.get_rng_state()}
    tensors.update({f"raw.{k}": v.detach() for k, v in model.state_dict().items()})
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach() for k, v in ema.state_dict().items()})
    bad = first_non_finite(tensors)
    if bad is not None:
        raise CheckpointError(f"{out / RESUME_FILE}: not written: tensor {bad} holds NaN or infinite values")
    layout: dict[str, dict[str, Any]] = {}
    for index, values in opt_state["state"].items():
        layout[str(index)] = {}
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{key}"] = value
                layout[str(index)][key] = "tensor"
            else:
                layout[str(index)][key] = value
    everything = {**state, "optimizer_layout": layout, "param_groups": opt_state["param_groups"]}
    save_tensors(out / RESUME_FILE, tensors, metadata={"format": RESUME_FORMAT, "state": json.dumps(everything)})
    for legacy in _LEGACY:
        (out / legacy).unlink(missing_ok=True)


def load_resume_state(
    out: Path, optimizer: Optimizer, model: torch.nn.Module, ema: torch.nn.Module | None
) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
    """Restore weights, average and optimizer in place; return (state, generator state, global RNG state)."""
    path = out / RESUME_FILE
    if path.exists():
        tensors, metadata = read_safetensors(path)
        if metadata.get("format") != RESUME_FORMAT or "state" not in metadata:
            raise CheckpointError(f"{path}: not a heritage-cnn resume file")
        state = json.loads(metadata["state"])
    else:  # the two-file resume state: state.json + optimizer.safetensors, weights in last.*
        state, tensors = read_json(out / _LEGACY[0]), load_tensors(out / _LEGACY[1])
        if not any(k.startswith("raw.") for k in tensors):
            weights = load_checkpoint(out / "last").model.state_dict()
            tensors.update({f"raw.{k}": v for k, v in weights.items()})
    model.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("raw.")})
    if ema is not None:
        ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    opt_state: dict[str, Any] = {"state": {}, "param_groups": state.pop("param_groups")}
    for index, values in state.pop("optimizer_layout").items():
        opt_state["state"][int(index)] = {
            key: tensors[f"optim.{index}.{key}"] if value == "tensor" else value for key, value in values.items()
        }
    optimizer.load_state_dict(opt_state)
    return state, tensors["rng.generator"], tensors["rng.global"]


def resume_record(out: Path) -> dict[str, Any]:
    """What the resume state records besides tensors (epoch, step, history, `outliers_sha256`, ...), read from the
    file's header alone: what a resume is checked against before anything is loaded or written."""
    path = out / RESUME_FILE
    if not path.exists():
        return read_json(out / _LEGACY[0])
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
            data = head + handle.read(min(int.from_bytes(head.ljust(8, b"\0"), "little"), MAX_HEADER_BYTES))
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read ({error.strerror or error})") from None
    metadata = (safetensors_header(data) or {}).get("__metadata__")
    if not isinstance(metadata, dict) or metadata.get("format") != RESUME_FORMAT or "state" not in metadata:
        raise CheckpointError(f"{path}: not a heritage-cnn resume file")
    return json.loads(metadata["state"])


def epoch_randomness(
    config: TrainConfig, epoch: int, n: int, ranks: Ranks, device: torch.device
) -> tuple[torch.Generator, torch.Tensor, torch.Generator]:
    """(the epoch's generator, the batch order - the same on every rank -, the augmentation generator).
    Seeds dropout too. Rank 0 augments from the epoch's generator; other ranks get their own."""
    epoch_seed = config.seed * 1_000_003 + epoch
    generator = torch.Generator(device=device).manual_seed(epoch_seed)
    order = torch.randperm(n, generator=generator, device=device)
    seed_globals(epoch_seed + 7919 * ranks.rank, device)  # dropout
    augment_generator = generator
    if ranks.rank:
        augment_generator = torch.Generator(device=device).manual_seed(epoch_seed * 7919 + ranks.rank)
    return generator, order, augment_generator


def seed_globals(seed: int, device: torch.device) -> None:
    """Seed the global generators a run draws from (initial weights, dropout): the CPU's, and the run's GPU's when
    it runs on one; no other GPU's, nor a seed left queued for a GPU the caller has not started."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)


def caller_random_state(device: torch.device) -> contextlib.AbstractContextManager:
    """A block after which the global generators `seed_globals` seeds are as the caller left them."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


class StopFlag:
    """SIGINT (Ctrl-C) or SIGTERM (`kill`, a job scheduler's notice) sets a flag; the loop finishes the current
    step, writes a checkpoint and stops. A second signal stops at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.stop = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.stop:  # a second signal stops at once
            raise KeyboardInterrupt
        self.stop = True
        name = signal.Signals(signum).name
        print(f"\n{name}: finishing this step and writing a checkpoint (again to abort)", file=sys.stderr)

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


def write_history(out: Path, history: list[dict[str, float]], precise: dict[str, float] | None = None) -> None:
    """metrics.csv and metrics.json: one row per epoch, each validated with the statistics batch norm kept while
    training. `precise`: the saved network's validation once its statistics were recomputed (`--bn-statistics
    precise`), which the last row holds as well, as `precise_bn_val_loss` and `precise_bn_val_accuracy`: the figures
    last.* records, never to be taken for the epoch's own."""
    if not history:
        return
    rows = [dict(row) for row in history]
    rows[-1] |= {f"precise_bn_{key}": value for key, value in (precise or {}).items()}
    atomic_write_csv(out / METRICS_CSV, list(dict.fromkeys(key for row in rows for key in row)), rows)
    atomic_write_json(out / METRICS_JSON, rows)


def provenance(
    train_set: ImageSet, device: torch.device, autocast: torch.dtype | None, processes: int = 1
) -> dict[str, Any]:
    """What trained the model, computed once per run: the perceptual hash of every training image (so that
    evaluation can tell trained-on images apart), the machine and autocast (bf16 kernels differ between CPUs) and
    the number of processes (--nproc: each sums its share of a batch, so another count sums in another order)."""
    hashes = set_hashes(train_set)
    return {
        "trained_on": {"phash": [f"{int(h):016x}" for h in hashes], "distance": NEAR_DUPLICATE_DISTANCE},
        "trained_on_machine": machine_description(device, autocast),
        "processes": processes,
    }


def checkpoint_info(
    config: TrainConfig,
    history: list[dict[str, float]],
    n_train: int,
    n_val: int,
    flops: int,
    record: dict[str, Any],
) -> dict[str, Any]:
    """The checkpoint's metadata beyond classes and normalisation: recipe, split, metrics, provenance."""
    return {
        "trained_with": f"heritage-cnn {__version__}, torch {torch.__version__}",
        "seed": config.seed,
        "split": {**asdict(config.split), "folds": config.split.folds, "train": n_train, "val": n_val},
        "recipe": {
            k: v for k, v in config.to_dict().items() if k not in {"data", "out", "resume", "progress", "cache_dir"}
        },
        "epochs_trained": len(history),
        # the saved weights' validation: the last epoch's, or after its batch-norm statistics were recomputed
        "validation": (history[-1] if history else {}) | record.get("bn_statistics", {}).get("validation", {}),
        "history": history,
        "forward_mflop": round(flops / 1e6, 2),
        **record,
    }


def plot_curves(out: Path, history: list[dict[str, float]], precise: dict[str, float] | None = None) -> None:
    """curves.png; `precise` as for `write_history`, marked apart from the epochs' curves."""
    from heritage_cnn.training.curves import plot_training_curves

    plot_training_curves(history, out / CURVES_FILE, precise)  # saved atomically by figures.save_figure
