"""`heritage serve`: the JSON endpoint and its refusals (TestClient), the page in a real headless Chromium
(Debian's chromium driven by Selenium) and a bounded load test, all on the tiny model and synthetic photos."""

from __future__ import annotations

import base64
import io
import json
import os
import select
import socket
import struct
import subprocess
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from conftest import CLASSES, cli_server, draw, server_process
from heritage_cnn.apps.serve import allowed_hosts, create_app, listen
from heritage_cnn.data.decode import decode_image
from heritage_cnn.inference.classifier import Classifier
from heritage_cnn.inference.sort import MIN_CONFIDENCE

SRC = str(Path(__file__).resolve().parents[2] / "src")

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
    """`heritage serve` in a subprocess on a free loopback port."""
    with cli_server(
        "--model", str(tiny_run.checkpoint), "--class-images", str(gallery), "--max-upload-mb", "1"
    ) as served:
        yield served


def photo_with_confidence(checkpoint: Path, uncertain: bool, known: bool = True) -> bytes:
    """A 64 px PNG that the tiny model answers below (or at/above) the threshold `sort` and the page use, and
    calls one of the ten (`known`; False: none of them, whatever its confidence)."""
    classifier = Classifier.load(checkpoint)
    rng = np.random.default_rng(5)
    candidates = [draw(label, rng) for label in range(len(CLASSES))]
    for a in range(len(CLASSES)):  # blends of two classes' pictures: ambiguous on purpose
        for b in range(a + 1, len(CLASSES)):
            for weight in (0.5, 0.4, 0.6):
                candidates.append((weight * candidates[a] + (1 - weight) * candidates[b]).astype(np.uint8))
    for photo in candidates:
        answer = classifier.predict(photo)[0]
        if answer.known is not known:
            continue
        if not known or (answer.probability < MIN_CONFIDENCE) == uncertain:
            buffer = io.BytesIO()
            Image.fromarray(photo).save(buffer, format="PNG")
            return buffer.getvalue()
    raise AssertionError(f"no {'uncertain' if uncertain else 'confident'} photo among {len(candidates)} tried")


