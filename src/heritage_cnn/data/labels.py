"""Naming a class: one resolver for every tool (`explain --target`, `generate --class`, the Python API).

A user may type the folder name (`dome(inner)`), the display name (`dome (inner)`), either in any case
or with spaces for underscores, or the class index; anything else is a one-line error listing the choices.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from heritage_cnn.data.folders import display_name


def _key(text: str) -> str:
    """Case, spaces and underscores do not matter: `Bell_Tower` = `bell tower` = `belltower`."""
    return re.sub(r"[\s_]+", "", text.lower())


def resolve_class(name: str | int, classes: Sequence[str]) -> int:
    """The index of a class given by index, folder name or display name (case-insensitive)."""
    text = str(name).strip()
    for index, folder in enumerate(classes):
        if _key(text) in (_key(folder), _key(display_name(folder))):
            return index
    if text.isdigit() and int(text) < len(classes):
        return int(text)
    raise ValueError(
        f"unknown class {text!r}; the classes are: {', '.join(classes)} (or their index 0-{len(classes) - 1})"
    )


__all__ = ["resolve_class"]
