r"""Proximal stochastic gradient descent: with ℓ1 the Lasso baseline of sparse training;
with ℓ0 (its recipe's penalty since round 99 of docs/recipes.md) iterative hard
thresholding.

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

__all__ = ["ProxSGD", "proxsgd"]

from collections.abc import Callable
from types import MappingProxyType
from typing import Any, NamedTuple, Unpack

import torch
from torch import Tensor

from sparseopt.optim._base import StepBatch
from sparseopt.optim._compiled import (
    check_compiled,
    hard,
    penalty_kind,
    resolve_compiled,
    run_compiled,
    sgd_direction_expr,
    sgd_scalars,
    soft,
)
from sparseopt.optim._functional import (
    TensorLists,
    fused_sgd_,
    group_by_device_dtype,
    prepare_step,
    resolve_fused,
)
from sparseopt.optim._schema import Hyper
from sparseopt.optim._sgd import (
    SGDKeywords,
    SGDOptimizer,
    SGDScalars,
    sgd_direction,
    sgd_directions_foreach,
)
from sparseopt.optim.registry import get_optimizer_info
from sparseopt.penalties import Penalty, dead_threshold

#: The registry entry: the one source of this class's defaults.
_RECIPE = get_optimizer_info("proxsgd")


class ProxSGD(SGDOptimizer):
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
        penalty: penalty name or :class:`~sparseopt.penalties.Penalty` (default: the
            recipe's, ``"l0"``; ``"l1"`` for the Lasso).
        lam: λ (default: the registry recipe's λ of ``penalty``).
        groups: grouping for group penalties (``"filter"``, ``"channel"``, ...).
        a: the Tℓ1 parameter.
        group_weight: ``group_l1``'s ``"sqrt"`` (:math:`w_g=\sqrt{|g|}`,
            default) or ``"one"``; ``group_l0``'s ``"one"`` (default) or ``"size"``.
        momentum: momentum factor (default: the recipe's).
        dampening: dampening for momentum (default 0).
        nesterov: Nesterov momentum (default False).
        weight_decay: L2 weight decay added to the gradient (default 0).
        fused: run ``torch._fused_sgd_`` (what ``torch.optim.SGD(fused=True)`` runs), then the prox
            in one more pass; equal to the for-loop reference up to
            rounding. Default ``None``: fused unless ``foreach`` is given (see
            :func:`~sparseopt.optim._functional.resolve_fused`).
        foreach: use the multi-tensor (``torch._foreach_*``) implementation; ``None``
            picks it for dense tensors.
        maximize: maximize the objective instead of minimizing it.
        compiled: ``True`` runs each step as one ``torch.compile`` kernel per param-group
            batch (:mod:`sparseopt.optim._compiled`): each tensor's update reads
            :math:`g, b, w` once and writes :math:`b, w` (5 passes over memory, as
            ``torch.optim.SGD(fused=True)``, where the fused path adds 2 for the prox).
            Equal to the for-loop reference up to rounding (unpenalised groups then equal
            ``torch.optim.SGD`` up to rounding, not bit for bit). Compiled: penalties
            ``none``, ``l1`` and ``l0`` with every SGD option (momentum, dampening,
            Nesterov, weight decay, maximize); ``tl1``, the group penalties, the first
            momentum step (it creates the buffers) and inputs Inductor cannot compile
            (DTensor parameters, sparse gradients, other devices or dtypes) take the eager
            path (``fused``/``foreach`` as set), with one warning where ``compiled=True``
            is refused; a kernel that fails to build (no C++ compiler) switches the
            compiled path off for the process. ``lr`` and λ reach the kernel as tensor
            data, so schedules never recompile. Default ``None``: the eager path. It
            overrides ``fused``.

    State (per parameter):
        - ``step``: float32 0-d CPU tensor, the number of steps taken (a plain number
          in a loaded state dict is converted, as in ``torch.optim.Adam``);
        - ``momentum_buffer``: the SGD momentum buffer (only when ``momentum != 0``),
          exactly as in ``torch.optim.SGD``.

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 0.1, -0.3]))
        >>> opt = ProxSGD([w], lr=0.5, penalty="l1", lam=0.2)
        >>> (0.5 * w.pow(2).sum()).backward()  # gradient = w
        >>> _ = opt.step()  # soft(w - 0.5 w, 0.5 * 0.2)
        >>> w.detach()
        tensor([ 0.4000,  0.0000, -0.0500])

    References:
        - Parikh & Boyd, "Proximal Algorithms", Found. Trends Optim. 1(3), 2014.
        - Nesterov, "Gradient methods for minimizing composite functions",
          Math. Program. 140 (2013).
    """

    hyperparameters = MappingProxyType(
        {
            **SGDOptimizer.hyperparameters,
            "fused": Hyper(missing=None),
            "compiled": Hyper(check_compiled, missing=None),
        }
    )
    state_keys = ("momentum_buffer",)
    #: The recipe's penalty (``l0`` since round 99, docs/recipes.md) is the default here too.
    common_defaults = MappingProxyType(
        {**SGDOptimizer.common_defaults, "penalty": _RECIPE.defaults["penalty"]}
    )

    def __init__(
        self,
        params: Any,
        lr: float = _RECIPE.defaults["lr"],
        *,
        momentum: float = _RECIPE.defaults["momentum"],
        fused: bool | None = None,
        compiled: bool | None = None,
        **common: Unpack[SGDKeywords],
    ) -> None:
        super().__init__(params, locals())

    def _update(self, batch: StepBatch) -> None:
        proxsgd(batch.params, batch.grads, *batch.state.values(), batch.steps, **batch.hyper)

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
    fused: bool | None = None,
    compiled: bool | None = None,
) -> None:
    r"""Functional proximal SGD step; see :class:`ProxSGD` for the algorithm.

    Updates ``params`` and ``state_steps`` (0-d step counters) in place; when
    ``momentum != 0`` the buffers are updated in place (in one pass when the penalty is
    not zero and ``dampening == 0``, see :class:`ProxSGD`) and ``None`` entries of
    ``momentum_buffer_list`` are replaced by new ones.
    ``penalty`` is a :class:`~sparseopt.penalties.Penalty` (λ included) or a name
    (then with that penalty's default λ). ``lr`` may be a 1-element tensor (read once).
    ``compiled=True``: the compiled step (see :class:`ProxSGD`), falling back to the path
    ``fused`` and ``foreach`` select.

    Example:
        >>> from sparseopt.penalties import make_penalty
        >>> p = torch.tensor([1.0, 0.1])
        >>> step = torch.tensor(0.0)
        >>> proxsgd([p], [p.clone()], [None], [step], lr=0.5, penalty=make_penalty("l1", lam=0.2))
        >>> p
        tensor([0.4000, 0.0000])
    """
    use_fused = resolve_fused(fused, foreach, params, "sgd")
    lr, penalty, foreach = prepare_step(params, lr, penalty, foreach, state_steps)
    func = _multi_tensor_proxsgd if foreach else _single_tensor_proxsgd
    func = _fused_proxsgd if use_fused else func
    sgd = SGDScalars(
        weight_decay, momentum, dampening, nesterov, maximize, fused=not penalty.is_zero
    )
    hp = _Scalars(lr, sgd, penalty)
    lists = (params, grads, momentum_buffer_list)
    # the first momentum step (it creates the buffers) runs the eager path
    has_bufs = momentum == 0 or all(b is not None for b in momentum_buffer_list)
    if params and has_bufs and resolve_compiled(compiled, [*params, *grads], penalty, "ProxSGD"):
        _compiled_proxsgd(lists, hp, func)
    else:
        func(lists, hp)


