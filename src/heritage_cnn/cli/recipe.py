"""The training recipe's flags, declared once: each flag names the `TrainConfig` field it sets.

The same table builds the argparse group (help shows the dataclass's default) and the config (only the
flags the user typed are applied, so `--lr 0` reaches `TrainConfig` and is refused there, never replaced
by a default), and tells a resumed run which typed flags disagree with the run's saved recipe.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from heritage_cnn.base.checks import ConfigError
from heritage_cnn.base.names import first_few
from heritage_cnn.cli.options import DEVICES, UsageError, int_list, positive_int, seed_number
from heritage_cnn.training.config import (
    BN_STATISTICS,
    OPTIMIZERS,
    PATH_FIELDS,
    RUNTIME_FIELDS,
    TrainConfig,
    read_config,
    resolved_paths,
)
from heritage_cnn.training.recipes import RECIPES, recipe_config

_UNSET = object()
NO_AUGMENT = {
    "rotation_degrees": 0.0,
    "hflip": False,
    "zoom": 0.0,
    "shift": 0.0,
    "brightness": 0.0,
    "contrast": 0.0,
    "saturation": 0.0,
    "erase": 0.0,
}


@dataclass(
    frozen=True, eq=False
)  # each flag is one object of the table: hashed by identity (--no-augment's const is a dict)
class Flag:
    """One command-line flag of the recipe: `--name` sets the config field at `path` (dots go into sub-configs)."""

    name: str
    path: str
    help: str
    type: Callable[[str], Any] | None = float
    const: Any = _UNSET  # a switch: the value it sets when given
    show_default: bool = True
    choices: tuple[str, ...] | None = None
    append: bool = False

    @property
    def runtime(self) -> bool:
        """How to run, not what is trained: free to differ on --resume (the library's RUNTIME_FIELDS)."""
        return self.path in RUNTIME_FIELDS

    @property
    def dest(self) -> str:
        return "recipe_" + self.name.lstrip("-").replace("-", "_")


RECIPE = (
    Flag("--epochs", "epochs", "passes over the training split", int),
    Flag("--batch-size", "batch_size", "images per step", int),
    Flag(
        "--optimizer",
        "optimizer",
        "muon (Muon on the filters after the stem, AdamW on the rest); adamw; or sgd (Nesterov momentum 0.9)",
        str,
        choices=OPTIMIZERS,
    ),
    Flag("--lr", "lr", "peak learning rate (AdamW, and Muon at AdamW's scale; SGD wants about 0.05-0.2)"),
    Flag("--warmup", "warmup_epochs", "epochs of linear warm-up before the cosine"),
    Flag("--weight-decay", "weight_decay", "AdamW weight decay on weights"),
    Flag("--label-smoothing", "label_smoothing", "cross-entropy label smoothing"),
    Flag(
        "--bn-statistics",
        "bn_statistics",
        "batch norm's statistics in the saved network: running (training's running average) or precise "
        "(recomputed at the end over the training photos, not augmented)",
        str,
        choices=BN_STATISTICS,
    ),
    Flag("--ema", "ema_decay", "per-step decay of a weight average that is validated and saved, e.g. 0.998; 0 = off"),
    Flag("--mixup", "mixup_alpha", "MixUp alpha, 0 = off"),
    Flag("--cutmix", "cutmix_alpha", "CutMix alpha, 0 = off"),
    Flag(
        "--consistency",
        "consistency_weight",
        "weight of a Jensen-Shannon term between two augmented views of each image (each step then runs "
        "2x --batch-size images; AugMix uses 12); 0 = off",
    ),
    Flag(
        "--balanced-loss",
        "balanced_loss",
        "weight the loss by inverse class frequency (small classes count more)",
        const=True,
    ),
    Flag("--dropout", "model.dropout", "dropout before each fully connected layer"),
    Flag(
        "--teacher",
        "teachers",
        "distil from this trained run folder or checkpoint (repeat for an ensemble)",
        str,
        append=True,
        show_default=False,
    ),
    Flag("--distill-weight", "distill_weight", "share of the teachers' soft targets in the loss"),
    Flag("--distill-temperature", "distill_temperature", "softmax temperature of the distillation term"),
    Flag(
        "--outliers",
        "outliers",
        "a folder of photos of none of the classes (any layout below it): each step adds as many of them, "
        "augmented, answered with a uniform softmax (outlier exposure), so that none of these scores low on such photos",
        str,
        show_default=False,
    ),
    Flag("--outlier-weight", "outlier_weight", "the outliers' share of the loss (with --outliers)"),
    Flag("--seed", "seed", "seed of initialisation, order and augmentation", seed_number),
    Flag(
        "--val-fraction",
        "split.val_fraction",
        "validation share, up to 0.5: one fold of a stratified group k-fold, so rounded to 1/k, k = round(1 / "
        "VAL_FRACTION) (0.3 is a third, 0.4 a half)",
    ),
    Flag("--split-seed", "split.seed", "seed of the validation split", seed_number),
    Flag(
        "--limit-per-class",
        "limit_per_class",
        "at most N images per class (quick runs; default: all)",
        int,
        show_default=False,
    ),
    Flag(
        "--relabel",
        "relabel",
        "a CSV of path,new_label rows (heritage review's relabel.csv, edited) applied to the folder's labels; "
        "the photos stay where they are",
        str,
        show_default=False,
    ),
    Flag("--widths", "model.widths", "channels per stage", int_list),
    Flag("--blocks", "model.blocks", "conv blocks per stage (1 each when --widths has another length)", int_list),
    Flag("--plain", "model.residual", "no residual connections", const=False),
    Flag(
        "--stem-pool-first",
        "model.stem_pool_first",
        "stage 1 as conv, 2x2 max-pool, batch norm, ReLU (its element-wise work on a quarter of the pixels)",
        const=True,
    ),
    Flag(
        "--input-scale",
        "model.input_scale",
        "the network enlarges each photo this much first (bilinear; 1.5 = trained at 96 px, about 2.25x the "
        "compute): an ensemble member that differs by scale",
    ),
    Flag("--rotation", "augment.rotation_degrees", "max random rotation in degrees"),
    Flag("--zoom", "augment.zoom", "random zoom range, scale in [1/(1+z), 1+z]"),
    Flag("--shift", "augment.shift", "random shift, fraction of the side"),
    Flag("--erase", "augment.erase", "probability of random erasing of a rectangle per image"),
    Flag("--no-augment", "augment", "switch augmentation off (for comparisons)", const=NO_AUGMENT),
    Flag(
        "--no-amp",
        "amp",
        "float32 throughout: no bf16 autocast on CPUs that have bf16 natively, none on CUDA (the same numbers on "
        "every CPU family)",
        const=False,
    ),
    Flag("--sync-bn", "sync_bn", "synchronised batch norm across processes (distributed runs)", const=True),
    Flag("--compile", "compile", "torch.compile the network (GPU, long runs)", const=True),
    Flag("--device", "device", "where to train", str, choices=DEVICES),
    Flag("--threads", "threads", "CPU threads (default: all cores)", positive_int, show_default=False),
    Flag("--cache-dir", "cache_dir", "keep decoded images here between runs", str, show_default=False),
)
# TrainConfig fields that are not recipe flags: where the data and the run are, and how it is run.
NOT_FLAGS = frozenset({"data", "out", "resume", "overwrite", "progress", "eval_batch_size"})


def _get(config: dict[str, Any], path: str) -> Any:
    for key in path.split("."):
        config = config[key]
    return config


def _set(config: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        config = config[key]
    config[last] = value


def _shown(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_preset_option(parser: argparse.ArgumentParser, default: str) -> None:
    """`--recipe full|adamw|quick`: the named starting point (heritage_cnn.training.recipes.RECIPES) the flags apply to."""
    parser.add_argument(
        "--recipe",
        choices=tuple(RECIPES),
        default=default,
        help=f"starting point: full = the default recipe (Muon, {TrainConfig.epochs} epochs), adamw = the shipped networks' "
        f"recipe (AdamW, {RECIPES['adamw']['epochs']} epochs, the same time), quick = minutes, for a first look "
        f"(default {default})",
    )


def add_recipe_options(parser: argparse.ArgumentParser, preset: str) -> None:
    """The recipe group; a flag not typed leaves no value behind (argparse.SUPPRESS), so defaults live only in TrainConfig
    and the recipes. The defaults shown are those of `preset`, the command's default --recipe."""
    defaults = recipe_config(preset, "", "").to_dict()
    group = parser.add_argument_group(f"recipe (defaults shown: the {preset} recipe; another --recipe changes them)")
    for flag in RECIPE:
        if flag.const is not _UNSET:
            group.add_argument(
                flag.name,
                dest=flag.dest,
                action="store_const",
                const=flag.const,
                help=flag.help,
                default=argparse.SUPPRESS,
            )
            continue
        text = flag.help + (f" (default {_shown(_get(defaults, flag.path))})" if flag.show_default else "")
        group.add_argument(
            flag.name,
            dest=flag.dest,
            type=flag.type,
            choices=flag.choices,
            action="append" if flag.append else "store",
            metavar="RUN"
            if flag.append
            else (None if flag.choices else flag.name.lstrip("-").upper().replace("-", "_")),
            help=text,
            default=argparse.SUPPRESS,
        )


def typed_flags(args: argparse.Namespace) -> dict[Flag, Any]:
    """The recipe flags the user typed, with their values."""
    given = vars(args)
    return {flag: given[flag.dest] for flag in RECIPE if flag.dest in given}


def build_config(base: TrainConfig, typed: dict[Flag, Any]) -> TrainConfig:
    """`base` with the typed flags applied (whole sub-configs first, then their fields)."""
    config = base.to_dict()
    for flag, value in sorted(typed.items(), key=lambda item: item[0].path.count(".")):
        _set(config, flag.path, dict(value) if isinstance(value, dict) else value)
    names = {flag.name for flag in typed}
    if "--widths" in names and "--blocks" not in names and len(config["model"]["widths"]) != len(base.model.blocks):
        config["model"]["blocks"] = (1,) * len(config["model"]["widths"])  # another stage count: one block each
    try:
        return TrainConfig.from_dict(config)
    except ConfigError as error:
        raise ValueError(error.named(flag_name)) from None


def flag_name(path: str) -> str:
    """The flag that sets the config field at `path` (`model.input_scale` -> `--input-scale`), for messages;
    a field without a flag of its own keeps its name."""
    return next((flag.name for flag in RECIPE if flag.path == path and flag.const is _UNSET), path.rsplit(".", 1)[-1])


def resume_config(args: argparse.Namespace, out: str, data: str | None) -> TrainConfig | None:
    """The saved config of the run in `out` with the typed runtime flags; a typed flag that changes the
    recipe (`--recipe` included) is a one-line error naming it and both values. None when `out` holds no earlier run."""
    from heritage_cnn.training.state import CONFIG_FILE

    path = Path(out) / CONFIG_FILE
    if not path.exists():
        return None
    saved = read_config(path)
    typed = typed_flags(args)
    wanted = build_config(saved, typed).to_dict()
    before = saved.to_dict()
    conflicts = [
        _conflict(flag, _get(wanted, flag.path), _get(before, flag.path))
        for flag in typed
        if not flag.runtime and not _same_file(flag, _get(wanted, flag.path), _get(before, flag.path))
    ]
    conflicts = [c for c in conflicts if c]
    preset = getattr(args, "recipe", None)
    if preset is not None:  # typed: the preset, with the typed flags, must be the run's recipe
        named = build_config(recipe_config(preset, saved.data, out), typed).recipe_differences(saved)
        if named:
            conflicts.append(f"--recipe {preset} (the run's recipe differs: {first_few(named, '; ')})")
    if data is None and saved.data_missing():
        raise UsageError(
            f"--resume: the run's data folder {saved.data} is not there ({path}); if it moved, give its new place "
            "with --data: its photos are checked against the run's"
        )
    moved = data is not None and saved.data_missing()  # then the data folder typed now is taken
    if data is not None and not moved and Path(data).resolve() != Path(saved.data).resolve():
        conflicts.append(f"--data {data} (the run has {saved.data})")
    if conflicts:
        raise UsageError(
            f"--resume: {'; '.join(conflicts)} in {path}: resume without these flags, or train into a new --out"
        )
    resumed = build_config(saved, {flag: value for flag, value in typed.items() if flag.runtime})
    for field in ("threads", "device"):
        if getattr(resumed, field) != getattr(saved, field):  # allowed, but the promise of --resume does not hold
            print(
                f"note: --{field} {_shown_typed(getattr(resumed, field))} differs from the run's "
                f"({_shown_typed(getattr(saved, field))}): the result will not be bit-identical to an uninterrupted run"
            )
    # where the run is now: a copied or moved folder is written, not the old one
    return replace(resumed, out=str(out), data=data if moved else resumed.data)


def _same_file(flag: Flag, wanted: Any, before: Any) -> bool:
    """Whether a path flag names the run's own file or folder, spelled another way (`--relabel rl.csv` for the run's
    absolute `/surveys/rl.csv`: the command that started the run, typed again)."""
    return flag.path in PATH_FIELDS and resolved_paths(wanted) == resolved_paths(before)


def _shown_typed(value: Any) -> str:
    """A value as the user would type it: `not set` for none."""
    return "not set" if value is None else _shown(value)


def _conflict(flag: Flag, wanted: Any, before: Any) -> str:
    """'--flag NEW (the run has OLD)', only the differing keys of a sub-config (`--no-augment`); '' when equal."""
    if wanted == before:
        return ""
    if isinstance(wanted, dict):
        keys = [k for k in wanted if wanted[k] != before.get(k)]
        shown = ", ".join(f"{k} {_shown_typed(wanted[k])}" for k in keys)
        return f"{flag.name} sets {shown} (the run has {', '.join(f'{k} {_shown_typed(before.get(k))}' for k in keys)})"
    if flag.const is not _UNSET:
        return f"{flag.name} (the run has {_shown_typed(before)})"
    return f"{flag.name} {_shown_typed(wanted)} (the run has {_shown_typed(before)})"


def recipe_fields() -> set[str]:
    """Top-level TrainConfig fields that the table reaches (for the test that none is forgotten)."""
    return {flag.path.split(".")[0] for flag in RECIPE}


def config_fields() -> set[str]:
    return {f.name for f in fields(TrainConfig)} - NOT_FLAGS


def command_flags(config: TrainConfig, spelled: frozenset[str] = frozenset()) -> list[str]:
    """The recipe flags that rebuild `config` from TrainConfig's defaults (`new_config` of `--recipe full`), in the
    table's order: each flag whose value differs, and those whose paths are in `spelled` whatever their value. A
    recipe field no flag sets, left at a value other than its default, is named in brackets, so that a command is
    never shorter than its run."""
    values, defaults = config.to_dict(), TrainConfig(data=config.data, out=config.out).to_dict()
    flags: list[str] = []
    if values["augment"] != defaults["augment"] and all(
        values["augment"][k] == v for k, v in NO_AUGMENT.items() if not _has_flag(f"augment.{k}")
    ):
        flags.append("--no-augment")  # applied before the fields' own flags, as `build_config` applies them
        defaults["augment"] = {**defaults["augment"], **NO_AUGMENT}
    for flag in RECIPE:
        if flag.runtime or flag.path == "augment":
            continue
        value = _get(values, flag.path)
        if flag.const is not _UNSET:
            if value == flag.const and value != _get(defaults, flag.path):
                flags.append(flag.name)
        elif flag.append:
            flags += [f"{flag.name} {item}" for item in value]
        elif value is not None and (value != _get(defaults, flag.path) or flag.path in spelled):
            flags.append(f"{flag.name} {_shown(value)}")
    unset = [
        f"({path} {_shown(value)})"
        for path, value in _leaves(values)
        if not _has_flag(path) and path.split(".")[0] not in NOT_FLAGS and value != _get(defaults, path)
    ]
    return flags + unset


def _has_flag(path: str) -> bool:
    return any(flag.path == path for flag in RECIPE)


def _leaves(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """("model.widths", (..)) for every field of a config dict, sub-configs flattened."""
    leaves: list[tuple[str, Any]] = []
    for key, value in values.items():
        if isinstance(value, dict):
            leaves += _leaves(value, f"{prefix}{key}.")
        else:
            leaves.append((f"{prefix}{key}", value))
    return leaves


def new_config(args: argparse.Namespace, data: str, out: str) -> TrainConfig:
    """A fresh run's config: the chosen preset (`--recipe`, default full: TrainConfig's defaults) with the
    typed flags."""
    return build_config(recipe_config(getattr(args, "recipe", None) or "full", data, out), typed_flags(args))
