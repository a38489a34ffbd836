"""`POST /api/map` (TestClient) and the page's "What is where?" panel (headless Chromium), on the tiny model and
synthetic photos drawn here."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from _serve_helpers import open_page, overflow, settled
from fastapi.testclient import TestClient
from PIL import Image

from conftest import CLASSES, declared_png, draw, server_process
from heritage_cnn.apps import routes
from heritage_cnn.apps.routes import MAPS_AT_ONCE, PREDICTIONS_AT_ONCE
from heritage_cnn.apps.serve import create_app
from heritage_cnn.inference.classifier import Classifier
from heritage_cnn.inference.element_map import map_elements

LIMIT = 2 * 2**20
LEFT, RIGHT = 0, 5  # red and cyan: the two synthetic classes furthest apart in hue
# The tiny run's Mahalanobis score calls every enlarged synthetic tile none at its own threshold; this one rejects only
# tiles straddling two pictures (tests/inference/test_element_map.py, `enlarged`, says why and what was measured).
THRESHOLD = -20_000
PREFIX = "data:image/png;base64,"


def two_halves(enlarge: int = 4) -> bytes:
    """Two class pictures side by side, enlarged (nearest), as a PNG: 512 x 256 at 4 times."""
    rng = np.random.default_rng(3)
    row = np.concatenate([draw(LEFT, rng), draw(RIGHT, rng)], axis=1)
    buffer = io.BytesIO()
    Image.fromarray(np.kron(row, np.ones((enlarge, enlarge, 1), dtype=np.uint8))).save(buffer, format="PNG")
    return buffer.getvalue()


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def image_of(url: str) -> Image.Image:
    assert url.startswith(PREFIX)
    return Image.open(io.BytesIO(base64.b64decode(url.removeprefix(PREFIX))))


@pytest.fixture(scope="module")
def app(tiny_run):
    return create_app(tiny_run.checkpoint, max_upload_bytes=LIMIT, draw_class_images=False, none_threshold=THRESHOLD)


@pytest.fixture(scope="module")
def client(app) -> TestClient:
    return TestClient(app, base_url="http://127.0.0.1")


def post(client: TestClient, content: bytes, route: str = "/api/map", **params):
    return client.post(route, params=params, files={"photo": ("photo.png", content, "image/png")})


def test_map_answers_heritage_maps_json_with_boxes_inside_the_photo(client: TestClient, tiny_run) -> None:
    data = two_halves()
    response = post(client, data)
    assert response.status_code == 200, response.text
    body = response.json()
    expected = map_elements(Classifier.load(tiny_run.checkpoint, none_threshold=THRESHOLD), data).to_dict()
    assert {k: v for k, v in body.items() if k != "upload"} == expected  # `heritage map --format json`'s schema
    assert body["upload"] == {"width": 512, "height": 256, "bytes": len(data)}
    assert body["path"] is None and body["whole_photo"] is False and "overlays" not in body
    labels = [e["label"] for e in body["elements"]]
    assert {CLASSES[LEFT], CLASSES[RIGHT]} <= set(labels)
    for element in body["elements"]:
        box = element["box"]
        assert 0 <= box["left"] < box["right"] <= 512 and 0 <= box["top"] < box["bottom"] <= 256
        assert 0 < element["confidence"] <= 1 and element["name"]
    left = next(e for e in body["elements"] if e["label"] == CLASSES[LEFT])
    assert left["peak"]["x"] < 256  # each picture's element lies on its own half


def test_overlays_only_when_asked(client: TestClient) -> None:
    body = post(client, two_halves(), overlays="true").json()
    overlays = body["overlays"]
    assert set(overlays) == {"photo", "heat", "extent"}
    photo = image_of(overlays["photo"])
    assert photo.mode == "RGB" and photo.size == (512, 256)  # the photo as the tiles saw it: not enlarged
    assert list(overlays["heat"]) == CLASSES
    maps = [image_of(url) for url in overlays["heat"].values()]
    assert all(m.mode == "RGBA" and m.size == maps[0].size for m in maps)
    columns, rows = maps[0].size
    extent = overlays["extent"]
    assert extent["left"] == extent["top"] == 0
    assert 512 <= extent["right"] < 512 + 512 / columns + 1e-6 and 256 <= extent["bottom"] < 256 + 256 / rows + 1e-6
    strongest = np.asarray(maps[LEFT])[..., 3]  # opacity grows with the value: the left picture's map on the left
    assert strongest[:, : columns // 2].mean() > strongest[:, columns // 2 :].mean()
    assert "overlays" not in post(client, two_halves(), overlays="false").json()


def test_a_photo_smaller_than_a_tile_gets_the_whole_photo_answer(client: TestClient) -> None:
    body = post(client, png(draw(RIGHT, np.random.default_rng(0))[:40, :50]), overlays="true").json()
    assert body["whole_photo"] is True and body["tiles"] == 1 and "smaller than one tile" in body["note"]
    for element in body["elements"]:  # the centre square that was classified
        assert element["box"] == {"left": 5, "top": 0, "right": 45, "bottom": 40}
    assert image_of(body["overlays"]["photo"]).size == (50, 40)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_a_bad_upload_is_refused_as_predict_refuses_it(client: TestClient) -> None:
    data = two_halves()
    uploads = {
        "text": (b"just some notes\n" * 20, 415),
        "truncated": (data[: len(data) // 2], 415),
        "bomb": (declared_png(100_000, 100_000), 413),
        "empty": (b"", 400),
        "too large": (b"\0" * (LIMIT + 1), 413),
    }
    for name, (content, status) in uploads.items():
        mapped, predicted = post(client, content), post(client, content, route="/api/predict")
        assert mapped.status_code == predicted.status_code == status, name
        assert mapped.json() == predicted.json(), name  # the same words: one refusal code
    assert client.post("/api/map", files={"image": ("x.png", data, "image/png")}).json()["detail"] == (
        "the form field 'image' holds a file; only 'photo' does"
    )
    assert client.post("/api/map", files={"label": (None, "x")}).json()["detail"] == "no file in the form field 'photo'"


def test_a_busy_server_answers_503_and_maps_again_when_free(app, client: TestClient) -> None:
    maps = app.state.served.maps
    for _ in range(MAPS_AT_ONCE):  # the slots taken, as by maps in progress
        assert maps.acquire(blocking=False)
    try:
        response = post(client, two_halves())
        assert response.status_code == 503 and response.headers["retry-after"] == "2"
        assert (
            response.json()["detail"]
            == f"the server is mapping {MAPS_AT_ONCE} photos already; try again in a few seconds"
        )
        assert post(client, two_halves(), route="/api/predict").status_code == 200  # predictions are not held up
    finally:
        for _ in range(MAPS_AT_ONCE):
            maps.release()
    assert post(client, two_halves()).status_code == 200
    assert maps.acquire(blocking=False) and maps.acquire(blocking=False)  # every slot given back after each map
    maps.release()
    maps.release()


# --------------------------------------------------------------------------------------------
# The page's "What is where?" panel in a real headless Chromium
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tiny_run) -> Iterator[str]:
    """The library's server in its own process, the tiny run with the threshold above."""
    create = (
        f"{str(tiny_run.checkpoint)!r}, max_upload_bytes={LIMIT}, draw_class_images=False, none_threshold={THRESHOLD}"
    )
    with server_process(create) as (port, _):
        yield f"http://127.0.0.1:{port}/"


