"""Two more post-hoc scores for "none of these": k nearest neighbours and ReAct, against the shipped energy.
(docs/open_set.md, "Nearest neighbours and clipped activations, declared before measured")

    python benchmarks/open_set_neighbours.py --loco runs/teach_quick [--records DIR] [--out benchmarks]
    python benchmarks/open_set_neighbours.py confirm --bases runs/teach_loco_full runs/teach_full

Reads `tuning/` of the negative set and the leave-one-class-out bases, never `reporting/`. For `default` and `fast`
(as `Classifier` runs them) each variant's setting maximises its AUROC on `tuning/` (kinds pooled) against the 2,026
validation photos; on each of the ten bases (`open_set_loco.py bases`) the variant at `fast`'s setting is read on the
validation side of the nine classes (positives) and every photo of the tenth (negatives). The declared rule then
names the score to ship, if any: the highest merit (the smaller of `default`'s tuning AUROC and the leave-one-class-
out mean), at least 0.01 above energy's, at most 1.10x `default`'s prediction time. Writes OUT/open_set_neighbours.json
and .md.
`confirm` is the declared second test of ReAct on the pooled features (p = 80) against energy, on bases the first
run never read (docs/open_set.md, "a confirmation on other networks"); it writes OUT/open_set_react_confirm.json and
.md.

- `knn[layer]@k`: minus the distance of the L2-normalised feature to the k-th nearest normalised feature of the
  photos the network trained on (Sun et al., 2022);
- `react[layer]@p`: the features clipped at the p-th percentile of the fit photos' activations, the rest of the
  head, energy at T = 1 (Sun et al., 2021); p = 100 is energy in float32.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _open_set_metrics import auroc_fpr
from _open_set_scores import forward, load_negatives
from _open_set_timing import TIME_PHOTOS, timing
from heritage_cnn.base.io import atomic_write_json, atomic_write_text
from heritage_cnn.data.split import perceptual_hashes
from heritage_cnn.inference.classifier import Classifier
from heritage_cnn.inference.evaluate import near_any, trained_on
from heritage_cnn.models import openset
from heritage_cnn.models.checkpoint import load_checkpoint
from heritage_cnn.models.ensemble import networks
from open_set_loco import pick as pick_photos
from run import data_root, hardware
from teach_new_class import ALL_CLASSES, split_of

LAYERS = (openset.PENULTIMATE, openset.POOLED)
KS = (1, 2, 5, 10, 20, 50, 100)
PERCENTILES = (80, 85, 90, 95, 99, 100)
MARGIN = 0.01  # merit a variant must gain over energy's to replace it
MAX_RATIO = 1.10  # the time budget for the score
SHIPPED_BANK = 2048  # photos per network a shipped kNN score keeps, if it keeps a sample
CONFIRM_FAMILY = f"react[{openset.POOLED}]"  # the confirmation's variant (docs/open_set.md, "a confirmation")
CONFIRM_SETTING = f"{CONFIRM_FAMILY}@p=80"  # the p both models chose on tuning
CONFIRM_AT_LEAST = -0.005  # the mean AUROC difference against energy the confirmation allows
CHUNK = 1024  # queries per distance matrix: bounded memory whatever the set's size


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def kth_distances(bank: torch.Tensor, query: torch.Tensor, ks: tuple[int, ...] = KS) -> dict[int, torch.Tensor]:
    """For each k: the distance (N,) of each normalised query feature to its k-th nearest in a normalised bank."""
    parts = []
    for rows in query.split(CHUNK):
        d = torch.cdist(unit(rows.float()), bank, compute_mode=openset.EXACT_DISTANCES)
        parts.append(d.topk(max(ks), dim=1, largest=False).values)
    nearest = torch.cat(parts)
    return {k: nearest[:, k - 1] for k in ks}


@torch.no_grad()
def react_energy(net: torch.nn.Module, layer: str, features: torch.Tensor, clip: float) -> torch.Tensor:
    """Energy (T = 1) of the head run in float32 on features clipped at `clip`, entered at `layer`'s input."""
    fc1, fc2 = net.head.fc1, net.head.fc2
    x = features.float().clamp(max=clip)
    if layer == openset.POOLED:
        x = torch.relu(torch.nn.functional.linear(x, fc1.weight.float(), fc1.bias.float()))
    return torch.logsumexp(torch.nn.functional.linear(x, fc2.weight.float(), fc2.bias.float()), 1)


