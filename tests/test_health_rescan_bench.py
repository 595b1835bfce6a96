"""The health rescan reloads finished runs and finds the ones today's detection calls
collapsed (a run whose last layer lost two class rows after it finished)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
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
    assert "bad: collapsed: the final network gives the classes 2, 5 (2 of 10)" in found.stdout
    assert "(saved: ok)" in found.stdout
    assert "probed 2 runs; 1 would read collapsed now" in found.stdout


def test_judge_finished_reads_a_stall_from_the_last_epoch(tmp_path: Path) -> None:
    from sparseopt.engine.judge import judge_finished

    train(tiny(tmp_path / "run", optimizer="sgd", epochs=2, limit_batches=None))
    assert judge_finished(tmp_path / "run") == ("ok", "")
    path = tmp_path / "run" / "summary.json"
    summary = json.loads(path.read_text())
    summary["metrics"].update(train_loss=2.31, val_acc=0.1, train_acc=0.1)
    path.write_text(json.dumps(summary))
    status, reason = judge_finished(tmp_path / "run")
    assert status == "stalled" and reason.startswith("stalled: training loss 2.31 ≈ ln 10")
    assert reason.endswith("(chance level) in the last epoch")


def test_judge_finished_without_a_validation_split_evaluates_the_final_network(
    tmp_path: Path,
) -> None:
    from sparseopt.engine.judge import judge_finished

    train(tiny(tmp_path / "run", optimizer="sgd", epochs=2, limit_batches=None, val_fraction=0.0))
    path = tmp_path / "run" / "summary.json"
    summary = json.loads(path.read_text())
    assert summary["metrics"]["val_acc"] is None
    # the last epoch's averages at chance (as right after pruning), the final network not
    summary["metrics"].update(train_loss=2.31, train_acc=0.1)
    path.write_text(json.dumps(summary))
    assert judge_finished(tmp_path / "run") == ("ok", "")
    # a network that gives every input the same output is judged from its probe
    state_path = tmp_path / "run" / "model_sparse.pt"
    state = torch.load(state_path, weights_only=True)
    state["fc3.weight"].zero_()
    torch.save(state, state_path)
    status, reason = judge_finished(tmp_path / "run")
    assert status == "collapsed" and reason.startswith("collapsed: the final network gives")


def test_judge_finished_refuses_pickled_code_and_judges_a_regression(tmp_path: Path) -> None:
    from sparseopt.engine.judge import judge_finished

    train(tiny(tmp_path / "reg", dataset="teacher", model="nooverlap", optimizer="sgd"))
    assert judge_finished(tmp_path / "reg", {}) == ("ok", "")  # no classes: a probe only
    # an object that only unpickling code could build is refused, never loaded
    torch.save({"w": Path("x")}, tmp_path / "reg" / "model_sparse.pt")
    with pytest.raises(ValueError, match=r"^cannot load sparse model "):
        judge_finished(tmp_path / "reg")
    torch.save({"weights": [1, 2]}, tmp_path / "reg" / "model_sparse.pt")  # not tensors
    with pytest.raises(ValueError, match=r"sparse model .* is not a state dict"):
        judge_finished(tmp_path / "reg")
