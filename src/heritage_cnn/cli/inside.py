"""`heritage visualize features | kernels | deconv | units` and `heritage explain`: look inside the network."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from heritage_cnn.cli.options import (
    UsageError,
    add_channels,
    add_command,
    add_data,
    add_device,
    add_member,
    add_model,
    add_out,
    device_name,
    inside_model,
    int_in,
    positive_int,
    say_skipped,
)

# Projections kept per channel: each is a float image held in memory, so a large --top would exhaust it; the
# figure shows no more than a few dozen per channel anyway.
MAX_TOP = 32
UNIT_STEPS = 128  # unit images: fewer steps than class images suffice for one channel


def cmd_features(args: argparse.Namespace) -> int:
    """Activation maps of every conv layer for one photo.

    One grid per conv layer of the activation maps (after ReLU) for one photo, preprocessed as for prediction,
    channels ordered by mean activation, one colour scale per grid, the input beside it:
    feature_maps_<photo>_<layer>.png, named after the photo's whole file name (a.jpg and a.png apart). The first
    layer gets a large figure, feature_maps_<photo>_layer1.png.

    Example:
      heritage visualize features photo.jpg --out runs/inside
    """
    from heritage_cnn.base.names import shown
    from heritage_cnn.inside.visualize import write_feature_maps

    paths = write_feature_maps(inside_model(args), args.photo, args.out, args.layers)
    print(f"{len(paths)} feature-map figures in {shown(args.out)}/ (first: {shown(paths[0].name)})")
    return 0


def cmd_kernels(args: argparse.Namespace) -> int:
    """Learned filters: first layer in colour, deeper layers' strongest slices.

    The first layer's filters as RGB tiles (each normalised by its largest weight, zero is grey); for each deeper
    conv layer, every filter's strongest input-channel slice.

    Example:
      heritage visualize kernels --out runs/inside
    """
    from heritage_cnn.base.names import shown
    from heritage_cnn.inside.visualize import write_kernels

    paths = write_kernels(inside_model(args), args.out)
    print(f"{len(paths)} kernel figures in {shown(args.out)}/ (first layer: {paths[0].name})")
    return 0


# The options that choose what to scan and show of a data folder; a PHOTO is one image, scanned whole
DATA_ONLY = (("channels", "--channels"), ("top_channels", "--top-channels"), ("top", "--top"), ("limit", "--limit"))
TOP_CHANNELS, TOP = 16, 9  # the defaults of --top-channels and --top (None in the parser: given or not)


def cmd_deconv(args: argparse.Namespace) -> int:
    """Deconvnet: top-9 activations per channel projected to pixels.

    Zeiler & Fergus deconvnet. With --data: one pass over the images records the 9 strongest activations of every
    channel of a layer; each is projected alone back to pixel space (max-unpooling at the recorded switches, ReLU,
    transposed BN-folded filters) and shown beside the image patch under the unit's receptive field; unreadable
    files are skipped and listed. With a PHOTO: the strongest activation of every layer (or of each --layer) for
    that photo, deconv_image_<photo>.png; --channels, --top-channels, --top and --limit apply with --data only.

    Examples:
      heritage visualize deconv --data data/ahe64 --layer stage3 --top-channels 16 --out runs/deconv
      heritage visualize deconv --data data/ahe64 --layer stage2.block1.conv2 --channels 0-3,7 --out runs/deconv
      heritage visualize deconv photo.jpg --out runs/deconv
      heritage visualize deconv photo.jpg --layer stage2 stage3 --out runs/deconv
    """
    from heritage_cnn.base.io import inside_problem
    from heritage_cnn.base.names import shown

    if args.photo and args.data:
        raise UsageError("visualize deconv: give a PHOTO or --data DIR, not both")
    if args.photo:
        given = [flag for dest, flag in DATA_ONLY if getattr(args, dest) is not None]
        if given:
            raise UsageError(f"visualize deconv: {given[0]} applies with --data only, not with a PHOTO")
        from heritage_cnn.inside.visualize import write_deconv_photo

        path = write_deconv_photo(inside_model(args), args.photo, args.out, args.layer)
        print(f"deconvnet projections of the strongest unit of each layer: {shown(path)}")
        return 0
    if not args.data:
        raise UsageError("visualize deconv: give --data DIR (images to scan) or a PHOTO")
    problem = inside_problem(args.out, args.data, "--out", "--data")  # the next scan would read the figures
    if problem is not None:
        raise UsageError(problem)
    checkpoint = inside_model(args)
    paths, sample = _deconv_data(args, checkpoint)
    print(f"{len(paths)} deconvnet figures in {shown(args.out)}/: " + ", ".join(p.name for p in paths))
    say_skipped(sample.skipped, len(sample.images) + len(sample.skipped))
    return 0


def _deconv_data(args: argparse.Namespace, checkpoint):
    """`visualize deconv --data`: the figures written, and the images they were drawn from (`Sample`)."""
    from heritage_cnn.base.names import shown
    from heritage_cnn.inside import deconvnet
    from heritage_cnn.inside.visualize import sample_images, write_deconv

    all_layers = deconvnet.deconv_layers(checkpoint.model)
    layers = args.layer or [all_layers[len(all_layers) // 2]]
    # a wrong name, or a channel a layer does not have, fails before the images are decoded
    check_channels(
        checkpoint.model, [deconvnet.resolve_layer(checkpoint.model, layer) for layer in layers], args.channels
    )
    sample = sample_images(args.data, checkpoint.classes, args.limit, progress=not args.quiet)
    images = len(sample.images)
    source = (
        f" of {shown(args.data)}"
        if args.limit is None
        else f" (random {images} of {sample.total}) of {shown(args.data)}"
    )
    paths = write_deconv(
        checkpoint,
        sample.images,
        layers,
        args.out,
        args.channels,
        TOP_CHANNELS if args.top_channels is None else args.top_channels,
        TOP if args.top is None else args.top,
        source,
        progress=not args.quiet,
    )
    return paths, sample


def check_channels(model, layers: list[str], channels: list[int] | None) -> None:
    """A UsageError naming --channels when a channel is not one of each layer's (resolved names), before any work."""
    from heritage_cnn.models.network import conv_layers

    if not channels:  # every channel
        return
    convs = conv_layers(model)
    for layer in layers:
        count = convs[layer].out_channels
        bad = [channel for channel in channels if channel >= count]  # the parser takes no negative channel
        if bad:
            raise UsageError(f"--channels: {layer} has channels 0..{count - 1}; no channel {bad[0]}")