class Scorer:
    """Every variant of one model at every setting, the fit photos' forward record given: a function of a record."""

    def __init__(self, model: torch.nn.Module, fit: openset.ForwardRecord) -> None:
        self.nets = networks(model)
        self.banks = {layer: [unit(f) for f in fit.features[layer]] for layer in LAYERS}
        self.clips = {
            layer: {p: [float(np.percentile(f.numpy(), p)) for f in fit.features[layer]] for p in PERCENTILES}
            for layer in LAYERS
        }

    def variants(self) -> dict[str, Callable[[openset.ForwardRecord], torch.Tensor]]:
        fns: dict[str, Callable] = {
            "energy": lambda r: torch.stack([openset.energy(m) for m in r.member_logits]).mean(0)
        }
        for layer in LAYERS:
            for k in KS:
                fns[f"knn[{layer}]@k={k}"] = lambda r, layer=layer, k=k: self.knn(r, layer, (k,))[k]
            for p in PERCENTILES:
                fns[f"react[{layer}]@p={p}"] = lambda r, layer=layer, p=p: self.react(r, layer, p)
        return fns

    def knn(self, record: openset.ForwardRecord, layer: str, ks: tuple[int, ...] = KS) -> dict[int, torch.Tensor]:
        per_member = [kth_distances(b, f, ks) for b, f in zip(self.banks[layer], record.features[layer], strict=True)]
        return {k: -torch.stack([m[k] for m in per_member]).mean(0) for k in ks}

    def react(self, record: openset.ForwardRecord, layer: str, p: int) -> torch.Tensor:
        return torch.stack(
            [
                react_energy(net, layer, f, clip)
                for net, f, clip in zip(self.nets, record.features[layer], self.clips[layer][p], strict=True)
            ]
        ).mean(0)

    def table(self, records: dict[str, openset.ForwardRecord]) -> dict[str, dict[str, np.ndarray]]:
        """{variant: {set: scores}}; the kNN distances of every k from one sort."""
        result: dict[str, dict[str, np.ndarray]] = {}
        for name, record in records.items():
            energy = torch.stack([openset.energy(m) for m in record.member_logits]).mean(0)
            result.setdefault("energy", {})[name] = energy.numpy().astype(np.float64)
            for layer in LAYERS:
                for k, s in self.knn(record, layer).items():
                    result.setdefault(f"knn[{layer}]@k={k}", {})[name] = s.numpy().astype(np.float64)
                for p in PERCENTILES:
                    s = self.react(record, layer, p)
                    result.setdefault(f"react[{layer}]@p={p}", {})[name] = s.numpy().astype(np.float64)
        return result


def family(variant: str) -> str:
    return variant.split("@")[0]


def best_settings(table: dict, positives: str, negatives: str) -> dict[str, dict]:
    """Per family, the setting of the highest AUROC of positives against negatives, with its figures."""
    best: dict[str, dict] = {}
    for variant, scores in table.items():
        auroc, fpr = auroc_fpr(scores[positives], scores[negatives])
        name = family(variant)
        if name not in best or auroc > best[name]["auroc"]:
            best[name] = {"variant": variant, "auroc": auroc, "fpr95": fpr}
    return best


def model_table(name: str, photos, hashes: np.ndarray, tuning: torch.Tensor, records_dir: Path | None) -> tuple:
    classifier = Classifier(load_checkpoint(name))
    cached = records_dir / f"{name}.pt" if records_dir else None
    if cached and cached.exists():
        records = torch.load(cached, weights_only=False)
    else:
        seen = near_any(hashes, *trained_on(classifier.checkpoint))
        records = {
            "fit": forward(classifier, photos.images[np.flatnonzero(seen)]),
            "val": forward(classifier, photos.images[np.flatnonzero(~seen)]),
            "tuning": forward(classifier, tuning),
        }
        if cached:
            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.save(records, cached)
    scorer = Scorer(classifier.model, records["fit"])
    table = scorer.table({"val": records["val"], "tuning": records["tuning"]})
    return classifier, scorer, records, table


def bank_sample(labels: torch.Tensor, size: int, seed: int = 0) -> torch.Tensor:
    """Indices of a seeded class-stratified sample of `size` fit photos (each class in proportion, at least one)."""
    rng = np.random.default_rng(seed)
    labels = labels.numpy()
    chosen = []
    for c in np.unique(labels):
        index = np.flatnonzero(labels == c)
        take = max(1, round(size * len(index) / len(labels)))
        chosen.append(rng.choice(index, size=min(take, len(index)), replace=False))
    return torch.as_tensor(np.sort(np.concatenate(chosen)))


