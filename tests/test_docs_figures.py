"""Measured figures are typed in one place: README/docs figures come from benchmarks/results.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from docs_figures import RESULTS, documents, fill, main, render

RESULTS_JSON = json.loads(RESULTS.read_text(encoding="utf-8"))


def test_every_document_agrees_with_results_json() -> None:
    assert main(["--check"]) == 0


def test_the_readme_takes_its_headline_figures_from_results_json() -> None:
    readme = documents()[0].read_text(encoding="utf-8")
    for key in ("val_accuracy", "val_macro_f1", "train_minutes", "predict_images_per_s"):
        assert f"<!--fig:{key}-->" in readme, key


def test_a_stale_figure_is_found_and_rewritten() -> None:
    results = {"recipe_val_accuracy": 0.93089, "measured": {"recipe": {"date": "2026-11-26", "machine": "M, 2 cores"}}}
    text = "acc <!--fig:val_accuracy-->92.0 %<!--/fig--> (<!--fig:val_accuracy.measured-->x<!--/fig-->)"
    new, changed = fill(text, results)
    assert (
        new
        == "acc <!--fig:val_accuracy-->93.1 %<!--/fig--> (<!--fig:val_accuracy.measured-->2026-11-26, M, 2 cores<!--/fig-->)"
    )
    assert [key for key, _, _ in changed] == ["val_accuracy", "val_accuracy.measured"]
    assert fill(new, results)[1] == []


def test_unknown_keys_and_missing_figures_are_errors() -> None:
    with pytest.raises(KeyError, match="unknown figure"):
        render("no_such_figure", RESULTS_JSON)
    with pytest.raises(KeyError, match="--only predict"):
        render("predict_images_per_s", {})
