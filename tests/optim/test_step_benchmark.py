"""benchmarks/step_overhead.py: a quick run writes the table and the numbers it is built from."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest


def test_quick_run_writes_markdown_and_json(tmp_path: Path, load_benchmark: Callable) -> None:
    bench = load_benchmark("step_overhead")
    out = tmp_path / "steps"
    assert (
        bench.main(
            [
                "--models",
                "convnet",
                "--rounds",
                "2",
                "--block",
                "2",
                "--warmup",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads(out.with_suffix(".json").read_text())
    (model,) = result["models"]
    assert model["model"] == "convnet" and model["bandwidth_gb_s"] > 0
    rows = {r["method"]: r for r in model["rows"]}
    assert {"torch Adam (fused)", "AdaBreg", "RDA", "SplitLBI"} <= set(rows)
    # the compiled rows, with their compile time (the warm-up's) reported apart
    compiled = [r for name, r in rows.items() if name.endswith("(compiled)")]
    assert len(compiled) == 7 and all(r["compile_s"] >= 0 for r in compiled)
    assert all(r["compile_s"] is None for r in rows.values() if r not in compiled)
    for r in rows.values():
        assert r["samples"] == 2 * 2  # rounds x block
        assert 0 < r["p10_ms"] <= r["median_ms"] <= r["p90_ms"]
        assert r["limit_ms"] > 0
        assert r["to_limit"] == pytest.approx(r["median_ms"] / r["limit_ms"], rel=1e-9)
    # torch's fastest counterpart is at 1.0 against itself
    for kind in ("SGD", "Adam"):
        torch_rows = [r for name, r in rows.items() if name.startswith(f"torch {kind}")]
        assert len(torch_rows) == 2 and min(r["to_torch"] for r in torch_rows) == 1.0
    text = out.with_suffix(".md").read_text()
    assert "AMD" in text or "Intel" in text or "CPUs" in text  # the machine line
    assert "| AdaBreg |" in text
