"""benchmarks/review_flips.py: the flips it draws and the share it scores."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from review_flips import flip, score
from two_elements import wilson


def test_flip_links_every_photo_and_moves_the_drawn_ones(synthetic_root: Path, tmp_path: Path) -> None:
    before = sorted(p.stat().st_mtime_ns for p in synthetic_root.rglob("*.png"))
    record = flip(synthetic_root, tmp_path / "work", share=0.05, seed=0)
    data = tmp_path / "work" / "data"
    assert record["photos"] == 240 and len(record["flips"]) == 12
    assert len(list(data.rglob("*.png"))) == 240
    for f in record["flips"]:
        assert f["true"] != f["given"] and Path(f["path"]).parent.name == f["given"]
    assert json.loads((tmp_path / "work" / "flips.json").read_text()) == record
    assert sorted(p.stat().st_mtime_ns for p in synthetic_root.rglob("*.png")) == before


def test_score_counts_flips_in_the_top_tenth(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "review").mkdir(parents=True)
    flips = [{"path": str(work / "data" / f"a/{i}.png"), "true": "b", "given": "a"} for i in range(3)]
    (work / "flips.json").write_text(json.dumps({"flips": flips}))
    with (work / "review" / "queue.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["rank", "path", "suggested_label", "flagged"])
        writer.writeheader()
        order = ["a/0.png", "a/1.png", *[f"c/{i}.png" for i in range(17)], "a/2.png"]  # 20 rows: the top is 2
        for rank, path in enumerate(order, start=1):
            writer.writerow(
                {"rank": rank, "path": path, "suggested_label": "b", "flagged": "yes" if rank <= 3 else "no"}
            )
    result = score(work, work / "review" / "queue.csv")
    assert result["top"] == 2 and result["flips_in_top"]["count"] == 2
    assert result["flips_in_top"]["ci95"] == wilson(2, 3)
    assert (result["flagged"], result["flips_flagged"]) == (3, 2)
