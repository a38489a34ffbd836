"""`heritage teach`: a thin shell over `heritage_cnn.training.teach` and `heritage_cnn.inference.teach_photos`."""

from __future__ import annotations

import argparse
import os
import shlex
from dataclasses import replace
from pathlib import Path

from heritage_cnn.cli.options import UsageError, add_command, add_model, add_seed, int_in, load_model, number_in


def _photos(args: argparse.Namespace, classes: list[str], size: int):  # -> TeachPhotos
    from heritage_cnn.inference.teach_photos import TeachPhotos, read_corrections, read_new_classes

    parts = [read_new_classes(folder, classes, size) for folder in args.new]
    for folder in args.corrections:
        part = read_corrections(folder, size, known=classes)
        found = ", ".join(f"{count} {kind}" for kind, count in sorted(part.found.items())) or "no photo"
        print(f"{folder}: {found}")
        parts.append(part)
    if not parts:
        raise UsageError("nothing to teach: give folders of new classes and/or --corrections SORTED_FOLDER")
    import torch

    folders: dict[str, list[str]] = {}
    for part in parts:
        for label, where in part.folders.items():  # a class read from several folders: each named once
            read = folders.setdefault(label, [])
            read += [w for w in where if w not in read]
    merged = TeachPhotos(
        torch.cat([p.images for p in parts]),
        *([x for p in parts for x in getattr(p, name)] for name in ("labels", "paths", "digests", "kinds")),
        skipped=[s for p in parts for s in p.skipped],
        folders=folders,
    )
    return merged


def _list_skipped(skipped: list[tuple[str, str]]) -> None:
    """The first ten files left out, each with why (the rest are counted where the list is summed up)."""
    from heritage_cnn.base.names import shown

    for path, reason in skipped[:10]:
        print(f"skipped {shown(path)}: {reason}")


def _replay(args: argparse.Namespace, checkpoint):  # -> (ImageSet | None, uint8 tensor | None)
    if not args.data:
        return None, None
    from heritage_cnn.data.folders import find_layout, load_images
    from heritage_cnn.training.teach import replay_split

    images = load_images(find_layout(args.data).train, checkpoint.classes, cache_dir=args.cache_dir)
    _list_skipped(images.skipped)
    if images.skipped:
        print(f"--data: {len(images.skipped)} unreadable file(s) skipped (the first ten listed above)")
    replayed, held_out = replay_split(images, checkpoint)
    if held_out is None:
        print(f"--data: {len(images)} photos replayed (the model keeps no record of its own training photos)")
    else:
        print(f"--data: {len(replayed)} of {len(images)} photos are the model's own training photos: replayed")
    return replayed, held_out


def cmd_teach(args: argparse.Namespace) -> int:
    """Teach a trained model new classes and corrections, in seconds.

    NEW: folders holding one subfolder per new class (at least 20 photos each; the subfolder's name is the class).
    --corrections: a folder `heritage sort` wrote, after you moved photos between its class folders (or into a new
    folder: a new class); the web page's "mark wrong" writes such a folder too. Photos still where sort filed them are
    confirmations, photos the manifest does not know were added by you; all are learned from.
    Writes a new model (MODEL.safetensors + MODEL.json) that every command takes with --model: the parent's
    networks with their convolutions kept and their head fitted again. With --data (the folder the parent trained
    on): both fully connected layers, replaying the photos it trained on, and the none-of-these threshold set again
    on its validation photos; without: the last layer only, the parent's class statistics standing in for its
    photos. With --data it says what teaching cost the known classes on the parent's validation photos (their
    accuracy before and after, and how many of them a new class took); --max-known-loss PT lowers the new classes'
    answers until the known classes lose at most PT points there (a new class is then found less often). It
    records its parent, the classes added, that cost and the SHA-256 of each photo it learned from. The parent is
    never changed. --out OUT writes OUT.safetensors + OUT.json (the whole name: M1.v2 writes M1.v2.safetensors); a
    folder (an empty one, or a name ending in /) gets last.safetensors + last.json. An existing model file, a folder
    that holds files and an empty --out are refused before anything is read.

    Examples:
      heritage teach survey/new_classes --out models/ours                 new classes, e.g. survey/new_classes/portal/
      heritage teach --corrections sorted/ --out models/ours2 --model models/ours   after moving misfiled photos
      heritage teach survey/new_classes --data data/ahe64 --out models/ours   replay the real training photos
      heritage teach survey/new_classes --data data/ahe64 --max-known-loss 1 --out models/ours
    """
    from heritage_cnn.training.teach import teach
    from heritage_cnn.training.teach_fit import FitConfig
    from heritage_cnn.training.teach_out import check_cache_dir, teach_files

    if args.max_known_loss is not None and not args.data:
        raise UsageError("--max-known-loss measures the known classes on the model's validation photos: add --data")
    if args.cache_dir is not None and not args.data:
        raise UsageError("--cache-dir keeps the --data photos and their features between runs: add --data")
    teach_files(args.out)  # refused before any photo is decoded: an existing model, a folder that holds files
    check_cache_dir(args.cache_dir)
    parent = load_model(args)
    photos = _photos(args, parent.classes, parent.image_size)
    _list_skipped(photos.skipped)
    data, held_out = _replay(args, parent)
    config = FitConfig(seed=args.seed)
    if args.steps is not None:  # the steps of whichever fit runs
        config = replace(config, **{"hidden_steps" if data is not None else "steps": args.steps})
    result = teach(
        parent,
        photos,
        args.out,
        data=data,
        config=config,
        held_out=held_out,
        max_known_loss=args.max_known_loss,
        cache_dir=args.cache_dir,
    )
    _list_skipped(result.skipped_known)
    skipped = len(photos.skipped) + len(result.skipped_known)
    counts = ", ".join(f"{name} {count}" for name, count in result.per_class.items())
    added = f"; classes added: {', '.join(result.added)}" if result.added else "; no class added"
    print(f"learned from {sum(result.per_class.values())} photos ({counts}){added}")
    if skipped:
        print(f"skipped {skipped} photo(s) (the first ten listed above)")
    print(f"replay: {result.replay}; {result.seconds:.1f} s")
    if result.cost is not None:
        print(_cost_line(result.cost, result.added))
    # the photos learned from: one skipped as looking like the parent's training data was not, so it is not counted
    corrected = _corrections_line(parent, result.path, result.learned, _known_skipped(parent, photos, result))
    if corrected:
        print(corrected)
    meta = result.path.with_name(result.path.stem + ".json")
    print(
        f"model: {result.path} + {meta.name} ({len(result.classes)} classes; use it with --model {_hint(result.path)})"
    )
    return 0