def open_page(browser, url: str, width: int = 1100):
    """Load the page at `width` CSS px and wait for the model description."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": width, "height": 1000, "deviceScaleFactor": 1, "mobile": False}
    )
    browser.get(url)
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.find_element(By.ID, "model").text.startswith("model "))
    return wait


def cards(browser) -> list:
    from selenium.webdriver.common.by import By

    return browser.find_elements(By.CSS_SELECTOR, "#results article")


def settled(browser, count: int) -> bool:
    """`count` result cards, none still waiting."""
    found = cards(browser)
    return len(found) == count and not any("pending" in c.get_attribute("class") for c in found)


def overflow(browser) -> int:
    """How many CSS px the page is wider than the window (0: no horizontal scroll bar)."""
    return browser.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")


def test_page_in_chromium(server, browser, tmp_path: Path, tiny_run) -> None:
    from selenium.webdriver.common.by import By

    url, _ = server
    wait = open_page(browser, url)
    photo = tmp_path / "bell tower.png"
    photo.write_bytes(png_bytes(2, size=160))
    browser.find_element(By.ID, "file").send_keys(str(photo))
    wait.until(lambda d: settled(d, 1))
    card = cards(browser)[0]
    assert len(card.find_elements(By.CSS_SELECTOR, "ol.top li")) == 5
    wait.until(lambda d: d.execute_script("return document.querySelector('#results img.pixel').naturalWidth") == 64)
    # the deconvnet panel: the projection over the photo, its window outlined, words, details on hover
    field = card.find_element(By.CSS_SELECTOR, ".frame .field")
    assert 0 < field.size["width"] <= card.find_element(By.CSS_SELECTOR, ".frame img").size["width"]
    assert "receptive field" in card.find_element(By.CSS_SELECTOR, "img.deconv").get_attribute("title")
    assert "outlined window" in card.text
    assert not card.find_elements(By.CSS_SELECTOR, ".correct")  # no correction control: this server keeps none
    # class images without any click: one tile per class, named by display name, in class order
    labels = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#classes li")]
    assert labels == [c.replace("_", " ").replace("(", " (") for c in CLASSES]
    assert browser.execute_script("return [...document.querySelectorAll('#classes img')].every(i => i.naturalWidth)")
    # the answer in the page is the model's for this photo: the five classes in order, each with its percentage
    expected = Classifier.load(tiny_run.checkpoint).predict(decode_image(photo.read_bytes()), top=5)[0]
    rows = card.find_elements(By.CSS_SELECTOR, "ol.top li")
    assert [row.find_element(By.CSS_SELECTOR, "span").text for row in rows] == [t.name for t in expected.top]
    shown = [float(row.find_element(By.CSS_SELECTOR, ".pct").text.removesuffix("%")) for row in rows]
    assert shown == pytest.approx([100 * t.probability for t in expected.top], abs=0.05 + 1e-9)  # one decimal
    verdict = card.find_element(By.CSS_SELECTOR, ".verdict").text
    if expected.known is False:  # the tiny network calls this enlarged drawing none of the ten: the closest beneath
        assert verdict == "not one of the ten elements"
        assert f"{expected.name} ({shown[0]:.1f}%)" in card.find_element(By.CSS_SELECTOR, ".closest").text
    else:
        assert (
            verdict.startswith(f"{expected.name} (")
            if expected.probability >= MIN_CONFIDENCE
            else "probably" in verdict
        )
        assert f"{expected.name} ({shown[0]:.1f}%)" in verdict
    if shot := os.environ.get("HERITAGE_SERVE_SCREENSHOT"):  # for the docs, on request
        browser.save_screenshot(shot)

    notes = tmp_path / "holiday.jpg"
    notes.write_text("not a photo\n")
    browser.find_element(By.ID, "file").send_keys(str(notes))
    wait.until(lambda d: settled(d, 1) and "failed" in cards(d)[0].get_attribute("class"))
    assert "not an image" in cards(browser)[0].text and "415" in cards(browser)[0].text
    assert "holiday.jpg: refused" in browser.find_element(By.ID, "status").text


def test_page_uncertain_answer_names_the_runner_up(server, browser, tmp_path: Path, tiny_run) -> None:
    from selenium.webdriver.common.by import By

    url, _ = server
    wait = open_page(browser, url)
    for name, uncertain in (("unsure.png", True), ("sure.png", False)):
        (tmp_path / name).write_bytes(photo_with_confidence(tiny_run.checkpoint, uncertain))
        expected = Classifier.load(tiny_run.checkpoint).predict(np.asarray(Image.open(tmp_path / name)))[0]
        browser.find_element(By.ID, "file").send_keys(str(tmp_path / name))
        wait.until(lambda d, name=name: settled(d, 1) and name in cards(d)[0].text)
        card = cards(browser)[0]
        verdict = card.find_element(By.CSS_SELECTOR, ".verdict").text
        badge = card.find_element(By.CSS_SELECTOR, ".badge").text
        if uncertain:
            assert "uncertain" in card.get_attribute("class") and badge == "not sure"
            assert verdict.startswith("probably a") and f" {expected.top[0].name} (" in verdict
            assert f", or a{'n' if expected.top[1].name[0] in 'aeiou' else ''} {expected.top[1].name} (" in verdict
            assert "_uncertain/" in card.text
        else:
            assert "uncertain" not in card.get_attribute("class") and badge == "answer"
            assert verdict.startswith(f"{expected.name} (") and "probably" not in verdict


def test_page_says_not_one_of_the_ten_with_the_closest_class(server, browser, tmp_path: Path, tiny_run) -> None:
    from selenium.webdriver.common.by import By

    url, _ = server
    wait = open_page(browser, url)
    assert "not one of the ten elements" in browser.find_element(By.ID, "limits").text
    photo = tmp_path / "flower.png"
    photo.write_bytes(photo_with_confidence(tiny_run.checkpoint, False, known=False))
    expected = Classifier.load(tiny_run.checkpoint).predict(np.asarray(Image.open(photo)))[0]
    assert expected.known is False
    browser.find_element(By.ID, "file").send_keys(str(photo))
    wait.until(lambda d: settled(d, 1) and "flower.png" in cards(d)[0].text)
    card = cards(browser)[0]
    assert "none" in card.get_attribute("class").split() and "uncertain" not in card.get_attribute("class")
    assert card.find_element(By.CSS_SELECTOR, ".badge").text == "none of these"
    assert card.find_element(By.CSS_SELECTOR, ".verdict").text == "not one of the ten elements"
    closest = card.find_element(By.CSS_SELECTOR, ".closest").text  # the runner-up beneath
    assert closest.startswith(f"Closest of the ten: a{'n' if expected.name[0] in 'aeiou' else ''} {expected.name} (")
    assert "_none/" in closest
    assert "not one of the ten elements (closest:" in browser.find_element(By.ID, "status").text


def test_page_several_photos_at_once(server, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    url, _ = server
    wait = open_page(browser, url)
    paths = []
    for label in (1, 4, 8):
        paths.append(tmp_path / f"photo {label}.png")
        paths[-1].write_bytes(png_bytes(label, size=96, seed=label))
    (tmp_path / "broken.png").write_bytes(png_bytes(3)[:200])
    paths.append(tmp_path / "broken.png")
    browser.find_element(By.ID, "file").send_keys("\n".join(str(p) for p in paths))
    wait.until(lambda d: settled(d, 4))
    texts = [c.text for c in cards(browser)]
    assert [p.name in t for p, t in zip(paths, texts, strict=True)] == [True] * 4
    assert sum(len(c.find_elements(By.CSS_SELECTOR, "ol.top li")) == 5 for c in cards(browser)) == 3
    assert "failed" in cards(browser)[3].get_attribute("class") and "truncated" in texts[3]
    status = browser.find_element(By.ID, "status")
    assert status.get_attribute("aria-live") == "polite"
    assert status.text.startswith("4 photos classified.") and all(p.name in status.text for p in paths)
    time.sleep(1.5)  # the announcement stays: screen readers and late readers find it
    assert status.text.startswith("4 photos classified.")
    for width in (400, 1280):
        open_page(browser, url, width)
        browser.find_element(By.ID, "file").send_keys("\n".join(str(p) for p in paths[:3]))
        wait.until(lambda d: settled(d, 3))
        for card in cards(browser):  # open every "why" panel: the widest content
            browser.execute_script("arguments[0].querySelector('details').open = true", card)
        assert overflow(browser) <= 0, f"horizontal overflow at {width} px"
        sizes = browser.execute_script(
            "return [...document.querySelectorAll('#classes span, ol.top li, figcaption')]"
            ".map(e => parseFloat(getComputedStyle(e).fontSize))"
        )
        assert min(sizes) >= 13, f"text under 13 px at {width} px"


def test_page_keyboard_only_upload(server, browser, tmp_path: Path) -> None:
    """Tab from the top of the page reaches the file input; the photo is sent from there, no mouse."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, _ = server
    wait = open_page(browser, url)
    for _ in range(10):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        if browser.switch_to.active_element.get_attribute("id") == "file":
            break
    focused = browser.switch_to.active_element
    assert focused.get_attribute("id") == "file", "Tab never reached the file input"
    photo = tmp_path / "keyboard.png"
    photo.write_bytes(png_bytes(5, size=80))
    focused.send_keys(str(photo))
    wait.until(lambda d: settled(d, 1))
    assert browser.find_element(By.ID, "status").text.startswith("keyboard.png: ")
    # everything in the result is reachable by Tab: the "why" and "technical details" summaries
    summaries = browser.find_elements(By.CSS_SELECTOR, "#results summary")
    reached = set()
    for _ in range(12):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        reached.add(browser.switch_to.active_element.text)
    assert {s.text for s in summaries} <= reached


