from __future__ import annotations

import json
import re
from pathlib import Path

from heritage_cnn import cli


def test_report_is_one_self_contained_page(tiny_run, synthetic_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    assert (
        cli.main(["report", "--model", str(tiny_run.checkpoint), "--data", str(synthetic_root), "--out", str(out)]) == 0
    )
    page = (out / "index.html").read_text()
    assert str((out / "index.html").resolve()) in capsys.readouterr().out
    sources = re.findall(r"<img src='([^']*)'", page)
    assert len(sources) >= 5 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http://" not in page and "https://" not in page  # opens offline
    for expected in (
        "Loss and accuracy per epoch",
        "diagonal is each class",
        "most sure of",
        "macro f1",
        "dome(inner)",
    ):
        assert expected in page, expected
    metrics = json.loads((out / "eval-val" / "metrics.json").read_text())
    assert metrics["split"] == "val" and f"{metrics['accuracy']['value']:.4f}" in page
