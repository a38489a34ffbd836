"""What the packages of the negative set hold, read: licences from DEP-5 copyright files, Plasma's wallpaper
metadata, wheel METADATA and scikit-image's docstrings and scikit-learn's README; the picture inside a jigzo puzzle
file. Used by benchmarks/negatives.py; pure functions of the bytes they are given."""

from __future__ import annotations

import ast
import fnmatch
import io
import json
import re
from pathlib import Path

from PIL import Image


def dep5_stanzas(text: str) -> list[tuple[list[str], str]]:
    """(file patterns, licence name) of each `Files:` stanza of a machine-readable copyright file, in order."""
    stanzas = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
        if "files" in fields and fields.get("license"):
            stanzas.append((fields["files"].split(), fields["license"].split(" ")[0]))
    return stanzas


def dep5_licence(text: str, path: str) -> str | None:
    """The licence the last matching `Files:` stanza gives `path` (an installed path: patterns name the source
    tree, so a pattern matches any tail of the path, or the same file name), or None if none matches."""
    parts = path.strip("/").split("/")
    tails = ["/".join(parts[k:]) for k in range(len(parts))]
    found = None
    for patterns, licence in dep5_stanzas(text):
        for pattern in patterns:
            plain_name = not any(c in pattern for c in "*?[")
            if any(fnmatch.fnmatchcase(tail, pattern) for tail in tails) or (
                plain_name and pattern.rsplit("/", 1)[-1] == parts[-1]
            ):
                found = licence
    return found


def wheel_licence(metadata: str) -> str:
    """License-Expression, else the licence of `Files: *` in a DEP-5 style License field, else License."""
    fields = {}
    for line in metadata.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    if fields.get("License-Expression"):
        return fields["License-Expression"]
    match = re.search(r"License: Files: \*\s+Copyright:[^\n]*\n\s+License: (\S+)", metadata)
    return match.group(1) if match else fields.get("License", "unknown")


def skimage_note(fetchers: str, member: str) -> str | None:
    """The sentence of scikit-image's docstring for `data/NAME` that states its copyright or licence."""
    for node in ast.parse(fetchers).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        names = {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        if member in names:
            text = " ".join((ast.get_docstring(node) or "").split())
            for sentence in re.split(r"(?<=\.) ", text):
                if re.search(r"copyright|licen[cs]|public domain|CC0", sentence, re.IGNORECASE):
                    return re.sub(r"^.*Notes -+ ", "", sentence)[:240]
    return None


def plasma_metadata(path: Path) -> dict[str, str]:
    """Licence and author that a Plasma wallpaper's metadata.json (two folders up from its image) declares."""
    for parent in path.parents:
        meta = parent / "metadata.json"
        if meta.exists():
            plugin = json.loads(meta.read_text(encoding="utf-8")).get("KPlugin", {})
            authors = plugin.get("Authors") or [{}]
            return {"licence": plugin.get("License"), "author": authors[0].get("Name")}
        if parent.name == "wallpapers":
            break
    return {}


def pzl_members(data: bytes) -> dict[str, bytes]:
    """The files inside a jigzo puzzle: a header of four lines, then (name, size, bytes) entries."""
    lines = data.split(b"\n", 4)
    if lines[0] != b"PzlF":
        raise ValueError("not a jigzo puzzle file")
    pos, members = sum(len(line) + 1 for line in lines[:4]), {}
    while pos < len(data):
        end = data.index(b"\n", pos)
        size_end = data.index(b"\n", end + 1)
        size = int(data[end + 1 : size_end])
        members[data[pos:end].decode()] = data[size_end + 1 : size_end + 1 + size]
        pos = size_end + 1 + size
    return members


def pzl_picture(data: bytes) -> Image.Image:
    """The puzzle's picture: the `image x y w h` box of its texture atlas, one pixel of border trimmed."""
    members = pzl_members(data)
    atlas = next(v for k, v in members.items() if k.endswith(".jpg") and not k.endswith("-t.jpg"))
    mapping = next(v for k, v in members.items() if k.endswith(".map")).decode()
    x, y, w, h = (int(v) for v in re.search(r"^image (\d+) (\d+) (\d+) (\d+)", mapping, re.M).groups())
    with Image.open(io.BytesIO(atlas)) as image:
        return image.convert("RGB").crop((x + 1, y + 1, x + w - 1, y + h - 1))


def readme_note(path: Path) -> str | None:
    """scikit-learn's images/README.txt: the licence lines of the paragraph that names the image."""
    readme = path.parent / "README.txt"
    if not readme.exists():
        return None
    blocks = [block.strip() for block in readme.read_text(encoding="utf-8").split("\n\n")]
    for block, links in zip(blocks, [*blocks[1:], ""], strict=True):
        if f"Image: {path.name}" in block:
            licence = next((line for line in links.splitlines() if line.startswith("[1]")), "")
            return " ".join([*block.splitlines()[1:3], licence]).strip()
    return None