REQUESTS, CONCURRENCY, MAX_GROWTH_MB = 200, 8, 100


def test_load_no_errors_bounded_memory(server) -> None:
    """200 predictions, 8 at a time, on loopback: every answer 200, RSS growth under 100 MB (the time is printed;
    benchmarks/bench_serve.py measures latency)."""
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
    assert after - before < MAX_GROWTH_MB
    assert process.poll() is None


# --------------------------------------------------------------------------------------------
# A hardened server with short timeouts: slow clients, and a soak test with hostile uploads
# --------------------------------------------------------------------------------------------

BODY_S, IDLE_S, HEADER_S = 3.0, 1.5, 2.0


@pytest.fixture(scope="module")
def quick_server(tiny_run) -> Iterator[tuple[str, subprocess.Popen]]:
    """The library's server in its own process, with 3 s / 1.5 s body timeouts."""
    create = (
        f"{str(tiny_run.checkpoint)!r}, max_upload_bytes=2**20, body_timeout={BODY_S}, idle_timeout={IDLE_S}, "
        "draw_class_images=False"
    )
    with server_process(create, f", header_timeout={HEADER_S}") as (port, process):
        yield f"http://127.0.0.1:{port}/", process


def _slow_post(url: str, pause_s: float, chunks: int) -> tuple[bytes, int]:
    """A raw POST that declares 100 kB and sends up to `chunks` body bytes, one every `pause_s` seconds, until the
    server answers; (the reply, how many bytes were sent before it). A server that never answers fails the test
    on the socket's 30 s timeout."""
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(
            b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
            b"Content-Type: multipart/form-data; boundary=xyz\r\n\r\n--xyz\r\n"
        )
        sent = 0
        while sent < chunks and not select.select([conn], [], [], pause_s)[0]:  # nothing from the server yet
            conn.sendall(b"x")
            sent += 1
        reply = b""
        while chunk := conn.recv(65536):  # until the server closes the connection
            reply += chunk
        return reply, sent


