"""benchmarks/denormals.py: its subnormal state really is subnormal, and it runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch

TINY = torch.finfo(torch.float32).tiny


def test_subnormal_copy_replaces_the_fraction_asked_keeping_signs(
    load_benchmark: Callable[[str], ModuleType],
) -> None:
    bench = load_benchmark("denormals")
    t = torch.randn(200, 100)
    before = t.clone()
    bench.subnormal_copy([t], 0.55, torch.Generator().manual_seed(0))
    sub = (t != 0) & (t.abs() < TINY)
    assert 0.5 < sub.float().mean().item() < 0.6
    assert torch.equal(t[~sub], before[~sub])  # the others untouched
    assert torch.equal(torch.sign(t[sub]), torch.sign(before[sub]))


@pytest.mark.skipif(not torch.set_flush_denormal(False), reason="cannot flush subnormals")
def test_benchmark_runs_and_writes_its_table(
    load_benchmark: Callable[[str], ModuleType], tmp_path: Path
) -> None:
    bench = load_benchmark("denormals")
    out = tmp_path / "d"
    argv = ["--optimizers", "rvsm", "--rounds", "1", "--block", "1", "--out", str(out)]
    with torch.random.fork_rng():  # it seeds torch's global generator
        assert bench.main(argv) == 0
    text = out.with_suffix(".md").read_text()
    assert text.count("| rvsm |") == 4
    assert "| rvsm | normal | off |" in text and "| 1.00 |" in text
