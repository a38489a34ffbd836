"""The routes of `heritage serve`'s app: the page, `POST /api/predict`, `POST /api/map`, `POST /api/correct`,
`GET /api/info` and the class images.

Plain functions on one `APIRouter`; what they serve (the classifier, the overlays, the class-image gallery and
the upload limits) is the `Served` that `heritage_cnn.apps.serve.create_app` puts in `app.state.served`. This
module imports FastAPI at import time, so `heritage_cnn.apps.serve` imports it only when it builds an app.
"""

import threading
from collections import Counter
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.middleware.trustedhost import TrustedHostMiddleware

from heritage_cnn.apps.corrections import Corrections, looks_trained_on
from heritage_cnn.apps.upload import (
    BodyTooLarge,
    BodyTooSlow,
    RequestBody,
    UploadError,
    decode_upload,
    decoding,
    drain_bound,
)
from heritage_cnn.base.names import json_text
from heritage_cnn.data.pillow_limits import MAX_IMAGE_PIXELS
from heritage_cnn.inference.classifier import Classifier, Prediction
from heritage_cnn.inference.element_figure import map_layers
from heritage_cnn.inference.element_map import map_elements
from heritage_cnn.inference.sort import MIN_CONFIDENCE
from heritage_cnn.inference.sort_manifest import MANIFEST_TOP
from heritage_cnn.inside.classimages import Gallery

PHOTO_FIELD = "photo"  # the form field of the upload; every other field is text
MULTIPART_SLACK = 64 * 1024  # a multipart body is the file plus boundaries and part headers
# Element maps computed at once; one more is answered 503. A map is 88 to 2,048 tiles (a 12 MP photo: 128, about
# 0.4 s for `fast` and 1.2 s for `default` on two cores) and holds its decoded photo (bounded by the decode limits,
# as a prediction's is), so two keep both cores busy while predictions still get their turn.
MAPS_AT_ONCE = 2
BUSY_RETRY_S = 2  # the Retry-After of a 503
# Predictions decoded and run at once. A photo's decode holds its whole raster while it lasts (a 120 MP photo, the
# decode limit: 0.2 to 0.9 GB by its mode, docs/serve.md), and the thread pool would run 40: four bound that at about
# 4 GB whatever the clients send, and keep two cores busy. A fifth waits for a slot, up to PREDICT_WAIT_S, then 503.
PREDICTIONS_AT_ONCE = 4
PREDICT_WAIT_S = 30.0
TOP_RANGE = (1, 100)  # `top` of /api/predict: how many classes an answer lists
# What each query parameter must be, in a refusal's words (a parameter not named here: pydantic's own words)
QUERY_RULES = {"top": f"an integer from {TOP_RANGE[0]} to {TOP_RANGE[1]}", "overlays": "true or false"}
SHOWN_INPUT = 60  # characters of a refused value or Host header repeated in the refusal


@dataclass(frozen=True)
class Served:
    """What the routes answer with: the whole model's classifier, the overlays and class images of network
    `member`, the page, the limits on an upload, and where corrections are kept (None: they are not)."""

    classifier: Classifier
    overlays: Callable[[np.ndarray, int], dict[str, Any]]  # (photo, class index) -> the overlay images
    gallery: Gallery
    page: str
    member: int
    max_upload_bytes: int
    body_timeout: float
    idle_timeout: float
    maps: threading.BoundedSemaphore = field(default_factory=lambda: threading.BoundedSemaphore(MAPS_AT_ONCE))
    predictions: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(PREDICTIONS_AT_ONCE)
    )
    corrections: Corrections | None = None

    @property
    def too_large(self) -> str:
        return f"the upload is larger than the {self.max_upload_bytes / 2**20:g} MB limit"


class Answer(JSONResponse):
    """JSON whatever file names it holds (the model's): `names.json_text`, as every JSON the tool writes."""

    def render(self, content: Any) -> bytes:
        return json_text(content, indent=None).encode("utf-8")


