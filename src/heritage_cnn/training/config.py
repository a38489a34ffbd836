"""What defines a training run: every knob named in `TrainConfig`, each checked when the config is built.

`TrainConfig` is saved as `config.json` in the run folder; `--resume` refuses a config whose
recipe fields differ from it (runtime fields such as the device may change). The named recipes
that start from it are in `recipes`.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from heritage_cnn.base.checks import SEED_MAX, ConfigError, config_from_dict, in_range, json_kind, require
from heritage_cnn.base.io import CheckpointError, read_json
from heritage_cnn.data.augment import AugmentConfig
from heritage_cnn.data.split import SplitRecipe
from heritage_cnn.models.network import ModelConfig

Log = Callable[[str], None]  # where a run's messages go: print, a test's list, or nothing on ranks other than 0
# How a run is run, not what it trains: free to differ on --resume.
RUNTIME_FIELDS = ("out", "device", "threads", "progress", "cache_dir", "resume", "overwrite")
# Fields that name files or folders (`teachers`: several): config.json stores them absolute, compared resolved.
PATH_FIELDS = ("data", "relabel", "outliers", "cache_dir", "teachers")
BN_STATISTICS = ("running", "precise")
OPTIMIZERS = ("adamw", "sgd", "muon")  # what `training.optim.make_optimizer` builds
# Switches: only True or False, since truthiness would read amp="no" as on.
# The largest --lr: each optimizer moves a weight by about lr per step (AdamW, Muon at AdamW's scale), or lr times
# the gradient (SGD), so far above 1 nothing trains; 1e6 is taken and stops at the first epoch as diverged, which
# says why. Much higher, the optimizer's float32 arithmetic overflows (AdamW's step at 3e38) with a traceback.
MAX_LR = 1e6
BOOL_FIELDS = ("balanced_loss", "amp", "sync_bn", "compile", "resume", "overwrite", "progress")


@dataclass
class TrainConfig:
    """Everything that defines a training run. Saved as `config.json` in the run folder."""

    data: str
    out: str
    epochs: int = 45  # Muon in the time of `--recipe adamw` (benchmarks/recipes.md, "Muon becomes the default")
    batch_size: int = 32  # steps, not width, limit this network (benchmarks/recipes.md, "What the screening says")
    optimizer: str = "muon"  # muon (hidden filters; AdamW for the rest) | adamw | sgd (Nesterov momentum 0.9)
    lr: float = 3e-3  # peak learning rate (AdamW's scale, which Muon's update matches; SGD wants about 0.05-0.2)
    weight_decay: float = 0.05  # on conv and linear weights; none on batch norm and biases
    warmup_epochs: float = 1.0  # linear warm-up, then cosine decay to zero
    label_smoothing: float = 0.1  # without it, worse (benchmarks/recipes.md, "What the screening says")
    ema_decay: float = 0.0  # per-step decay of an exponential moving average of the weights; 0 = off
    # batch norm's statistics in the saved network: "running" (training's running average of its last batches) or
    # "precise" (recomputed at the end over the training photos, not augmented; benchmarks/recipes.md, "The stem's
    # order and the last epochs' batch-norm statistics": +1.5 pt for the quick recipe, mixed for the shipped models)
    bn_statistics: str = "running"
    mixup_alpha: float = 0.0  # MixUp on every batch (torchvision.transforms.v2); 0 = off
    cutmix_alpha: float = 0.0  # CutMix on every batch; with both on, one of the two per batch
    balanced_loss: bool = False  # weight the loss by inverse class frequency (scikit-learn's "balanced")
    consistency_weight: float = 0.0  # two augmented views per image + a Jensen-Shannon term between them; 0 = off
    teachers: tuple[str, ...] = ()  # trained checkpoints or run folders to distil from (knowledge distillation)
    distill_weight: float = 0.5  # share of the distillation term in the loss when there are teachers
    distill_temperature: float = 2.0  # softmax temperature of teachers and student in that term
    # outlier exposure (Hendrycks, Mazeika & Dietterich, ICLR 2019): a folder of photos of none of the classes, as many
    # of them as training photos in every step, each answered with a uniform softmax, so that "none of these" scores
    # low on what the network was shown is not a class (docs/open_set.md, "Outlier exposure from the first step")
    outliers: str | None = None
    outlier_weight: float = 0.5  # lambda, the outliers' share of the loss: the paper's value for vision, not tuned
    seed: int = 0
    split: SplitRecipe = field(default_factory=SplitRecipe)  # 1/5 validation, seed 0, pHash distance 10
    limit_per_class: int | None = None  # use at most this many images per class (quick runs)
    relabel: str | None = None  # a CSV of path,new_label rows applied to the folder's labels (data/relabel.py)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # mixed precision: bf16 (fp16 on older GPUs) on CUDA, bf16 on CPUs with native bf16
    sync_bn: bool = False  # synchronised batch norm across processes (distributed runs)
    compile: bool = False  # torch.compile the network (pays off on GPUs and long runs)
    threads: int | None = None  # intra-op threads on CPU (default: all cores)
    cache_dir: str | None = None  # keep decoded images here between runs
    resume: bool = False
    overwrite: bool = False  # a fresh run into a folder holding another run replaces it (else refused)
    progress: bool = True
    eval_batch_size: int = 64  # small batches keep channels_last inference in cache

    def __post_init__(self) -> None:
        self._check_kinds()
        require(
            self.optimizer in OPTIMIZERS,
            f"{{0}} must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}",
            "optimizer",
        )
        require(
            self.optimizer != "muon" or sum(self.model.blocks) > 1,
            "{0} muon (the default) needs a network with more than one convolution (it updates the ones after the "
            "stem): add {0} adamw",
            "optimizer",
        )
        require(
            in_range(self.lr, 0, MAX_LR, above_low=True),
            f"{{0}} must be a positive finite number up to {MAX_LR:g}, got {self.lr}",
            "lr",
        )
        for name in ("weight_decay", "warmup_epochs", "mixup_alpha", "cutmix_alpha", "consistency_weight"):
            value = getattr(self, name)
            require(in_range(value, 0), f"{{0}} must be a finite number >= 0, got {value}", name)
        require(
            in_range(self.label_smoothing, 0, 1, below_high=True),
            f"{{0}} must be in [0, 1), got {self.label_smoothing}",
            "label_smoothing",
        )
        require(
            self.bn_statistics in BN_STATISTICS,
            f"{{0}} must be one of {', '.join(BN_STATISTICS)}, got {self.bn_statistics!r}",
            "bn_statistics",
        )
        require(
            in_range(self.ema_decay, 0, 1, below_high=True),
            f"{{0}} must be in [0, 1), got {self.ema_decay}",
            "ema_decay",
        )
        require(
            not (self.consistency_weight and (self.mixup_alpha or self.cutmix_alpha)),
            "{0} compares two views of the same image: it cannot be combined with {1}/{2}",
            "consistency_weight",
            "mixup_alpha",
            "cutmix_alpha",
        )
        require(
            in_range(self.distill_weight, 0, 1), f"{{0}} must be in [0, 1], got {self.distill_weight}", "distill_weight"
        )
        require(
            in_range(self.distill_temperature, 0, above_low=True),
            f"{{0}} must be a positive finite number, got {self.distill_temperature}",
            "distill_temperature",
        )
        require(
            in_range(self.outlier_weight, 0, above_low=True),
            f"{{0}} must be a positive finite number, got {self.outlier_weight}",
            "outlier_weight",
        )
        require(not (self.resume and self.overwrite), "{0} and {1} exclude each other", "resume", "overwrite")

    def _check_kinds(self) -> None:
        """The fields whose type decides their meaning: switches, whole numbers (a numpy integer is stored as an
        int, so that config.json can hold it), the list of teachers and the cache folder."""
        for name in BOOL_FIELDS:
            value = getattr(self, name)
            require(isinstance(value, bool), f"{{0}} must be True or False, got {value!r}", name)
        check_whole(self, "epochs", 1)
        check_whole(self, "batch_size", 2, why=" (batch norm)")
        check_whole(self, "seed", 0, SEED_MAX)
        check_whole(self, "eval_batch_size", 1)
        check_whole(self, "limit_per_class", 2, optional=True)
        check_whole(self, "threads", 1, optional=True)
        teachers = self.teachers
        require(
            isinstance(teachers, list | tuple) and all(isinstance(t, str | os.PathLike) for t in teachers),
            f"{{0}} must be a list of checkpoint paths, got {teachers!r}",
            "teachers",
        )
        self.teachers = tuple(os.fspath(t) for t in teachers)
        cache = self.cache_dir
        require(
            cache is None or (isinstance(cache, str | os.PathLike) and bool(os.fspath(cache).strip())),
            f"{{0}} must name a folder (None: no cache), got {cache!r}",
            "cache_dir",
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_absolute_paths(self) -> TrainConfig:
        """This config with every path absolute (PATH_FIELDS), as config.json stores it: a run folder is then
        resumed from any directory."""
        absolute = {
            k: os.path.abspath(v) if v else v for k in PATH_FIELDS if k != "teachers" for v in [getattr(self, k)]
        }
        return replace(self, **absolute, teachers=tuple(os.path.abspath(t) for t in self.teachers))

    def data_missing(self) -> bool:
        """Whether `data` leads to no folder from here: the data folder moved or renamed since, or a relative path
        recorded elsewhere. A resume then takes the data folder given now, and its data checks
        (`training.resume_checks`: the same photos by their digests, the same split) refuse one that is not the run's."""
        return not Path(self.data).is_dir()

    def recipe_differences(self, saved: TrainConfig) -> list[str]:
        """'field: saved value -> this value' for every recipe field that differs (runtime fields may)."""
        mine, theirs = _flat(self.to_dict()), _flat(saved.to_dict())
        for key in PATH_FIELDS:
            if resolved_paths(mine[key]) == resolved_paths(theirs[key]):
                mine[key] = theirs[key]  # the same file or folder, spelled another way
        if saved.data_missing():
            mine["data"] = theirs["data"]  # the data folder given now is taken
        return [
            f"{key}: {theirs.get(key)!r} in the run, {mine.get(key)!r} now"
            for key in sorted(set(mine) | set(theirs))
            if key not in RUNTIME_FIELDS and mine.get(key) != theirs.get(key)
        ]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """The config a dict (config.json, a checkpoint's recipe) holds; one of another shape is a ValueError naming
        what is wrong, a refused value a ConfigError naming its field as a dotted path (`model.widths`)."""
        if not isinstance(data, dict):
            raise ValueError(f"a training config must be a JSON object of its fields, got {json_kind(data)}")
        data = dict(data)
        # a config without the field trained with AdamW (benchmarks/recipes.md, "Muon becomes the default"): it reads
        # as AdamW, never as today's default, so that --resume cannot switch a run's optimizer
        data.setdefault("optimizer", "adamw")
        if data.get("cache_dir") == "":  # a runtime field, recorded as given before it was checked
            data["cache_dir"] = None
        for name in ("data", "out", "relabel", "outliers"):  # read as paths long after the config is made
            optional = name in ("relabel", "outliers")
            if name in data and not (isinstance(data[name], str) or (optional and data[name] is None)):
                raise ValueError(f"{name} must be a path, got {json_kind(data[name])}")
        for name, make in (
            ("split", SplitRecipe.from_dict),
            ("model", ModelConfig.from_dict),
            ("augment", AugmentConfig.from_dict),
        ):
            try:
                data[name] = make(data.get(name, {}))
            except ConfigError as error:
                raise error.within(name) from None
            except ValueError as error:
                raise ValueError(f"{name}: {error}") from None
        return config_from_dict(cls, data)


