"""Walk a folder tree for files: names sorted, symlinked folders followed, each folder walked once.

Every command that finds photos below a folder walks it here: training and the data check (`folders.list_images`,
whose class folders are walked together: `walk_folders`), `predict`, `sort` and `map` (`classifier.find_photos`),
`teach` (`teach_photos`).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from heritage_cnn.base.names import is_hidden, shown
from heritage_cnn.data.decode import os_reason

Problem = tuple[str, str]  # (a path, why it was not walked or listed)


def walk_files(
    folder: str | os.PathLike, extensions: frozenset[str] | None = None, hidden: bool = False
) -> tuple[list[Path], list[Problem]]:
    """Files below `folder` (names sorted, depth first, a folder's files before its subfolders; hidden ones skipped)
    and what was not walked, with why: folders that could not be read, and the symlinked folders not followed.

    Symlinked folders are followed, each folder (by its resolved path) walked once: the real folders below `folder`
    first, then the links in order, so that a folder reached both directly and through a link is listed under its
    own path. A link that leads to a folder walked already, or back to a folder that holds it (a loop), is listed
    with its reason instead. A FIFO named photo.jpg is returned: the decoder refuses it before opening it, so it is
    listed with the other skipped files."""
    ((found, problems),) = walk_folders([folder], extensions, hidden)
    return found, problems


def walk_folders(
    folders: Sequence[str | os.PathLike],
    extensions: frozenset[str] | None = None,
    hidden: bool = False,
) -> list[tuple[list[Path], list[Problem]]]:
    """`walk_files` of each of `folders` (the class folders of a data root), walked together so that no folder is
    walked twice across them either: a real folder gives its files to one of them, never to two classes. The real
    folders below all of them are walked first, then the links in order, so a folder is listed under its own path
    wherever it has one. A symbolic link to a file is read as the file, as everywhere: a survey may link one photo
    into two folders, and a run trained on such a folder must find the same photos when it resumes."""
    walk = _Walk(extensions, hidden)
    for folder in folders:
        walk.problems.append([])
        walk.found.append([])
        walk.tree(len(walk.found) - 1, Path(folder), os.path.realpath(folder))
    walk.follow_links()
    for folder, found in zip(folders, walk.found, strict=True):
        found.sort(key=lambda path, top=Path(folder): _walk_order(path.relative_to(top).parts))
    return list(zip(walk.found, walk.problems, strict=True))


class _Walk:
    """What a walk of one or more folders has seen: the folders walked (by resolved path), the symlinked folders
    still to follow, and for each folder walked from (by its index) the files found and the problems met."""

    def __init__(self, extensions: frozenset[str] | None, hidden: bool) -> None:
        self.extensions, self.hidden = extensions, hidden
        self.walked: dict[str, Path] = {}  # resolved path -> the path its files are listed under
        self.links: deque[tuple[int, Path, str]] = deque()  # (index, a symlinked folder, resolved path of its holder)
        self.found: list[list[Path]] = []
        self.problems: list[list[Problem]] = []

    def tree(self, index: int, start: Path, resolved: str) -> None:
        """Walk the real folders below `start` (resolved: `resolved`), queueing the symlinked ones."""
        found, problems = self.found[index], self.problems[index]
        stack = [(start, resolved)]
        while stack:
            path, real = stack.pop()
            if real in self.walked:  # a real folder inside a linked tree that was walked under another path
                problems.append((str(path), f"folder already walked as {shown(self.walked[real])}; not walked again"))
                continue
            try:
                with os.scandir(path) as listing:
                    entries = sorted(listing, key=lambda e: e.name)
            except OSError as error:
                problems.append((str(error.filename or path), f"folder not read ({os_reason(error)})"))
                continue
            self.walked[real] = path
            subfolders = []
            for entry in entries:
                if _is_folder(entry):
                    if is_hidden(entry.name):
                        continue
                    if entry.is_symlink():
                        self.links.append((index, path / entry.name, real))
                    else:  # its resolved path without a system call: the holder's is resolved already
                        subfolders.append((path / entry.name, os.path.join(real, entry.name)))
                elif (self.hidden or not is_hidden(entry.name)) and (
                    self.extensions is None or Path(entry.name).suffix.lower() in self.extensions
                ):
                    found.append(path / entry.name)
            stack.extend(reversed(subfolders))

    def follow_links(self) -> None:
        """Walk the symlinked folders queued, in order (and those found in them): each one leading to a folder not
        walked yet and not holding it."""
        while self.links:
            index, link, holder = self.links.popleft()
            target = os.path.realpath(link)
            if Path(holder).is_relative_to(target):
                reason = f"symlinked folder leading back to {shown(target)}, which holds it (a loop); not followed"
            elif target in self.walked:
                already = shown(self.walked[target])
                reason = f"symlinked folder leading to a folder already walked as {already}; not walked again"
            else:
                self.tree(index, link, target)
                continue
            self.problems[index].append((str(link), reason))


def distinct_folders(root: str | os.PathLike, folders: Sequence[Path], left_out: list[Problem]) -> list[Path]:
    """The subfolders `folders` of `root` (its class folders) less each symlinked one that leads back to `root` or a
    folder above it (a loop: it would hold every class's photos again), or to (or into) a folder kept before it (its
    photos are that folder's), each appended to `left_out` with why; the real folders are kept first, then the
    links in order. A link to a folder elsewhere is kept: data is linked in."""
    root_real = os.path.realpath(root)
    kept: dict[str, Path] = {}  # resolved path -> the folder kept
    links: list[Path] = []
    for folder in folders:
        if folder.is_symlink():
            links.append(folder)
        else:
            kept[os.path.join(root_real, folder.name)] = folder
    for link in links:
        target = os.path.realpath(link)
        inside = next(((real, folder) for real, folder in kept.items() if Path(target).is_relative_to(real)), None)
        if Path(root_real).is_relative_to(target):
            reason = f"symlinked folder leading back to {shown(target)}, which holds it (a loop); not a class folder"
        elif inside is not None:
            where = "" if inside[0] == target else f"{shown(target)}, inside "
            reason = f"symlinked folder leading to {where}the class folder {shown(inside[1])}; not a class of its own"
        else:
            kept[target] = link
            continue
        left_out.append((str(link), reason))
    return sorted(kept.values())


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
