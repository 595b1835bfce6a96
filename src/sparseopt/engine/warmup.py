r"""A linear learning-rate warm-up, step by step, under a per-epoch schedule.

Over the first :math:`K` optimizer steps of a phase, step :math:`k < K` (0-based) runs
at :math:`\eta_e (k + 1)/K`, with :math:`\eta_e` the lr the schedule set for its epoch;
from step :math:`K` on the schedule's lr is used as it is. The schedule is never
touched: a step pre-hook (:meth:`torch.optim.Optimizer.register_step_pre_hook`) scales
every param group's lr and a post-hook puts the scheduled value back, so that what the
scheduler, the checkpoint and the log read between steps is the schedule's lr (a
controller coupled to the lr asks :meth:`factor` through
:meth:`sparseopt.engine.Trainer.lr_factor`), and a resumed run warms up from the step it
stopped at (:math:`k` is counted off the trainer's global step, not off the hooks).

Two phases use it: the start of training (``warmup``, epochs; Goyal et al., "Accurate,
large minibatch SGD", arXiv 1706.02677 (2017), §2.2 — the linear warm-up that lets a
large learning rate train where it would otherwise diverge or stall) and the start of the
refit (``refit_warmup``; :mod:`sparseopt.engine.refit`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["LinearWarmup", "warmup_steps"]


def warmup_steps(epochs: float | None, batches_per_epoch: int) -> int:
    r""":math:`K = \max(1, \operatorname{round}(wB))` steps for a warm-up of :math:`w`
    epochs of :math:`B` steps each; 0 (no warm-up) for ``w`` 0 or ``None``.

    Example:
        >>> warmup_steps(1.5, 10), warmup_steps(0.01, 10), warmup_steps(0, 10)
        (15, 1, 0)
    """
    w = float(epochs or 0.0)
    return max(1, round(w * batches_per_epoch)) if w > 0 else 0


class LinearWarmup:
    r"""Scale the lr of step :math:`k < K` by :math:`(k + 1)/K` through step hooks.

    Args:
        steps: :math:`K` (0: the hooks do nothing).
        count: the 0-based index :math:`k` of the step about to run (called in the
            pre-hook; a phase that began at global step :math:`S` passes
            ``lambda: trainer.global_step - S``).

    Example:
        >>> import torch
        >>> p = torch.nn.Parameter(torch.zeros(1))
        >>> opt = torch.optim.SGD([p], lr=1.0)
        >>> k = [0]
        >>> LinearWarmup(4, lambda: k[0]).attach(opt)
        >>> for _ in range(5):
        ...     p.grad = torch.ones(1)
        ...     opt.step()
        ...     k[0] += 1
        >>> round(-p.item(), 4), opt.param_groups[0]["lr"]  # 0.25+0.5+0.75+1+1
        (3.5, 1.0)
    """

    def __init__(self, steps: int, count: Callable[[], int]) -> None:
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"Invalid steps value: {steps!r}; expected an int >= 0")
        self.steps = steps
        self.count = count
        self._saved: list[Any] = []
        self._handles: list[Any] = []
        self._optimizer: torch.optim.Optimizer | None = None

    def factor(self) -> float:
        """The factor of the step about to run (1 once the warm-up is over)."""
        k = int(self.count())
        return (k + 1) / self.steps if 0 <= k < self.steps else 1.0

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Register the pre- and post-hooks on ``optimizer`` (nothing for :math:`K = 0`)."""
        if self.steps:
            self._optimizer = optimizer
            self._handles += [
                optimizer.register_step_pre_hook(lambda opt, *_: self._warm(opt)),
                optimizer.register_step_post_hook(lambda opt, *_: self._unwarm(opt)),
            ]

    def detach(self) -> None:
        """Remove the hooks: the optimizer steps at its groups' lr again (a trainer's
        optimizer, once the run is over, is the caller's; a step that raised between
        the hooks gets the schedule's lr back here)."""
        if self._saved and self._optimizer is not None:
            self._unwarm(self._optimizer)
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._optimizer = None

    def _warm(self, optimizer: torch.optim.Optimizer) -> None:
        self._saved = []
        factor = self.factor()
        if factor == 1.0:
            return
        for group in optimizer.param_groups:
            self._saved.append(group["lr"])
            group["lr"] = group["lr"] * factor

    def _unwarm(self, optimizer: torch.optim.Optimizer) -> None:
        for group, lr in zip(optimizer.param_groups, self._saved, strict=False):
            group["lr"] = lr
        self._saved = []
