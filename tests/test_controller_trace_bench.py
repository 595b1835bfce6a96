"""benchmarks/controller_trace.py: a short traced run records what the controller did."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path


def test_a_traced_run_records_every_group_and_stops_where_asked(
    load_benchmark: Callable, tmp_path: Path
) -> None:
    bench = load_benchmark("controller_trace")
    out = tmp_path / "trace.json"
    args = ["--set", "optimizer=adabreg", "--set", "epochs=2", "--set", "target_density=0.13"]
    args += ["--set", "lr=1e-2"]  # YAML 1.2's numbers
    args += ["--set", "warmup=0"]  # the recipe's controller holds λ through a warm-up
    assert bench.main([*args, "--steps", "12", "--out", str(out)]) == 0  # type: ignore[attr-defined]
    trace = json.loads(out.read_text())
    rows = trace["rows"]
    # one row per controller update (every 2 steps), stopped after 12 steps
    assert [r["step"] for r in rows] == [2, 4, 6, 8, 10, 12]
    assert trace["config"]["lr"] == 0.01
    # the recipe's per-layer groups of the digits MLP: one per penalised layer, named
    assert trace["names"] == [["fc1.weight"], ["fc2.weight"], ["fc3.weight"]]
    assert all(len(r["groups"]) == 3 for r in rows)
    for r in rows:
        assert 0 < r["density"] < 1 and all(0 < d <= 1 and lam > 0 for d, lam in r["groups"])
    assert len({tuple(g[1] for g in r["groups"]) for r in rows}) > 1  # λ was steered
    assert trace["final"] is None  # stopped before its end: no final metrics


def test_a_controller_override_reaches_the_run_and_a_finished_run_records_its_end(
    load_benchmark: Callable, tmp_path: Path
) -> None:
    from sparseopt import control

    bench = load_benchmark("controller_trace")
    before = dict(control.PRESETS["adabreg"])
    out = tmp_path / "trace.json"
    args = ["--set", "optimizer=adabreg", "--set", "epochs=1", "--set", "limit_batches=8"]
    args += ["--controller", "max_factor=1.01", "--steps", "1000", "--out", str(out)]
    assert bench.main(args) == 0  # type: ignore[attr-defined]
    trace = json.loads(out.read_text())
    assert trace["controller"] == {"max_factor": 1.01}
    lams = [[lam for _, lam in r["groups"]] for r in trace["rows"]]
    assert len(lams) >= 2
    for prev, now in itertools.pairwise(lams):  # no λ moved by more than 1 %
        assert all(1 / 1.0101 <= b / a <= 1.0101 for a, b in zip(prev, now, strict=True))
    assert control.PRESETS["adabreg"] == before  # the preset is put back
    final = trace["final"]  # the run ended before --steps: its end is recorded
    assert final["status"] == "ok" and 0 <= final["val_acc"] <= 1
    assert 0 < final["weight_density"] <= 1
