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
    sparse optimizer): g ← g · min(1, b / (‖g‖ + 1e-6)), b = min(N, K·m), m the running
    mean of the clipped norms (β = 0.98; the first norm starts it), the norm summed in
    float64 — and records the norm before clipping."""

    def __init__(self, max_norm: float | None, ratio: float | None = None) -> None:
        self.max_norm, self.ratio = max_norm or math.inf, ratio
        self.norms: list[float] = []
        self.bounds: list[float] = []
        self.ema: float | None = None

    def on_train_begin(self, trainer: Any) -> None:
        params = list(trainer.model.parameters())

        def clip(*_: Any) -> None:
            norm = _norm(params)
            self.norms.append(norm)
            bound = self.max_norm
            if self.ratio and self.ema is not None:
                bound = min(bound, self.ratio * self.ema)
            self.bounds.append(bound)
            if norm > bound:
                for p in params:
                    if p.grad is not None:
                        p.grad.mul_(bound / (norm + 1e-6))
            if self.ratio:
                kept = min(norm, bound)
                self.ema = kept if self.ema is None else 0.98 * self.ema + 0.02 * kept

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


@pytest.mark.parametrize(
    ("optimizer", "c", "ratio"),
    [
        ("linbreg", 0.5, None),
        ("splitlbi", 0.5, None),
        ("sgd", 0.5, None),
        ("rda", None, 1.1),
        ("adam", 1.0, 1.1),
    ],
)
def test_each_step_applies_the_clipped_gradient_and_rows_record_its_norms(
    tmp_path: Path, optimizer: str, c: float | None, ratio: float | None
) -> None:
    """The run with ``clip_grad_norm`` c and/or ``clip_grad_ratio`` K equals an unclipped
    run whose gradient a hook clips by hand before every step; its rows' mean and max
    norm and fraction clipped are those the hook saw, and every step's gradient has norm
    at most its bound."""
    kw: dict[str, Any] = {"optimizer": optimizer, "epochs": 2, "limit_batches": 4}
    if optimizer not in ("sgd", "adam"):
        kw["refit"] = 0.0  # the hook is on the sparse optimizer (the refit: below)
    hand = ClipByHand(c, ratio)
    ref = train(tiny(tmp_path / "hand", **kw), callbacks=[hand])
    seen = StepNorms()
    clip = {"clip_grad_norm": c, "clip_grad_ratio": ratio}
    res = train(tiny(tmp_path / "clip", **kw, **clip), callbacks=[seen])
    assert (res.config.clip_grad_norm, res.config.clip_grad_ratio) == (c or 0.0, ratio or 0.0)
    for name, p in ref.model.state_dict().items():
        torch.testing.assert_close(res.model.state_dict()[name], p, rtol=1e-5, atol=1e-6)
    for s, n, b in zip(seen.sparse, hand.norms, hand.bounds, strict=True):
        assert s <= min(n, b) * (1 + 1e-5)  # clipped to the bound, never lengthened
        assert b <= (c or math.inf)  # the fixed bound
    if ratio:  # K × the running mean of the clipped norms, from the second step
        ema = min(hand.norms[0], hand.bounds[0])
        for n, b in zip(hand.norms[1:], hand.bounds[1:], strict=True):
            assert b == pytest.approx(min(c or math.inf, ratio * ema), rel=1e-9)
            ema = 0.98 * ema + 0.02 * min(n, b)
    clipped = [s < n * (1 - 1e-5) for n, s in zip(hand.norms, seen.sparse, strict=True)]
    assert sum(clipped) >= 2, (hand.norms, seen.sparse)  # the test clips something
    for epoch in (1, 2):
        norms = hand.norms[(epoch - 1) * 4 : epoch * 4]
        row = res.history[epoch]
        assert row["grad_norm"] == pytest.approx(sum(norms) / 4, rel=1e-4)
        assert row["grad_norm_max"] == pytest.approx(max(norms), rel=1e-4)
        assert row["clipped"] == sum(clipped[(epoch - 1) * 4 : epoch * 4]) / 4
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


class MaskedGradients:
    """During the refit, after every step: whether every weight the refit holds at zero
    has a zero gradient (the clipped gradient is the support's)."""

    def __init__(self) -> None:
        self.checked = 0

    def on_step_end(self, trainer: Any, step: int | None = None, *_: Any) -> None:
        if trainer.in_refit:
            for p, m in zip(trainer._refit.params, trainer._refit.masks, strict=True):
                assert p.grad is None or not p.grad[~m].any()
            self.checked += 1


def test_the_refit_clips_the_gradient_of_its_support(tmp_path: Path) -> None:
    seen, masked = StepNorms(), MaskedGradients()
    kw: dict[str, Any] = {"optimizer": "rda", "epochs": 4, "refit": 0.5, "refit_lr": 0.5}
    res = train(tiny(tmp_path, **kw, clip_grad_norm=0.2), callbacks=[seen, masked])
    assert type(res.optimizer).__name__ == "SGD"  # the refit's
    assert len(seen.refit) == 6 and max(seen.refit) <= 0.2 * (1 + 1e-5)
    assert masked.checked == 6 and res.history[-1]["clipped"] > 0
    assert res.history[-1]["weight_density"] < 0.9  # the support is not everything


class GradientAt:
    """Before the optimizer's step ``at`` (1-based), sets every gradient to ``value``."""

    def __init__(self, at: int, value: float) -> None:
        self.at, self.value = at, value

    def on_before_optimizer_step(self, trainer: Any, optimizer: Any) -> None:
        if trainer.global_step + 1 == self.at:
            for p in trainer.model.parameters():
                if p.grad is not None:
                    p.grad.fill_(self.value)


def test_a_non_finite_gradient_stops_the_run_before_its_step(tmp_path: Path) -> None:
    from sparseopt.engine import NonFiniteLossError

    with pytest.raises(NonFiniteLossError, match=r"gradient's norm is inf at epoch 1, batch 2"):
        train(tiny(tmp_path, clip_grad_ratio=3.0), callbacks=[GradientAt(2, math.inf)])
    assert not (tmp_path / "model.pt").exists()


def test_a_zero_gradient_does_not_start_the_running_mean(tmp_path: Path) -> None:
    """A first gradient of 0 would make every later bound K · 0: it is skipped."""
    seen = StepNorms()
    kw: dict[str, Any] = {"optimizer": "adam", "clip_grad_ratio": 1.5}
    res = train(tiny(tmp_path, **kw), callbacks=[GradientAt(1, 0.0), seen])
    assert seen.sparse[0] == 0.0 and min(seen.sparse[1:]) > 0.0
    assert res.history[1]["clipped"] < 1.0


def test_a_run_cut_mid_epoch_resumes_to_the_same_state_and_norms(tmp_path: Path) -> None:
    """Both bounds, the running mean of the norms carried through the checkpoint."""
    from test_engine import StopAtStep

    kw: dict[str, Any] = {"optimizer": "linbreg", "epochs": 2}
    kw.update(clip_grad_norm=2.0, clip_grad_ratio=1.2)
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


@pytest.mark.parametrize("value", [-1.0, 0.5, 1.0, float("nan"), float("inf"), True])
def test_a_bad_ratio_is_refused(tmp_path: Path, value: Any) -> None:
    """A ratio of at most 1 would shrink the running mean, and every step, towards 0."""
    with pytest.raises(ValueError, match=r"Invalid clip_grad_ratio value: .*\(1.0, inf\)"):
        tiny(tmp_path, clip_grad_ratio=value).validate()
    tiny(tmp_path, clip_grad_ratio=0).validate()  # off


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
        cfg = TrainConfig(optimizer=optimizer).resolve()
        assert (cfg.clip_grad_norm, cfg.clip_grad_ratio) == (0.0, 0.0)
    train(tiny(tmp_path / "old", optimizer="sgd", epochs=1))
    for key in ("clip_grad_norm", "clip_grad_ratio"):  # saved before them
        edit_saved_config(tmp_path / "old", f"\n{key}: 0.0\n", "\n")
        assert load_run_config(tmp_path / "old" / "config.yaml")[key] == 0.0
    res = train(resume=tmp_path / "old", config={"epochs": 2})
    assert res.history[-1]["epoch"] == 2 and "grad_norm" not in res.history[-1]


def test_a_fixed_masks_fine_tune_clips_its_support_and_trains_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pruning baseline's fine-tune (``FixedMask``), where the run clips, zeroes the
    pruned weights' gradients before the step, so a bound measures the gradient the step
    applies; a run that does not clip skips that work (its pruned weights' gradients stay
    as computed) and trains bitwise as without the hook."""
    from sparseopt.baselines import FixedMask

    dense = train(tiny(tmp_path / "dense", optimizer="sgd"))
    state = {k: v.clone() for k, v in dense.model.state_dict().items()}
    masks = {
        k: (v.abs() > v.abs().median()).float()
        for k, v in state.items()
        if k.endswith("weight") and v.ndim == 2
    }
    kw: dict[str, Any] = {"optimizer": "sgd", "lr": 0.5}
    ref = train(tiny(tmp_path / "a", **kw), callbacks=[FixedMask(state, masks)])
    with monkeypatch.context() as m:
        m.setattr(FixedMask, "on_before_optimizer_step", lambda *_: None)
        old = train(tiny(tmp_path / "b", **kw), callbacks=[FixedMask(state, masks)])
    assert_same_state(ref.model.state_dict(), old.model.state_dict())
    params = dict(ref.model.named_parameters())
    assert any(params[name].grad[mask == 0].any() for name, mask in masks.items())
    seen = StepNorms()
    clipped = train(
        tiny(tmp_path / "c", **kw, clip_grad_norm=0.3), callbacks=[FixedMask(state, masks), seen]
    )
    params = dict(clipped.model.named_parameters())
    for name, mask in masks.items():
        assert not params[name].grad[mask == 0].any()  # the last step's gradient
    assert max(seen.sparse) <= 0.3 * (1 + 1e-5) and clipped.history[-1]["clipped"] > 0
