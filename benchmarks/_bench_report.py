"""benchmarks/results.md from the figures of benchmarks/run.py: one table row per figure, each beside its
baseline or bound."""

from __future__ import annotations

from typing import Any


def _sections_measured(measured: dict[str, dict[str, Any]]) -> list[str]:
    """A line naming when and where each section ran, when a partial run (`--only`) left them on different days
    or machines: the header above gives the last run's."""
    groups: dict[str, list[str]] = {}
    for section, when in measured.items():
        groups.setdefault(f"{when['date']} on {when['machine']}", []).append(section)
    if len(groups) < 2:
        return []
    return [
        "Sections measured apart: " + "; ".join(f"{', '.join(names)}: {key}" for key, names in groups.items()) + "."
    ]


def markdown(results: dict[str, Any]) -> str:
    hw = results["hardware"]
    lines = [
        "# Benchmark results",
        "",
        f"Last measured by `python benchmarks/run.py` on {hw['cpu']}, {hw['cores']} cores, {hw['threads']} threads, "
        f"torch {hw['torch']} ({hw['cpu_capability']}), heritage-cnn {hw['heritage_cnn']}, {results['date']}.",
        "Every ratio compares two figures measured in the same run on the same machine.",
        *_sections_measured(results.get("measured", {})),
        *[f"Not measured in this run: {name} ({why})." for name, why in results.get("skipped", {}).items()],
        "",
        "| figure | value | baseline / bound | ratio |",
        "|---|---|---|---|",
        *_speed_rows(results),
        *_accuracy_rows(results),
    ]
    return "\n".join(lines) + "\n"


def _speed_rows(r: dict[str, Any]) -> list[str]:
    """Throughput and time, each against its baseline or the compute bound where it has one."""
    lines = []
    if "gemm_gflops" in r:
        lines.append(f"| float32 GEMM (2048², all threads) | {r['gemm_gflops']:.0f} GFLOP/s | | |")
    if "train_images_per_s" in r:
        for suffix in ("", "_bs128"):
            if f"train_images_per_s{suffix}" not in r:
                continue
            batch = r.get(f"train_batch_size{suffix}", 128)
            lines.append(
                f"| training images/s (default model, batch {batch}, autocast {r.get('train_autocast', 'none')}) | {r[f'train_images_per_s{suffix}']:.0f} | {r[f'train_baseline_images_per_s{suffix}']:.0f} (ImageFolder + PIL transforms + DataLoader, 2 workers, float32, batch {batch}) | **{r[f'train_speedup{suffix}']:.2f}x** |"
            )
        if "gemm_gflops" in r:
            bound = r["gemm_gflops"] * 1e9 / (3 * r["forward_mflop"] * 1e6)
            lines.append(
                f"| training vs compute bound (GEMM / 3 x {r['forward_mflop']:.0f} MFLOP) | {r['train_images_per_s']:.0f} img/s | {bound:.0f} img/s | **{r['train_images_per_s'] / bound:.0%}** |"
            )
    if "predict_images_per_s" in r:
        lines.append(
            f"| prediction images/s, decode excluded (`Classifier`: batch 64, BN folded, channels_last) | {r['predict_images_per_s']:.0f} | {r['predict_baseline_images_per_s']:.0f} (eager NCHW, batch 32) | **{r['predict_speedup']:.2f}x** |"
        )
        if "gemm_gflops" in r:
            bound = r["gemm_gflops"] * 1e9 / (r["predict_forward_mflop"] * 1e6)
            lines.append(
                f"| prediction vs compute bound (GEMM / {r['predict_forward_mflop']:.0f} MFLOP) | {r['predict_images_per_s']:.0f} img/s | {bound:.0f} img/s | **{r['predict_images_per_s'] / bound:.0%}** |"
            )
        lines.append(f"| prediction images/s, JPEG decode included | {r['predict_with_decode_images_per_s']:.0f} | | |")
        if "predict_open_set_ratio" in r:
            lines.append(
                f"| prediction with the none-of-these score ({r['predict_open_set_score']}, same pass) vs without, "
                f"{r['predict_open_set_photos']} photos | {r['predict_open_set_ratio']:.3f}x the time | | |"
            )
        if "predict_one_photo_ms_median" in r:
            lines.append(
                f"| one photo end to end after start-up (`Classifier.predict(path)`) | {r['predict_one_photo_ms_median']:.1f} ms median, {r['predict_one_photo_ms_p95']:.1f} ms p95 | | |"
            )
    if "ddp_scaling" in r:
        lines.append(
            f"| data-parallel training, 2 processes vs 1 (same global batch, CPU, gloo) | {r['ddp2_images_per_s']:.0f} img/s | {r['ddp1_images_per_s']:.0f} img/s | **{r['ddp_scaling']:.2f}x** |"
        )
    if "deconvnet" in r:
        d = r["deconvnet"]
        lines.append(
            f"| deconvnet top-{d['k']} scan of `{d['layer']}` over {d['images']} images | {d['scan_s']:.1f} s | {d['baseline_extrapolated_s']:.0f} s (one image at a time) | **{d['speedup']:.1f}x** |"
        )
    if "synthesis" in r:
        syn = r["synthesis"]
        ours, base = syn["methods"]["ours"], syn["methods"]["baseline"]
        lines.append(f"| class image synthesis, one 64 px image alone | {syn['single_image_seconds']:.2f} s | | |")
        lines.append(
            f"| class image synthesis, batch of {syn['n'] * 10} | {ours['seconds_per_image']:.2f} s per image | "
            f"{base['seconds_per_image']:.2f} s (unregularised pixel ascent) | |"
        )
        lines.append(
            f"| synthesis: share recognised by {next(iter(syn.get('judges', {'a second network': 0})))} | "
            f"{ours['transfer']['accuracy']:.3f} | "
            f"{base['transfer']['accuracy']:.3f} (unregularised pixel ascent) | |"
        )
    return lines


def _accuracy_rows(r: dict[str, Any]) -> list[str]:
    """The shipped models and the default recipe on the validation split."""
    lines = []
    for name, shipped in r.get("shipped", {}).items():
        low, high = shipped["val_accuracy_ci95"]
        lines.append(
            f"| shipped `{name}` ({shipped['forward_mflop']:.0f} MFLOP): validation accuracy, macro F1 | "
            f"{shipped['val_accuracy']:.2%} (95% CI {low:.2%}–{high:.2%}), {shipped['val_macro_f1']:.4f} | | |"
        )
        lines.append(
            f"| shipped `{name}`: images/s (decode excluded), one photo | {shipped['images_per_s']:.0f}, "
            f"{shipped['one_photo_ms_median']:.1f} ms | | |"
        )
    if "recipe_wall_minutes" in r:
        low, high = r["recipe_val_accuracy_ci95"]
        lines.append(
            f"| default recipe: validation accuracy ({r['recipe_val_images']} images, duplicate-aware split) | {r['recipe_val_accuracy']:.2%} (95% CI {low:.2%}–{high:.2%}) | | |"
        )
        lines.append(f"| default recipe: macro F1 | {r['recipe_val_macro_f1']:.4f} | | |")
        lines.append(
            f"| default recipe: wall time (decode, {r.get('recipe_epochs', 40)} epochs, validation) | {r['recipe_wall_minutes']:.1f} min | | |"
        )
        lines.append(f"| default recipe: peak memory (max RSS) | {r['recipe_peak_rss_gb']:.2f} GB | | |")
    return lines
