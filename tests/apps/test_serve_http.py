"""`heritage serve` as an HTTP server: HEAD on every GET route (RFC 9110 9.3.2), and a multipart Content-Type read
whatever its case (MIME types have none); TestClient and a real uvicorn server, on the tiny model."""

from __future__ import annotations

import socket

import pytest
from _serve_helpers import class_images, png_bytes
from fastapi.testclient import TestClient

from conftest import server_process
from heritage_cnn.apps.serve import create_app


@pytest.fixture(scope="module")
def client(tiny_run, tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    gallery = class_images(tmp_path_factory.mktemp("class_images"))
    return TestClient(create_app(tiny_run.checkpoint, gallery, draw_class_images=False), base_url="http://127.0.0.1")


def test_get_routes_answer_head_with_the_headers_of_get_and_no_body(client: TestClient) -> None:
    image = client.get("/api/info").json()["class_images"]["grid"]
    for path in ("/", "/api/info", image):
        got, head = client.get(path), client.head(path)
        assert (head.status_code, got.status_code) == (200, 200), (path, head.text)
        assert head.content == b""
        for header in ("content-type", "content-length"):
            assert head.headers[header] == got.headers[header], (path, header)
    missing = client.head("/class-images/nothing.png")
    assert missing.status_code == 404 and missing.content == b""
    assert client.head("/api/predict").status_code == 405  # a POST route: no HEAD


def test_head_on_a_real_server_sends_no_body(tiny_run) -> None:
    """uvicorn sends the headers of GET, Content-Length included, and not one byte of body."""
    with server_process(f"{str(tiny_run.checkpoint)!r}, draw_class_images=False") as (port, _):
        for path in (b"/", b"/api/info"):
            with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
                conn.sendall(b"HEAD " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                reply = b""
                while chunk := conn.recv(65536):
                    reply += chunk
            head, _, body = reply.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), reply[:200]
            assert b"content-length: " in head.lower() and body == b"", reply[:300]


@pytest.mark.parametrize("media_type", ["Multipart/Form-Data", "MULTIPART/FORM-DATA"])
def test_the_multipart_type_is_read_in_any_case(client: TestClient, media_type: str) -> None:
    data = png_bytes(3)
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; filename="p.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"content-type": f"{media_type}; boundary={boundary}"}
    response = client.post("/api/predict", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["upload"]["bytes"] == len(data)
    refused = client.post("/api/predict", content=body, headers={"content-type": f"text/plain; boundary={boundary}"})
    assert refused.status_code == 400 and "multipart/form-data" in refused.json()["detail"]
