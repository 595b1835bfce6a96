r"""Maths shared by the linearized Bregman optimizers (:class:`LinBreg`, :class:`AdaBreg`).

Both keep a dual variable :math:`v` (a subgradient of the elastic functional
:math:`J_\delta(\theta) = J(\theta) + \|\theta\|^2/(2\delta)`) and recover the
parameters from it by the primal map

.. math::
    \theta = \nabla J_\delta^*(v) = \operatorname{prox}_{\delta J}(\delta v),

which for :math:`J = \lambda\|\cdot\|_1` is :math:`\theta = \delta\,\mathrm{soft}(v, \lambda)`.
This module holds that map (with a fused ℓ1 fast path), the lazy dual
initialisation, the dual re-synchronisation used when λ changes, and
:class:`BregmanOptimizer`, the state handling both optimizers share.

Reference: Bungert, Roith, Tenbrinck & Burger, "A Bregman Learning Framework for
Sparse Neural Networks", JMLR 23 (2022), arXiv 2105.04319; original code at
github.com/TimRoith/BregmanLearning.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from sparseopt.optim._base import SparseOptimizer
from sparseopt.optim._functional import group_by_device_dtype
from sparseopt.penalties import (
    NoPenalty,
    Penalty,
    dead_threshold,
)

__all__ = [
    "BregmanOptimizer",
    "decay_",
    "decay_foreach_",
    "decayed_buckets",
    "init_dual",
    "primal",
    "primal_foreach",
    "rescale_duals",
    "sync_all_duals",
    "sync_dual",
]


def init_dual(p: Tensor, penalty: Penalty, delta: float) -> Tensor:
    r"""The initial dual :math:`v_0 = \theta_0/\delta + \partial J(\theta_0)` (a new tensor).

    For convex penalties this is a subgradient of :math:`J_\delta` at :math:`\theta_0`,
    so the primal map gives back :math:`\theta_0` (up to rounding; zeros exactly).
    For nonconvex penalties (``l0``, ``tl1``, ``group_l0``) it is the natural
    choice: :math:`\theta_0` is a stationary point of the prox problem, and is
    reproduced where it is the prox's global minimiser (e.g. for ``l0`` where
    :math:`|\theta_0| > \sqrt{2\delta\lambda}`); smaller entries are cut at the
    first step.
    """
    v = torch.div(p.detach(), delta)
    if not penalty.is_zero:
        v.add_(penalty.subgrad(p.detach()))
    return v


def primal(p: Tensor, v: Tensor, penalty: Penalty, delta: float) -> None:
    r"""Write :math:`\operatorname{prox}_{\delta J}(\delta v)` into ``p`` (the reference path)."""
    p.copy_(penalty.prox(torch.mul(v, delta), delta))


def primal_foreach(
    params: Sequence[Tensor], duals: Sequence[Tensor], penalty: Penalty, delta: float
) -> None:
    r"""Write :math:`\operatorname{prox}_{\delta J}(\delta v)` into every parameter.

    For ``l1`` this is one fused pass per tensor when :math:`\delta=1`
    (``softshrink`` of :math:`v` written straight into the parameter) and two
    otherwise (scale into the parameter, then ``softshrink`` in place). It gives
    exactly the same result as :func:`primal`: both compute
    :math:`y - \operatorname{clip}(y, -\delta\lambda, \delta\lambda)` with
    :math:`y = \delta v` and the same rounded threshold. (Only the sign of a zero may
    differ: ``softshrink`` can return ``-0.0`` where the reference gives ``0.0``; the
    two compare equal, and ``-0.0`` counts as zero everywhere.)
    """
    if len(params) == 0:
        return
    if delta == 1.0:
        penalty.prox_into_(params, duals, 1.0)
        return
    for p, v in zip(params, duals, strict=True):
        torch.mul(v, delta, out=p)
    penalty.prox_into_(params, params, delta)


def decay_(param: Tensor, dual: Tensor | None, decay: float, delta: float) -> None:
    r"""Decoupled weight decay :math:`\theta \leftarrow (1 - \tau\omega)\theta` (``decay`` = τω).

    With a dual it moves the dual, :math:`v \leftarrow v - \tau\omega\theta/\delta`, so the
    next primal map gives the decayed θ; without one (penalty ``none``) it scales θ.
    """
    if dual is not None:
        dual.add_(param, alpha=-decay / delta)
    else:
        param.mul_(1 - decay)


def decay_foreach_(
    params: list[Tensor], duals: list[Tensor] | None, decay: float, delta: float
) -> None:
    """:func:`decay_` for lists of tensors on one device and dtype (``torch._foreach_*``)."""
    if duals is not None:
        torch._foreach_add_(duals, params, alpha=-decay / delta)
    else:
        torch._foreach_mul_(params, 1 - decay)


def decayed_buckets(
    params: list[Tensor],
    grads: list[Tensor],
    duals: list[Tensor],
    penalised: bool,
    decay: float,
    delta: float,
    *lists: list[Any],
) -> Iterator[tuple[list[Any], ...]]:
    """The device/dtype buckets ``(params, grads, duals, *lists)`` of a Bregman step.

    Each is yielded after its decoupled weight decay (:func:`decay_foreach_` with
    ``decay`` = τω, when nonzero); without a penalty the ``duals`` entries are ``None``.
    """
    dual_list: list[Any] = list(duals) if penalised else [None] * len(params)
    for bucket in group_by_device_dtype(params, grads, dual_list, *lists):
        if decay != 0:  # decoupled: theta <- (1 - lr wd) theta, through the dual if any
            decay_foreach_(bucket[0], bucket[2] if penalised else None, decay, delta)
        yield bucket


@torch.no_grad()
def sync_dual(
    p: Tensor, v: Tensor, penalty: Penalty, delta: float, dead_scale: float = 1.0
) -> None:
    r"""Make the dual ``v`` consistent with the parameter ``p`` for ``penalty``, in place.

    Live entries (or groups) get :math:`v = \theta/\delta + \partial J(\theta)`, so the
    primal map reproduces :math:`\theta` there (exactly in exact arithmetic for
    convex penalties; see :func:`init_dual` for nonconvex ones). Dead entries keep
    their dual multiplied by ``dead_scale``, which keeps their position relative to
    the threshold when λ changes; a dead entry whose dual would nevertheless bring
    it back to life (e.g. after the parameters were edited by hand) is reset to 0.
    """
    live = penalty.support(p)
    v_live = init_dual(p, penalty, delta)
    if dead_scale != 1.0:
        v.mul_(dead_scale)
    revived = penalty.support(penalty.prox(torch.mul(v, delta), delta)) & ~live
    v.masked_fill_(revived, 0.0)
    torch.where(live, v_live, v, out=v)


# ------------------------------------------------------------ optimizer helpers


def _duals_of(opt: SparseOptimizer, group: dict[str, Any]) -> Iterator[tuple[Tensor, Tensor]]:
    for p, state in opt._states_with(group, "dual"):
        yield p, state["dual"]


@torch.no_grad()
def rescale_duals(opt: SparseOptimizer, group: dict[str, Any], old: Penalty, new: Penalty) -> None:
    """``_lam_changed`` of the Bregman optimizers: keep θ, move the duals to the new λ.

    Live entries get the dual :func:`init_dual` gives for ``new``; dead ones are
    scaled by ``dead_threshold(new) / dead_threshold(old)`` (0 if the old threshold
    was 0: with λ_old = 0 a dead entry has θ = δv = 0).
    """
    delta = group["delta"]
    t_old, t_new = dead_threshold(old, delta), dead_threshold(new, delta)
    scale = t_new / t_old if t_old > 0 else 0.0
    for p, dual in _duals_of(opt, group):
        sync_dual(p, dual, new, delta, dead_scale=scale)


@torch.no_grad()
def sync_all_duals(opt: SparseOptimizer) -> None:
    """``finalize`` of the Bregman optimizers: re-derive every dual from its parameter."""
    for group in opt.param_groups:
        penalty = opt.penalty_of(group)
        if isinstance(penalty, NoPenalty):
            continue
        for p, dual in _duals_of(opt, group):
            sync_dual(p, dual, penalty, group["delta"])


class BregmanOptimizer(SparseOptimizer):
    r"""The dual variable's life cycle, shared by :class:`LinBreg` and :class:`AdaBreg`.

    - ``_init_state``: the dual :math:`v_0` of a penalised parameter (:func:`init_dual`,
      at its first step); a parameter whose group lost its penalty drops a stale dual;
    - :meth:`set_lam` keeps :math:`\theta` (:func:`rescale_duals`);
    - :meth:`finalize` re-derives the duals from the parameters (:func:`sync_all_duals`);
    - new entries of a widened parameter get the dual that reproduces their weights.
    """

    support_grows_with_steps = True

    def _init_state(
        self, group: dict[str, Any], penalty: Penalty, p: Tensor, state: dict[str, Any]
    ) -> None:
        if not isinstance(penalty, NoPenalty):
            if "dual" not in state:
                state["dual"] = init_dual(p, penalty, group["delta"])
        elif "dual" in state:
            del state["dual"]  # the group lost its penalty: the dual is stale

    @torch.no_grad()
    def _lam_changed(self, group: dict[str, Any], old: Penalty, new: Penalty) -> None:
        r"""Keep :math:`\theta` fixed when λ changes: re-derive the duals for ``new``.

        Live entries get :math:`v = \theta/\delta + \partial J_{\text{new}}(\theta)`; dead
        entries have :math:`v` scaled by the ratio of the new to the old zero-threshold
        of the prox (λ_new/λ_old for ℓ1 and group ℓ1, :math:`\sqrt{\lambda_\text{new}/\lambda_\text{old}}`
        for ℓ0), so they stay dead and keep their relative distance to entering the
        support. If λ_old = 0 their dual was 0 (θ = δv) and stays 0. Other state (Adam
        moments, momentum) is kept.
        """
        rescale_duals(self, group, old, new)

    @torch.no_grad()
    def finalize(self) -> None:
        """The parameters already are the sparse network; re-derive the duals from them.

        Duals of live entries are set from the current parameters and dead entries
        whose dual would revive them (parameters edited by hand, e.g. pruned) get a
        zero dual, so training can continue from exactly these parameters.
        """
        super().finalize()
        sync_all_duals(self)

    @torch.no_grad()
    def _state_resized(self, group: dict[str, Any], p: Tensor, dim: int, old_size: int) -> None:
        """New entries get the dual :func:`init_dual` gives their weights (θ kept)."""
        state = self.state.get(p, {})
        n_new = p.shape[dim] - old_size
        if "dual" not in state or n_new <= 0:
            return
        fresh = init_dual(p, self.penalty_of(group), group["delta"])
        state["dual"].narrow(dim, old_size, n_new).copy_(fresh.narrow(dim, old_size, n_new))
