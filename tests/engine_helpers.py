"""Helpers of the engine tests (``test_engine``, ``test_refit``): a tiny config, bitwise
comparison of state dicts and histories, a callback that interrupts a run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from sparseopt.config import TrainConfig
from sparseopt.engine import TIME_KEYS, Callback, Trainer


def tiny(out: Path, **kw: Any) -> TrainConfig:
    """A few batches of the default job, quiet, writing to ``out``."""
    base: dict[str, Any] = {
        "epochs": 2,
        "limit_batches": 3,
        "quiet": True,
        "tensorboard": False,
        "plots": False,
        "out": str(out),
    }
    base.update(kw)
    return TrainConfig(**base)


def edit_saved_config(run_dir: Path, old: str, new: str) -> None:
    """Make ``run_dir``'s ``config.yaml`` read as one saved by an earlier version: the
    text ``old`` (which must be there) becomes ``new``."""
    path = run_dir / "config.yaml"
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def without_time(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in TIME_KEYS} for row in history]


def assert_same_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Bitwise equality of two (nested) state dicts."""
    assert type(a) is type(b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same_state(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same_state(x, y)
    else:
        assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))


class StopAfter(Callback):
    """Raises ``KeyboardInterrupt`` at the end of epoch ``epoch`` (a user's Ctrl-C)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.seen: list[int] = []

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        self.seen.append(epoch)
        if epoch == self.epoch:
            raise KeyboardInterrupt

    def state_dict(self) -> dict[str, Any]:
        return {"seen": list(self.seen)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen = list(state["seen"])
