"""Gradual magnitude pruning (``sparseopt.baselines.GradualMagnitude``) in the engine."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest
import torch
from engine_helpers import StopAfter, assert_same_state, tiny

from sparseopt.baselines import GradualMagnitude, gradual_keep, prunable_weights
from sparseopt.engine import TrainingInterrupted, train


def test_the_schedule_is_cubic_monotone_and_ends_at_the_density() -> None:
    keeps = [gradual_keep(t, 200, 0.05, 0.1, 0.6) for t in range(201)]
    assert keeps[:21] == [1.0] * 21 and keeps[120:] == [0.05] * 81
    assert all(a >= b for a, b in pairwise(keeps))  # never grows back
    # the cubic: a quarter of the way, 1 − (3/4)³ of the weights to remove are gone
    assert gradual_keep(45, 200, 0.05, 0.1, 0.6) == pytest.approx(0.05 + 0.95 * 0.75**3)
    for bad in ({"density": 0.0}, {"density": 1.5}, {"density": 0.1, "start": 0.7, "end": 0.6}):
        with pytest.raises(ValueError, match="Invalid"):
            GradualMagnitude(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="updates"):
        GradualMagnitude(0.1, updates=0)


def _layer_density(model: torch.nn.Module) -> tuple[int, int]:
    weights = prunable_weights(model).values()
    return sum(int((w != 0).sum()) for w in weights), sum(w.numel() for w in weights)


def test_a_dense_run_ends_at_the_density_with_its_mask_fixed(tmp_path: Path) -> None:
    class Watch(GradualMagnitude):
        """Records the fraction kept after every step."""

        def on_step_end(self, trainer, step):  # type: ignore[no-untyped-def]
            super().on_step_end(trainer, step)
            nz, n = _layer_density(trainer.model)
            self.seen.append(nz / n)

    cb = Watch(0.2, start=0.2, end=0.6, updates=4)
    cb.seen = []
    res = train(tiny(tmp_path / "run", optimizer="sgd", epochs=5), callbacks=[cb])
    nz, n = _layer_density(res.model)
    assert nz == round(0.2 * n)  # exactly that many, as magnitude_masks keeps
    total = 5 * 3
    assert cb.total == total and len(cb.seen) == total
    t1 = int(0.6 * total)
    assert cb.seen[: int(0.2 * total)] == [1.0] * int(0.2 * total)  # nothing before start
    assert all(a >= b for a, b in pairwise(cb.seen))
    assert set(cb.seen[t1 - 1 :]) == {nz / n}  # the mask fixed from t1 on
    # the pruned weights stayed zero while the kept ones trained on
    assert res.history[-1]["weight_density"] == pytest.approx(nz / n)


def test_an_interrupted_run_resumes_to_the_same_network(tmp_path: Path) -> None:
    kw = {"optimizer": "sgd", "epochs": 4, "schedule": "cosine"}
    ref = train(tiny(tmp_path / "ref", **kw), callbacks=[GradualMagnitude(0.3, end=0.8)])
    with pytest.raises(TrainingInterrupted):
        train(
            tiny(tmp_path / "cut", **kw),
            callbacks=[GradualMagnitude(0.3, end=0.8), StopAfter(2)],
        )
    res = train(resume=tmp_path / "cut", callbacks=[GradualMagnitude(0.3, end=0.8), StopAfter(-1)])
    assert_same_state(res.model.state_dict(), ref.model.state_dict())
