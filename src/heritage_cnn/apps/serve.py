"""`heritage serve`: a local web page, and a JSON endpoint, that classify one uploaded photo at a time.

FastAPI with one plain HTML page (`static/index.html`, a little vanilla JavaScript) rather than Gradio: the
page works offline (no CDN, nothing fetched from the internet), the JSON endpoint is the same code path as
the page, the dependencies are small and pull no second copy of anything, and FastAPI's TestClient tests it.

What an upload must pass, in this order, so that nothing large is stored or decoded before it is refused
(`heritage_cnn.apps.upload`):
- size: the declared Content-Length, then the bytes actually received, are capped (413) before the
  multipart parser spools anything; the rest of a refused body is read and discarded (up to a bound, never
  stored) before the 413 is sent, so a client that sends its whole body before reading hears the refusal;
- type: the content is decoded by Pillow; the file name and the declared content type are ignored (415);
- pixels: the size declared in the image header is checked against `pillow_limits.MAX_IMAGE_PIXELS` before the
  pixels are decoded, so a small PNG that declares a gigapixel canvas (a decompression bomb) is refused (413).
- time: a client that has not sent its whole body within `body_timeout` seconds (or pauses longer than
  `idle_timeout` between chunks) gets 408 and its connection is closed, so slow clients cannot pile up.
- Host header: only the names of this machine's loopback (localhost, 127.0.0.1, [::1]) and the bound address
  are answered (400 otherwise), so a web page that rebinds its DNS name to 127.0.0.1 cannot read the API.
Every refusal, a query parameter out of its range included (400, not FastAPI's 422 list), is `{"detail": "<one
line>"}` (`routes.refusal`, `routes.invalid_request`, `routes.HostCheck`).
The photo is then decoded with the same policy as training and `heritage predict` (EXIF orientation, RGB,
shorter side to 64 px, centre crop). Answers use the one prediction schema (`Prediction.to_dict()`), with
the upload's description and, on request, the overlays beside it. `POST /api/map` takes the same uploads through
the same checks and answers with the element map of the whole photo (`heritage map`'s JSON), two maps at a time.
`POST /api/correct` (only with a corrections folder) keeps the user's right class for an upload where `heritage
teach --corrections` reads it (`heritage_cnn.apps.corrections`).

This module does not import FastAPI or uvicorn at import time: importing it should not pay for the web
stack. The `heritage serve` command itself lives in `heritage_cnn.cli.serve`.
"""

import ipaddress
import os
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch

from heritage_cnn.apps.corrections import Corrections
from heritage_cnn.base.figures import png_data_url, signed_to_rgb
from heritage_cnn.inference.classifier import Classifier
from heritage_cnn.inside import deconvnet, explain
from heritage_cnn.inside.classimages import Gallery
from heritage_cnn.models.checkpoint import Checkpoint

DEFAULT_MAX_UPLOAD_MB = 20.0
PAGE = Path(__file__).with_name("static") / "index.html"
GRAD_CAM_ALPHA = 0.55  # as in `heritage explain`'s figure
BODY_TIMEOUT_S = 60.0  # the whole request body: 20 MB at 3 Mbit/s; loopback takes milliseconds
IDLE_TIMEOUT_S = 15.0  # the longest pause between two chunks of a body
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")


# --------------------------------------------------------------------------------------------
# Overlays
# --------------------------------------------------------------------------------------------


