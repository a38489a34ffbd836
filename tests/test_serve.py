"""`heritage serve`: the JSON endpoint and its refusals (TestClient), the page in a real headless Chromium
(Debian's chromium driven by Selenium) and a bounded load test, all on the tiny model and synthetic photos."""

from __future__ import annotations

import base64
import io
import json
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from conftest import CLASSES, draw
from heritage_cnn.predict import Classifier
from heritage_cnn.serve import allowed_hosts, create_app, find_class_images, listen

SRC = str(Path(__file__).resolve().parents[1] / "src")

LIMIT = 256 * 1024  # a small upload limit, so the 413 tests stay small


def png_bytes(label: int = 2, size: int = 64, seed: int = 0) -> bytes:
    array = draw(label, np.random.default_rng(seed), size)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def declared_png(width: int, height: int) -> bytes:
    """A PNG of a few hundred bytes whose header declares width x height pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * 4096)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `heritage generate --all` writes: per-class PNGs, the grid and class_images.json."""
    out = tmp_path_factory.mktemp("class_images")
    records = []
    for label, name in enumerate(CLASSES):
        file = f"{name.replace(' ', '_')}_0.png"
        (out / file).write_bytes(png_bytes(label))
        records.append({"file": file, "class": name})
    Image.new("RGB", (640, 80), "white").save(out / "class_images.png")
    (out / "class_images.json").write_text(json.dumps({"images": records}))
    (out / "notes.txt").write_text("not served")
    return out


@pytest.fixture(scope="module")
def client(tiny_run, gallery: Path) -> TestClient:
    return TestClient(create_app(tiny_run.checkpoint, gallery, max_upload_bytes=LIMIT), base_url="http://127.0.0.1")


def post(client: TestClient, content: bytes, name: str = "photo.png", kind: str = "image/png", headers=None, **params):
    return client.post("/api/predict", params=params, files={"photo": (name, content, kind)}, headers=headers)


# --------------------------------------------------------------------------------------------
# JSON endpoint
# --------------------------------------------------------------------------------------------


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
    assert list(body) == ["path", "label", "name", "probability", "top", "upload"]
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


def test_class_images_absent_or_missing(tmp_path: Path) -> None:
    assert "heritage generate --all" in find_class_images(tmp_path).note
    nothing = find_class_images(None)  # only a path given explicitly: never the repository's docs/
    assert nothing.files == {} and nothing.grid is None and "--class-images" in nothing.note
    with pytest.raises(ValueError, match="no such folder"):
        find_class_images(tmp_path / "missing")


def test_cli_help_and_busy_port() -> None:
    from heritage_cnn.cli import build_parser

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


# --------------------------------------------------------------------------------------------
# A real server: the page in Chromium, and a load test
# --------------------------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def server(tiny_run, gallery: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """`heritage serve` in a subprocess on a free loopback port (port 0: the server prints the one it got)."""
    command = [sys.executable, "-m", "heritage_cnn.cli", "serve", "--model", str(tiny_run.checkpoint)]
    command += ["--port", "0", "--class-images", str(gallery), "--max-upload-mb", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 90)
        line = process.stdout.readline() if ready else ""
        if "http://127.0.0.1:" not in line:
            process.kill()
            pytest.fail(f"heritage serve did not start: {line}{process.stdout.read()}")
        url = line.split()[2]
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=20)


