"""`--bn-statistics precise`: the run's records (metrics.csv/json, curves.png) say the saved network's validation,
which last.json records, apart from the epochs' figures with training's running statistics."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from _loop_helpers import _config

from conftest import CLASSES, make_dataset
from heritage_cnn.training import curves
from heritage_cnn.training.loop import train


def test_the_records_say_the_saved_networks_precise_accuracy_apart_from_the_epochs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_dataset(tmp_path / "data", per_class=12, classes=CLASSES[:3])
    drawn: list[list[str]] = []

    def keep_texts(fig, path) -> None:  # what curves.png says, read off the figure instead of its pixels
        drawn.append([text.get_text() for ax in fig.axes for text in [*ax.texts, *ax.get_legend().get_texts()]])

    monkeypatch.setattr(curves, "save_figure", keep_texts)
    out = tmp_path / "run"
    result = train(
        _config(data, out, epochs=2, batch_size=8, optimizer="adamw", bn_statistics="precise"), log=lambda _: None
    )
    saved = json.loads((out / "last.json").read_text())
    precise = saved["bn_statistics"]["validation"]
    rows = json.loads((out / "metrics.json").read_text())
    assert [row["epoch"] for row in rows] == [1, 2]  # still one row per epoch
    assert rows[-1]["precise_bn_val_accuracy"] == precise["val_accuracy"] == result.final["val_accuracy"]
    assert rows[-1]["precise_bn_val_loss"] == precise["val_loss"]
    assert rows[-1]["val_accuracy"] == saved["bn_statistics"]["running_statistics_validation"]["val_accuracy"]
    assert "precise_bn_val_accuracy" not in rows[0]
    with (out / "metrics.csv").open(newline="") as handle:
        table = list(csv.DictReader(handle))
    assert float(table[-1]["precise_bn_val_accuracy"]) == pytest.approx(precise["val_accuracy"])
    assert table[0]["precise_bn_val_accuracy"] == ""
    assert f"saved: {precise['val_accuracy']:.3f}" in drawn[-1]
    assert "saved network (precise batch-norm statistics)" in drawn[-1]
    assert not any("saved" in text for text in drawn[0])  # an epoch's curves, before the statistics were recomputed
