"""`heritage serve`'s answers to bad requests and the upload's description (TestClient, the tiny model, photos drawn
here): every error is `{"detail": "<one line>"}` naming what is wrong, in the words the CLI uses for the same problem,
and an upload's size is the one `/api/map` and `heritage map` report."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from conftest import draw
from heritage_cnn.apps.serve import create_app
from heritage_cnn.data.decode import try_decode
from heritage_cnn.inference.element_map import map_files

QUARTER_TURN = 6  # EXIF orientation: display the stored image turned a quarter clockwise


@pytest.fixture(scope="module")
def client(tiny_run) -> TestClient:
    return TestClient(create_app(tiny_run.checkpoint, draw_class_images=False), base_url="http://127.0.0.1")


def photo(fmt: str, orientation: int | None = None, size: tuple[int, int] = (400, 300)) -> bytes:
    """A drawn photo stored `size` (width, height), with an EXIF orientation when given."""
    image = Image.fromarray(draw(2, np.random.default_rng(0), max(size))[: size[1], : size[0]])
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, exif=exif.tobytes())
    return buffer.getvalue()


def post(client: TestClient, content: bytes, route: str = "/api/predict", headers=None, **params):
    return client.post(route, params=params, files={"photo": ("photo", content, "image/jpeg")}, headers=headers)


def one_line(response) -> str:
    """The answer's detail, checked to be the one-line JSON every error is."""
    assert response.headers["content-type"] == "application/json", response.text
    body = response.json()
    assert list(body) == ["detail"] and isinstance(body["detail"], str) and "\n" not in body["detail"], body
    return body["detail"]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_upload_size_is_the_oriented_one_on_every_route(client: TestClient, tmp_path: Path, fmt: str) -> None:
    """A photo stored 400 x 300 and marked "turn a quarter" is 300 x 400 to /api/predict, /api/map and `heritage map`
    alike: the frame the map's boxes are in. One without the mark stays 400 x 300."""
    for orientation, expected in ((QUARTER_TURN, (300, 400)), (None, (400, 300))):
        data = photo(fmt, orientation)
        predicted = post(client, data).json()["upload"]
        mapped = post(client, data, route="/api/map").json()["upload"]
        assert (predicted["width"], predicted["height"]) == (mapped["width"], mapped["height"]) == expected, orientation
        path = tmp_path / f"photo.{fmt.lower()}"
        path.write_bytes(data)
        (cli,) = map_files(client.app.state.served.classifier, [path])  # `heritage map`'s own
        assert (cli.width, cli.height) == expected


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ({"top": "0"}, "top: must be an integer from 1 to 100, got '0'"),
        ({"top": "abc"}, "top: must be an integer from 1 to 100, got 'abc'"),
        ({"top": "nan"}, "top: must be an integer from 1 to 100, got 'nan'"),
        ({"top": "1000000000000"}, "top: must be an integer from 1 to 100, got '1000000000000'"),
        ({"overlays": "maybe"}, "overlays: must be true or false, got 'maybe'"),
        (
            {"top": "-1", "overlays": "x"},
            "top: must be an integer from 1 to 100, got '-1'; overlays: must be true or false, got 'x'",
        ),
    ],
)
def test_a_bad_query_parameter_is_a_400_naming_it_and_its_range(client: TestClient, query: dict, detail: str) -> None:
    """Not FastAPI's 422 with a list of objects, which the page would show as "[object Object]"."""
    response = post(client, photo("JPEG"), **query)
    assert response.status_code == 400 and one_line(response) == detail
    assert post(client, photo("JPEG"), route="/api/map", overlays="maybe").json() == {
        "detail": "overlays: must be true or false, got 'maybe'"
    }


def test_a_foreign_host_is_refused_in_one_line_of_json(client: TestClient) -> None:
    """The DNS-rebinding guard's 400 is JSON like every other error, for a page's fetch and a script alike."""
    answers = {
        "evil.com": client.get("/api/info", headers={"host": "evil.com"}),
        "evil.com:8000": post(client, photo("JPEG"), headers={"host": "evil.com:8000"}),
    }
    for host, response in answers.items():
        assert response.status_code == 400 and one_line(response) == (
            f"Host header {host!r} refused: this server answers only localhost, 127.0.0.1, [::1] "
            "(a guard against DNS rebinding)"
        )
    assert client.get("/api/info", headers={"host": "localhost:8000"}).status_code == 200


def test_an_empty_upload_is_refused_in_the_words_predict_skips_it_with(client: TestClient, tmp_path: Path) -> None:
    """`heritage predict` skips an empty file with the decoder's reason; the server refuses an empty upload with it."""
    (tmp_path / "zero.jpg").write_bytes(b"")
    cli_reason = try_decode(tmp_path / "zero.jpg")
    assert cli_reason == "empty file (0 bytes)"
    for route in ("/api/predict", "/api/map"):
        response = post(client, b"", route=route)
        assert response.status_code == 400 and one_line(response) == cli_reason


def test_unknown_addresses_and_methods_are_one_line_too(client: TestClient) -> None:
    assert one_line(client.get("/api/nothing")) == "Not Found"
    assert one_line(client.post("/api/info")) == "Method Not Allowed"