# Work, not seconds: how many bytes a slow client gets in before the server gives up on it. The trickle's bytes
# come every 0.5 s: the idle limit (1.5 s between bytes) never applies, the body limit (3 s) stops it after about
# 6; more than IDLE_S / 0.5 = 3 bytes shows the idle limit was not taken for the whole, fewer than 20 that the
# server did not wait for the client to finish.
TRICKLE_S, TRICKLE_BYTES = 0.5, 20


def test_slow_clients_get_408_and_are_disconnected(quick_server) -> None:
    url, process = quick_server
    stalled, sent = _slow_post(url, pause_s=0.0, chunks=0)  # the headers and a little body, then nothing
    assert stalled.startswith(b"HTTP/1.1 408") and b"not received within" in stalled
    trickle, sent = _slow_post(url, pause_s=TRICKLE_S, chunks=TRICKLE_BYTES)  # never idle, too slow
    assert trickle.startswith(b"HTTP/1.1 408")
    assert IDLE_S / TRICKLE_S < sent < TRICKLE_BYTES, sent
    with httpx_client() as http:  # the server still answers
        assert http.post(f"{url}api/predict", files={"photo": ("p.png", png_bytes(), "image/png")}).status_code == 200
    assert process.poll() is None


def test_a_client_that_trickles_its_headers_is_disconnected(quick_server) -> None:
    """A header byte every 0.25 s, never finishing: the server hangs up at its 2 s deadline, after about 8 of the
    40 bytes the client would send (at least HEADER_S / 2 / 0.25 = 4: the deadline is not cut short)."""
    url, process = quick_server
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        sent = 0
        while sent < 40 and not select.select([conn], [], [], 0.25)[0]:  # readable: closed by the server
            conn.sendall(b"X")
            sent += 1
        closed = conn.recv(1) == b""
    assert closed and HEADER_S / 2 / 0.25 <= sent < 40, sent
    with httpx_client() as http:  # keep-alive clients that send whole requests are unaffected
        for _ in range(3):
            assert http.get(f"{url}api/info").status_code == 200
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
    thin = io.BytesIO()
    Image.new("RGB", (1, 100_000), (200, 120, 40)).save(thin, format="PNG")  # 64 x 6.4 M if resized naively
    jpeg = io.BytesIO()
    Image.fromarray(draw(3, np.random.default_rng(9), 256)).save(jpeg, format="JPEG", quality=90)
    return {
        "thin.png": (thin.getvalue(), {200}),
        "bomb.png": (declared_png(100_000, 100_000), {413}),
        "texture.dds": (dds_unsupported(), {415}),
        "truncated.jpg": (jpeg.getvalue()[: len(jpeg.getvalue()) // 3], {415}),
        "random.jpg": (np.random.default_rng(0).bytes(20_000), {415}),
    }


SOAK_BATCHES, SOAK_GOOD, SOAK_LAST_THIRD_MB = 20, 5, 25


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
    assert len(answers) == SOAK_BATCHES * SOAK_GOOD
    # The same answer every time, the open-set score included to its last digit: each upload is classified alone,
    # with the same kernels, while other threads classify theirs with the same model (whose hooks once crossed).
    assert answers[0]["open_set_score"] is not None
    assert all(a == answers[0] for a in answers), sorted({a["open_set_score"] for a in answers})
    assert growth < SOAK_LAST_THIRD_MB, rss
    assert process.poll() is None
