"""Measured figures are typed in one place: README/docs figures come from benchmarks/results.json."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from docs_figures import FIGURES, MARKER, RESULTS, ROOT, documents, fill, lookup, main, render

RESULTS_JSON = json.loads(RESULTS.read_text(encoding="utf-8"))


def test_every_document_agrees_with_results_json() -> None:
    assert main(["--check"]) == 0


def test_the_readme_takes_its_headline_figures_from_results_json() -> None:
    readme = documents()[0].read_text(encoding="utf-8")
    for key in (
        "default_val_accuracy",
        "default_val_macro_f1",
        "fast_val_accuracy",
        "train_minutes",
        "default_images_per_s",
    ):
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


def test_the_docs_folder_is_covered_and_its_measured_figures_are_markers() -> None:
    covered = set(documents())
    assert set((ROOT / "docs").glob("*.md")) <= covered
    for name in ("benchmarks.md", "results.md", "inside.md", "scale.md"):
        text = (ROOT / "docs" / name).read_text(encoding="utf-8")
        assert MARKER.search(text), f"docs/{name} has no figure filled from results.json"


def test_every_marked_section_names_its_date_and_machine() -> None:
    """Each document that quotes a figure of a benchmark section says at least once when and where it was measured."""
    for path in documents():
        keys = [match["key"] for match in MARKER.finditer(path.read_text(encoding="utf-8"))]
        sections = {FIGURES[key].section for key in keys if "." not in key}
        dated = {FIGURES[key.partition(".")[0]].section for key in keys if key.endswith(".measured")}
        assert sections <= dated, f"{path.name}: no .measured marker for {sorted(sections - dated)}"


# figures of results.json that were once typed by hand in several documents; each must now be a marker
SINGLE_SOURCED = (
    "predict_images_per_s",
    "predict_with_decode_images_per_s",
    "predict_of_bound",
    "train_images_per_s",
    "train_minutes",
    "train_speedup",
    "val_accuracy_4",
    "val_macro_f1_4",
    "ddp_scaling",
    "deconv_scan_s",
)


def typed(value: str) -> re.Pattern[str]:
    """The figure `value` as a person would type it. A bare whole number (a rate such as 480 images/s) also reads
    as a photo's size or a count elsewhere ("a drawn 480 x 640 JPEG"), so only with its unit."""
    pattern = rf"(?<![\d.,]){re.escape(value)}(?![\d])"
    if value.isdigit():
        pattern += r"\s*(?:images|img|photos)/s"
    return re.compile(pattern)


@pytest.mark.parametrize("key", SINGLE_SOURCED)
def test_a_results_json_figure_is_never_typed_outside_a_marker(key: str) -> None:
    value = render(key, RESULTS_JSON)
    for path in documents():
        outside = MARKER.sub("", path.read_text(encoding="utf-8"))
        hit = typed(value).search(outside)
        assert hit is None, f"{path.relative_to(ROOT)} types {value!r} ({key}) by hand: use <!--fig:{key}-->"


def test_a_figure_typed_by_hand_is_caught() -> None:
    value = render("predict_images_per_s", RESULTS_JSON)
    text = f"fast: {value} images/s, <!--fig:predict_images_per_s-->{value}<!--/fig--> in the table"
    assert typed(value).search(MARKER.sub("", text))
    assert typed("7.4 s").search("the scan takes 7.4 s")  # a figure with its unit or decimals: wherever it stands


def test_a_whole_number_elsewhere_is_not_a_figure() -> None:
    assert not typed("480").search("a drawn 480 x 640 JPEG, 480 photos")
    assert typed("480").search("(480 img/s on two cores)")


def test_nested_and_derived_figures() -> None:
    results = {"deconvnet": {"scan_s": 11.82}, "predict_images_per_s": 700.0, "gemm_gflops": 200.0}
    results["predict_forward_mflop"] = 300.0
    assert lookup(results, "deconvnet.scan_s") == 11.82
    assert render("deconv_scan_s", results) == "11.8 s"
    assert render("predict_of_bound", results) == "105 %"  # 700 / (200e9 / 300e6)
    with pytest.raises(KeyError, match="--only deconv"):
        render("deconv_speedup", results)
