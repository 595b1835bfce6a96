"""benchmarks/compiled_rda_step.py: the library's compiled adaptive-RDA step matches its
eager step and a new lr every step builds no new kernel; skipped where torch.compile
cannot build a CPU kernel."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch


def _can_compile() -> bool:
    try:
        f = torch.compile(lambda x: (x.sqrt() + 1.0).sum(), fullgraph=True)
        return bool(torch.isfinite(f(torch.ones(4))))
    except Exception:  # no C++ compiler, an Inductor build problem...
        return False


@pytest.mark.skipif(not _can_compile(), reason="torch.compile cannot build a CPU kernel here")
def test_compiled_step_matches_the_eager_adaptive_rda(
    tmp_path: Path, run_benchmark: Callable
) -> None:
    out = tmp_path / "crda"
    args = ("--models", "mlp", "--rounds", "2", "--block", "2", "--out", str(out))
    proc = run_benchmark("compiled_rda_step", *args)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (row,) = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert row["model"] == "mlp" and row["steps"] == 5
    assert row["max_abs_diff"] < 1e-5  # the same iterates after every step
    assert row["recompiles"] == 0  # a new lr every step builds no new kernel
    assert row["eager"]["median"] > 0 and row["compiled"]["median"] > 0
    assert "| mlp |" in out.with_suffix(".md").read_text()