def find_chromium() -> tuple[str, str] | None:
    """Debian's chromium and chromedriver; installed with apt-get when missing and running as root."""
    browser, driver = shutil.which("chromium") or "/usr/bin/chromium", "/usr/bin/chromedriver"
    if not (Path(browser).exists() and Path(driver).exists()) and hasattr(os, "geteuid") and os.geteuid() == 0:
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"],
            capture_output=True,
            timeout=600,
            check=False,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    return (browser, driver) if Path(browser).exists() and Path(driver).exists() else None


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    found = find_chromium()
    if found is None:
        pytest.skip(
            "no /usr/bin/chromium + /usr/bin/chromedriver, and `apt-get install chromium chromium-driver` failed"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1100,1250"):  # fmt: skip
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=found[1]))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_page_in_chromium(server, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = server
    wait = WebDriverWait(browser, 30)
    browser.get(url)
    wait.until(lambda d: d.find_element(By.ID, "model").text.startswith("model "))
    photo = tmp_path / "bell tower.png"
    photo.write_bytes(png_bytes(2, size=160))
    browser.find_element(By.ID, "file").send_keys(str(photo))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#top li")) == 5)
    wait.until(lambda d: d.execute_script("return document.getElementById('gradcam').naturalWidth") == 64)
    assert browser.find_element(By.ID, "verdict").text.endswith("%)")
    assert browser.execute_script("return document.getElementById('grid').naturalWidth") == 640
    shot = Path(os.environ.get("HERITAGE_SERVE_SCREENSHOT", tmp_path / "serve.png"))
    assert browser.save_screenshot(str(shot))

    notes = tmp_path / "holiday.jpg"
    notes.write_text("not a photo\n")
    browser.find_element(By.ID, "file").send_keys(str(notes))
    wait.until(lambda d: d.find_element(By.ID, "error").is_displayed())
    assert "not an image" in browser.find_element(By.ID, "error").text
    assert "415" in browser.find_element(By.ID, "error").text


REQUESTS, CONCURRENCY, SECONDS, MAX_GROWTH_MB = 200, 8, 60, 100


def test_load_no_errors_bounded_memory(server) -> None:
    """200 predictions, 8 at a time, on loopback: every answer 200, within 60 s, RSS growth under 100 MB."""
    import httpx

    url, process = server
    photos = [png_bytes(i % 10, size=128, seed=i) for i in range(16)]

    def one(i: int) -> tuple[int, float]:
        started = time.perf_counter()
        response = http.post(f"{url}api/predict", files={"photo": ("p.png", photos[i % len(photos)], "image/png")})
        return response.status_code, time.perf_counter() - started

    with httpx.Client(timeout=30, limits=httpx.Limits(max_connections=CONCURRENCY)) as http:
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            list(pool.map(one, range(2 * CONCURRENCY)))  # warm-up: allocator pools, thread pool
            before = rss_mb(process.pid)
            started = time.perf_counter()
            results = list(pool.map(one, range(REQUESTS)))
            elapsed = time.perf_counter() - started
        after = rss_mb(process.pid)
    statuses = [status for status, _ in results]
    latencies = np.array([seconds for _, seconds in results]) * 1000
    print(
        f"\n{REQUESTS} requests, {CONCURRENCY} concurrent, {elapsed:.1f} s: p50 {np.percentile(latencies, 50):.1f} ms, "
        f"p95 {np.percentile(latencies, 95):.1f} ms, RSS {before:.0f} -> {after:.0f} MB"
    )
    assert statuses == [200] * REQUESTS
    assert elapsed < SECONDS
    assert after - before < MAX_GROWTH_MB
    assert process.poll() is None


# --------------------------------------------------------------------------------------------
# A hardened server with short timeouts: slow clients, and a soak test with hostile uploads
# --------------------------------------------------------------------------------------------

BODY_S, IDLE_S = 3.0, 1.5


@pytest.fixture(scope="module")
def quick_server(tiny_run) -> Iterator[tuple[str, subprocess.Popen]]:
    """The library's server (create_app + listen + run) in its own process, with 3 s / 1.5 s body timeouts."""
    script = (
        "from heritage_cnn.serve import create_app, listen, run\n"
        "sock = listen('127.0.0.1', 0)\n"
        f"app = create_app({str(tiny_run.checkpoint)!r}, max_upload_bytes=2**20, body_timeout={BODY_S}, "
        f"idle_timeout={IDLE_S})\n"
        "print(f'http://127.0.0.1:{sock.getsockname()[1]}/', flush=True)\n"
        "run(app, sock)\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 90)
        line = process.stdout.readline() if ready else ""
        if not line.startswith("http://"):
            process.kill()
            pytest.fail(f"the server did not start: {line}")
        yield line.strip(), process
    finally:
        process.terminate()
        process.wait(timeout=20)


def _slow_post(url: str, pause_s: float, chunks: int) -> tuple[bytes, float]:
    """A raw POST that declares 100 kB and sends `chunks` bytes, one every `pause_s` seconds; (reply, seconds)."""
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        started = time.monotonic()
        conn.sendall(
            b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
            b"Content-Type: multipart/form-data; boundary=xyz\r\n\r\n--xyz\r\n"
        )
        reply = b""
        for _ in range(chunks):
            time.sleep(pause_s)
            try:
                conn.sendall(b"x")
            except OSError:
                break  # closed by the server
        while chunk := conn.recv(65536):  # until the server closes the connection
            reply += chunk
        return reply, time.monotonic() - started


def test_slow_clients_get_408_and_are_disconnected(quick_server) -> None:
    url, process = quick_server
    stalled, seconds = _slow_post(url, pause_s=0.0, chunks=0)  # sends a little, then nothing
    assert stalled.startswith(b"HTTP/1.1 408") and b"not received within" in stalled
    assert IDLE_S - 0.2 < seconds < IDLE_S + 5
    trickle, seconds = _slow_post(url, pause_s=0.5, chunks=20)  # a byte every 0.5 s: never idle, too slow
    assert trickle.startswith(b"HTTP/1.1 408")
    assert BODY_S - 0.2 < seconds < BODY_S + 5
    with httpx_client() as http:  # the server still answers
        assert http.post(f"{url}api/predict", files={"photo": ("p.png", png_bytes(), "image/png")}).status_code == 200
    assert process.poll() is None


def httpx_client():
    import httpx

    return httpx.Client(timeout=60)


def dds_unsupported() -> bytes:
    """A DDS texture header with a pixel format Pillow recognises but cannot decode (NotImplementedError)."""
    header = struct.pack("<7I", 124, 0x1007, 4, 4, 0, 0, 0) + b"\0" * 44
    pixel_format = struct.pack("<8I", 32, 0x4, int.from_bytes(b"ZZZZ", "little"), 0, 0, 0, 0, 0)
    return b"DDS " + header + pixel_format + struct.pack("<5I", 0x1000, 0, 0, 0, 0) + b"\0" * 64


def hostile_uploads() -> dict[str, tuple[bytes, set[int]]]:
    """Hostile files and the statuses each may get (never a 500)."""
    jpeg = io.BytesIO()
    Image.fromarray(draw(3, np.random.default_rng(9), 256)).save(jpeg, format="JPEG", quality=90)
    return {
        "bomb.png": (declared_png(100_000, 100_000), {413}),
        "texture.dds": (dds_unsupported(), {415}),
        "truncated.jpg": (jpeg.getvalue()[: len(jpeg.getvalue()) // 3], {415}),
        "random.jpg": (np.random.default_rng(0).bytes(20_000), {415}),
        "notes.jpg": (b"not a photo at all\n" * 50, {415}),
    }


SOAK_BATCHES, SOAK_GOOD, SOAK_SECONDS, SOAK_LAST_THIRD_MB = 20, 5, 60, 25


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_soak_hostile_uploads_between_good_ones(quick_server) -> None:
    """200 uploads in 20 batches of 5 good + 5 hostile, 4 at a time: every good one 200 with the same answer,
    no hostile one a 500, and the server's RSS levels off (the last third grows by less than 25 MB)."""
    url, process = quick_server
    good = png_bytes(7, size=160, seed=4)
    uploads = [("good.png", good, {200})] * SOAK_GOOD + [(n, d, ok) for n, (d, ok) in hostile_uploads().items()]

    def one(upload: tuple[str, bytes, set[int]]) -> tuple[str, int, dict]:
        name, data, _ = upload
        response = http.post(f"{url}api/predict", files={"photo": (name, data, "application/octet-stream")})
        return name, response.status_code, response.json()

    rss, answers, started = [], [], time.monotonic()
    with httpx_client() as http, ThreadPoolExecutor(4) as pool:
        for batch in range(SOAK_BATCHES):
            order = np.random.default_rng(batch).permutation(len(uploads))
            for (name, status, body), i in zip(pool.map(one, [uploads[i] for i in order]), order, strict=True):
                assert status in uploads[i][2], (name, status, body)
                if name == "good.png":
                    answers.append({k: v for k, v in body.items() if k != "upload"})
            rss.append(rss_mb(process.pid))
    elapsed = time.monotonic() - started
    third = SOAK_BATCHES // 3
    growth = max(rss[-third:]) - rss[-third - 1]
    print(f"\nsoak: {SOAK_BATCHES * len(uploads)} uploads in {elapsed:.1f} s; RSS per batch (MB): {np.round(rss)}")
    assert len(answers) == SOAK_BATCHES * SOAK_GOOD and all(a == answers[0] for a in answers)
    assert growth < SOAK_LAST_THIRD_MB, rss
    assert elapsed < SOAK_SECONDS
    assert process.poll() is None
