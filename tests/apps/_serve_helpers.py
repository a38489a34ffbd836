"""What the `heritage serve` tests share: drawn PNGs, a decompression bomb, a photo the tiny model answers with
a chosen confidence, the class images `heritage generate --all` writes, and the helpers that drive the page in
headless Chromium."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import CLASSES, draw
from heritage_cnn.inference.classifier import Classifier
from heritage_cnn.inference.sort import MIN_CONFIDENCE


def png_bytes(label: int = 2, size: int = 64, seed: int = 0) -> bytes:
    array = draw(label, np.random.default_rng(seed), size)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def class_images(out: Path) -> Path:
    """What `heritage generate --all` writes into `out`: per-class PNGs, the grid and class_images.json."""
    records = []
    for label, name in enumerate(CLASSES):
        file = f"{name.replace(' ', '_')}_0.png"
        (out / file).write_bytes(png_bytes(label))
        records.append({"file": file, "class": name})
    Image.new("RGB", (640, 80), "white").save(out / "class_images.png")
    (out / "class_images.json").write_text(json.dumps({"images": records}))
    (out / "notes.txt").write_text("not served")
    return out


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