async def served(request: Request) -> Served:
    """The app's `Served` (async: resolved on the event loop, not in the thread pool the predictions use)."""
    return request.app.state.served


State = Annotated[Served, Depends(served)]
router = APIRouter(default_response_class=Answer)


# Every GET route answers HEAD too (RFC 9110 9.3.2: a general-purpose server MUST): the same status and headers, and
# no body (uvicorn, and Starlette's test client, send none for HEAD; FileResponse sends none itself).
GET_OR_HEAD = ["GET", "HEAD"]


@router.api_route("/", methods=GET_OR_HEAD, response_class=HTMLResponse)
def index(state: State) -> str:
    return state.page


@router.api_route("/api/info", methods=GET_OR_HEAD)
def info(state: State) -> dict[str, Any]:
    checkpoint, open_set = state.classifier.checkpoint, state.classifier.open_set
    labels = dict(zip(checkpoint.display_names, checkpoint.classes, strict=True))  # display name -> class folder
    images = state.gallery.current()
    return {
        "model": Path(str(checkpoint.path)).name,
        "classes": [{"label": c, "name": n} for n, c in labels.items()],
        "image_size": checkpoint.image_size,
        "val_accuracy": own_accuracy(checkpoint.info),  # None for a taught model: its parent's was measured, not its
        "taught": taught_from(checkpoint.info),  # None, or its parent and what was measured after teaching
        "members": checkpoint.member_count,  # networks averaged; overlays and class images: member `member`
        "member": state.member,
        "max_upload_bytes": state.max_upload_bytes,
        "max_image_pixels": MAX_IMAGE_PIXELS,
        "min_confidence": MIN_CONFIDENCE,  # below it the page says "not sure", as `heritage sort` does
        # below it (the open-set score) the page says "not one of the ten"; None: this model cannot say it
        "none_threshold": open_set.threshold if open_set else None,
        "open_set_score": open_set.name if open_set else None,
        "noise_threshold": open_set.noise_threshold if open_set else None,  # below it (pixel correlation): noise
        "corrections": state.corrections is not None,  # whether POST /api/correct keeps them (the page's control)
        "class_images": {
            "state": images.state,
            "grid": f"/class-images/{images.grid}" if images.grid else None,
            "per_class": {c: [f"/class-images/{f}" for f in fs] for c, fs in images.per_class.items()},
            "note": images.note,
        },
    }


def own_accuracy(info: dict[str, Any]) -> float | None:
    """The model's accuracy on its validation photos, as training measured it; None for a taught model, whose JSON
    may still carry its parent's figure (`heritage teach` copied it before it recorded it as the parent's)."""
    return None if info.get("taught") else (info.get("validation") or {}).get("val_accuracy")


def taught_from(info: dict[str, Any]) -> dict[str, Any] | None:
    """For a model `heritage teach` wrote: its parent's file name, the classes it added and, where teach measured it
    (with --data), the known classes' accuracy on the parent's validation photos before and after teaching."""
    record = info.get("taught")
    if not isinstance(record, dict):
        return None
    parent, cost = record.get("parent") or {}, record.get("known_cost") or {}
    return {
        "parent": Path(str(parent.get("path"))).name if parent.get("path") else None,
        "classes_added": record.get("classes_added") or [],
        "known_photos": cost.get("photos"),  # the parent's validation photos it was measured on; None: not measured
        "known_accuracy_before": cost.get("parent"),
        "known_accuracy": cost.get("taught"),
    }


@router.api_route("/class-images/{name}", methods=GET_OR_HEAD)
def class_image(name: str, state: State) -> FileResponse:
    files = state.gallery.current().files
    if name not in files:
        raise HTTPException(404, f"no class image {name!r}")
    return FileResponse(files[name], media_type="image/png")


