r"""LinBreg: linearized Bregman iterations for sparse training (with optional momentum).

Implements Algorithms 1 and 2 of Bungert, Roith, Tenbrinck & Burger, "A Bregman
Learning Framework for Sparse Neural Networks", JMLR 23 (2022), arXiv 2105.04319.
Original code: github.com/TimRoith/BregmanLearning (``optimizers.py``).
"""

from __future__ import annotations

__all__ = ["LinBreg", "linbreg"]

from collections.abc import Callable, Iterable
from types import MappingProxyType
from typing import Any, NamedTuple, Unpack

import torch
from torch import Tensor

from sparseopt._validation import check_nonneg, check_positive, check_unit_interval
from sparseopt.optim._base import StepBatch
from sparseopt.optim._bregman import (
    BregmanOptimizer,
    decay_,
    decayed_buckets,
    primal,
    primal_foreach,
)
from sparseopt.optim._compiled import (
    check_compiled,
    hard,
    penalty_kind,
    resolve_compiled,
    run_compiled,
    soft,
)
from sparseopt.optim._functional import (
    SGDScalars,
    TensorLists,
    fused_sgd_,
    group_by_device_dtype,
    prepare_step,
    resolve_fused,
)
from sparseopt.optim._schema import CommonKeywords, Hyper
from sparseopt.optim.registry import get_optimizer_info
from sparseopt.penalties import NoPenalty, Penalty, dead_threshold

#: The registry entry: the one source of this class's defaults.
_RECIPE = get_optimizer_info("linbreg")


