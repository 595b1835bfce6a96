"""The robustness benchmark runs end to end (smoke budget) and reports its targets."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


def test_robustness_smoke_writes_the_matrix(tmp_path: Path, run_benchmark: Callable) -> None:
    out = tmp_path / "rb"
    proc = run_benchmark(
        "robustness", "--smoke", "--tasks", "digits-mlp", "--out", str(out), "--seed", "3"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = (out / "robustness.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| digits-mlp |")]
    assert [r.split("|")[2].strip() for r in rows] == [
        "linbreg",
        "adabreg",
        "splitlbi",
        "rda",
        "rvsm",
        "proxsgd",
    ]
    for r in rows:  # a verdict for every healthy run, none for a failed one
        status, verdict = r.split("|")[3].strip(), r.split("|")[9].strip()
        assert verdict in (("yes", "no", "tie") if status == "ok" else ("–",)), r
    assert "beats or ties pruning:" in text
    # --seed reaches every run of the matrix
    summaries = sorted((out / "digits-mlp").glob("*/summary.json"))
    assert len(summaries) >= 8  # 6 sparse, 2 dense, the pruning runs
    assert all(json.loads(p.read_text())["config"]["seed"] == 3 for p in summaries)
