"""Fill the measured figures of README.md and docs/*.md from benchmarks/results.json, or check them.

    python benchmarks/docs_figures.py            # rewrite every marked figure from results.json
    python benchmarks/docs_figures.py --check    # exit 1 and list the figures that disagree

A figure in the Markdown is written once, between invisible markers that name its key in FIGURES:

    accuracy **<!--fig:val_accuracy-->93.1 %<!--/fig-->** ...

so no figure is typed by hand in two places: `make bench` writes results.json, this script writes the
documents, and tests/benchmarks/test_docs_figures.py fails when a document and results.json disagree. The marker
`<!--fig:KEY.measured-->...<!--/fig-->` gives the date and machine on which that figure's section was
measured.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results.json"
MARKER = re.compile(r"<!--fig:(?P<key>[\w.]+)-->(?P<value>.*?)<!--/fig-->", re.DOTALL)


def _percent(value: float) -> str:
    return f"{100 * value:.1f} %"


def _whole_percent(value: float) -> str:
    return f"{100 * value:.0f} %"


def _interval(values: list[float]) -> str:
    return f"{100 * values[0]:.1f}–{100 * values[1]:.1f} %"


def _times(value: float) -> str:
    return f"{value:.2f}x"


def _rate(value: float) -> str:
    return f"{value:.0f}"


def _count(value: int) -> str:
    return f"{value:,}"


def _of_bound(images_per_s: float, gemm_gflops: float, forward_mflop: float, passes: int = 1) -> str:
    """Share of the float32 compute bound: GEMM FLOP/s over the FLOPs of one image (3x forward for training)."""
    bound = gemm_gflops * 1e9 / (passes * forward_mflop * 1e6)
    return _whole_percent(images_per_s / bound)


@dataclass(frozen=True)
class Figure:
    """One figure: where it is in results.json, which section of benchmarks/run.py measures it, how it reads.

    `source` is a key of results.json, a dotted path into it (`deconvnet.scan_s`), or a tuple of them
    whose values are passed to `fmt` in order (a figure derived from several, such as a share of a bound)."""

    source: str | tuple[str, ...]
    section: str
    fmt: Callable[..., str]

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.source,) if isinstance(self.source, str) else self.source


# key -> Figure; a marker <!--fig:KEY-->...<!--/fig--> holds its text, <!--fig:KEY.measured-->... its date and machine
FIGURES: dict[str, Figure] = {
    # the default recipe, trained and evaluated end to end (benchmarks/run.py --only recipe)
    "val_accuracy": Figure("recipe_val_accuracy", "recipe", _percent),
    "val_accuracy_ci": Figure("recipe_val_accuracy_ci95", "recipe", _interval),
    "val_accuracy_4": Figure("recipe_val_accuracy", "recipe", lambda v: f"{v:.4f}"),
    "val_accuracy_ci_4": Figure("recipe_val_accuracy_ci95", "recipe", lambda v: f"{v[0]:.4f} – {v[1]:.4f}"),
    "val_macro_f1": Figure("recipe_val_macro_f1", "recipe", lambda v: f"{v:.3f}"),
    "val_macro_f1_4": Figure("recipe_val_macro_f1", "recipe", lambda v: f"{v:.4f}"),
    "val_images": Figure("recipe_val_images", "recipe", _count),
    "train_minutes": Figure("recipe_wall_minutes", "recipe", lambda v: f"{v:.1f} min"),
    "train_epochs": Figure("recipe_epochs", "recipe", lambda v: f"{v}"),
    "train_peak_rss": Figure("recipe_peak_rss_gb", "recipe", lambda v: f"{v:.1f} GB"),
    # prediction (--only predict)
    "predict_images_per_s": Figure("predict_images_per_s", "predict", _rate),
    "predict_baseline_images_per_s": Figure("predict_baseline_images_per_s", "predict", _rate),
    "predict_speedup": Figure("predict_speedup", "predict", _times),
    "predict_with_decode_images_per_s": Figure("predict_with_decode_images_per_s", "predict", _rate),
    "predict_one_photo_ms": Figure("predict_one_photo_ms_median", "predict", lambda v: f"{v:.1f} ms"),
    "predict_one_photo_ms_p95": Figure("predict_one_photo_ms_p95", "predict", lambda v: f"{v:.1f} ms"),
    "forward_mflop": Figure("predict_forward_mflop", "predict", _rate),
    "predict_of_bound": Figure(("predict_images_per_s", "gemm_gflops", "predict_forward_mflop"), "predict", _of_bound),
    # the shipped models as users get them (--only shipped): `default`, six networks averaged; `fast`, one
    **{
        f"{name}_{key}": Figure(f"shipped.{name}.{source}", "shipped", fmt)
        for name in ("default", "fast")
        for key, source, fmt in (
            ("val_accuracy", "val_accuracy", _percent),
            ("val_accuracy_ci", "val_accuracy_ci95", _interval),
            ("val_macro_f1", "val_macro_f1", lambda v: f"{v:.3f}"),
            ("images_per_s", "images_per_s", _rate),
            ("one_photo_ms", "one_photo_ms_median", lambda v: f"{v:.1f} ms"),
            ("mflop", "forward_mflop", _rate),
        )
    },
    # training steps (--only train)
    "train_images_per_s": Figure("train_images_per_s", "train", _rate),
    "train_baseline_images_per_s": Figure("train_baseline_images_per_s", "train", _rate),
    "train_step_ms": Figure("train_images_per_s", "train", lambda v: f"{1000 / v:.1f} ms"),
    "train_speedup": Figure("train_speedup", "train", _times),
    "train_speedup_bs128": Figure("train_speedup_bs128", "train", _times),
    "train_of_bound": Figure(
        ("train_images_per_s", "gemm_gflops", "forward_mflop"), "train", lambda r, g, f: _of_bound(r, g, f, 3)
    ),
    "gemm_gflops": Figure("gemm_gflops", "gemm", _rate),
    # data-parallel training, 2 processes vs 1 (--only ddp)
    "ddp_scaling": Figure("ddp_scaling", "ddp", _times),
    "ddp1_images_per_s": Figure("ddp1_images_per_s", "ddp", _rate),
    "ddp2_images_per_s": Figure("ddp2_images_per_s", "ddp", _rate),
    # the deconvnet's top-k scan (--only deconv: benchmarks/bench_deconvnet.py)
    "deconv_layer": Figure("deconvnet.layer", "deconv", lambda v: f"{v}"),
    "deconv_channels": Figure("deconvnet.channels", "deconv", _count),
    "deconv_k": Figure("deconvnet.k", "deconv", _count),
    "deconv_images": Figure("deconvnet.images", "deconv", _count),
    "deconv_scan_s": Figure("deconvnet.scan_s", "deconv", lambda v: f"{v:.1f} s"),
    "deconv_images_per_s": Figure("deconvnet.scan_images_per_s", "deconv", _rate),
    "deconv_decode_s": Figure("deconvnet.decode_s", "deconv", lambda v: f"{v:.1f} s"),
    "deconv_baseline_images": Figure("deconvnet.baseline_images", "deconv", _count),
    "deconv_baseline_s": Figure("deconvnet.baseline_extrapolated_s", "deconv", lambda v: f"{v:.0f} s"),
    "deconv_speedup": Figure("deconvnet.speedup", "deconv", lambda v: f"{v:.1f}x"),
    "deconv_target_s": Figure("deconvnet.target_s", "deconv", lambda v: f"{v:.0f} s"),
    "deconv_load": Figure("deconvnet.load_average_1min_before", "deconv", lambda v: f"{v:.2f}"),
    # class image synthesis (--only synthesis: benchmarks/bench_synthesis.py)
    "synthesis_single_s": Figure("synthesis.single_image_seconds", "synthesis", lambda v: f"{v:.1f} s"),
    "synthesis_batch": Figure("synthesis.n", "synthesis", lambda n: f"{10 * n}"),
    "synthesis_per_image_s": Figure("synthesis.methods.ours.seconds_per_image", "synthesis", lambda v: f"{v:.2f} s"),
    "synthesis_transfer": Figure("synthesis.methods.ours.transfer.accuracy", "synthesis", _whole_percent),
    "synthesis_baseline_transfer": Figure("synthesis.methods.baseline.transfer.accuracy", "synthesis", _whole_percent),
}


def lookup(results: dict[str, Any], path: str) -> Any:
    """results[path], or a dotted path into nested sections (`deconvnet.scan_s`); KeyError when absent."""
    if path in results:
        return results[path]
    value: Any = results
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(path)
        value = value[part]
    return value


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
    figure = FIGURES[name]
    if suffix == "measured":
        return measured(results, figure.section)
    if suffix:
        raise KeyError(f"unknown suffix in {key!r} (only .measured)")
    values = []
    for path in figure.sources:
        try:
            values.append(lookup(results, path))
        except KeyError:
            raise KeyError(
                f"{path!r} is not in results.json: run `python benchmarks/run.py --only {figure.section}`"
            ) from None
    return figure.fmt(*values)


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
            from heritage_cnn.base.io import atomic_write_text

            atomic_write_text(path, new)
    if args.check and stale:
        print(f"{stale} figure(s) disagree with {args.results}: run python benchmarks/docs_figures.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