def loco(bases: list[tuple[str, Path]], settings: dict[str, str]) -> list[dict]:
    """Each base's AUROC for every family at the setting given (`fast`'s), its run folder given with the class it
    left out: the nine classes' validation side against every photo of the tenth."""
    train, val = split_of(data_root())
    train_hashes = perceptual_hashes(train.images)
    rows = []
    for left_out, run in bases:
        checkpoint = load_checkpoint(run)
        classifier = Classifier(checkpoint)
        seen = near_any(train_hashes, *trained_on(checkpoint))
        in_nine = np.array([train.classes[i] != left_out for i in train.labels.tolist()])
        records = {
            "fit": forward(classifier, pick_photos(train, seen & in_nine)),
            "pos": forward(
                classifier, pick_photos(val, np.array([val.classes[i] != left_out for i in val.labels.tolist()]))
            ),
            "neg": forward(
                classifier,
                torch.cat(
                    [
                        pick_photos(side, np.array([side.classes[i] == left_out for i in side.labels.tolist()]))
                        for side in (train, val)
                    ]
                ),
            ),
        }
        fns = Scorer(classifier.model, records["fit"]).variants()
        row = {"class": left_out, "fit": len(records["fit"].logits), "positives": len(records["pos"].logits)}
        row["negatives"] = len(records["neg"].logits)
        for name, variant in settings.items():
            pos, neg = (fns[variant](records[g]).numpy() for g in ("pos", "neg"))
            row[name] = dict(zip(("auroc", "fpr95"), auroc_fpr(pos, neg), strict=True))
        rows.append(row)
        print(f"{left_out}: " + ", ".join(f"{n} {row[n]['auroc']:.3f}" for n in settings), flush=True)
    return rows


