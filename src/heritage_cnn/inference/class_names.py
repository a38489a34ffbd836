"""The rule for a new class's name, one for teach's folders and the web page's corrections (`apps.corrections`):
not sort's reserved folders or files in any spelling, nothing blank, invisible or not UTF-8, and not a class the
model knows or another new class but for case, spaces, underscores or Unicode spelling (`same_class_as`)."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from heritage_cnn.base.names import HIDDEN_CATEGORIES
from heritage_cnn.data.folders import display_name
from heritage_cnn.inference.sort import NONE, UNCERTAIN
from heritage_cnn.inference.sort_manifest import MANIFEST_NAME, SKIPPED_NAME
from heritage_cnn.inference.sort_settings import SETTINGS_NAME
from heritage_cnn.models.metadata import class_name_problem

RESERVED = (UNCERTAIN, NONE)
SORT_FILES = (MANIFEST_NAME, SKIPPED_NAME, SETTINGS_NAME)  # beside a sorted folder's class folders: no class's name


def _same_class(name: str) -> str:
    """What two names of one class share: the display name (`bell_tower` and `bell tower`), case aside, after Unicode
    compatibility normalisation (NFKC), so that names that print alike are one: `portál` spelt composed (NFC) or
    decomposed (NFD), a fullwidth `ａltar` and `altar`, a non-breaking space and a space."""
    folded = display_name(unicodedata.normalize("NFKC", name)).casefold()
    return unicodedata.normalize("NFKC", folded)  # case folding can leave a name unnormalised (Unicode's NFKC_CF)


def same_class_as(name: str, names: Iterable[str]) -> str | None:
    """The first of `names` that is `name` but for case, spaces, underscores or Unicode spelling (`Bell Tower`,
    `bell_tower`; `_same_class`), or None."""
    key = _same_class(name)
    return next((n for n in names if _same_class(n) == key), None)


def new_class_problem(
    name: str, known: Iterable[str] = (), taken: Iterable[str] = (), called: str = "the class name"
) -> str | None:
    """Why `name` cannot name a new class (one line, naming it), or None: any case or Unicode spelling of sort's reserved
    folders or of the files beside them (`SORT_FILES`), a name that is blank or has blanks around it, one that is not
    UTF-8 or no class may have (`class_name_problem`), or one that is a class of the model (`known`) or another new
    class (`taken`) but for case, spaces or underscores. The one rule for teach's folders and the page's corrections
    (`apps.corrections`); `called`: the message's word for it."""
    if _folded(name) in {_folded(r) for r in RESERVED}:
        return f"{name!r} is reserved for sort's photos of no class or an unsure one"
    if _folded(name) in {_folded(f) for f in SORT_FILES}:
        return f"{name!r} is a file sort keeps beside its class folders, so it cannot name a class"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return f"{called} is not valid UTF-8, so it cannot name a class"
    if not name.strip() or name != name.strip():
        return f"{name!r} is blank or has blanks around it, so it cannot name a class"
    problem = class_name_problem(name) or _invisible(name)
    if problem:
        return f"{called} {problem}, so it cannot name a class"
    same = same_class_as(name, known)
    if same is not None:
        return (
            f"{name!r} names the model's class {same!r}{_spelt(name, same)} (the same name but for case, spaces, "
            "underscores or Unicode spelling); photos of a class it knows are corrections (--corrections: a sorted folder whose photos you "
            "moved)"
        )
    same = same_class_as(name, (t for t in taken if t != name))
    if same is not None:
        return (
            f"{name!r} and the folder {same!r}{_spelt(name, same)} would be two classes of one name (the same but "
            "for case, spaces, underscores or Unicode spelling); put their photos in one folder"
        )
    return None


def _folded(name: str) -> str:
    """`name` as the reserved names are compared: any case, any Unicode spelling (a fullwidth `＿ｎｏｎｅ` is `_none`)."""
    return unicodedata.normalize("NFKC", name).casefold()


def _spelt(name: str, same: str) -> str:
    """Both names by their code points when they print alike (`portál` composed and decomposed), else nothing."""
    if unicodedata.normalize("NFC", name) != unicodedata.normalize("NFC", same):
        return ""
    return f" (spelt {name!a} and {same!a})"


def _invisible(name: str) -> str | None:
    """Why a name with a character that prints nothing (a zero-width space, a right-to-left override, a line
    separator: the characters `shown` escapes, `HIDDEN_CATEGORIES`) cannot name a class, or None: it would print like
    another name, or reorder the line it is in. Spaces other than ' ' (a non-breaking one) print as spaces, and are
    folded as spaces are; a character newer than Python's Unicode tables (an emoji) is allowed."""
    hidden = next((c for c in name if unicodedata.category(c) in HIDDEN_CATEGORIES), None)
    if hidden is None:
        return None
    return f"{name!r} holds the invisible character U+{ord(hidden):04X} ({unicodedata.name(hidden, 'unnamed')})"
