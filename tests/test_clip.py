"""Gradient-norm clipping (``clip_grad_norm``): the gradient each step applies, the norms
the epoch rows record, the refit's steps, a resume mid-epoch, the setting's checks and
older runs without it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_helpers import assert_same_state, edit_saved_config, tiny, without_time

from sparseopt.config import TrainConfig, load_run_config
from sparseopt.engine import TrainingInterrupted, load_checkpoint, train


def _norm(params: Any) -> float:
    """The global ℓ2 norm of the gradients, summed by hand in float64."""
    return math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in params if p.grad is not None))


class ClipByHand:
    """Clips each step's gradient before the optimizer reads it (a step pre-hook on the
    sparse optimizer): g ← g · min(1, c / (‖g‖ + 1e-6)), the norm summed in float64 —
    and records the norm before clipping."""

    def __init__(self, max_norm: float) -> None:
        self.max_norm, self.norms = max_norm, []

    def on_train_begin(self, trainer: Any) -> None:
        params = list(trainer.model.parameters())

        def clip(*_: Any) -> None:
            norm = _norm(params)
            self.norms.append(norm)
            scale = min(1.0, self.max_norm / (norm + 1e-6))
            for p in params:
                if p.grad is not None:
                    p.grad.mul_(scale)

        trainer.optimizer.register_step_pre_hook(clip)


class StepNorms:
    """The gradient's norm after each step (the clipped one: the step leaves it in
    ``.grad``), split into the sparse phase's steps and the refit's."""

    def __init__(self) -> None:
        self.sparse: list[float] = []
        self.refit: list[float] = []

    def on_step_end(self, trainer: Any, step: int | None = None, *_: Any) -> None:
        norm = _norm(trainer.model.parameters())
        (self.refit if trainer.in_refit else self.sparse).append(norm)


@pytest.mark.parametrize("optimizer", ["linbreg", "splitlbi", "sgd"])
def test_each_step_applies_the_clipped_gradient_and_rows_record_its_norms(
    tmp_path: Path, optimizer: str
) -> None:
    """The run with ``clip_grad_norm`` c equals an unclipped run whose gradient a hook
    clips by hand before every step; its rows' mean and max norm and fraction clipped are
    those the hook saw, and every step's gradient has norm at most c."""
    c = 0.5
    kw: dict[str, Any] = {"optimizer": optimizer, "epochs": 2, "limit_batches": 4}
    if optimizer != "sgd":
        kw["refit"] = 0.0  # the hook is on the sparse optimizer (the refit: below)
    hand = ClipByHand(c)
    ref = train(tiny(tmp_path / "hand", **kw), callbacks=[hand])
    seen = StepNorms()
    res = train(tiny(tmp_path / "clip", **kw, clip_grad_norm=c), callbacks=[seen])
    assert res.config.clip_grad_norm == c
    for name, p in ref.model.state_dict().items():
        torch.testing.assert_close(res.model.state_dict()[name], p, rtol=1e-5, atol=1e-6)
    assert max(seen.sparse) <= c * (1 + 1e-5)
    assert sum(n > c for n in hand.norms) >= 4, hand.norms  # the test clips something
    for epoch in (1, 2):
        norms = hand.norms[(epoch - 1) * 4 : epoch * 4]
        row = res.history[epoch]
        assert row["grad_norm"] == pytest.approx(sum(norms) / 4, rel=1e-4)
        assert row["grad_norm_max"] == pytest.approx(max(norms), rel=1e-4)
        assert row["clipped"] == sum(n > c for n in norms) / 4
    assert "grad_norm" not in ref.history[1]  # no clipping, no column
    metrics = (res.run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"grad_norm", "grad_norm_max", "clipped"} <= set(metrics)


def test_a_bound_above_every_norm_changes_nothing(tmp_path: Path) -> None:
    kw: dict[str, Any] = {"optimizer": "adabreg", "epochs": 2}
    ref = train(tiny(tmp_path / "ref", **kw))
    res = train(tiny(tmp_path / "clip", **kw, clip_grad_norm=1e9))
    assert_same_state(res.model.state_dict(), ref.model.state_dict())
    assert_same_state(res.optimizer.state_dict(), ref.optimizer.state_dict())
    assert [row["clipped"] for row in res.history[1:]] == [0.0, 0.0]
    assert all(row["grad_norm"] > 0 for row in res.history[1:])


def test_the_refit_clips_too(tmp_path: Path) -> None:
    seen = StepNorms()
    kw: dict[str, Any] = {"optimizer": "rda", "epochs": 4, "refit": 0.5, "refit_lr": 0.5}
    res = train(tiny(tmp_path, **kw, clip_grad_norm=0.2), callbacks=[seen])
    assert type(res.optimizer).__name__ == "SGD"  # the refit's
    assert len(seen.refit) == 6 and max(seen.refit) <= 0.2 * (1 + 1e-5)
    assert res.history[-1]["clipped"] > 0


def test_a_run_cut_mid_epoch_resumes_to_the_same_state_and_norms(tmp_path: Path) -> None:
    from test_engine import StopAtStep

    kw: dict[str, Any] = {"optimizer": "linbreg", "epochs": 2, "clip_grad_norm": 0.5}
    ref = train(tiny(tmp_path / "ref", **kw))
    with pytest.raises(TrainingInterrupted):
        train(tiny(tmp_path / "cut", **kw), callbacks=[StopAtStep(4)])
    assert load_checkpoint(tmp_path / "cut")["global_step"] == 4  # mid epoch 2
    res = train(resume=tmp_path / "cut")
    assert_same_state(res.model.state_dict(), ref.model.state_dict())
    assert without_time(res.history) == without_time(ref.history)
    assert res.history[2]["clipped"] > 0


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf"), True])
def test_a_bad_bound_is_refused(tmp_path: Path, value: Any) -> None:
    with pytest.raises(ValueError, match=r"Invalid clip_grad_norm value: "):
        tiny(tmp_path, clip_grad_norm=value).validate()


def test_the_cli_flag_sets_it_and_a_bad_one_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sparseopt.cli import main

    args = ["train", "--epochs", "1", "--limit-batches", "2", "-q", "--no-plots"]
    assert main([*args, "--clip-grad-norm", "-2", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "clip_grad_norm" in err[0] and "-2" in err[0], err
    assert not (tmp_path / "bad").exists()
    assert main([*args, "--clip-grad-norm", "0.7", "--out", str(tmp_path / "ok")]) == 0
    assert load_run_config(tmp_path / "ok" / "config.yaml")["clip_grad_norm"] == 0.7


def test_off_by_default_and_absent_from_older_runs(tmp_path: Path) -> None:
    for optimizer in ("adabreg", "linbreg", "splitlbi", "rda", "rvsm", "proxsgd", "sgd", "adam"):
        assert TrainConfig(optimizer=optimizer).resolve().clip_grad_norm == 0.0
    train(tiny(tmp_path / "old", optimizer="sgd", epochs=1))
    edit_saved_config(tmp_path / "old", "\nclip_grad_norm: 0.0\n", "\n")  # saved before it
    assert load_run_config(tmp_path / "old" / "config.yaml")["clip_grad_norm"] == 0.0
    res = train(resume=tmp_path / "old", config={"epochs": 2})
    assert res.history[-1]["epoch"] == 2 and "grad_norm" not in res.history[-1]
