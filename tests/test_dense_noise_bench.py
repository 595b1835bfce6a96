"""benchmarks/dense_noise.py: the dense runs again on the same data, other seeds."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from sparseopt.config import TrainConfig
from sparseopt.engine import train


def _dense_runs(matrix: Path) -> None:
    """A one-task matrix: dense SGD and Adam on the digits MLP, 2 epochs."""
    for opt in ("sgd", "adam"):
        cfg = TrainConfig.from_dict(
            {
                "dataset": "digits", "model": "mlp", "optimizer": opt, "epochs": 2,
                "seed": 3, "threads": 1, "quiet": True, "plots": False,
                "tensorboard": False, "record_path": False,
                "out": str(matrix / "digits-mlp" / opt),
            }
        )  # fmt: skip
        train(cfg, install_signal_handlers=False, echo=False)


def test_k0_reproduces_the_runs_and_other_seeds_move_them_on_the_same_data(
    tmp_path: Path, load_benchmark: Callable, run_benchmark: Callable
) -> None:
    bench = load_benchmark("dense_noise")
    matrix = tmp_path / "m"
    _dense_runs(matrix)
    assert [(j["optimizer"], j["k"]) for j in bench.jobs([matrix], 1)] == [
        ("sgd", 0), ("sgd", 1), ("adam", 0), ("adam", 1),
    ]  # fmt: skip
    results = tmp_path / "noise.jsonl"
    assert bench.run([matrix], 1, (0, 1), results) == 0
    rows = [json.loads(ln) for ln in results.read_text().splitlines()]
    assert len(rows) == 4
    for r in rows:
        same = (r["val_acc"], r["test_acc"]) == (r["recorded_val"], r["recorded_test"])
        assert same is (r["k"] == 0), r  # k = 0 is the run itself; k = 1 trains otherwise
    # the seeds are moved inside the block only
    from sparseopt.engine import checkpoint, trainer

    before = (checkpoint.seed_everything, trainer.Batches)
    with bench.moved_seeds(1000):
        assert checkpoint.seed_everything is not before[0]
    assert (checkpoint.seed_everything, trainer.Batches) == before  # restored
    # resumable: nothing left to run
    assert bench.run([matrix], 1, (0, 1), results) == 0
    assert len(results.read_text().splitlines()) == 4
    out = run_benchmark("dense_noise", "--report", str(results))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "reproduces the matrix's dense runs exactly: yes" in out.stdout
    assert "| digits-mlp | 1 |" in out.stdout and "within 1 point:" in out.stdout
