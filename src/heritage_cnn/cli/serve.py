"""`heritage serve`: the local web page and JSON endpoint (the app itself is `heritage_cnn.apps.serve`)."""

from __future__ import annotations

import argparse

from heritage_cnn.cli.options import (
    add_command,
    add_device,
    add_member,
    add_model,
    add_none_threshold,
    device_name,
    mark_output,
    note_cannot_reject,
    number_in,
    port_number,
)


def cmd_serve(args: argparse.Namespace) -> int:
    """A local web page: drop photos, see the top-5 classes and why.

    Serve a local web page where you drop one or several photos and see, for each, the top-5 classes with bars
    ("not sure" below sort's threshold, naming the runner-up; "not one of the ten elements" below the model's
    none-of-these threshold, with the closest class beneath), the Grad-CAM and deconvnet overlays explained in
    words, and the class images (the shipped model's from the package; another model's drawn once in the
    background and cached by its weights' hash); and a JSON endpoint for the same prediction (POST /api/predict, the
    photo in the multipart field 'photo'). The page needs no internet. Uploads over the size limit are refused with
    413, files that Pillow cannot decode with 415 (whatever their name), images declaring more than 120 million
    pixels with 413. With --corrections DIR, each result gets a "Wrong? The right class is:" control that keeps the
    photo in DIR/<class>/ as a corrected sort (POST /api/correct), for `heritage teach --corrections DIR`.

    Examples:
      heritage serve
      heritage serve --model runs/a --port 8080
      heritage serve --class-images runs/classes      after: heritage generate --all --out runs/classes
      heritage serve --corrections fixes              then: heritage teach --corrections fixes --out runs/taught
      curl -F photo=@photo.jpg http://127.0.0.1:8000/api/predict
    """
    import ipaddress

    from heritage_cnn.apps.serve import allowed_hosts, create_app, listen, run
    from heritage_cnn.base.names import shown
    from heritage_cnn.inference.classifier import Classifier

    sock = listen(args.host, args.port)
    host, port = sock.getsockname()[:2]
    hosts = sorted(set(allowed_hosts(args.host) + allowed_hosts(host)))
    megabytes = int(args.max_upload_mb * 2**20)
    classifier = Classifier.load(args.model, device_name(args.device), none_threshold=args.none_threshold)
    app = create_app(classifier, args.class_images, megabytes, hosts, member=args.member, corrections=args.corrections)
    address = f"[{host}]" if ":" in host else host
    print(f"heritage serve: http://{address}:{port}/  (JSON: POST /api/predict; Ctrl+C to stop)", flush=True)
    note_cannot_reject(classifier.open_set)  # after the address line, which scripts read first
    if args.corrections is not None:
        folder = app.state.served.corrections.root
        print(
            f"corrections: kept in {shown(folder)} (heritage teach --corrections {shown(folder)} learns them)",
            flush=True,
        )
    if not ipaddress.ip_address(host).is_loopback:
        print("note: this address is reachable from other machines; there is no login", flush=True)
    run(app, sock)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    from heritage_cnn.apps.serve import DEFAULT_MAX_UPLOAD_MB

    p = add_command(commands, "serve", cmd_serve)
    add_model(p)
    add_member(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=port_number, default=8000, help="port, 1-65535 (default 8000; 0: any free port)")
    p.add_argument(
        "--class-images",
        metavar="DIR",
        help="output folder of `heritage generate --all`, or one grid PNG (default: the shipped model's from the "
        "package; another model's drawn once and cached under ~/.cache/heritage-cnn)",
    )
    p.add_argument(
        "--max-upload-mb",
        type=number_in(0, 1024, above_low=True),  # each upload is held in memory whole
        default=DEFAULT_MAX_UPLOAD_MB,
        help=f"largest upload accepted (default {DEFAULT_MAX_UPLOAD_MB:g})",
    )
    p.add_argument(
        "--corrections",
        metavar="DIR",
        help="keep the corrections made on the page in DIR (created if missing), a folder in heritage sort's layout "
        "that `heritage teach --corrections DIR` learns from (default: the page offers no correction)",
    )
    mark_output(p, "corrections", "--corrections")
    add_none_threshold(p)
    add_device(p)
