"""benchmarks/recipe_study.py: its command line refuses a worker that would run nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.mark.parametrize("worker", ["2/2", "-1/2", "0/0", "x/2", "1"])
def test_a_worker_outside_0_to_n_is_refused_naming_the_value(
    load_benchmark: Callable, tmp_path: Path, capsys: pytest.CaptureFixture[str], worker: str
) -> None:
    bench = load_benchmark("recipe_study")
    results = tmp_path / "r.jsonl"
    with pytest.raises(SystemExit) as exc:
        bench.main(["--stage", "round38", f"--worker={worker}", "--results", str(results)])  # type: ignore[attr-defined]
    assert exc.value.code == 2
    assert f"Invalid worker value: {worker!r}" in capsys.readouterr().err
    assert not results.exists()  # nothing ran