def tab_to(browser, selector: str, presses: int = 30):
    """Press Tab until the focused element matches `selector` (no mouse); fails if it never does."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    for _ in range(presses):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        if browser.execute_script(f"return document.activeElement.matches({selector!r})"):
            return browser.switch_to.active_element
    raise AssertionError(f"Tab never reached {selector}")


def map_from_keyboard(browser, url: str, photo: Path, width: int = 1100) -> None:
    """Upload from the file input, then reach "What is where?" by Tab and press Enter; wait for the panel."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    wait = open_page(browser, url, width)
    tab_to(browser, "#file").send_keys(str(photo))
    wait.until(lambda d: settled(d, 1))
    tab_to(browser, "button.map-button")
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    script = "const i = document.querySelector('.map-frame img.map-photo'); return !!i && i.complete && i.naturalWidth"
    wait.until(lambda d: d.execute_script(script))


def test_page_shows_what_is_where_from_the_keyboard(server: str, browser, tmp_path: Path) -> None:
    import httpx
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    photo = tmp_path / "two halves.png"
    photo.write_bytes(two_halves())
    # the server's own answer (its process computes as this CPU does, even under --bf16-autocast here)
    answer = httpx.post(f"{server}api/map", files={"photo": ("p.png", photo.read_bytes(), "image/png")}, timeout=60)
    expected = [SimpleNamespace(**e | {"box": tuple(e["box"].values())}) for e in answer.json()["elements"]]
    assert len(expected) >= 2
    map_from_keyboard(browser, server, photo)
    status = browser.find_element(By.ID, "status").text
    assert status.startswith(f"What is where in {photo.name}: {expected[0].name}, ")
    # one box per element, named, inside the photo, where the API puts it (percentages of the photo's size)
    frame = browser.find_element(By.CSS_SELECTOR, ".map-frame")
    shown = browser.find_element(By.CSS_SELECTOR, ".map-frame img.map-photo").rect
    boxes = frame.find_elements(By.CSS_SELECTOR, ".element-box")
    assert [b.text for b in boxes] == [f"{e.name} {e.confidence:.2f}" for e in expected]
    for box, element in zip(boxes, expected, strict=True):
        rect, (left, top, right, bottom) = box.rect, element.box
        scale = shown["width"] / 512
        assert rect["x"] - shown["x"] == pytest.approx(left * scale, abs=1.5)
        assert rect["x"] + rect["width"] <= shown["x"] + shown["width"] + 1.5
        assert rect["y"] + rect["height"] <= shown["y"] + shown["height"] + 1.5
        assert rect["width"] == pytest.approx((right - left) * scale, abs=1.5)
        assert rect["y"] - shown["y"] == pytest.approx(top * scale, abs=1.5)
        assert rect["height"] == pytest.approx((bottom - top) * scale, abs=1.5)
    # the heat map: the first element's class at first; arrow keys move along the radio buttons, "none" hides it
    heat = browser.find_element(By.CSS_SELECTOR, ".map-heat")
    assert heat.get_attribute("data-label") == expected[0].label and heat.is_displayed()
    checked = tab_to(browser, ".heat-choice input:checked")
    assert checked.get_attribute("value") == expected[0].label
    ActionChains(browser).send_keys(Keys.ARROW_RIGHT).perform()
    following = CLASSES[(CLASSES.index(expected[0].label) + 1) % len(CLASSES)]
    assert heat.get_attribute("data-label") == following and browser.switch_to.active_element.is_selected()
    browser.execute_script("document.querySelector('.heat-choice input[value=\"\"]').focus()")
    ActionChains(browser).send_keys(Keys.SPACE).perform()
    assert heat.get_attribute("data-label") == "" and not heat.is_displayed()
    labels = [label.text for label in browser.find_elements(By.CSS_SELECTOR, ".heat-choice label")]
    assert labels[0] == "none" and len(labels) == 1 + len(CLASSES)
    assert f"{expected[0].name} (found, " in " ".join(labels)
    items = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "ul.elements li")]
    assert [i.split(",")[0] for i in items] == [e.name for e in expected]