class _Scalars(NamedTuple):
    """The scalars of one functional step (``lr`` as a number, the penalty as an object)."""

    lr: float
    sgd: SGDScalars
    penalty: Penalty


def _single_tensor_proxsgd(lists: TensorLists, hp: _Scalars) -> None:
    params, grads, momentum_buffer_list = lists
    lr, sgd, penalty = hp
    prox = not penalty.is_zero
    for i, param in enumerate(params):
        d, momentum_buffer_list[i] = sgd_direction(param, grads[i], momentum_buffer_list[i], sgd)
        param.add_(d, alpha=-lr)
        if prox:
            penalty.prox_(param, lr)


def _multi_tensor_proxsgd(lists: TensorLists, hp: _Scalars) -> None:
    params, grads, momentum_buffer_list = lists
    lr, sgd, penalty = hp
    prox = not penalty.is_zero
    for device_params, device_grads, device_bufs, device_indices in group_by_device_dtype(
        params, grads, momentum_buffer_list, range(len(params))
    ):
        directions = sgd_directions_foreach(device_params, device_grads, device_bufs, sgd)
        if sgd.momentum != 0:
            for j, i in enumerate(device_indices):
                momentum_buffer_list[i] = device_bufs[j]
        torch._foreach_add_(device_params, directions, alpha=-lr)
        if prox:
            penalty.prox_into_(device_params, device_params, lr)