class LinBreg(BregmanOptimizer):
    r"""Linearized Bregman iterations (LinBreg), optionally with momentum.

    With the elastic penalty :math:`J_\delta(\theta) = J(\theta) + \frac{1}{2\delta}\|\theta\|^2`
    and a dual variable :math:`v \in \partial J_\delta(\theta)`:

    .. math::
        \begin{aligned}
        &v_0 = \theta_0/\delta + p_0,\quad p_0 \in \partial J(\theta_0)
            \qquad\text{(lazily, at the first step, from the current } \theta)\\
        &\textbf{for } t = 1, 2, \ldots:\\
        &\quad g_t = \nabla_\theta L(\theta_{t-1}) \quad(-\nabla \text{ if maximize})\\
        &\quad b_t = \beta b_{t-1} + (1-\beta) g_t,\quad b_0 = 0
            \qquad(b_t = g_t \text{ if } \beta = 0)\\
        &\quad v_t = v_{t-1} - \tau b_t\\
        &\quad \theta_t = \operatorname{prox}_{\delta J}(\delta v_t)
            \qquad(\ell_1:\ \theta_t = \delta\,\mathrm{soft}(v_t, \lambda))
        \end{aligned}

    This is the paper's Algorithm 2 (:math:`m_t = \tau b_t`, :math:`v_t = v_{t-1} - m_t`)
    with the momentum buffer kept in gradient units as in ``torch.optim.SGD`` (so an lr
    scheduler scales the whole step) and started at 0 as in the paper and the original
    code. (``torch.optim.SGD`` starts its buffer at the first gradient instead; from a
    1 %-dense start that first step is 1/(1-β) times larger in total and made the
    Fashion-MNIST ConvNet diverge at the paper's learning rate.) Hence with
    :math:`J = 0` (penalty ``none``, or λ = 0) LinBreg *is*
    ``torch.optim.SGD(lr=τδ, momentum=β, dampening=β)`` started from a zero momentum
    buffer (torch's dampening multiplies the gradient by 1 - dampening): bit for bit
    without momentum, and up to rounding with it (the buffer update is one fused
    ``lerp``, one pass over memory fewer than torch's ``mul`` + ``add``). Groups with penalty ``none``
    take exactly those steps on the parameters (no dual is stored).

    Inverse scale space: an entry stays exactly 0 until its dual leaves
    :math:`[-\lambda, \lambda]` (for ℓ1), so started sparse (see
    :func:`sparseopt.sparse_init_`) the support grows over training. The parameters
    themselves are the sparse network.

    Args:
        params: parameters or param groups; any group may set its own penalty, λ,
            grouping and hyperparameters. Real floating-point tensors only: complex
            parameters raise ``ValueError`` (the penalties act on real entries).
        lr: :math:`\tau`, the step on the dual (default: the registry recipe, docs/recipes.md), a number or a 1-element
            tensor. The primal step size is :math:`\tau\delta`; stability of the dense
            limit needs :math:`\tau\delta < 2/L`.
        penalty: ``"l1"`` (default), ``"l0"``, ``"tl1"``, ``"group_l1"``,
            ``"group_l0"``, ``"none"``, or a :class:`~sparseopt.penalties.Penalty`.
        lam: λ, the penalty weight (default: the registry recipe's λ of ``penalty``).
        groups: grouping of a group penalty (``"filter"``, ``"channel"``, ``"kernel"``).
        a: shape parameter of ``tl1`` (default: 1.0).
        group_weight: ``group_l1``'s ``"sqrt"`` (:math:`w_g=\sqrt{|g|}`,
            default) or ``"one"``; ``group_l0``'s ``"one"`` (default) or ``"size"``.
        delta: :math:`\delta > 0`, the weight of the elastic term (default: 1.0).
        momentum: :math:`\beta \in [0, 1)` (default: the recipe's; 0 is the paper's Alg. 1).
        weight_decay: decoupled weight decay :math:`\omega \ge 0` (default: 0), as in
            ``torch.optim.AdamW``: before each step the parameters shrink,
            :math:`\theta \leftarrow (1 - \tau\omega)\theta`. Since θ is computed from the
            dual, the dual moves with it, :math:`v \leftarrow v - \tau\omega\theta/\delta`
            (exact for ``l1``, ``group_l1`` and λ = 0: the next primal map gives
            :math:`(1 - \tau\omega)\theta`, dead entries stay dead; for ``l0``/``tl1`` a
            shrunk entry may fall below the threshold). Groups with penalty ``none``
            shrink the parameters themselves. Not part of the paper's algorithm.
        fused: run ``torch._fused_sgd_`` (what ``torch.optim.SGD(fused=True)`` runs, with dampening β)
            on the dual :math:`v`, then the primal map in one more pass; equal to the for-loop reference up to
            rounding. Default ``None``: fused on CPU unless ``foreach`` is given (see
            :func:`~sparseopt.optim._functional.resolve_fused`).
        foreach: use the ``torch._foreach_*`` implementation (default: decided by
            :func:`~sparseopt.optim._functional.resolve_foreach`).
        maximize: maximize the objective instead of minimizing (default: False).
        compiled: ``True`` runs each step as one ``torch.compile`` kernel per param-group
            batch (:mod:`sparseopt.optim._compiled`): each tensor's update reads
            :math:`g, v` (and :math:`b` with momentum, :math:`\theta` with weight decay)
            once and writes :math:`v, \theta` (and :math:`b`): 4 passes over memory, 6 with
            momentum, where the fused path makes 3 (5) in torch's kernel plus 2 in the
            primal map. Equal to the for-loop reference up to rounding. Compiled:
            penalties ``none``, ``l1`` and ``l0`` with every option (momentum, δ, weight
            decay, maximize); ``tl1``, the group penalties, the first momentum step (it
            creates the buffers) and inputs Inductor cannot compile (DTensor parameters,
            sparse gradients, other devices or dtypes) take the eager path (``fused``/
            ``foreach`` as set), with one warning where ``compiled=True`` is refused; a
            kernel that fails to build (no C++ compiler) switches the compiled path off
            for the process. ``lr`` and λ reach the kernel as tensor data, so schedules
            never recompile. Default ``None``: the eager path. It overrides ``fused``.

    State (per parameter):
        ``dual``: :math:`v`, for parameters of penalised groups.
        ``momentum_buffer``: :math:`b`, when ``momentum > 0``.

    :meth:`set_lam` rescales the duals so that :math:`\theta` does not move, and
    :meth:`finalize` re-derives them from the current parameters.
    Changing a group's ``delta`` moves :math:`\theta` at the next step unless
    :meth:`finalize` is called right after (it re-derives the duals for the new δ).

    Example:
        >>> w = torch.nn.Parameter(torch.zeros(3))
        >>> opt = LinBreg([w], lr=1.0, lam=0.5, momentum=0.0)
        >>> w.grad = torch.tensor([-1.0, -0.2, 0.0])
        >>> opt.step()  # v = (1, 0.2, 0): only the first entry leaves [-λ, λ]
        >>> w.detach()
        tensor([0.5000, 0.0000, 0.0000])

    References:
        - Bungert, Roith, Tenbrinck & Burger, "A Bregman Learning Framework for Sparse
          Neural Networks", JMLR 23 (2022), Algorithms 1 and 2. arXiv 2105.04319.
        - Original code: https://github.com/TimRoith/BregmanLearning
    """

    hyperparameters = MappingProxyType(
        {
            "delta": Hyper(check_positive, missing=1.0),
            "momentum": Hyper(check_unit_interval, missing=0.0),
            "weight_decay": Hyper(check_nonneg, missing=0.0),
            "fused": Hyper(missing=None),
            "compiled": Hyper(check_compiled, missing=None),
        }
    )
    state_keys = ("dual", "momentum_buffer")
    counts_steps = False

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = _RECIPE.defaults["lr"],
        *,
        delta: float = 1.0,
        momentum: float = _RECIPE.defaults["momentum"],
        weight_decay: float = 0.0,
        fused: bool | None = None,
        compiled: bool | None = None,
        **common: Unpack[CommonKeywords],
    ) -> None:
        super().__init__(params, locals())

    def _update(self, batch: StepBatch) -> None:
        linbreg(batch.params, batch.grads, *batch.state.values(), **batch.hyper)