def test_page_map_fits_a_narrow_screen_and_says_why_when_busy(server: str, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    photo = tmp_path / "small.png"
    photo.write_bytes(png(draw(RIGHT, np.random.default_rng(0))[:40, :50]))
    map_from_keyboard(browser, server, photo, width=400)
    assert overflow(browser) <= 0
    assert "smaller than one tile" in browser.find_element(By.CSS_SELECTOR, ".where-panel").text
    # a busy server (its answer stubbed in the page: deterministic): the page shows the 503 and its line
    browser.execute_script(
        "window.realFetch = window.fetch; window.fetch = (url, options) => url.startsWith('/api/map') ? "
        "Promise.resolve(new Response(JSON.stringify({detail: 'the server is mapping 2 photos already; try again in a "
        "few seconds'}), {status: 503})) : window.realFetch(url, options)"
    )
    button = browser.find_element(By.CSS_SELECTOR, "button.map-button")
    button.click()
    panel = browser.find_element(By.CSS_SELECTOR, ".where-panel")
    # the stubbed answer arrives after the click returns (a resolved promise is still asynchronous): wait for it
    WebDriverWait(browser, 30).until(lambda _: "(HTTP 503)" in panel.text)
    assert "mapping 2 photos already" in panel.text
    assert "not mapped" in browser.find_element(By.ID, "status").text


def test_predictions_wait_for_a_slot_then_get_a_503(app, client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """At most PREDICTIONS_AT_ONCE photos are decoded and answered at once (each decode holds its whole raster): a
    prediction waits up to PREDICT_WAIT_S for a slot, is answered when one frees, and gets a 503 when none does."""
    slots = app.state.served.predictions
    for _ in range(PREDICTIONS_AT_ONCE):  # the slots taken, as by predictions in progress
        assert slots.acquire(blocking=False)
    held = PREDICTIONS_AT_ONCE
    try:
        monkeypatch.setattr(routes, "PREDICT_WAIT_S", 0.05)
        response = post(client, two_halves(), route="/api/predict")
        assert response.status_code == 503 and response.headers["retry-after"] == "2"
        assert response.json()["detail"] == (
            f"the server is answering {PREDICTIONS_AT_ONCE} photos already; try again in a few seconds"
        )
        monkeypatch.setattr(routes, "PREDICT_WAIT_S", 30.0)
        threading.Timer(0.3, slots.release).start()  # one prediction in progress ends while this one waits
        held -= 1
        assert post(client, two_halves(), route="/api/predict").status_code == 200
    finally:
        for _ in range(held):
            slots.release()
    assert all(slots.acquire(blocking=False) for _ in range(PREDICTIONS_AT_ONCE))  # every slot given back
    for _ in range(PREDICTIONS_AT_ONCE):
        slots.release()
