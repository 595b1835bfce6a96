"""The health rescan reloads finished runs and finds the ones today's detection calls
collapsed (a run whose last layer lost two class rows after it finished)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from engine_helpers import tiny

from sparseopt.engine import train


def test_rescan_finds_a_partial_collapse_and_passes_a_healthy_run(
    tmp_path: Path, run_benchmark: Callable
) -> None:
    for name in ("ok", "bad"):
        train(tiny(tmp_path / name, optimizer="sgd", epochs=1))
    healthy = run_benchmark("health_rescan", str(tmp_path / "ok"))
    assert healthy.returncode == 0, healthy.stderr[-2000:]
    assert "probed 1 runs; 0 would read collapsed now" in healthy.stdout
    path = tmp_path / "bad" / "model_sparse.pt"
    state = torch.load(path, weights_only=False)
    state = state.state_dict() if hasattr(state, "state_dict") else state
    state["fc3.weight"][[2, 5]] = 0.0
    torch.save(state, path)
    assert json.loads((tmp_path / "bad" / "summary.json").read_text())["status"] == "ok"
    found = run_benchmark("health_rescan", str(tmp_path / "*"))
    assert found.returncode == 1, found.stderr[-2000:]
    assert "bad: collapsed: one score for classes [2, 5]" in found.stdout
    assert "probed 2 runs; 1 would read collapsed now" in found.stdout