def linbreg(
    params: list[Tensor],
    grads: list[Tensor],
    duals: list[Tensor],
    momentum_buffer_list: list[Tensor | None],
    *,
    lr: float | Tensor,
    delta: float = 1.0,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    penalty: Penalty | str | None = None,
    maximize: bool = False,
    foreach: bool | None = None,
    fused: bool | None = None,
    compiled: bool | None = None,
) -> None:
    r"""Functional LinBreg step; see :class:`LinBreg` for the algorithm.

    Updates ``params``, ``duals`` and ``momentum_buffer_list`` in place. ``duals`` is
    unused (may be empty) when the penalty is ``none``: the parameters then take
    plain SGD steps with rate :math:`\tau\delta`. ``momentum_buffer_list`` is
    ignored when ``momentum == 0``; otherwise its ``None`` entries are filled with new
    buffers (the first gradient), as in ``torch.optim.SGD``. A penalty given by name
    takes that penalty's default options. ``lr`` may be a 1-element tensor (read once).
    ``fused`` (default: where torch's fused SGD kernel exists) runs that kernel on the
    duals, then the primal map: see :class:`LinBreg`. ``compiled=True``: the compiled
    step (see :class:`LinBreg`), falling back to the path ``fused`` and ``foreach`` select.
    """
    # by default on CPU only: on CUDA the foreach path measured faster (docs/optimizers.md)
    use_fused = resolve_fused(fused, foreach, params, "sgd", devices=("cpu",))
    lr, penalty, foreach = prepare_step(params, lr, penalty, foreach)
    func = _multi_tensor_linbreg if foreach else _single_tensor_linbreg
    func = _fused_linbreg if use_fused else func
    hp = _Scalars(lr, delta, momentum, weight_decay, penalty, maximize)
    lists = (params, grads, duals, momentum_buffer_list)
    # the first momentum step (it creates the buffers) runs the eager path
    has_bufs = momentum == 0 or all(b is not None for b in momentum_buffer_list)
    if params and has_bufs and resolve_compiled(compiled, [*params, *grads], penalty, "LinBreg"):
        _compiled_linbreg(lists, hp, func)
    else:
        func(lists, hp)