def cmd_units(args: argparse.Namespace) -> int:
    """Images that excite each channel of a conv layer.

    Feature visualisation: for each channel of a conv layer, an image maximising its mean response (after batch
    norm, before the ReLU), with the same parametrisation and transforms as `heritage generate` (penalties a tenth
    as strong). Writes the grid units_<layer>.png.

    Example:
      heritage visualize units --layer stage3.block1.conv2 --channels 0-15 --out runs/units
    """
    from heritage_cnn.base.figures import image_grid
    from heritage_cnn.base.names import shown
    from heritage_cnn.cli.generate import load_for_render, render_settings
    from heritage_cnn.inside.deconvnet import resolve_layer
    from heritage_cnn.inside.synthesis.draw import UNIT_SETTINGS, draw_units

    checkpoint = load_for_render(args)
    layer = resolve_layer(checkpoint.model, args.layer, "to draw units of")  # stage2 -> its last conv, named so
    check_channels(checkpoint.model, [layer], args.channels)
    settings = render_settings(args, replace(UNIT_SETTINGS, steps=UNIT_STEPS))
    rendering = draw_units(checkpoint, layer, args.channels, args.size, settings, args.seed, progress=not args.quiet)
    channels = args.channels or list(range(len(rendering.images)))
    path = Path(args.out) / f"units_{layer.replace('.', '_')}.png"
    image_grid(rendering.images, [f"channel {c}" for c in channels], min(8, len(channels)), path)
    print(f"{len(channels)} channels of {layer}: {shown(path)}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """Which pixels made the prediction: saliency, guided backprop, deconvolution, Grad-CAM, occlusion.

    Attribution maps for one photo (through Captum): saliency, guided backpropagation, deconvolution, Grad-CAM on
    the last conv layer (upsampled) and occlusion, laid over the photo in one figure with the top-3 prediction. Maps
    explain --target, or the predicted class.

    Examples:
      heritage explain photo.jpg --out runs/explain
      heritage explain photo.jpg --target gargoyle --out runs/explain
      heritage explain photo.jpg --member 2 --out runs/explain      the shipped ensemble's third network (0 to 2)
    """
    from heritage_cnn.base.names import shown
    from heritage_cnn.data.labels import resolve_class
    from heritage_cnn.inside.explain import write_explanation

    checkpoint = inside_model(args, device_name(args.device))
    if args.target is not None:
        resolve_class(args.target, checkpoint.classes)  # fail before any work
    path = write_explanation(checkpoint, args.photo, args.out, args.target)
    print(f"attribution maps: {shown(path)}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    from heritage_cnn.cli.generate import add_render_options
    from heritage_cnn.inside.synthesis.draw import UNIT_SETTINGS

    group = add_command(
        commands,
        "visualize",
        help="look inside the network: feature maps, kernels, deconvnet, unit images",
        description="Look inside a trained network.",
    )
    what = group.add_subparsers(dest="visualize_command", metavar="WHAT", required=True)
    p = add_command(what, "features", cmd_features)
    p.add_argument("photo", metavar="PHOTO", help="a photo, any size or format")
    add_model(p)
    add_member(p)
    p.add_argument(
        "--layers", nargs="+", help="layers to show, e.g. stage1.block1.conv stage2.block1 stage3 (default: all)"
    )
    add_out(p)

    p = add_command(what, "kernels", cmd_kernels)
    add_model(p)
    add_member(p)
    add_out(p)

    p = add_command(what, "deconv", cmd_deconv)
    p.add_argument(
        "photo", metavar="PHOTO", nargs="?", help="one photo: project the strongest activation of each layer"
    )
    add_model(p)
    add_member(p)
    add_data(p, "data folder whose training images are scanned (unreadable files are skipped and listed)")
    p.add_argument(
        "--layer",
        nargs="+",
        help="layer(s), e.g. stage2.block1.conv2 or stage3 (default: with --data a middle one, with a PHOTO all)",
    )
    which = p.add_mutually_exclusive_group()
    add_channels(which, "which channels, e.g. 0-7,12; with --data only")
    which.add_argument(
        "--top-channels",
        type=positive_int,
        help=f"the N channels with the strongest top activation (default {TOP_CHANNELS}); with --data only",
    )
    p.add_argument(
        "--top",
        type=int_in(1, MAX_TOP),
        help=f"activations per channel, 1 to {MAX_TOP} (default {TOP}, as in Zeiler & Fergus); with --data only",
    )
    p.add_argument(
        "--limit",
        type=positive_int,
        help="scan a seeded random N of the images, drawing more in place of unreadable ones (default: all); "
        "with --data only",
    )
    add_out(p)

    p = add_command(what, "units", cmd_units)
    p.add_argument(
        "--layer", required=True, help="layer, e.g. stage2.block1.conv1, or a block or stage (its output): stage2"
    )
    add_channels(p)
    add_render_options(p, str(UNIT_STEPS), UNIT_SETTINGS.lr)

    p = add_command(commands, "explain", cmd_explain)
    p.add_argument("photo", metavar="PHOTO", help="a photo, any size or format")
    add_model(p)
    add_member(p)
    p.add_argument("--target", help="class to explain: folder name, display name or index (default: predicted)")
    add_device(p)
    add_out(p)
