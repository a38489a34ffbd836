"""Fill the measured figures of README.md and docs/*.md from benchmarks/results.json, or check them.

    python benchmarks/docs_figures.py            # rewrite every marked figure from results.json
    python benchmarks/docs_figures.py --check    # exit 1 and list the figures that disagree

A figure in the Markdown is written once, between invisible markers that name its key in FIGURES:

    accuracy **<!--fig:val_accuracy-->93.1 %<!--/fig-->** ...

so no figure is typed by hand in two places: `make bench` writes results.json, this script writes the
documents, and tests/test_docs_figures.py fails when a document and results.json disagree. The marker
`<!--fig:KEY.measured-->...<!--/fig-->` gives the date and machine on which that figure's section was
measured.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results.json"
MARKER = re.compile(r"<!--fig:(?P<key>[\w.]+)-->(?P<value>.*?)<!--/fig-->", re.DOTALL)


def _percent(value: float) -> str:
    return f"{100 * value:.1f} %"


def _interval(values: list[float]) -> str:
    return f"{100 * values[0]:.1f}–{100 * values[1]:.1f} %"


# key -> (results.json key, section of benchmarks/run.py that measures it, formatter)
FIGURES: dict[str, tuple[str, str, Callable[[Any], str]]] = {
    "val_accuracy": ("recipe_val_accuracy", "recipe", _percent),
    "val_accuracy_ci": ("recipe_val_accuracy_ci95", "recipe", _interval),
    "val_macro_f1": ("recipe_val_macro_f1", "recipe", lambda v: f"{v:.3f}"),
    "val_images": ("recipe_val_images", "recipe", lambda v: f"{v:,}"),
    "train_minutes": ("recipe_wall_minutes", "recipe", lambda v: f"{v:.1f} min"),
    "train_epochs": ("recipe_epochs", "recipe", lambda v: f"{v}"),
    "train_peak_rss": ("recipe_peak_rss_gb", "recipe", lambda v: f"{v:.1f} GB"),
    "predict_images_per_s": ("predict_images_per_s", "predict", lambda v: f"{v:.0f}"),
    "predict_with_decode_images_per_s": ("predict_with_decode_images_per_s", "predict", lambda v: f"{v:.0f}"),
    "predict_one_photo_ms": ("predict_one_photo_ms_median", "predict", lambda v: f"{v:.1f} ms"),
    "train_images_per_s": ("train_images_per_s", "train", lambda v: f"{v:.0f}"),
    "train_speedup": ("train_speedup", "train", lambda v: f"{v:.2f}x"),
    "gemm_gflops": ("gemm_gflops", "gemm", lambda v: f"{v:.0f}"),
    "forward_mflop": ("predict_forward_mflop", "predict", lambda v: f"{v:.0f}"),
}


def measured(results: dict[str, Any], section: str) -> str:
    """`2026-11-26, AMD EPYC, 2 cores` for the run that last measured `section`."""
    when = results.get("measured", {}).get(section)
    if when is None:  # results.json from before per-section dates: the whole file's date and machine
        hardware = results.get("hardware", {})
        cpu, cores = hardware.get("cpu", "?"), hardware.get("cores", "?")
        when = {"date": results.get("date", "?"), "machine": f"{cpu}, {cores} cores"}
    return f"{when['date']}, {when['machine']}"


def render(key: str, results: dict[str, Any]) -> str:
    """The text a marker with this key must hold; KeyError names an unknown key or a missing figure."""
    name, _, suffix = key.partition(".")
    if name not in FIGURES:
        raise KeyError(f"unknown figure {key!r}; known: {', '.join(sorted(FIGURES))}")
    result_key, section, fmt = FIGURES[name]
    if suffix == "measured":
        return measured(results, section)
    if suffix:
        raise KeyError(f"unknown suffix in {key!r} (only .measured)")
    if result_key not in results:
        raise KeyError(f"{result_key!r} is not in results.json: run `python benchmarks/run.py --only {section}`")
    return fmt(results[result_key])


def fill(text: str, results: dict[str, Any]) -> tuple[str, list[tuple[str, str, str]]]:
    """The text with every marker filled, and the (key, old, new) of those that changed."""
    changed: list[tuple[str, str, str]] = []

    def replace(match: re.Match[str]) -> str:
        new = render(match["key"], results)
        if new != match["value"]:
            changed.append((match["key"], match["value"], new))
        return f"<!--fig:{match['key']}-->{new}<!--/fig-->"

    return MARKER.sub(replace, text), changed


def documents(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a figure disagrees")
    parser.add_argument("--results", default=str(RESULTS), help="results file (default benchmarks/results.json)")
    args = parser.parse_args(argv)
    results = json.loads(Path(args.results).read_text(encoding="utf-8"))
    stale = 0
    for path in documents():
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        new, changed = fill(text, results)
        for key, old, value in changed:
            print(f"{path.relative_to(ROOT)}: {key}: {old!r} -> {value!r}")
        stale += len(changed)
        if changed and not args.check:
            from heritage_cnn.io import atomic_write_text

            atomic_write_text(path, new)
    if args.check and stale:
        print(f"{stale} figure(s) disagree with {args.results}: run python benchmarks/docs_figures.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