class _Scalars(NamedTuple):
    """The scalars of one functional step (``lr`` as a number, the penalty as an object)."""

    lr: float
    delta: float
    momentum: float
    weight_decay: float
    penalty: Penalty
    maximize: bool


def _single_tensor_linbreg(lists: TensorLists, hp: _Scalars) -> None:
    params, grads, duals, momentum_buffer_list = lists
    lr, delta, momentum, weight_decay, penalty, maximize = hp
    penalised = not isinstance(penalty, NoPenalty)
    decay = lr * weight_decay
    for i, param in enumerate(params):
        if decay != 0:  # decoupled: theta <- (1 - lr wd) theta, through the dual if any
            decay_(param, duals[i] if penalised else None, decay, delta)
        grad = grads[i] if not maximize else -grads[i]
        if momentum != 0:
            buf = momentum_buffer_list[i]
            if buf is None:  # b_0 = 0, so b_1 = (1 - beta) g_1 (Alg. 2)
                buf = torch.mul(grad, 1 - momentum).detach()
                momentum_buffer_list[i] = buf
            else:
                buf.lerp_(grad, 1 - momentum)
            grad = buf
        if penalised:
            dual = duals[i]
            dual.add_(grad, alpha=-lr)
            primal(param, dual, penalty, delta)
        else:
            param.add_(grad, alpha=-(lr * delta))


def _multi_tensor_linbreg(lists: TensorLists, hp: _Scalars) -> None:
    params, grads, duals, momentum_buffer_list = lists
    lr, delta, momentum, weight_decay, penalty, maximize = hp
    if len(params) == 0:
        return
    penalised = not isinstance(penalty, NoPenalty)
    n = len(params)
    indices: list[Any] = list(range(n))
    buf_list: list[Any] = momentum_buffer_list if momentum != 0 else [None] * n
    decay = lr * weight_decay
    for dev_params, dev_grads, dev_duals, dev_bufs, dev_idx in decayed_buckets(
        params, grads, duals, penalised, decay, delta, buf_list, indices
    ):
        if maximize:
            dev_grads = torch._foreach_neg(dev_grads)
        if momentum != 0:
            if all(b is not None for b in dev_bufs):
                torch._foreach_lerp_(dev_bufs, dev_grads, 1 - momentum)
            else:
                for j, grad in enumerate(dev_grads):
                    buf = dev_bufs[j]
                    if buf is None:  # b_0 = 0, so b_1 = (1 - beta) g_1 (Alg. 2)
                        buf = torch.mul(grad, 1 - momentum).detach()
                        dev_bufs[j] = momentum_buffer_list[dev_idx[j]] = buf
                    else:
                        buf.lerp_(grad, 1 - momentum)
            dev_grads = dev_bufs
        if penalised:
            torch._foreach_add_(dev_duals, dev_grads, alpha=-lr)
            primal_foreach(dev_params, dev_duals, penalty, delta)
        else:
            torch._foreach_add_(dev_params, dev_grads, alpha=-(lr * delta))


def _fused_linbreg(lists: TensorLists, hp: _Scalars) -> None:
    params, grads, duals, momentum_buffer_list = lists
    lr, delta, momentum, weight_decay, penalty, maximize = hp
    if momentum != 0 and any(b is None for b in momentum_buffer_list):
        _multi_tensor_linbreg(lists, hp)  # the first step creates b_1 = (1 - beta) g_1
        return
    penalised = not isinstance(penalty, NoPenalty)
    n = len(params)
    buf_list: list[Any] = momentum_buffer_list if momentum != 0 else [None] * n
    decay = lr * weight_decay
    for dev_params, dev_grads, dev_duals, dev_bufs in decayed_buckets(
        params, grads, duals, penalised, decay, delta, buf_list
    ):
        # torch's fused SGD with dampening beta is b <- beta b + (1 - beta) g, v <- v - lr b:
        # on the dual (or on the parameters with rate lr delta without a penalty)
        target = dev_duals if penalised else dev_params
        sgd = SGDScalars(0.0, momentum, momentum, False, maximize)
        fused_sgd_((target, dev_grads, dev_bufs), lr if penalised else lr * delta, sgd, False)
        if penalised:
            primal_foreach(dev_params, dev_duals, penalty, delta)


