"""benchmarks/job_overhead.py: one real round of every job, and the target's verdict."""

from __future__ import annotations

from collections.abc import Callable


def test_one_round_measures_every_job_and_reports_the_target(load_benchmark: Callable) -> None:
    bench = load_benchmark("job_overhead")
    times = bench.measure(1)  # type: ignore[attr-defined]
    assert set(times) == {"import torch", *bench.VARIANTS}  # type: ignore[attr-defined]
    # a job's wall time minus its loop is at least the interpreter's start
    assert all(len(v) == 1 and v[0] > 0 for v in times.values())
    text, result = bench.report(times)  # type: ignore[attr-defined]
    assert "| `sparseopt train default job` |" in text and "import_torch" in result
    fast = {k: [1.0 if k == "import torch" else 1.5] for k in times}
    slow = {k: [1.0 if k == "import torch" else 2.5] for k in times}
    assert "| met |" in bench.report(fast)[0]  # type: ignore[attr-defined]
    assert "| not met |" in bench.report(slow)[0]  # type: ignore[attr-defined]