@router.post("/api/predict")
async def predict(
    request: Request,
    state: State,
    top: int = Query(5, ge=TOP_RANGE[0], le=TOP_RANGE[1], description="how many classes to return"),
    overlays: bool = Query(False, description="add the input crop, Grad-CAM and deconvnet images (PNG data URLs)"),
) -> JSONResponse:
    try:
        upload = await read_upload(request, state)
        return Answer(await run_in_threadpool(in_turn, state, answer, upload.data, top, overlays))
    except UploadError as error:
        return refusal(error)


@router.post("/api/map")
async def map_photo(
    request: Request,
    state: State,
    overlays: bool = Query(False, description="add the photo and one heat map per class (PNG data URLs)"),
) -> JSONResponse:
    """The element map of the photo (`heritage map --format json`'s schema), by the served model; the upload passes
    what /api/predict's does. At most MAPS_AT_ONCE maps run at once: a busy server answers 503 at once."""
    try:
        data = (await read_upload(request, state)).data
        if not state.maps.acquire(blocking=False):
            raise UploadError(503, f"the server is mapping {MAPS_AT_ONCE} photos already; try again in a few seconds")
        try:
            return Answer(await run_in_threadpool(map_answer, state, data, overlays))
        finally:
            state.maps.release()
    except UploadError as error:
        return refusal(error)


@router.post("/api/correct")
async def correct(request: Request, state: State) -> JSONResponse:
    """Keep the user's answer for one photo: the form's `photo` (passing what /api/predict's does) and `label`, the
    right class (one of the model's or a new one), stored with the server's own prediction as the model's answer
    (`heritage_cnn.apps.corrections`). 404 when the server keeps no corrections."""
    if state.corrections is None:
        message = "this server keeps no corrections: start it with heritage serve --corrections DIR"
        return Answer({"detail": message}, status_code=404)
    try:
        upload = await read_upload(request, state)
        label = state.corrections.class_of(upload.fields.get("label"))
        prediction, trained = await run_in_threadpool(in_turn, state, predict_upload, upload.data)
        saved = await run_in_threadpool(state.corrections.save, upload.data, upload.filename, label, prediction)
        return Answer(saved | {"looks_trained_on": trained})  # teach skips such a photo: the page says so
    except UploadError as error:
        return refusal(error)


def refusal(error: UploadError) -> JSONResponse:
    """A refused upload's answer, the same for every route: its status and one line (a busy server's 503 with its
    Retry-After; a 408 or 413 closes the connection rather than read the rest)."""
    headers = {"retry-after": str(BUSY_RETRY_S)} if error.status == 503 else None
    if error.status in (408, 413):
        headers = {"connection": "close"}
    return Answer({"detail": error.message}, status_code=error.status, headers=headers)


async def internal_error(request: Request, error: Exception) -> JSONResponse:
    """A fault of the server's own (a bug, a folder removed under it): still one line of JSON, as every answer is,
    naming what failed; the traceback goes to the server's log (Starlette raises the error again once answered)."""
    said = " ".join(str(error).split())[:300] or "no message"
    return Answer({"detail": f"the server failed: {type(error).__name__}: {said}"}, status_code=500)


async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
    """A query parameter of the wrong kind or out of its range: 400 and one line naming each one, what it must be and
    what was sent ("top: must be an integer from 1 to 100, got '0'", in the words of the CLI's `--top`), instead of
    FastAPI's 422 with a list of objects, which the page would show as "[object Object]"."""
    problems = []
    for problem in error.errors():
        name = str(problem["loc"][-1]) if problem.get("loc") else "request"
        rule = QUERY_RULES.get(name)
        given = problem.get("input")
        if rule is None or not isinstance(given, str):
            problems.append(f"{name}: {problem.get('msg', 'not valid')}")
        else:
            problems.append(f"{name}: must be {rule}, got {clipped(given)!r}")
    return Answer({"detail": "; ".join(problems) or "invalid request"}, status_code=400)