def _known_skipped(parent, photos, result) -> int:  # a Checkpoint, TeachPhotos, TeachResult
    """How many photos labelled with a class the parent knows were skipped as looking like its training data."""
    label = dict(zip(photos.paths, photos.labels, strict=True))
    return sum(label.get(path) in parent.classes for path, _ in result.skipped_known)


def _corrections_line(parent, taught: Path, photos, skipped: int = 0) -> str | None:  # a Checkpoint, TeachPhotos
    """How many of the photos of known classes learned from (`photos`) that the parent answered otherwise the taught
    model now answers as the user labelled them: whether corrections were learned is measured, not assumed (a refit
    of the last layer held near the parent's can leave most of them as they were). `skipped`: the photos of known
    classes not learned from (they look like the parent's training data), named apart, never counted."""
    from heritage_cnn.inference.classifier import Classifier

    index = [i for i, label in enumerate(photos.labels) if label in parent.classes]
    if not index:
        return None
    images = photos.images[index]
    wanted = [photos.labels[i] for i in index]
    before = Classifier(parent, tta="none").probabilities(images).argmax(1).tolist()
    wrong = [k for k, label in enumerate(wanted) if parent.classes[before[k]] != label]
    if not wrong:
        return None
    model = Classifier.load(taught, tta="none")
    after = model.probabilities(images[wrong]).argmax(1).tolist()
    right = sum(model.classes[a] == wanted[k] for a, k in zip(after, wrong, strict=True))
    return (
        f"corrections: {right} of the {len(wrong)} photo(s) the parent answered otherwise are now answered as you "
        f"labelled them (one view)"
        + ("" if right == len(wrong) else "; a refit of the head moves few answers: training with them moves more")
        + (f"; {skipped} more of known classes skipped, not learned (listed above)" if skipped else "")
    )


def _hint(weights: Path) -> str:
    """What --model takes to load the pair whose weights are `weights`, and nothing else: its stem, unless that names
    a shipped model (`fast`: then `./fast`) or another pair (a folder of that name: then the weights file); quoted
    for the shell where needed."""
    from heritage_cnn.models.checkpoint import SHIPPED, checkpoint_files

    stem = weights.with_name(weights.stem)
    hint = str(stem)
    if hint in SHIPPED:
        hint = os.path.join(".", hint)
    elif checkpoint_files(hint)[0] != weights:
        hint = str(weights)
    return shlex.quote(hint)


def _cost_line(cost, added: list[str]) -> str:  # a KnownCost
    """One line: the known classes' accuracy on the model's validation photos before and after, and what the new
    classes took of them (corrections alone add none: the change is theirs)."""
    change = round(-cost.loss_points, 1)
    change_text = f"{change:+.1f}" if change else "0.0"  # a change that rounds to zero has no sign (never -0.0)
    line = (
        f"the known classes on the model's {cost.photos} validation photos: {cost.parent:.1%} -> {cost.taught:.1%} "
        f"({change_text} pt)"
    )
    if added:
        line += f", {cost.new_answers:.1%} of them given a new class"
    if cost.bound is not None and round(cost.offset, 2):
        line += f"; new classes' logits lowered by {-cost.offset:.2f} to keep within {cost.bound:g} pt"
    elif cost.bound is not None:  # nothing lowered: "lowered by -0.00" would say otherwise
        line += f"; within {cost.bound:g} pt as taught, nothing lowered"
    return line


def register(commands: argparse._SubParsersAction) -> None:
    p = add_command(commands, "teach", cmd_teach)
    p.add_argument("new", nargs="*", metavar="NEW", help="folders of new classes: NEW/<class>/<photo>")
    p.add_argument(
        "--corrections",
        action="append",
        default=[],
        metavar="SORTED",
        help="a sorted folder you corrected (repeatable)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="the new model's path: OUT writes OUT.safetensors + OUT.json (never over an existing file); a new or empty "
        "folder (OUT/) gets last.safetensors + last.json",
    )
    add_model(p)
    p.add_argument("--data", help="the parent's training folder, replayed so the known classes are kept (optional)")
    p.add_argument(
        "--steps",
        type=int_in(1, 100_000),
        help="steps of the head's fit (default: 600 minibatches with --data, 300 full batches without)",
    )
    p.add_argument(
        "--max-known-loss",
        type=number_in(0.0, 100.0),
        metavar="PT",
        help="with --data: the most accuracy points the known classes may lose on the model's validation photos; "
        "the new classes are answered less often to keep within it (default: as fitted, the cost reported)",
    )
    p.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="with --data: keep its decoded photos and their features here, so that the next teach from this model "
        "or one taught from it skips the pass that takes most of the time",
    )
    add_seed(p, "seed of the fit: its replay samples, minibatches and dropout")
