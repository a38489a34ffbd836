"""`heritage data check` and `heritage data download`: know the data before training on it."""

from __future__ import annotations

import os
import socket
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from heritage_cnn.base.names import first_few, is_hidden, shown
from heritage_cnn.data.decode import image_header, regular_file_sha256
from heritage_cnn.data.folders import DatasetError, ImageSet, display_name, find_layout, list_images, load_images
from heritage_cnn.data.split import NEAR_DUPLICATE_DISTANCE, hamming_pairs, set_hashes

KAGGLE_DATASET = "ikobzev/architectural-heritage-elements-image64-dataset"
KAGGLE_PAGE = f"https://www.kaggle.com/datasets/{KAGGLE_DATASET}"
MANUAL_STEPS = (
    f"download the archive by hand from {KAGGLE_PAGE}, unpack it so that DIR/train/<class>/*.jpg exists, "
    "then run `heritage data check DIR` and pass `--data DIR` (or set HERITAGE_DATA=DIR)"
)


# The file the demo and `heritage report` save `check_dataset`'s report in (apps.pipeline), for the report page
DATA_CHECK_FILE = "data_check.json"


class DownloadError(RuntimeError):
    """The dataset could not be fetched; the message says how to place it by hand."""


def check_dataset(root: str | os.PathLike, near_duplicate_distance: int = NEAR_DUPLICATE_DISTANCE) -> dict[str, Any]:
    """Everything worth knowing before training: counts, bad files, modes, sizes, duplicates."""
    layout = find_layout(root)
    splits = ({"train": layout.train} if layout.train.is_dir() else {}) | ({"test": layout.test} if layout.test else {})
    report: dict[str, Any] = {
        "root": str(layout.root),
        "layout": "kaggle" if layout.is_kaggle else "class folders",
        "splits": {},
    }
    by_digest: dict[str, list[tuple[str, str, str]]] = defaultdict(list)  # digest -> [(split, class, path)]
    hashes, owners = [], []
    classes_seen: dict[str, list[str]] = {}
    for split, folder in splits.items():
        files = list_images(folder)
        classes_seen[split] = files.classes
        decoded = load_images(folder)
        read = set(decoded.paths)  # two copies of one unreadable file are listed as unreadable, not as duplicates
        for path, label in zip(files.files, files.labels, strict=True):
            digest = regular_file_sha256(path) if str(path) in read else None
            if digest:
                by_digest[digest].append((split, files.classes[label], str(path)))
        report["splits"][split] = _split_report(folder, decoded)
        hashes.append(set_hashes(decoded))
        owners += [
            (split, decoded.classes[int(label)], path)
            for label, path in zip(decoded.labels, decoded.paths, strict=True)
        ]

    groups = [entries for entries in by_digest.values() if len(entries) > 1]
    report["identical_files"] = {
        "groups": len(groups),
        "files": sum(len(g) for g in groups),
        "conflicting_labels": [
            [{"split": s, "class": c, "path": p} for s, c, p in g] for g in groups if len({c for _, c, _ in g}) > 1
        ],
        "across_splits": [
            [{"split": s, "class": c, "path": p} for s, c, p in g] for g in groups if len({s for s, _, _ in g}) > 1
        ],
    }
    all_hashes = np.concatenate(hashes) if hashes else np.empty(0, dtype=np.uint64)
    pairs = hamming_pairs(all_hashes, near_duplicate_distance)
    cross = [(int(i), int(j)) for i, j in pairs if owners[i][0] != owners[j][0]]
    within_conflict = [
        (int(i), int(j)) for i, j in pairs if owners[i][0] == owners[j][0] and owners[i][1] != owners[j][1]
    ]
    report["near_duplicates"] = {
        "method": f"64-bit perceptual hash (imagehash.phash), Hamming distance <= {near_duplicate_distance}",
        "pairs": len(pairs),
        "pairs_with_different_labels": len(within_conflict),
        "across_splits": [
            {"a": owners[i][2], "a_class": owners[i][1], "b": owners[j][2], "b_class": owners[j][1]} for i, j in cross
        ],
    }
    if len(classes_seen) == 2 and set(classes_seen["train"]) != set(classes_seen["test"]):
        report["class_mismatch"] = {
            "only_in_train": sorted(set(classes_seen["train"]) - set(classes_seen["test"])),
            "only_in_test": sorted(set(classes_seen["test"]) - set(classes_seen["train"])),
        }
    return report


def _split_report(folder: Path, decoded: ImageSet) -> dict[str, Any]:
    """One split's part of the report: its counts, the files not read and why, and the modes and sizes of the
    images read (from their headers: a file refused, too large to decode, is not one of them)."""
    modes: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for path in decoded.paths:
        header = image_header(path)
        if header is not None:
            modes[header[0]] += 1
            sizes[f"{header[1][0]}x{header[1][1]}"] += 1
    return {
        "folder": str(folder),
        "images": len(decoded),
        "per_class": {c: n for c, n in zip(decoded.classes, decoded.class_counts(), strict=True)},
        "unreadable": [{"path": p, "reason": r} for p, r in decoded.skipped],
        "empty_classes": decoded.empty_classes,
        # photos must be in a class folder: a file beside them is not read, and said so rather than silently
        "beside_class_folders": [str(path) for path in _files_beside(folder)],
        "modes": dict(modes.most_common()),
        "sizes": dict(sizes.most_common(10)),
        "distinct_sizes": len(sizes),
    }