def clipped(text: str) -> str:
    """`text` cut to SHOWN_INPUT characters: what a client sent, repeated in a refusal, stays short."""
    return text if len(text) <= SHOWN_INPUT else text[:SHOWN_INPUT] + "..."


class HostCheck:
    """ASGI middleware: only requests whose Host header is one of `hosts` reach the app (Starlette's
    TrustedHostMiddleware decides, `*` answering any); any other gets 400 with `{"detail": "<one line>"}`, as every
    other error, instead of Starlette's plain-text "Invalid host header"."""

    def __init__(self, app: Any, hosts: list[str]) -> None:
        self.app, self.hosts = app, list(dict.fromkeys(hosts))  # each name once, in the order given

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # lifespan: no Host header to check
            await self.app(scope, receive, send)
            return
        reached = False

        async def trusted(scope: dict, receive: Any, _: Any) -> None:
            nonlocal reached
            reached = True
            await self.app(scope, receive, send)

        async def dropped(message: dict) -> None:  # Starlette's own plain-text refusal: the JSON one is sent below
            pass

        await TrustedHostMiddleware(trusted, allowed_hosts=self.hosts, www_redirect=False)(scope, receive, dropped)
        if not reached:
            given = Headers(scope=scope).get("host")
            what = f"Host header {clipped(given)!r}" if given is not None else "a request without a Host header"
            detail = f"{what} refused: this server answers only {', '.join(self.hosts)} (a guard against DNS rebinding)"
            await Answer({"detail": detail}, status_code=400)(scope, receive, send)


@dataclass(frozen=True)
class Upload:
    """A received form: the bytes of its field `photo`, that file's name as the client gave it, its text fields."""

    data: bytes
    filename: str
    fields: dict[str, str]


class Utf8Form(MultiPartParser):
    """Starlette's multipart parser, except that a text field whose bytes are not UTF-8 is refused (400) rather than
    read as Latin-1 (the label bytes `\\xff\\xfe` would have named a class `ÿþ`), and that a part in the wrong form
    (the photo as text, another field as a file, a second photo) is refused in words that say which."""

    def on_headers_finished(self) -> None:
        try:
            super().on_headers_finished()
        except MultiPartException:
            name = self._current_part.field_name
            if not name or self._current_files <= self.max_files:  # no name, too many fields: Starlette's words
                raise
            if name == PHOTO_FIELD:
                raise MultiPartException(f"more than one file in the form field {name!r}: send one photo") from None
            raise MultiPartException(f"the form field {name!r} holds a file; only {PHOTO_FIELD!r} does") from None
        name = self._current_part.field_name
        if self._current_part.file is not None and name != PHOTO_FIELD:
            raise MultiPartException(f"the form field {name!r} holds a file; only {PHOTO_FIELD!r} does")
        if self._current_part.file is None and name == PHOTO_FIELD:
            raise MultiPartException(
                f"the form field {name!r} holds text: send the photo as a file (curl -F photo=@FILE)"
            )

    def on_part_end(self) -> None:
        part = self._current_part
        if part.file is None:
            try:
                bytes(part.data).decode("utf-8")
            except UnicodeDecodeError:
                raise MultiPartException(f"the form field {part.field_name!r} is not valid UTF-8") from None
        super().on_part_end()


async def read_upload(request: Request, state: Served) -> Upload:
    """The form with the bytes of its field `photo`, refused (413) before anything over the limit is stored; the rest
    of a refused body is drained (`RequestBody.drain`) so that the client reads the 413."""
    limit = state.max_upload_bytes
    body = RequestBody(request.receive, limit + MULTIPART_SLACK, state.body_timeout, state.idle_timeout)
    try:
        return await read_photo(request, body, state)
    except UploadError as error:
        if error.status == 413:
            await body.drain(drain_bound(limit), request.headers)
        raise


async def read_photo(request: Request, body: RequestBody, state: Served) -> Upload:
    limit = state.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + MULTIPART_SLACK:
        raise UploadError(413, state.too_large)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()  # a MIME type has no case
    if media_type != "multipart/form-data":
        raise UploadError(400, "send the photo as multipart/form-data in a field named 'photo'")
    try:
        stream = Request(request.scope, body.receive).stream()
        async with aclosing(stream):
            form = await Utf8Form(request.headers, stream, max_files=1, max_fields=8).parse()
        try:
            upload = form.get(PHOTO_FIELD)
            if not isinstance(upload, UploadFile):
                raise UploadError(400, f"no file in the form field {PHOTO_FIELD!r}")
            sent = Counter(key for key, _ in form.multi_items())
            twice = next((key for key, count in sent.items() if count > 1), None)
            if twice is not None:  # two labels: which one did the user mean?
                raise UploadError(400, f"the form field {twice!r} was sent {sent[twice]} times; send it once")
            data = await upload.read(limit + 1)
            fields = {key: value for key, value in form.multi_items() if isinstance(value, str)}
        finally:
            await form.close()
    except MultiPartException as error:
        raise UploadError(400, error.message) from None
    except BodyTooLarge:
        raise UploadError(413, state.too_large) from None
    except BodyTooSlow as error:
        raise UploadError(408, f"{error}; try again") from None
    if len(data) > limit:
        raise UploadError(413, state.too_large)
    return Upload(data, upload.filename or "", fields)


def in_turn(state: Served, work: Callable[..., Any], data: bytes, *args: Any) -> Any:
    """`work(state, data, *args)` once one of the PREDICTIONS_AT_ONCE slots is free (in the thread pool: waiting never
    blocks the event loop); a 503 when none frees up within PREDICT_WAIT_S."""
    if not state.predictions.acquire(timeout=PREDICT_WAIT_S):
        busy = f"the server is answering {PREDICTIONS_AT_ONCE} photos already; try again in a few seconds"
        raise UploadError(503, busy)
    try:
        return work(state, data, *args)
    finally:
        state.predictions.release()


def answer(state: Served, data: bytes, top: int, with_overlays: bool) -> dict[str, Any]:
    checkpoint = state.classifier.checkpoint
    photo, uploaded = decode_upload(data, checkpoint.image_size)
    prediction = state.classifier.predict(photo, top=top)[0]
    result = prediction.to_dict() | {"upload": uploaded}  # the schema of `heritage predict --format json`
    if with_overlays:
        result["overlays"] = state.overlays(photo, checkpoint.classes.index(prediction.label))
    return result


def predict_upload(state: Served, data: bytes) -> tuple[Prediction, bool | None]:
    """The model's answer for uploaded bytes, with the top classes a manifest row holds, and whether the photo looks
    like one the model trained on (`corrections.looks_trained_on`: None when the model keeps no record of them)."""
    photo, _ = decode_upload(data, state.classifier.checkpoint.image_size)
    prediction = state.classifier.predict(photo, top=MANIFEST_TOP)[0]
    return prediction, looks_trained_on(state.classifier.checkpoint, photo)


def map_answer(state: Served, data: bytes, with_overlays: bool) -> dict[str, Any]:
    """`heritage map --format json`'s schema for one upload (`path` and `figure` null), the upload's size beside it,
    and on request the layers a page draws (`element_figure.map_layers`)."""
    with decoding(data):
        emap = map_elements(state.classifier, data)
    result = emap.to_dict() | {"upload": {"width": emap.width, "height": emap.height, "bytes": len(data)}}
    if with_overlays:
        result["overlays"] = map_layers(emap)
    return result


__all__ = [
    "BUSY_RETRY_S",
    "MAPS_AT_ONCE",
    "MULTIPART_SLACK",
    "PREDICTIONS_AT_ONCE",
    "PREDICT_WAIT_S",
    "QUERY_RULES",
    "TOP_RANGE",
    "Answer",
    "HostCheck",
    "Served",
    "invalid_request",
    "map_answer",
    "refusal",
    "router",
]
