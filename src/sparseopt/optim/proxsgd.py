r"""Proximal stochastic gradient descent: the Lasso baseline of sparse training.

A ``torch.optim.SGD`` step (with its momentum, dampening, Nesterov and weight decay,
bit for bit) followed by the proximal map of the penalty with step :math:`\tau`
(the learning rate): soft thresholding for ``l1``, hard thresholding for ``l0``, the
Tℓ1 closed form, group shrinkage for group penalties.

References:
    - N. Parikh & S. Boyd, "Proximal Algorithms", Foundations and Trends in
      Optimization 1(3), 2014, §4.2 (proximal gradient method).
    - Y. Nesterov, "Gradient methods for minimizing composite functions",
      Math. Program. 140 (2013).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from sparseopt.optim._base import (
    PENALTY_DEFAULTS,
    SparseOptimizer,
    group_by_device_dtype,
    increment_steps_,
    lr_value,
    new_step,
    penalty_defaults,
    resolve_foreach,
)
from sparseopt.optim._sgd import (
    batch_key,
    check_sgd_hyperparameters,
    sgd_direction,
    sgd_directions_foreach,
)
from sparseopt.optim.registry import get_optimizer_info
from sparseopt.penalties import Penalty, make_penalty

#: The registry entry whose recipe gives this class its defaults (one source).
_RECIPE = get_optimizer_info("proxsgd")

__all__ = ["ProxSGD", "proxsgd"]

#: The param-group fields (besides the penalty) that one functional call must share.
_BATCH_FIELDS = ("lr", "momentum", "dampening", "nesterov", "weight_decay", "maximize", "foreach")


@dataclass(slots=True)
class _Batch:
    """The tensors of the param groups stepped by one functional call."""

    group: dict[str, Any]  # the first of them: its hyperparameters are everyone's
    penalty: Penalty
    params: list[Tensor] = field(default_factory=list)
    grads: list[Tensor] = field(default_factory=list)
    bufs: list[Tensor | None] = field(default_factory=list)
    steps: list[Tensor] = field(default_factory=list)
    missing: bool = False  # whether a momentum buffer is created in this step


class ProxSGD(SparseOptimizer):
    r"""Proximal SGD: an SGD(-momentum) step, then the penalty's prox with step :math:`\tau`.

    With learning rate :math:`\tau` (``lr``) and the param group's penalty :math:`J`
    (λ included), one step with loss gradient :math:`g_t` is

    .. math::
        \begin{aligned}
        d_t &= \operatorname{SGD}(g_t + \text{wd}\cdot\theta_t)
              \quad\text{(momentum, dampening, Nesterov as in } \texttt{torch.optim.SGD})\\
        \theta_{t+1} &= \operatorname{prox}_{\tau J}(\theta_t - \tau d_t)
        \end{aligned}

    For ``l1``: :math:`\theta_{t+1} = \operatorname{sign}(y)\max(|y| - \tau\lambda, 0)`,
    :math:`y = \theta_t - \tau d_t`. The momentum buffer accumulates loss gradients
    only (the prox is not part of it). With penalty ``none`` or λ = 0 this *is*
    ``torch.optim.SGD`` (bitwise, for-loop and ``foreach``). The iterates are exactly
    sparse, so the deployable network is the parameters themselves.

    **Fused momentum.** In penalised param groups (λ > 0) with zero dampening the
    buffer update :math:`b \leftarrow g + \mu b` runs as one pass
    (``torch.add(g, b, alpha=mu, out=b)``) instead of ``torch.optim.SGD``'s two
    (``b.mul_(mu).add_(g)``): the same formula, rounded once instead of twice, so it
    differs from SGD's buffer in the last bit. Unpenalised groups (and λ = 0) keep
    SGD's two passes and stay bitwise equal to ``torch.optim.SGD``; the for-loop and
    ``foreach`` paths use the same kernels and agree bit for bit.

    Args:
        params: parameters or param groups (see :func:`sparseopt.param_groups`). Real
            floating-point tensors only: complex parameters raise ``ValueError`` (the
            penalties act on real entries).
        lr: :math:`\tau` (default: the registry recipe, docs/recipes.md), a number or a 1-element tensor.
        penalty: penalty name or :class:`~sparseopt.penalties.Penalty` (default ``"l1"``).
        lam: λ (default: the registry recipe's λ of ``penalty``).
        groups: grouping for group penalties (``"filter"``, ``"channel"``, ...).
        a: the Tℓ1 parameter.
        group_weight: ``"sqrt"`` (:math:`w_g=\sqrt{|g|}`) or ``"one"``.
        momentum: momentum factor (default: the recipe's).
        dampening: dampening for momentum (default 0).
        nesterov: Nesterov momentum (default False).
        weight_decay: L2 weight decay added to the gradient (default 0).
        foreach: use the multi-tensor (``torch._foreach_*``) implementation; ``None``
            picks it for dense tensors.
        maximize: maximize the objective instead of minimizing it.

    State (per parameter):
        - ``step``: float32 0-d CPU tensor, the number of steps taken (a plain number
          in a loaded state dict is converted, as in ``torch.optim.Adam``);
        - ``momentum_buffer``: the SGD momentum buffer (only when ``momentum != 0``),
          exactly as in ``torch.optim.SGD``.

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 0.1, -0.3]))
        >>> opt = ProxSGD([w], lr=0.5, lam=0.2)
        >>> (0.5 * w.pow(2).sum()).backward()  # gradient = w
        >>> _ = opt.step()  # soft(w - 0.5 w, 0.5 * 0.2)
        >>> w.detach()
        tensor([ 0.4000,  0.0000, -0.0500])

    References:
        - Parikh & Boyd, "Proximal Algorithms", Found. Trends Optim. 1(3), 2014.
        - Nesterov, "Gradient methods for minimizing composite functions",
          Math. Program. 140 (2013).
    """

    def __init__(
        self,
        params: Any,
        lr: float = _RECIPE.defaults["lr"],
        *,
        penalty: str | Penalty = "l1",
        lam: float | None = None,
        groups: str | None = None,
        a: float = 1.0,
        group_weight: str = "sqrt",
        momentum: float = _RECIPE.defaults["momentum"],
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
        maximize: bool = False,
    ) -> None:
        defaults: dict[str, Any] = {
            **PENALTY_DEFAULTS,
            "lr": lr,
            "lam": lam,
            "groups": groups,
            "a": a,
            "group_weight": group_weight,
            "momentum": momentum,
            "dampening": dampening,
            "nesterov": nesterov,
            "weight_decay": weight_decay,
            "foreach": foreach,
            "maximize": maximize,
        }
        defaults.update(
            penalty_defaults(penalty, lam, groups, a, group_weight, owner=type(self).__name__)
        )
        check_sgd_hyperparameters(defaults)
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("nesterov", False)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)

    def _validate_group(self, group: dict[str, Any]) -> None:
        check_sgd_hyperparameters(group)

    def _init_group(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        momentum_buffer_list: list[Tensor | None],
        state_steps: list[Tensor],
    ) -> bool:
        """Collect the group's tensors; return whether a momentum buffer is still missing."""
        momentum = group["momentum"] != 0
        missing = False
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            if grad.is_sparse:
                raise RuntimeError("ProxSGD does not support sparse gradients")
            state = self.state[p]
            if len(state) == 0:
                state["step"] = new_step()
            state_steps.append(state["step"])
            params.append(p)
            grads.append(grad)
            buf = state.get("momentum_buffer") if momentum else None
            missing = missing or (momentum and buf is None)
            momentum_buffer_list.append(buf)
        return missing

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step.

        Args:
            closure: optional callable that re-evaluates the model and returns the loss.
        """
        loss = self._closure_loss(closure)
        # Param groups with equal penalty and hyperparameters (such as the "conv" and
        # "linear" groups of sparseopt.param_groups) share one functional call: the
        # update is per tensor, so this only saves per-call overhead.
        batches: dict[Any, _Batch] = {}
        for group in self.param_groups:
            penalty = self.penalty_of(group)
            key = batch_key(penalty, group, _BATCH_FIELDS)
            batch = batches.get(key)
            if batch is None:
                batch = batches[key] = _Batch(group, penalty)
            if self._init_group(group, batch.params, batch.grads, batch.bufs, batch.steps):
                batch.missing = True
        for batch in batches.values():
            if not batch.params:
                continue
            group = batch.group
            proxsgd(
                batch.params,
                batch.grads,
                batch.bufs,
                batch.steps,
                lr=group["lr"],
                momentum=group["momentum"],
                dampening=group["dampening"],
                nesterov=group["nesterov"],
                weight_decay=group["weight_decay"],
                maximize=group["maximize"],
                penalty=batch.penalty,
                foreach=group["foreach"],
            )
            if batch.missing:  # new buffers were created: store them
                for p, buf in zip(batch.params, batch.bufs, strict=True):
                    self.state[p]["momentum_buffer"] = buf
        return loss

    def _lam_changed(self, group: dict[str, Any], old: Penalty, new: Penalty) -> None:
        """Nothing to do: the iterate is the parameter itself; the next prox uses the new λ."""


# ------------------------------------------------------------------------- functional


def proxsgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffer_list: list[Tensor | None],
    state_steps: list[Tensor],
    *,
    lr: float | Tensor,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    maximize: bool = False,
    penalty: str | Penalty = "l1",
    foreach: bool | None = None,
) -> None:
    r"""Functional proximal SGD step; see :class:`ProxSGD` for the algorithm.

    Updates ``params`` and ``state_steps`` (0-d step counters) in place; when
    ``momentum != 0`` the buffers are updated in place (in one pass when the penalty is
    not zero and ``dampening == 0``, see :class:`ProxSGD`) and ``None`` entries of
    ``momentum_buffer_list`` are replaced by new ones.
    ``penalty`` is a :class:`~sparseopt.penalties.Penalty` (λ included) or a name
    (then with that penalty's default λ). ``lr`` may be a 1-element tensor (read once).

    Example:
        >>> p = torch.tensor([1.0, 0.1])
        >>> step = torch.tensor(0.0)
        >>> proxsgd([p], [p.clone()], [None], [step], lr=0.5, penalty=make_penalty("l1", lam=0.2))
        >>> p
        tensor([0.4000, 0.0000])
    """
    penalty = make_penalty(penalty)
    lr = lr_value(lr)
    if len(params) == 0:
        return
    if resolve_foreach(foreach, params):
        func = _multi_tensor_proxsgd
    else:
        func = _single_tensor_proxsgd
    func(
        params,
        grads,
        momentum_buffer_list,
        state_steps,
        lr=lr,
        momentum=momentum,
        dampening=dampening,
        nesterov=nesterov,
        weight_decay=weight_decay,
        maximize=maximize,
        penalty=penalty,
    )


def _single_tensor_proxsgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffer_list: list[Tensor | None],
    state_steps: list[Tensor],
    *,
    lr: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    weight_decay: float,
    maximize: bool,
    penalty: Penalty,
) -> None:
    prox = not penalty.is_zero
    for i, param in enumerate(params):
        state_steps[i] += 1
        d, momentum_buffer_list[i] = sgd_direction(
            param,
            grads[i],
            momentum_buffer_list[i],
            weight_decay=weight_decay,
            momentum=momentum,
            dampening=dampening,
            nesterov=nesterov,
            maximize=maximize,
            fused=prox,
        )
        param.add_(d, alpha=-lr)
        if prox:
            penalty.prox_(param, lr)


def _multi_tensor_proxsgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffer_list: list[Tensor | None],
    state_steps: list[Tensor],
    *,
    lr: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    weight_decay: float,
    maximize: bool,
    penalty: Penalty,
) -> None:
    increment_steps_(state_steps)
    prox = not penalty.is_zero
    for device_params, device_grads, device_bufs, device_indices in group_by_device_dtype(
        params, grads, momentum_buffer_list, range(len(params))
    ):
        directions = sgd_directions_foreach(
            device_params,
            device_grads,
            device_bufs,
            weight_decay=weight_decay,
            momentum=momentum,
            dampening=dampening,
            nesterov=nesterov,
            maximize=maximize,
            fused=prox,
        )
        if momentum != 0:
            for j, i in enumerate(device_indices):
                momentum_buffer_list[i] = device_bufs[j]
        torch._foreach_add_(device_params, directions, alpha=-lr)
        if prox:
            penalty.prox_into_(device_params, device_params, lr)
