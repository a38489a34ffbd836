"""`heritage evaluate` on a folder of some of the model's classes: the macro figures, the console, metrics.md and the
report average over the classes in the photos or the predictions, never over classes of no photos at zero."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score

from heritage_cnn.apps.report import build_html_report
from heritage_cnn.cli.main import main
from heritage_cnn.models.checkpoint import load_checkpoint


def test_two_classes_of_ten_are_averaged_over_two(
    tiny_run, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "two"
    for name in ("apse", "gargoyle"):
        shutil.copytree(synthetic_root / name, data / name)
    out = tmp_path / "eval-val"
    args = ["evaluate", "--model", str(tiny_run.checkpoint), "--data", str(data), "--split", "all", "--out", str(out)]
    assert main(args) == 0
    said = capsys.readouterr().out
    saved = json.loads((out / "metrics.json").read_text())
    matrix = np.array(saved["confusion_matrix"])
    pairs = [(t, p) for t in range(10) for p in range(10) for _ in range(matrix[t, p])]
    y_true, y_pred = (np.array(side) for side in zip(*pairs, strict=True))
    expected = f1_score(y_true, y_pred, average="macro", zero_division=0)  # scikit-learn's labels=None
    assert saved["macro_f1"]["value"] == pytest.approx(expected) and expected > 0.5
    assert f"macro F1 {expected:.4f}, 48 images" in said
    names = [row["class"] for row in saved["per_class"]]
    assert saved["macro_classes"] == [names[k] for k in np.union1d(y_true, y_pred)]
    absent = [row for row in saved["per_class"] if row["class"] not in saved["macro_classes"]]
    assert len(absent) >= 6 and all(row["f1"] is None and row["support"] == 0 for row in absent)
    table = (out / "metrics.md").read_text()
    assert f"| {absent[0]['class']} | – | – | – | 0 |" in table
    page = build_html_report(tmp_path, tmp_path / "index.html", load_checkpoint(tiny_run.checkpoint)).read_text()
    assert f"macro F1 {100 * expected:.1f} % on all photos of the folder" in page[: page.index("<nav")]  # --split all
    assert f"<td>{absent[0]['class']}</td><td>–</td><td>–</td><td>–</td><td>0</td>" in page
    assert f"Macro figures average over the {len(saved['macro_classes'])} classes" in page
