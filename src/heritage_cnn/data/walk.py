"""Walk a folder tree for files: names sorted, symlinked folders followed, each folder walked once.

Every command that finds photos below a folder walks it here: training and the data check (`folders.list_images`),
`predict`, `sort` and `map` (`classifier.find_photos`), `teach` (`teach_photos`).
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path

from heritage_cnn.base.names import is_hidden, shown
from heritage_cnn.data.decode import os_reason


def walk_files(
    folder: str | os.PathLike, extensions: frozenset[str] | None = None, hidden: bool = False
) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files below `folder` (names sorted, depth first, a folder's files before its subfolders; hidden ones skipped)
    and what was not walked, with why: folders that could not be read, and the symlinked folders not followed.

    Symlinked folders are followed, each folder (by its resolved path) walked once: the real folders below `folder`
    first, then the links in order, so that a folder reached both directly and through a link is listed under its
    own path. A link that leads to a folder walked already, or back to a folder that holds it (a loop), is listed
    with its reason instead. A FIFO named photo.jpg is returned: the decoder refuses it before opening it, so it is
    listed with the other skipped files."""
    top = Path(folder)
    found: list[Path] = []
    problems: list[tuple[str, str]] = []
    walked: dict[str, Path] = {}  # resolved path -> the path its files are listed under
    links: deque[tuple[Path, str]] = deque()  # (a symlinked folder, the resolved path of the folder holding it)

    def walk_tree(start: Path, resolved: str) -> None:
        stack = [(start, resolved)]
        while stack:
            path, real = stack.pop()
            if real in walked:  # a real folder inside a linked tree that was walked under another path
                problems.append((str(path), f"folder already walked as {shown(walked[real])}; not walked again"))
                continue
            try:
                with os.scandir(path) as listing:
                    entries = sorted(listing, key=lambda e: e.name)
            except OSError as error:
                problems.append((str(error.filename or path), f"folder not read ({os_reason(error)})"))
                continue
            walked[real] = path
            subfolders = []
            for entry in entries:
                if _is_folder(entry):
                    if is_hidden(entry.name):
                        continue
                    if entry.is_symlink():
                        links.append((path / entry.name, real))
                    else:  # its resolved path without a system call: the holder's is resolved already
                        subfolders.append((path / entry.name, os.path.join(real, entry.name)))
                elif (hidden or not is_hidden(entry.name)) and (
                    extensions is None or Path(entry.name).suffix.lower() in extensions
                ):
                    found.append(path / entry.name)
            stack.extend(reversed(subfolders))

    walk_tree(top, os.path.realpath(top))
    while links:
        link, holder = links.popleft()
        target = os.path.realpath(link)
        if Path(holder).is_relative_to(target):
            problems.append(
                (str(link), f"symlinked folder leading back to {shown(target)}, which holds it (a loop); not followed")
            )
        elif target in walked:
            problems.append(
                (
                    str(link),
                    f"symlinked folder leading to a folder already walked as {shown(walked[target])}; not walked again",
                )
            )
        else:
            walk_tree(link, target)
    found.sort(key=lambda path: _walk_order(path.relative_to(top).parts))
    return found, problems


def _is_folder(entry: os.DirEntry) -> bool:
    """A folder, or a symbolic link to one; an entry that cannot be examined is taken for a file, as `os.walk` does
    (the decoder then says why it cannot be read)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _walk_order(parts: tuple[str, ...]) -> tuple[tuple[int, str], ...]:
    """Sort key of a file below the walked folder: depth first, names sorted, a folder's files before its subfolders
    (the order of `os.walk` with sorted names)."""
    return (*((1, part) for part in parts[:-1]), (0, parts[-1]))
