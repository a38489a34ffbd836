"""Refusing a bad setting where it is made.

The config dataclasses (the recipe, the model, the augmentation, the split) check their fields in
`__post_init__` and raise `ConfigError`. Its message names the fields as the library spells them
(`input_scale must be from 1 to 4, got 0.5`); the error also carries those fields, so that the command
line can name the flags that set them instead (`--input-scale must be ...`) without reading the message.
Every check refuses NaN and infinity: a comparison with NaN is false, so `x < 0` alone lets it through,
and a NaN learning rate or zoom trains to NaN weights without a word.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import MISSING, fields
from typing import Any, TypeVar

# The largest seed every command takes (`--seed`): scikit-learn's folds (`review`, `train`'s split) take a NumPy seed
# below 2**32, and training seeds each epoch with seed * 1_000_003 + epoch, and its augmentation with that times 7919
# (training.state), which must stay below 2**64, torch.Generator's limit: below 2**31 it does.
SEED_MAX = 2**31 - 1

Config = TypeVar("Config")


class ConfigError(ValueError):
    """A refused setting. `template` holds `{0}`, `{1}`... where the fields in `fields` (dotted paths in
    `TrainConfig`: `model.input_scale`) are named; str() names them as the library spells them."""

    def __init__(self, template: str, *fields: str) -> None:
        self.template, self.fields = template, fields
        super().__init__(self.named(lambda path: path.rsplit(".", 1)[-1]))

    def named(self, name: Callable[[str], str]) -> str:
        """The message with each field spelled `name(field)`: the command line passes its flag names."""
        text = self.template
        for index, path in enumerate(self.fields):
            text = text.replace(f"{{{index}}}", name(path))
        return text

    def within(self, prefix: str) -> ConfigError:
        """The same error from a sub-config (`model`), its fields as paths from the top (`model.widths`)."""
        return ConfigError(self.template, *(f"{prefix}.{path}" for path in self.fields))


def require(condition: bool, template: str, *fields: str) -> None:
    """Raise ConfigError(template, *fields) unless `condition`."""
    if not condition:
        raise ConfigError(template, *fields)


def in_range(
    value: float, low: float, high: float = math.inf, *, above_low: bool = False, below_high: bool = False
) -> bool:
    """A finite number between `low` and `high` (each end included unless `above_low` / `below_high`)."""
    if not isinstance(value, int | float) or not math.isfinite(value):
        return False
    return (value > low if above_low else value >= low) and (value < high if below_high else value <= high)


def config_from_dict(cls: type[Config], data: Mapping[str, Any]) -> Config:
    """`cls(**data)` for a config dataclass, with a one-line ValueError instead of a TypeError for what a config.json
    or checkpoint written by hand or by a newer version can hold: not a mapping, keys it does not have, fields it
    needs missing, or a value of a type its checks cannot compare."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{cls.__name__} must be a JSON object of its fields, got {json_kind(data)}")
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    needed = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    missing = [name for name in needed if name not in data]
    if missing:
        raise ValueError(f"{cls.__name__} lacks the required keys {missing}")
    try:
        return cls(**data)
    except TypeError as error:  # `"hidden": "x"` meets `>=` in a check: a wrong type, not a bug
        raise ValueError(f"{cls.__name__}: a value of the wrong type ({error})") from None


def json_kind(value: object) -> str:
    """What a JSON value is, in JSON's words (a whole list would make the message as long as the file)."""
    if value is None:
        return "null"
    kinds = ((bool, "true/false"), (str, "a string"), (int | float, "a number"), (list | tuple, "a list"))
    return next((name for kind, name in kinds if isinstance(value, kind)), type(value).__name__)
