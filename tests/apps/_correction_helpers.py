"""What the tests of `POST /api/correct` share: a server keeping its corrections in a folder, a correction sent to it,
and what the folder then holds."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from heritage_cnn.apps.serve import create_app
from heritage_cnn.inference.classifier import Classifier, Prediction
from heritage_cnn.inference.sort_manifest import MANIFEST_FIELDS


def client_for(tiny_run, folder: Path | None, none_threshold: float | None = None) -> TestClient:
    """A server on the tiny model keeping its corrections in `folder` (None: keeping none)."""
    app = create_app(tiny_run.checkpoint, draw_class_images=False, corrections=folder, none_threshold=none_threshold)
    return TestClient(app, base_url="http://127.0.0.1")


def correct(client: TestClient, data: bytes, label: str | None, name: str = "west front.png", **extra: str):
    form = extra if label is None else {"label": label, **extra}
    return client.post("/api/correct", files={"photo": (name, data, "image/png")}, data=form)


def prediction_of(tiny_run, data: bytes, none_threshold: float | None = None) -> Prediction:
    """The model's prediction for the photo, computed here as the server must."""
    photo = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    return Classifier.load(tiny_run.checkpoint, none_threshold=none_threshold).predict(photo)[0]


def answer_of(tiny_run, data: bytes) -> str:
    """The folder sort would file the photo in: `_none` for none of the ten, else the model's top-1 label."""
    prediction = prediction_of(tiny_run, data)
    return "_none" if prediction.known is False else prediction.top[0].label


def manifest(folder: Path) -> list[dict[str, str]]:
    with open(folder / "manifest.csv", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == MANIFEST_FIELDS
        return list(reader)


def photos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.parent != folder)