def markdown(result: dict) -> str:
    lines = [
        f"# kNN and ReAct against energy ({result['date']}, {result['hardware']['cpu']})",
        "",
        f"`{result['command']}`. Tuning negatives and the leave-one-class-out bases only; `reporting/` not read.",
        "",
        "| score | setting `default` | tuning AUROC `default` | FPR@95 `default` | setting `fast` | tuning AUROC `fast` "
        "| leave-one-class-out mean | merit | time `default` |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in result["families"].items():
        d, f = row["default"], row["fast"]
        time_cell = f"{row['time_ratio']:.3f}x" if "time_ratio" in row else "–"
        lines.append(
            f"| {name} | {d['variant'].split('@')[-1] if '@' in d['variant'] else '–'} | {d['auroc']:.3f} "
            f"| {100 * d['fpr95']:.1f} % | {f['variant'].split('@')[-1] if '@' in f['variant'] else '–'} "
            f"| {f['auroc']:.3f} | {row['loco_mean']:.3f} | {row['merit']:.3f} | {time_cell} |"
        )
    lines += ["", "Leave one class out, per class (AUROC at `fast`'s settings):", ""]
    names = list(result["families"])
    lines += ["| left out | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for row in result["loco"]:
        lines.append(f"| {row['class']} | " + " | ".join(f"{row[n]['auroc']:.3f}" for n in names) + " |")
    rule = result["rule"]
    lines += ["", f"**Rule**: {rule['text']}", ""]
    if "bank" in result:
        b = result["bank"]
        lines += [
            f"Shipped bank: {b['size']} fit photos per network, k = {b['k']}: tuning AUROC {b['auroc']:.4f} against "
            f"{b['full_auroc']:.4f} with the whole fit set ({b['verdict']}).",
            "",
        ]
    return "\n".join(lines)


def run_header() -> dict:
    """What every result file starts with: the command, the day and the machine."""
    return {
        "command": "python benchmarks/open_set_neighbours.py " + " ".join(sys.argv[1:]),
        "date": datetime.date.today().isoformat(),
        "hardware": hardware(),
    }


def decide(families: dict) -> dict:
    energy = families["energy"]["merit"]
    best = max(families, key=lambda n: families[n]["merit"])
    row = families[best]
    if best == "energy" or row["merit"] < energy + MARGIN:
        text = (
            f"no variant's merit is {MARGIN} above energy's {energy:.3f} (best {best} {row['merit']:.3f}): energy stays"
        )
        return {"pick": "energy", "text": text}
    if row.get("time_ratio", np.inf) > MAX_RATIO:
        return {"pick": "energy", "text": f"{best} takes {row['time_ratio']:.3f}x the time: energy stays"}
    return {"pick": best, "text": f"{best} (merit {row['merit']:.3f} against energy's {energy:.3f}) replaces energy"}


def confirm(runs: list[Path], out: Path) -> dict:
    """The declared confirmation: energy against ReAct on the pooled features at `CONFIRM_SETTING` on other bases,
    each a folder `<left-out class>/run` below one of `runs`."""
    bases = sorted((d.name, d / "run") for root in runs for d in root.iterdir() if (d / "trained").exists())
    rows = loco(bases, {"energy": "energy", CONFIRM_FAMILY: CONFIRM_SETTING})
    differences = np.array([row[CONFIRM_FAMILY]["auroc"] - row["energy"]["auroc"] for row in rows])
    mean = float(differences.mean())
    adopted = mean >= CONFIRM_AT_LEAST
    result = {
        **run_header(),
        "bases": rows,
        "mean_difference": mean,
        "adopted": adopted,
    }
    lines = [
        f"# ReAct on the pooled features (p = 80) against energy, full-recipe bases ({result['date']})",
        "",
        f"`{result['command']}`. Positives: the validation side of the nine classes; negatives: every photo of the tenth.",
        "",
        "| left out | energy | ReAct, pooled, p = 80 | difference |",
        "|---|---|---|---|",
    ]
    for row, diff in zip(rows, differences, strict=True):
        lines.append(
            f"| {row['class']} | {row['energy']['auroc']:.3f} | {row[CONFIRM_FAMILY]['auroc']:.3f} | {diff:+.3f} |"
        )
    verdict = "ReAct replaces energy" if adopted else "energy stays"
    lines += ["", f"Mean difference {mean:+.4f} (rule: >= {CONFIRM_AT_LEAST}): **{verdict}**.", ""]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "open_set_react_confirm.json", result)
    atomic_write_text(out / "open_set_react_confirm.md", "\n".join(lines))
    print("\n".join(lines))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", nargs="?", choices=("rule", "confirm"), default="rule")
    parser.add_argument("--negatives", type=Path, default=Path(__file__).resolve().parent.parent / "data/negatives")
    parser.add_argument("--loco", type=Path, help="rule: the ten leave-one-class-out bases (open_set_loco.py)")
    parser.add_argument("--bases", type=Path, nargs="+", help="confirm: folders of <class>/run bases")
    parser.add_argument("--records", type=Path, default=None, help="keep the forward passes here (a rerun reuses them)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.stage == "confirm":
        if not args.bases:
            parser.error("confirm needs --bases")
        confirm(args.bases, args.out)
        return
    if args.loco is None:
        parser.error("rule needs --loco")
    rule(args)


def rule(args: argparse.Namespace) -> dict:
    """The declared run: every variant's setting chosen on tuning, the bases read, the rule applied."""
    from heritage_cnn.data.folders import find_layout, load_images

    photos = load_images(find_layout(data_root()).train)
    hashes = perceptual_hashes(photos.images)
    tuning = load_negatives(args.negatives)["tuning"]["images"]
    families: dict[str, dict] = {}
    tables = {}
    for name in ("default", "fast"):
        classifier, scorer, records, table = model_table(name, photos, hashes, tuning, args.records)
        tables[name] = (classifier, scorer, records, table)
        for fam, best in best_settings(table, "val", "tuning").items():
            families.setdefault(fam, {})[name] = best
    bases = [(name, args.loco / name / "run") for name in ALL_CLASSES]
    rows = loco(bases, {fam: row["fast"]["variant"] for fam, row in families.items()})
    for fam, row in families.items():
        row["loco_mean"] = float(np.mean([r[fam]["auroc"] for r in rows]))
        row["merit"] = min(row["default"]["auroc"], row["loco_mean"])
    classifier, scorer, records, table = tables["default"]
    fns = scorer.variants()
    photos_val = photos.images[np.flatnonzero(~near_any(hashes, *trained_on(classifier.checkpoint)))][:TIME_PHOTOS]
    how = {fam: (LAYERS, fns[row["default"]["variant"]]) for fam, row in families.items()}
    times = timing(classifier, photos_val, how)
    for fam, row in families.items():
        row["time_ratio"] = times[fam]["ratio"]  # against a plain prediction, no score
    result = {
        **run_header(),
        "families": families,
        "loco": rows,
        "timing": times,
        "rule": decide(families),
    }
    pick = result["rule"]["pick"]
    if pick.startswith("knn"):
        k_full = int(families[pick]["default"]["variant"].split("=")[-1])
        fit_labels = photos.labels[np.flatnonzero(near_any(hashes, *trained_on(classifier.checkpoint)))]
        index = bank_sample(fit_labels, SHIPPED_BANK)
        k = max(1, round(k_full * len(index) / len(fit_labels)))
        layer = pick[len("knn[") : -1]
        scorer.banks[layer] = [b[index] for b in scorer.banks[layer]]
        pos, neg = (scorer.knn(records[s], layer, (k,))[k].numpy() for s in ("val", "tuning"))
        auroc = auroc_fpr(pos, neg)[0]
        full = families[pick]["default"]["auroc"]
        verdict = "the sample ships" if auroc >= full - 0.005 else "the whole fit set ships"
        result["bank"] = {"size": len(index), "k": k, "auroc": auroc, "full_auroc": full, "verdict": verdict}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "open_set_neighbours.json", result)
    atomic_write_text(args.out / "open_set_neighbours.md", markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
