"""What the loop calls and what it returns: :class:`Callback` and :class:`TrainResult`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from sparseopt.config import TrainConfig

#: The :class:`~sparseopt.engine.trainer.Trainer` that calls the hooks (typed loosely here,
#: so that this module, below the loop, does not import it back).
Trainer = Any

__all__ = ["Callback", "CallbackProtocol", "TrainResult"]


@runtime_checkable
class CallbackProtocol(Protocol):
    """What the engine calls; every method is optional (see :class:`Callback`)."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None: ...


class Callback:
    """Base class of training callbacks; every hook is a no-op.

    Hooks run on every rank of a distributed run (use ``trainer.is_main`` for I/O).
    ``on_epoch_end`` sees the metrics of the finished epoch (evaluated on the deployable
    network) before they are logged and checkpointed; changes to the optimizer made there
    are part of that epoch's checkpoint. Give a callback ``state_dict()`` and
    ``load_state_dict(state)`` (plain data / tensors) to make it resumable.

    Example:
        >>> class Recorder(Callback):
        ...     def __init__(self):
        ...         self.densities = []
        ...     def on_epoch_end(self, trainer, epoch, metrics):
        ...         self.densities.append(metrics["density"])
    """

    def on_train_begin(self, trainer: Trainer) -> None:
        """Called once before the first (or first resumed) epoch."""

    def on_before_optimizer_step(self, trainer: Trainer, optimizer: torch.optim.Optimizer) -> None:
        """Called after every backward pass, before the gradient is clipped
        (``clip_grad_norm``, ``clip_grad_ratio``) and the optimizer steps (Lightning's
        hook of that name, at the same point): the place to read or change the gradient."""

    def on_step_end(self, trainer: Trainer, step: int) -> None:
        """Called after every optimizer step; ``step`` is the global step count (from 1)."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        """Called after epoch ``epoch`` (1-based) was trained and evaluated."""

    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None:
        """Called once after the last epoch, with the final result."""


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        config: the resolved configuration.
        run_dir: the run directory (``None`` on ranks other than 0).
        history: one metrics dict per epoch, epoch 0 being the initial network.
        metrics: the last epoch's metrics (``test_acc``, ``density``...).
        wall_time: seconds spent in training and evaluation, summed over resumptions.
        model: the trained model (training state; see ``model_sparse.pt`` or
            ``sparseopt.engine.evaluate.deployed(optimizer)`` for the deployable network;
            after a refit the model is the deployable network).
        optimizer: the optimizer; after a refit (``config.refit``) the refit's
            ``torch.optim.SGD`` or ``torch.optim.Adam`` (``config.refit_optimizer``), which
            replaced the sparse optimizer at its first epoch
            (callbacks see the same change in ``trainer.optimizer``).
        sizes: number of samples of the ``train``, ``val`` and ``test`` splits.
        health: ``{"status", "reason", "hint"}`` of :class:`sparseopt.health.HealthMonitor`
            (also in ``summary.json``); :attr:`status` is its ``status``.
    """

    config: TrainConfig
    run_dir: Path | None
    history: list[dict[str, Any]]
    metrics: dict[str, Any]
    wall_time: float
    model: nn.Module = field(repr=False)
    optimizer: torch.optim.Optimizer = field(repr=False)
    health: dict[str, Any] = field(default_factory=lambda: {"status": "ok", "reason": ""})
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """``ok``, ``stalled`` or ``collapsed`` (:mod:`sparseopt.health`)."""
        return str(self.health.get("status", "ok"))

    @property
    def test_acc(self) -> float | None:
        """Final test accuracy of the deployable network (``None`` for regression)."""
        return self.metrics.get("test_acc")

    @property
    def test_loss(self) -> float | None:
        """Final test loss of the deployable network."""
        return self.metrics.get("test_loss")

    @property
    def density(self) -> float:
        """Final fraction of nonzero parameters of the deployable network (all parameters)."""
        return float(self.metrics["density"])