def _fused_proxsgd(lists: TensorLists, hp: _Scalars) -> None:
    params, grads, momentum_buffer_list = lists
    lr, sgd, penalty = hp
    missing = [b is None for b in momentum_buffer_list]
    if sgd.momentum != 0 and any(missing) and not all(missing):
        _multi_tensor_proxsgd(lists, hp)  # some buffers new, some not: one call cannot do both
        return
    first = sgd.momentum != 0 and all(missing)
    if first:  # torch's kernel sets new buffers to the direction (allocated here)
        momentum_buffer_list[:] = [torch.empty_like(g) for g in grads]
    for device_params, device_grads, device_bufs in group_by_device_dtype(
        params, grads, momentum_buffer_list
    ):
        # torch.optim.SGD(fused=True)'s step, then the prox with step lr
        fused_sgd_((device_params, device_grads, device_bufs), lr, sgd, first)
        if not penalty.is_zero:
            penalty.prox_into_(device_params, device_params, lr)


# --------------------------------------------------------------------- compiled


def _proxsgd_kernel(
    ws: list[Tensor],
    gs: list[Tensor],
    bufs: list[Tensor],
    s: Tensor,
    *,
    kind: str,
    has_momentum: bool,
    nesterov: bool,
    maximize: bool,
    decay: bool,
) -> None:
    r"""One ProxSGD step as a pure function of torch ops, for ``torch.compile``.

    ``s`` = (:math:`\tau`, momentum, 1 − dampening, weight decay, the threshold:
    :math:`\tau\lambda` for ``l1``, :math:`\sqrt{2\tau\lambda}` for ``l0``). The
    arithmetic is :func:`_single_tensor_proxsgd`'s: ``torch.optim.SGD``'s direction
    :math:`d` (:func:`~sparseopt.optim._compiled.sgd_direction_expr`), then
    :math:`w \leftarrow \operatorname{prox}_{\tau J}(w - \tau d)`; each tensor's update
    reads :math:`g, b, w` once and writes :math:`b, w`. ``kind="none"``: no prox (SGD).
    """
    for i in range(len(ws)):
        w = ws[i]
        buf = bufs[i] if has_momentum else None
        d = sgd_direction_expr(
            w, gs[i], buf, s[1], s[2], s[3],
            has_momentum=has_momentum, nesterov=nesterov, maximize=maximize, decay=decay,
        )  # fmt: skip
        new = w - s[0] * d
        if kind == "l1":
            new = soft(new, s[4])
        elif kind == "l0":
            new = hard(new, s[4])
        w.copy_(new)


def _compiled_proxsgd(
    lists: TensorLists, hp: _Scalars, fallback: Callable[[TensorLists, _Scalars], None]
) -> None:
    """The compiled ProxSGD step (``compiled=True``): :func:`_proxsgd_kernel` per bucket.

    Penalties ``none``, ``l1`` and ``l0`` (checked by the caller); the momentum buffers
    exist. A bucket whose kernel cannot be built runs ``fallback`` (the eager step).
    """
    params, grads, momentum_buffer_list = lists
    lr, sgd, penalty = hp
    momentum = sgd.momentum
    kind = "none" if penalty.is_zero else penalty_kind(penalty)
    sgd_numbers, sgd_flags = sgd_scalars(sgd)
    numbers = (lr, *sgd_numbers, dead_threshold(penalty, lr))
    flags = {"kind": kind, **sgd_flags}
    n = len(params)
    bufs: list[Any] = momentum_buffer_list if momentum != 0 else [None] * n
    for b_params, b_grads, b_bufs in group_by_device_dtype(params, grads, bufs):
        tensors = (b_params, b_grads, b_bufs if momentum != 0 else [])
        if not run_compiled(_proxsgd_kernel, tensors, numbers, flags, "ProxSGD"):
            fallback((b_params, b_grads, b_bufs), hp)