class Overlays:
    """Grad-CAM (through Captum, as `heritage explain`) and the deconvnet projection (as `heritage visualize deconv`).

    Grad-CAM runs one photo at a time: Captum hooks the model copy it explains, so two requests must not
    share it at once. The deconvnet only reads the model and runs in parallel. It projects the strongest
    unit of the deepest layer whose window on the photo is at most half the photo wide: deeper units see
    the whole 64 x 64 photo (the shipped model's last layer sees 100 px), so a box drawn for them says nothing.
    """

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint
        self.captum_model = explain.captum_ready(checkpoint.model)
        self.deconv_model = checkpoint.model  # only read: the deconvnet needs no hooks
        self.layers = deconvnet.deconv_layers(self.deconv_model)
        self.layer = self._legible_layer(checkpoint.image_size)
        self.colormap = matplotlib.colormaps["inferno"]
        self.lock = threading.Lock()

    def _legible_layer(self, size: int) -> str:
        """The deepest layer whose units see at most half the photo (else the first layer)."""
        chosen = self.layers[0]
        for name in self.layers:
            top, _, bottom, _ = deconvnet.receptive_field(self.deconv_model, name, 0, 0)  # unclipped: any unit's width
            if bottom - top <= size // 2:
                chosen = name
        return chosen

    def __call__(self, photo: np.ndarray, target: int) -> dict[str, Any]:
        size = photo.shape[0]
        photo_tensor = torch.from_numpy(photo).permute(2, 0, 1).unsqueeze(0).contiguous()
        x = self.checkpoint.normalise(photo_tensor.to(next(self.deconv_model.parameters()).device))
        with self.lock:
            cam = explain.attribute("grad_cam", self.captum_model, x, target).cpu().numpy()
        with torch.no_grad():
            activation, _ = deconvnet.forward_to(self.deconv_model, x, self.layer, record_switches=False)
        activation = activation.cpu()
        channel, row, col = (int(i) for i in np.unravel_index(int(activation[0].argmax()), activation.shape[1:]))
        projection = (
            deconvnet.project(self.deconv_model, x, self.layer, torch.tensor([channel]), torch.tensor([[row, col]]))[0]
            .cpu()
            .numpy()
        )
        top, left, bottom, right = deconvnet.receptive_field(self.deconv_model, self.layer, row, col)
        box = {"top": max(top, 0), "left": max(left, 0), "bottom": min(bottom, size), "right": min(right, size)}
        heat = self.colormap(cam / max(float(cam.max()), 1e-12))[..., :3]
        blended = (1 - GRAD_CAM_ALPHA) * (photo / 255.0) + GRAD_CAM_ALPHA * heat
        depth, value = self.layers.index(self.layer) + 1, float(activation[0, channel, row, col])
        return {
            "input": png_data_url(photo),
            "grad_cam": png_data_url(blended),
            "deconvnet": png_data_url(projection_over_photo(projection, photo)),
            "deconvnet_projection": png_data_url(signed_to_rgb(projection)),
            "deconvnet_unit": f"{self.layer}, channel {channel} at ({row}, {col}) = {value:.2f}",
            "deconvnet_box": box,
            "deconvnet_text": f"The network's layer {depth} of {len(self.layers)} holds many small pattern "
            f"detectors, each looking at a {bottom - top} x {right - left} px window of the photo. The one that "
            "responded most strongly looks at the outlined window; the coloured pixels are the details it "
            "responded to (the rest of the photo is dimmed).",
            "deconvnet_details": f"layer {self.layer}, channel {channel}, at row {row}, column {col} of its "
            f"{activation.shape[2]} x {activation.shape[3]} map, activation {value:.2f}; receptive field rows "
            f"{top} to {bottom - 1}, columns {left} to {right - 1} ({bottom - top} x {right - left} px, clipped "
            "to the photo); deconvnet projection of this one activation to pixels (Zeiler & Fergus 2014)",
        }


def projection_over_photo(projection: np.ndarray, photo: np.ndarray) -> np.ndarray:
    """A (3, H, W) signed projection over the dimmed grey photo: opaque where it is strong (its 99th percentile)."""
    magnitude = np.abs(projection).sum(0)
    scale = float(np.percentile(magnitude, 99)) or float(magnitude.max()) or 1.0
    alpha = np.clip(magnitude / scale, 0, 1)[..., None]
    colour = np.clip(1.5 * projection.transpose(1, 2, 0) / scale + 0.5, 0, 1)  # a channel is ~1/3 of the sum
    grey = np.repeat(0.25 + 0.45 * photo.mean(-1, keepdims=True) / 255.0, 3, axis=-1)
    return (1 - alpha) * grey + alpha * colour


# --------------------------------------------------------------------------------------------
# The app
# --------------------------------------------------------------------------------------------


def allowed_hosts(host: str = "127.0.0.1") -> list[str]:
    """Host-header values answered when serving on `host`: loopback names and `host` itself; any for 0.0.0.0/::."""
    try:
        if ipaddress.ip_address(host).is_unspecified:
            return ["*"]  # listening on every address was asked for explicitly: names cannot be known
    except ValueError:
        pass  # a name such as localhost or myhost.local
    return [*LOCAL_HOSTS, f"[{host}]" if ":" in host else host]


