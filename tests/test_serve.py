"""`heritage serve`: the JSON endpoint and its refusals (TestClient), the page in a real headless Chromium
(Debian's chromium driven by Selenium) and a bounded load test, all on the tiny model and synthetic photos."""

from __future__ import annotations

import base64
import io
import json
import os
import select
import shutil
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
from heritage_cnn.serve import create_app, find_class_images, listen

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
    return TestClient(create_app(tiny_run.checkpoint, gallery, max_upload_bytes=LIMIT))


def post(client: TestClient, content: bytes, name: str = "photo.png", kind: str = "image/png", **params):
    return client.post("/api/predict", params=params, files={"photo": (name, content, kind)})


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