def _files_beside(folder: Path) -> list[Path]:
    """The files (not hidden) that lie in a class-folder root beside its class folders, sorted."""
    return sorted(path for path in folder.iterdir() if not is_hidden(path.name) and not path.is_dir())


def _relative(path: str, root: str) -> str:
    """`path` as it lies below the data folder `root` (the report keeps it whole)."""
    return str(Path(path).relative_to(root)) if Path(path).is_relative_to(root) else path


def format_report(report: dict[str, Any]) -> str:
    """The check as a plain-text table for the terminal; every name through `shown` (the JSON keeps them exact), so
    that a class folder named with a newline or a zero-width space neither breaks a line nor hides."""
    splits = report["splits"]
    names = sorted({c for s in splits.values() for c in s["per_class"]})
    label = {c: shown(display_name(c)) for c in names}
    width = max(len(label[c]) for c in names) + 2
    lines = [f"{shown(report['root'])} ({report['layout']} layout)", ""]
    lines.append("class".ljust(width) + "".join(f"{s:>8}" for s in splits))
    for c in names:
        lines.append(label[c].ljust(width) + "".join(f"{s['per_class'].get(c, 0):>8}" for s in splits.values()))
    lines.append("total".ljust(width) + "".join(f"{s['images']:>8}" for s in splits.values()))
    lines.append("")
    for name, s in splits.items():
        modes = ", ".join(f"{m} {n}" for m, n in s["modes"].items())
        sizes = ", ".join(f"{k} {n}" for k, n in list(s["sizes"].items())[:3])
        lines.append(f"{name}: modes {modes}; sizes {sizes}{' ...' if s['distinct_sizes'] > 3 else ''}")
        lines.append(f"{name}: {len(s['unreadable'])} unreadable or non-image file(s)")
        for bad in s["unreadable"][:10]:
            lines.append(f"  {shown(bad['path'])}: {shown(bad['reason'])}")
        beside = s["beside_class_folders"]
        if beside:
            examples = first_few([shown(Path(p).name) for p in beside])
            lines.append(
                f"{name}: {len(beside)} file(s) beside the class folders not read ({examples}): photos must be inside "
                "a class folder"
            )
        if s["empty_classes"]:
            lines.append(f"{name}: class folders with no images: {', '.join(map(shown, s['empty_classes']))}")
    ident = report["identical_files"]
    lines.append(
        f"byte-identical files: {ident['files']} in {ident['groups']} groups, "
        f"{len(ident['conflicting_labels'])} group(s) with conflicting labels, {len(ident['across_splits'])} across splits"
    )
    for group in ident["conflicting_labels"][:10]:
        lines.append("  " + "  ==  ".join(shown(_relative(g["path"], report["root"])) for g in group))
    near = report["near_duplicates"]
    lines.append(
        f"near-duplicates ({near['method']}): {near['pairs']} pairs, "
        f"{near['pairs_with_different_labels']} with different labels, {len(near['across_splits'])} across splits"
    )
    if "class_mismatch" in report:
        mismatch = report["class_mismatch"]
        only = [f"only in {s}: {', '.join(map(shown, mismatch[f'only_in_{s}'])) or '-'}" for s in ("train", "test")]
        lines.append(f"class mismatch between train and test: {'; '.join(only)}")
    return "\n".join(lines)


def _reachable(host: str = "www.kaggle.com", port: int = 443, timeout: float = 5.0) -> str | None:
    """None if a TCP connection opens, else the reason."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as error:
        return str(error) or type(error).__name__


def download_dataset(dest: str | os.PathLike) -> Path:
    """Fetch the Kaggle dataset into `dest` with kagglehub; return the folder holding train/."""
    problem = _reachable()
    if problem is not None:
        raise DownloadError(f"cannot reach kaggle.com ({problem}); {MANUAL_STEPS}")
    try:
        import kagglehub
    except ImportError:
        raise DownloadError(
            f"kagglehub is not installed (pip install 'heritage-cnn[download]'); or {MANUAL_STEPS}"
        ) from None
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        path = Path(kagglehub.dataset_download(KAGGLE_DATASET, output_dir=str(dest)))
    except Exception as error:  # kagglehub raises many kinds; all mean the same to the user
        hint = (
            " (set KAGGLE_USERNAME and KAGGLE_KEY, or ~/.kaggle/kaggle.json)"
            if "401" in str(error) or "403" in str(error)
            else ""
        )
        raise DownloadError(
            f"download of {KAGGLE_DATASET} failed: {str(error).splitlines()[0] if str(error) else type(error).__name__}{hint}; {MANUAL_STEPS}"
        ) from None
    for candidate in [path, *sorted(p.parent for p in path.rglob("train") if p.is_dir())]:
        if (candidate / "train").is_dir():
            return candidate
    raise DatasetError(f"{path}: downloaded, but no train/ folder inside")