def create_app(
    model: Classifier | str | os.PathLike | None = None,
    class_images_dir: str | Path | None = None,
    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 2**20),
    hosts: Sequence[str] | None = None,
    body_timeout: float = BODY_TIMEOUT_S,
    idle_timeout: float = IDLE_TIMEOUT_S,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
    draw_class_images: bool = True,
    member: int = 0,
    none_threshold: float | None = None,
    corrections: str | Path | None = None,
) -> Any:
    """The FastAPI app: `GET /` the page, `POST /api/predict` the JSON answer, `POST /api/map` the element map,
    `POST /api/correct` a correction, `GET /api/info`, class images (the routes: `heritage_cnn.apps.routes`).

    `model`: a loaded `Classifier`, or a checkpoint pair, run folder or shipped name (None: the shipped default)
    loaded on `device` with `none_threshold` replacing the model's none-of-these threshold (refused for a model
    without one; give a Classifier its threshold when it is made). `hosts`: the Host-header values answered
    (default `allowed_hosts()`: loopback names only). Class images: `class_images_dir` if given, else the
    packaged ones (shipped model) or the cache under `cache_dir`, drawn once in the background when missing
    unless `draw_class_images` is False. The answer is the whole model's (an ensemble's mean); the Grad-CAM and
    deconvnet overlays and the class images are those of network `member` (a single network is its own member 0).
    `corrections`: the folder where `POST /api/correct` keeps corrections, created if missing (None: it answers 404)."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError

    from heritage_cnn.apps.routes import Answer, HostCheck, Served, internal_error, invalid_request, router

    if max_upload_bytes < 1:
        raise ValueError(f"the upload limit must be positive, got {max_upload_bytes} bytes")
    if not (body_timeout > 0 and idle_timeout > 0):
        raise ValueError(f"timeouts must be positive, got {body_timeout} and {idle_timeout} s")
    if isinstance(model, Classifier) and none_threshold is not None:
        raise ValueError("none_threshold applies when a model is loaded: make the Classifier with it instead")
    classifier = (
        model if isinstance(model, Classifier) else Classifier.load(model, device, none_threshold=none_threshold)
    )
    kept = Corrections(corrections, classifier.checkpoint.classes) if corrections is not None else None
    inside = classifier.checkpoint.member(member)  # the network the overlays and class images show
    overlays = Overlays(inside)
    gallery = Gallery(inside, class_images_dir, cache_dir, draw=draw_class_images)
    page = PAGE.read_text(encoding="utf-8")
    limits = {"max_upload_bytes": max_upload_bytes, "body_timeout": body_timeout, "idle_timeout": idle_timeout}
    # no API docs pages: they need a CDN
    app = FastAPI(title="heritage-cnn", docs_url=None, redoc_url=None, default_response_class=Answer)
    app.add_middleware(HostCheck, hosts=list(hosts or allowed_hosts()))
    app.add_exception_handler(RequestValidationError, invalid_request)  # every error one line: `{"detail": ...}`
    app.add_exception_handler(Exception, internal_error)  # a 500 too
    app.include_router(router)
    app.state.served = Served(classifier, overlays, gallery, page, member, **limits, corrections=kept)
    app.state.open_set = classifier.open_set  # the operating point in force (None: this model cannot reject)
    return app


# --------------------------------------------------------------------------------------------
# Listening
# --------------------------------------------------------------------------------------------


def listen(host: str, port: int) -> socket.socket:
    """Bind the port before loading anything, so a port in use is a one-line error (port 0: any free port).

    Ports are 1 to 65535, or 0 for any free port; anything else is a ValueError naming --port."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"--port {port}: a port is a number from 1 to 65535 (or 0: any free port)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ValueError(f"--host {host}: {error.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port}: {error.strerror} (choose another --port)") from None
    sock.listen(128)  # connections made before the server starts wait in the queue instead of being refused
    return sock


HEADER_TIMEOUT_S = 10.0  # a request's line and headers must arrive within this (slowloris)


def header_deadline_protocol(timeout: float) -> type:
    """uvicorn's h11 protocol with a deadline on each request's headers.

    uvicorn closes idle keep-alive connections and the app's middleware answers a slow body with 408, but
    nothing limits a client that trickles its request line and headers a byte at a time: enough of them
    would hold every connection. The deadline is armed when a connection opens and after each response,
    and closes the connection unless a new request has begun by then.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadline(H11Protocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._deadline.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            waiting_after = self.cycle  # the request before the one awaited (None on a new connection)
            if hasattr(self, "_deadline"):
                self._deadline.cancel()
            self._deadline = self.loop.call_later(timeout, self._expire, waiting_after)

        def _expire(self, waiting_after: Any) -> None:
            if self.cycle is waiting_after and not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadline


def run(app: Any, sock: socket.socket, header_timeout: float = HEADER_TIMEOUT_S) -> None:
    """Serve `app` on the bound socket until Ctrl+C (uvicorn, quiet: no access log), closing connections
    whose request headers take longer than `header_timeout` seconds."""
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=False, http=header_deadline_protocol(header_timeout))
    uvicorn.Server(config).run(sockets=[sock])


__all__ = ["Overlays", "allowed_hosts", "create_app", "listen", "run"]