def read_config(path: Path) -> TrainConfig:
    """A run's config.json; a file that is no training config, or holds a value the recipe refuses, is one line
    naming the file and what is wrong (CheckpointError), as for any other record of a run."""
    record = read_json(path)
    try:
        return TrainConfig.from_dict(record)
    except ConfigError as error:
        raise CheckpointError(f"{path}: {error.named(lambda field: field)}") from None
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from None


def whole_number(value: object) -> int | None:
    """`value` as an int when it is a whole number (a numpy integer too), else None: True is not 1 epoch."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return None
    return int(value)


def check_whole(
    config: object, name: str, low: int, high: int | None = None, why: str = "", optional: bool = False
) -> None:
    """Refuse field `name` of `config` unless a whole number from `low` (to `high`), or None when `optional`;
    store it as an int."""
    value = getattr(config, name)
    if value is None and optional:
        return
    number = whole_number(value)
    require(number is not None, f"{{0}} must be a whole number, got {value!r}", name)
    limit = f"at least {low}" if high is None else f"from {low} to {high}"
    require(low <= number and (high is None or number <= high), f"{{0}} must be {limit}{why}, got {number}", name)
    object.__setattr__(config, name, number)


def resolved_paths(value: Any) -> Any:
    """A path (or a list of them) resolved, for comparing (`out/../rl.csv` and an absolute path to it are one file);
    None stays None."""
    if isinstance(value, list):
        return [resolved_paths(v) for v in value]
    return os.path.realpath(value) if value else value


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"widths": ...}} -> {"model.widths": ...}, tuples as lists (as JSON gives them back)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat
