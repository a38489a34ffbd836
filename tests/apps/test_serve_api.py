"""`heritage serve`'s JSON endpoint and its refusals (TestClient), on the tiny model and synthetic photos."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _serve_helpers import class_images, photo_with_confidence, png_bytes
from fastapi.testclient import TestClient
from PIL import Image

from conftest import CLASSES, declared_png
from heritage_cnn.apps.serve import allowed_hosts, create_app, listen
from heritage_cnn.inference.classifier import Classifier
from heritage_cnn.inference.sort import MIN_CONFIDENCE

LIMIT = 256 * 1024  # a small upload limit, so the 413 tests stay small


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return class_images(tmp_path_factory.mktemp("class_images"))


@pytest.fixture(scope="module")
def client(tiny_run, gallery: Path) -> TestClient:
    return TestClient(create_app(tiny_run.checkpoint, gallery, max_upload_bytes=LIMIT), base_url="http://127.0.0.1")


def post(client: TestClient, content: bytes, name: str = "photo.png", kind: str = "image/png", headers=None, **params):
    return client.post("/api/predict", params=params, files={"photo": (name, content, kind)}, headers=headers)


def test_predict_returns_top5_probabilities(client: TestClient, tiny_run) -> None:
    response = post(client, png_bytes(3))
    assert response.status_code == 200, response.text
    body = response.json()
    top = body["top"]
    probabilities = [item["probability"] for item in top]
    assert len(top) == 5
    assert probabilities == sorted(probabilities, reverse=True)
    assert 0 < sum(probabilities) <= 1 + 1e-6
    assert body["label"] == top[0]["label"] in CLASSES
    assert body["probability"] == probabilities[0]
    assert body["upload"] == {"width": 64, "height": 64, "format": "PNG", "bytes": len(png_bytes(3))}
    assert "overlays" not in body


def test_answer_is_the_one_prediction_schema(client: TestClient, tiny_run) -> None:
    """The HTTP answer is `Prediction.to_dict()` (as `heritage predict --format json`), plus the upload."""
    photo = np.asarray(Image.open(io.BytesIO(png_bytes(6))).convert("RGB"))
    expected = Classifier.load(tiny_run.checkpoint).predict(photo, top=4)[0].to_dict()
    body = post(client, png_bytes(6), top=4).json()
    fields = [
        "path",
        "label",
        "name",
        "probability",
        "known",
        "open_set_score",
        "none_threshold",
        "none_reason",
        "top",
        "upload",
    ]
    assert list(body) == fields
    assert body["path"] is None and list(body["top"][0]) == ["label", "name", "probability"]
    assert {k: v for k, v in body.items() if k != "upload"} == expected


def test_host_header_is_checked(client: TestClient) -> None:
    """A DNS-rebinding page reaches the server under its own name: refused (400). Loopback names are answered."""
    for host in ("evil.example", "evil.example:8000", "192.168.1.20", "127.0.0.1.evil.example"):
        assert client.get("/api/info", headers={"host": host}).status_code == 400, host
        assert post(client, png_bytes(), headers={"host": host}).status_code == 400, host
    for host in ("localhost", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST:1"):
        assert client.get("/api/info", headers={"host": host}).status_code == 200, host
    assert allowed_hosts("::1") == ["localhost", "127.0.0.1", "[::1]", "[::1]"]
    assert allowed_hosts("myhost.local")[-1] == "myhost.local" and allowed_hosts("0.0.0.0") == ["*"]


def test_overlays_are_pngs_of_the_input_size(client: TestClient) -> None:
    body = post(client, png_bytes(5, size=200), overlays="true").json()
    overlays = body["overlays"]
    for key in ("input", "grad_cam", "deconvnet"):
        prefix = "data:image/png;base64,"
        assert overlays[key].startswith(prefix)
        image = Image.open(io.BytesIO(base64.b64decode(overlays[key].removeprefix(prefix))))
        assert image.size == (64, 64)
    assert "channel" in overlays["deconvnet_unit"]


def test_type_is_decided_by_content_not_name(client: TestClient) -> None:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(png_bytes(1))).save(buffer, format="JPEG")
    response = post(client, buffer.getvalue(), name="notes.txt", kind="text/plain")
    assert response.status_code == 200
    assert response.json()["upload"]["format"] == "JPEG"


def test_text_renamed_jpg_is_415(client: TestClient) -> None:
    response = post(client, b"just some notes\n" * 20, name="photo.jpg", kind="image/jpeg")
    assert response.status_code == 415
    assert "not an image" in response.json()["detail"]


def test_truncated_image_is_415(client: TestClient) -> None:
    data = png_bytes(4, size=128)
    response = post(client, data[: len(data) // 2])
    assert response.status_code == 415
    assert "truncated" in response.json()["detail"]


def test_over_the_limit_is_413(client: TestClient) -> None:
    response = post(client, os.urandom(LIMIT + 1))
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]


def test_chunked_upload_over_the_limit_is_413(client: TestClient) -> None:
    """No Content-Length: the cap on the bytes received stops it, before the multipart parser stores it."""
    boundary = "b0undary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; filename="x.png"\r\n\r\n'.encode()

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(64):  # 4 MB, far over the limit
            yield b"\0" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post(
        "/api/predict", content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    assert response.status_code == 413


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(("width", "height"), [(100_000, 100_000), (12_000, 12_000)])
def test_decompression_bomb_is_refused_cleanly(client: TestClient, width: int, height: int) -> None:
    """Far over Pillow's guard (it raises) and just over it (Pillow only warns): both 413, never a 500."""
    response = post(client, declared_png(width, height))
    assert response.status_code == 413
    assert "pixels" in response.json()["detail"]


def test_bad_requests_are_400(client: TestClient) -> None:
    assert post(client, b"").status_code == 400
    response = client.post("/api/predict", files={"image": ("x.png", png_bytes(), "image/png")})
    assert response.status_code == 400
    assert "photo" in response.json()["detail"]
    assert client.post("/api/predict", content=png_bytes()).status_code == 400


def test_info_and_class_images(client: TestClient) -> None:
    info = client.get("/api/info").json()
    assert info["max_upload_bytes"] == LIMIT
    assert [c["label"] for c in info["classes"]] == CLASSES
    assert info["class_images"]["grid"] == "/class-images/class_images.png"
    url = info["class_images"]["per_class"]["gargoyle"][0]
    response = client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    for name in ("notes.txt", "..%2Fclass_images.json", "nothing.png"):
        assert client.get(f"/class-images/{name}").status_code == 404
    page = client.get("/").text
    assert 'type="file"' in page and "://" not in page  # nothing fetched from another site: works offline


def test_answer_says_whether_the_photo_is_one_of_the_ten(
    client: TestClient, tiny_run, gallery: Path, old_checkpoint: Path
) -> None:
    info = client.get("/api/info").json()
    point = Classifier.load(tiny_run.checkpoint).open_set
    assert info["none_threshold"] == point.threshold and info["open_set_score"] == point.name == "energy"
    for known in (False, True):
        body = post(client, photo_with_confidence(tiny_run.checkpoint, False, known=known)).json()
        assert body["known"] is known and body["none_threshold"] == point.threshold
        assert (body["open_set_score"] >= point.threshold) is known and body["label"] == body["top"][0]["label"]
    strict = TestClient(create_app(tiny_run.checkpoint, gallery, none_threshold=1e9), base_url="http://127.0.0.1")
    assert strict.get("/api/info").json()["none_threshold"] == 1e9
    assert post(strict, png_bytes(4)).json()["known"] is False
    assert post(strict, png_bytes(4)).json()["none_reason"] == "score"
    static = io.BytesIO()  # uniform noise: below the noise check, whatever its score
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(static, "PNG")
    body = post(client, static.getvalue()).json()
    assert (body["known"], body["none_reason"]) == (False, "noise") and info["noise_threshold"] == point.noise_threshold
    old = TestClient(create_app(old_checkpoint, gallery), base_url="http://127.0.0.1")
    assert old.get("/api/info").json()["none_threshold"] is None and post(old, png_bytes(4)).json()["known"] is None
    with pytest.raises(ValueError, match="--none-threshold"):
        create_app(old_checkpoint, gallery, none_threshold=1.0)


def test_info_gives_the_sort_threshold_and_deconvnet_in_words(client: TestClient) -> None:
    assert client.get("/api/info").json()["min_confidence"] == MIN_CONFIDENCE
    overlays = post(client, png_bytes(5, size=200), overlays="true").json()["overlays"]
    box = overlays["deconvnet_box"]
    assert 0 <= box["top"] < box["bottom"] <= 64 and 0 <= box["left"] < box["right"] <= 64
    assert "outlined" in overlays["deconvnet_text"] and "channel" not in overlays["deconvnet_text"]
    assert "receptive field" in overlays["deconvnet_details"]


def test_cli_help_and_busy_port() -> None:
    from heritage_cnn.cli.main import build_parser

    parser = build_parser()
    args = parser.parse_args(["serve", "--port", "0", "--max-upload-mb", "5"])
    assert args.func.__name__ == "cmd_serve" and args.port == 0 and args.host == "127.0.0.1"
    with listen("127.0.0.1", 0) as busy:
        busy.listen()
        with pytest.raises(ValueError, match="cannot listen"):
            listen("127.0.0.1", busy.getsockname()[1])
    for port in (-5, 65536, 99999):
        with pytest.raises(ValueError, match=f"--port {port}: a port is a number from 1 to 65535"):
            listen("127.0.0.1", port)