# --------------------------------------------------------------------- compiled


def _linbreg_kernel(
    ws: list[Tensor],
    gs: list[Tensor],
    vs: list[Tensor],
    bufs: list[Tensor],
    s: Tensor,
    *,
    kind: str,
    has_momentum: bool,
    maximize: bool,
    decay: bool,
) -> None:
    r"""One LinBreg step as a pure function of torch ops, for ``torch.compile``.

    ``s`` = (:math:`\tau`, :math:`1-\beta`, :math:`\delta`, the threshold of the primal
    map on :math:`y=\delta v` — :math:`\delta\lambda` for ``l1``,
    :math:`\sqrt{2\delta\lambda}` for ``l0`` —, the decay factor — :math:`\tau\omega/\delta`
    on the dual, or :math:`1-\tau\omega` on :math:`\theta` for ``kind="none"`` —,
    :math:`\tau\delta`). The arithmetic is :func:`_single_tensor_linbreg`'s:
    :math:`b \leftarrow b + (1-\beta)(g-b)`, :math:`v \leftarrow v - \tau b`,
    :math:`\theta = \operatorname{prox}_{\delta J}(\delta v)`; each tensor's update reads
    :math:`g, b, v` (and :math:`\theta` with weight decay) once and writes :math:`b, v,
    \theta`. ``kind="none"``: the SGD step of unpenalised groups, rate :math:`\tau\delta`.
    """
    for i in range(len(ws)):
        w = ws[i]
        d = -gs[i] if maximize else gs[i]
        if has_momentum:
            b = bufs[i]
            b_new = b + s[1] * (d - b)  # lerp(b, g, 1 - beta)
            b.copy_(b_new)
            d = b_new
        if kind == "none":
            w.copy_((w * s[4] if decay else w) - s[5] * d)
            continue
        v = vs[i]
        v_new = (v - s[4] * w if decay else v) - s[0] * d
        v.copy_(v_new)
        y = v_new * s[2]
        w.copy_(soft(y, s[3]) if kind == "l1" else hard(y, s[3]))


def _compiled_linbreg(
    lists: TensorLists, hp: _Scalars, fallback: Callable[[TensorLists, _Scalars], None]
) -> None:
    """The compiled LinBreg step (``compiled=True``): :func:`_linbreg_kernel` per bucket.

    Penalties ``none``, ``l1`` and ``l0`` (checked by the caller); the momentum buffers
    exist. A bucket whose kernel cannot be built runs ``fallback`` (the eager step).
    """
    params, grads, duals, momentum_buffer_list = lists
    lr, delta, momentum, weight_decay, penalty, maximize = hp
    kind = penalty_kind(penalty)
    thresh = dead_threshold(penalty, delta)
    decay = lr * weight_decay
    factor = decay / delta if kind != "none" else 1.0 - decay
    numbers = (lr, 1 - momentum, delta, thresh, factor, lr * delta)
    flags = {"kind": kind, "has_momentum": momentum != 0, "maximize": maximize,
             "decay": decay != 0}  # fmt: skip
    n = len(params)
    bufs: list[Any] = momentum_buffer_list if momentum != 0 else [None] * n
    dual_list: list[Any] = list(duals) if kind != "none" else params  # placeholders
    for b_params, b_grads, b_duals, b_bufs in group_by_device_dtype(params, grads, dual_list, bufs):
        b_duals = b_duals if kind != "none" else []
        tensors = (b_params, b_grads, b_duals, b_bufs if momentum != 0 else [])
        if not run_compiled(_linbreg_kernel, tensors, numbers, flags, "LinBreg"):
            fallback((b_params, b_grads, b_duals, b_bufs), hp)
