"""`heritage serve` as a real server: the page in a real headless Chromium (Debian's chromium driven by
Selenium), a bounded load test, slow clients and a soak test with hostile uploads, all on the tiny model and
synthetic photos; the JSON endpoint and its refusals (TestClient) are test_serve_api.py's."""

from __future__ import annotations

import io
import os
import select
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from _serve_helpers import (
    cards,
    class_images,
    open_page,
    overflow,
    photo_with_confidence,
    png_bytes,
    settled,
)
from PIL import Image

from conftest import CLASSES, cli_server, declared_png, draw, server_process
from heritage_cnn.data.decode import decode_image
from heritage_cnn.inference.classifier import Classifier
from heritage_cnn.inference.sort import MIN_CONFIDENCE


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return class_images(tmp_path_factory.mktemp("class_images"))


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
    assert stalled.startswith(b"HTTP/1.1 408") and f"paused for more than {IDLE_S:g} s".encode() in stalled
    trickle, sent = _slow_post(url, pause_s=TRICKLE_S, chunks=TRICKLE_BYTES)  # never idle, too slow
    assert trickle.startswith(b"HTTP/1.1 408") and f"not received within {BODY_S:g} s".encode() in trickle
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
