r"""AdaBreg: Adam-type linearized Bregman iterations for sparse training.

Implements Algorithm 3 of Bungert, Roith, Tenbrinck & Burger, "A Bregman Learning
Framework for Sparse Neural Networks", JMLR 23 (2022), arXiv 2105.04319.
Original code: github.com/TimRoith/BregmanLearning (``optimizers.py``, ``AdamBreg``).
"""

from __future__ import annotations

__all__ = ["AdaBreg", "adabreg"]

from collections.abc import Callable, Iterable, Iterator
from types import MappingProxyType
from typing import Any, NamedTuple, Unpack

import torch
from torch import Tensor

from sparseopt._validation import check_betas, check_nonneg, check_positive
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
    TensorLists,
    fused_adam_,
    group_by_device_dtype,
    prepare_step,
    resolve_fused,
)
from sparseopt.optim._schema import CommonKeywords, Hyper
from sparseopt.optim.registry import get_optimizer_info
from sparseopt.penalties import NoPenalty, Penalty, dead_threshold

#: The registry entry: the one source of this class's defaults.
_RECIPE = get_optimizer_info("adabreg")


class AdaBreg(BregmanOptimizer):
    r"""Adam-type linearized Bregman iterations (AdaBreg).

    LinBreg (:class:`~sparseopt.optim.linbreg.LinBreg`) with the dual step preconditioned
    by Adam's moments. With :math:`J_\delta(\theta) = J(\theta) + \frac{1}{2\delta}\|\theta\|^2`:

    .. math::
        \begin{aligned}
        &v_0 = \theta_0/\delta + p_0,\quad p_0 \in \partial J(\theta_0),\quad
            m_0 = s_0 = 0 \qquad\text{(lazily, at the first step)}\\
        &\textbf{for } t = 1, 2, \ldots:\\
        &\quad g_t = \nabla_\theta L(\theta_{t-1}) \quad(-\nabla \text{ if maximize})\\
        &\quad m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\qquad
              s_t = \beta_2 s_{t-1} + (1-\beta_2) g_t^2\\
        &\quad \hat m_t = m_t/(1-\beta_1^t),\qquad \hat s_t = s_t/(1-\beta_2^t)\\
        &\quad v_t = v_{t-1} - \tau\, \hat m_t / (\sqrt{\hat s_t} + \epsilon)\\
        &\quad \theta_t = \operatorname{prox}_{\delta J}(\delta v_t)
            \qquad(\ell_1:\ \theta_t = \delta\,\mathrm{soft}(v_t, \lambda))
        \end{aligned}

    Both moments are bias-corrected, as in the paper's Algorithm 3; the original code
    left out the first-moment correction until 2024. The arithmetic follows
    ``torch.optim.Adam`` operation by operation (denominator
    :math:`\sqrt{s_t}/\sqrt{1-\beta_2^t} + \epsilon`, step :math:`\tau/(1-\beta_1^t)`), so
    with :math:`J = 0` (penalty ``none``, or λ = 0) and :math:`\delta = 1` AdaBreg
    reproduces ``torch.optim.Adam`` bit for bit; with :math:`J = 0` and any δ it is
    Adam with learning rate :math:`\tau\delta`, which is what groups with penalty
    ``none`` do (no dual is stored for them).

    Started sparse (:func:`sparseopt.sparse_init_`), entries enter the support only
    once their dual leaves the threshold (inverse scale space). The parameters
    themselves are the sparse network.

    Args:
        params: parameters or param groups; any group may set its own penalty, λ,
            grouping and hyperparameters. Real floating-point tensors only: complex
            parameters raise ``ValueError`` (the penalties act on real entries).
        lr: :math:`\tau` (default: the registry recipe, docs/recipes.md), a number or a
            1-element tensor.
        penalty: ``"l1"`` (default), ``"l0"``, ``"tl1"``, ``"group_l1"``,
            ``"group_l0"``, ``"none"``, or a :class:`~sparseopt.penalties.Penalty`.
        lam: λ, the penalty weight (default: the registry recipe's λ of ``penalty``).
        groups: grouping of a group penalty (``"filter"``, ``"channel"``, ``"kernel"``).
        a: shape parameter of ``tl1`` (default: 1.0).
        group_weight: ``group_l1``'s ``"sqrt"`` (:math:`w_g=\sqrt{|g|}`,
            default) or ``"one"``; ``group_l0``'s ``"one"`` (default) or ``"size"``.
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1) (default: (0.9, 0.999)).
        eps: :math:`\epsilon \ge 0` (default: 1e-8).
        delta: :math:`\delta > 0`, the weight of the elastic term (default: 1.0).
        weight_decay: decoupled weight decay :math:`\omega \ge 0` (default: the registry
            recipe's 0.05, round 64 of docs/recipes.md; 0 is the paper's AdaBreg), as in
            ``torch.optim.AdamW``: before each step
            :math:`\theta \leftarrow (1 - \tau\omega)\theta`, carried by the dual as
            :math:`v \leftarrow v - \tau\omega\theta/\delta` (see
            :class:`~sparseopt.optim.linbreg.LinBreg`). With :math:`J = 0` and
            :math:`\delta = 1` AdaBreg is then ``torch.optim.AdamW``.
        fused: run ``torch._fused_adam_`` (what ``torch.optim.Adam(fused=True)`` runs) on the dual
            :math:`v`, then the primal map in one more pass; equal to the for-loop reference up to
            rounding. Default ``None``: fused unless ``foreach`` is given (see
            :func:`~sparseopt.optim._functional.resolve_fused`).
        foreach: use the ``torch._foreach_*`` implementation (default: decided by
            :func:`~sparseopt.optim._functional.resolve_foreach`).
        maximize: maximize the objective instead of minimizing (default: False).
        compiled: ``True`` runs each step as one ``torch.compile`` kernel per param-group
            batch (:mod:`sparseopt.optim._compiled`): each tensor's update reads
            :math:`g, m, s, v` once and writes :math:`m, s, v, \theta` (8 passes over
            memory, :math:`\theta` read too with weight decay; ``torch.optim.Adam`` makes
            7), where the fused path makes 7 in torch's kernel plus 3 in the primal map.
            Equal to the for-loop reference up to rounding. Compiled: penalties ``none``,
            ``l1`` and ``l0`` with every option (bias correction per parameter's own step
            count, δ, weight decay, maximize, betas, eps); ``tl1``, the group penalties and
            inputs Inductor cannot compile (DTensor parameters, sparse gradients, other
            devices or dtypes) take the eager path (``fused``/``foreach`` as set) with one
            warning; a kernel that fails to build (no C++ compiler) switches the compiled
            path off for the process. ``lr``, λ and the bias corrections reach the kernel
            as tensor data, so schedules never recompile. Default ``None``: the eager path.
            It overrides ``fused``.

    State (per parameter):
        ``step``: number of steps taken, a float32 0-d CPU tensor (as in ``torch.optim.Adam``;
        a plain number in a loaded state dict is converted).
        ``exp_avg``: :math:`m`. ``exp_avg_sq``: :math:`s`.
        ``dual``: :math:`v`, for parameters of penalised groups.

    :meth:`set_lam` rescales the duals so that :math:`\theta` does not move (the
    moments are kept), and :meth:`finalize` re-derives them from the parameters.
    Changing a group's ``delta`` moves :math:`\theta` at the next step unless
    :meth:`finalize` is called right after (it re-derives the duals for the new δ).

    Example:
        >>> w = torch.nn.Parameter(torch.zeros(3))
        >>> opt = AdaBreg([w], lr=1.0, lam=0.5)
        >>> w.grad = torch.tensor([-1.0, 0.2, 0.0])
        >>> opt.step()  # first step: v ≈ -lr * sign(g) = (1, -1, 0)
        >>> w.detach()
        tensor([ 0.5000, -0.5000,  0.0000])

    References:
        - Bungert, Roith, Tenbrinck & Burger, "A Bregman Learning Framework for Sparse
          Neural Networks", JMLR 23 (2022), Algorithm 3. arXiv 2105.04319.
        - Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
        - Original code: https://github.com/TimRoith/BregmanLearning
    """

    hyperparameters = MappingProxyType(
        {
            "betas": Hyper(lambda _, betas: check_betas(betas)),
            "eps": Hyper(check_nonneg, "epsilon"),
            "delta": Hyper(check_positive, missing=1.0),
            # a state saved before weight_decay existed ran without it (the recipe's 0.05
            # is the default of new optimizers only)
            "weight_decay": Hyper(check_nonneg, missing=0.0),
            "fused": Hyper(missing=None),
            "compiled": Hyper(check_compiled, missing=None),
        }
    )
    state_keys = ("dual", "exp_avg", "exp_avg_sq")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = _RECIPE.defaults["lr"],
        *,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        delta: float = 1.0,
        weight_decay: float = _RECIPE.defaults["weight_decay"],
        fused: bool | None = None,
        compiled: bool | None = None,
        **common: Unpack[CommonKeywords],
    ) -> None:
        super().__init__(params, locals())

    def _init_state(
        self, group: dict[str, Any], penalty: Penalty, p: Tensor, state: dict[str, Any]
    ) -> None:
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        super()._init_state(group, penalty, p, state)

    def _update(self, batch: StepBatch) -> None:
        hyper = dict(batch.hyper)
        beta1, beta2 = hyper.pop("betas")
        adabreg(
            batch.params,
            batch.grads,
            *batch.state.values(),
            batch.steps,
            beta1=beta1,
            beta2=beta2,
            **hyper,
        )


def adabreg(
    params: list[Tensor],
    grads: list[Tensor],
    duals: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: float | Tensor,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    delta: float = 1.0,
    weight_decay: float = _RECIPE.defaults["weight_decay"],
    penalty: Penalty | str | None = None,
    maximize: bool = False,
    foreach: bool | None = None,
    fused: bool | None = None,
    compiled: bool | None = None,
) -> None:
    r"""Functional AdaBreg step; see :class:`AdaBreg` for the algorithm.

    Updates ``params``, ``duals``, the moments and ``state_steps`` (0-d CPU tensors)
    in place. ``duals`` is unused (may be empty) when the penalty is ``none``: the
    parameters then take Adam steps with learning rate :math:`\tau\delta`. A penalty
    given by name takes that penalty's default options. ``lr`` may be a 1-element
    tensor (read once). ``fused`` (default: where torch's fused Adam kernel exists)
    runs that kernel on the duals, then the primal map: see :class:`AdaBreg`.
    ``compiled=True``: the compiled step (see :class:`AdaBreg`), falling back to the path
    ``fused`` and ``foreach`` select.
    """
    use_fused = resolve_fused(fused, foreach, params, "adam")
    lr, penalty, foreach = prepare_step(params, lr, penalty, foreach, state_steps)
    func = _multi_tensor_adabreg if foreach else _single_tensor_adabreg
    func = _fused_adabreg if use_fused else func
    hp = _Scalars(lr, beta1, beta2, eps, delta, weight_decay, penalty, maximize)
    lists = (params, grads, duals, exp_avgs, exp_avg_sqs, state_steps)
    if params and resolve_compiled(compiled, [*params, *grads], penalty, "AdaBreg"):
        _compiled_adabreg(lists, hp, func)
    else:
        func(lists, hp)


class _Scalars(NamedTuple):
    """The scalars of one functional step (``lr`` as a number, the penalty as an object)."""

    lr: float
    beta1: float
    beta2: float
    eps: float
    delta: float
    weight_decay: float
    penalty: Penalty
    maximize: bool


def _single_tensor_adabreg(lists: TensorLists, hp: _Scalars) -> None:
    params, grads, duals, exp_avgs, exp_avg_sqs, state_steps = lists
    lr, beta1, beta2, eps, delta, weight_decay, penalty, maximize = hp
    penalised = not isinstance(penalty, NoPenalty)
    decay = lr * weight_decay
    for i, param in enumerate(params):
        if decay != 0:  # decoupled: theta <- (1 - lr wd) theta, through the dual if any
            decay_(param, duals[i] if penalised else None, decay, delta)
        grad = grads[i] if not maximize else -grads[i]
        exp_avg, exp_avg_sq, step_t = exp_avgs[i], exp_avg_sqs[i], state_steps[i]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = step_t.item()
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = lr / bias_correction1
        denom = (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(eps)
        if penalised:
            dual = duals[i]
            dual.addcdiv_(exp_avg, denom, value=-step_size)
            primal(param, dual, penalty, delta)
        else:
            param.addcdiv_(exp_avg, denom, value=-step_size * delta)


def _buckets(lists: TensorLists, hp: _Scalars) -> Iterator[tuple[list[Any], ...]]:
    """The device/dtype buckets (params, grads, duals, m, s, steps), decayed (see decayed_buckets)."""
    params, grads, duals, *rest = lists
    penalised = not isinstance(hp.penalty, NoPenalty)
    return decayed_buckets(
        params, grads, duals, penalised, hp.lr * hp.weight_decay, hp.delta, *rest
    )


def _multi_tensor_adabreg(lists: TensorLists, hp: _Scalars) -> None:
    lr, beta1, beta2, eps, delta, _, penalty, maximize = hp
    penalised = not isinstance(penalty, NoPenalty)
    for dev_params, dev_grads, dev_duals, dev_m, dev_s, dev_steps in _buckets(lists, hp):
        if maximize:
            dev_grads = torch._foreach_neg(dev_grads)
        torch._foreach_lerp_(dev_m, dev_grads, 1 - beta1)
        torch._foreach_mul_(dev_s, beta2)
        torch._foreach_addcmul_(dev_s, dev_grads, dev_grads, 1 - beta2)
        del dev_grads
        steps = [s.item() for s in dev_steps]
        step_sizes = [-(lr / (1 - beta1**s)) * (1.0 if penalised else delta) for s in steps]
        bias_correction2_sqrt = [(1 - beta2**s) ** 0.5 for s in steps]
        if penalised:
            # The primal map overwrites the parameters at the end of the step, so they
            # serve as the scratch space for the denominator: no allocation.
            denom = dev_params
            for d, s in zip(denom, dev_s, strict=True):
                torch.sqrt(s, out=d)
        else:
            denom = torch._foreach_sqrt(dev_s)
        torch._foreach_div_(denom, bias_correction2_sqrt)
        torch._foreach_add_(denom, eps)
        if penalised:
            torch._foreach_addcdiv_(dev_duals, dev_m, denom, step_sizes)
            primal_foreach(dev_params, dev_duals, penalty, delta)
        else:
            torch._foreach_addcdiv_(dev_params, dev_m, denom, step_sizes)


def _fused_adabreg(lists: TensorLists, hp: _Scalars) -> None:
    lr, beta1, beta2, eps, delta, _, penalty, maximize = hp
    penalised = not isinstance(penalty, NoPenalty)
    for dev_params, dev_grads, dev_duals, dev_m, dev_s, dev_steps in _buckets(lists, hp):
        # torch's fused Adam on the dual (v -= lr m^/(sqrt(s^) + eps)), or on the
        # parameters with rate lr delta when there is no penalty; then the primal map
        target = dev_duals if penalised else dev_params
        rate = lr if penalised else lr * delta
        fused_adam_(
            (target, dev_grads, dev_m, dev_s, dev_steps), rate, (beta1, beta2), eps, maximize
        )
        if penalised:
            primal_foreach(dev_params, dev_duals, penalty, delta)


# --------------------------------------------------------------------- compiled


def _adabreg_kernel(
    ws: list[Tensor],
    gs: list[Tensor],
    vs: list[Tensor],
    ms: list[Tensor],
    ss: list[Tensor],
    s: Tensor,
    *,
    kind: str,
    maximize: bool,
    decay: bool,
) -> None:
    r"""One AdaBreg step as a pure function of torch ops, for ``torch.compile``.

    ``s`` = (:math:`1-\beta_1`, :math:`\beta_2`, :math:`1-\beta_2`, :math:`\epsilon`,
    :math:`\delta`, the threshold of the primal map on :math:`y=\delta v` —
    :math:`\delta\lambda` for ``l1``, :math:`\sqrt{2\delta\lambda}` for ``l0`` —, the
    decay factor — :math:`\tau\omega/\delta` on the dual, or :math:`1-\tau\omega` on
    :math:`\theta` for ``kind="none"`` —, then per tensor :math:`i` the step size
    :math:`\tau/(1-\beta_1^{t_i})` (times δ for ``kind="none"``), then per tensor
    :math:`\sqrt{1-\beta_2^{t_i}}`). The arithmetic is :func:`_single_tensor_adabreg`'s
    (``torch.optim.Adam``'s denominator :math:`\sqrt{s_t}/\sqrt{1-\beta_2^t}+\epsilon`);
    each tensor's update reads :math:`g, m, s, v` (and :math:`\theta` with weight decay)
    once and writes :math:`m, s, v, \theta`. ``kind="none"``: the Adam step of
    unpenalised groups on :math:`\theta` (no dual).
    """
    n = len(ws)
    for i in range(n):
        w, m, sq = ws[i], ms[i], ss[i]
        g = -gs[i] if maximize else gs[i]
        m_new = m + s[0] * (g - m)  # lerp(m, g, 1 - beta1)
        m.copy_(m_new)
        sq_new = sq * s[1] + s[2] * g * g
        sq.copy_(sq_new)
        step = s[7 + i] * m_new / (torch.sqrt(sq_new) / s[7 + n + i] + s[3])
        if kind == "none":
            w.copy_((w * s[6] if decay else w) - step)
            continue
        v = vs[i]
        v_new = (v - s[6] * w if decay else v) - step
        v.copy_(v_new)
        y = v_new * s[4]
        w.copy_(soft(y, s[5]) if kind == "l1" else hard(y, s[5]))


def _compiled_adabreg(
    lists: TensorLists, hp: _Scalars, fallback: Callable[[TensorLists, _Scalars], None]
) -> None:
    """The compiled AdaBreg step (``compiled=True``): :func:`_adabreg_kernel` per bucket.

    Penalties ``none``, ``l1`` and ``l0`` (checked by the caller). A bucket whose kernel
    cannot be built runs ``fallback`` (the eager step) on its tensors.
    """
    params, grads, duals, exp_avgs, exp_avg_sqs, state_steps = lists
    lr, beta1, beta2, eps, delta, weight_decay, penalty, maximize = hp
    kind = penalty_kind(penalty)
    thresh = dead_threshold(penalty, delta)
    decay = lr * weight_decay
    factor = decay / delta if kind != "none" else 1.0 - decay
    rate = lr if kind != "none" else lr * delta
    flags = {"kind": kind, "maximize": maximize, "decay": decay != 0}
    dual_list: list[Any] = list(duals) if kind != "none" else params  # placeholders
    for bucket in group_by_device_dtype(
        params, grads, dual_list, exp_avgs, exp_avg_sqs, state_steps
    ):
        b_params, b_grads, b_duals, b_m, b_s, b_steps = bucket
        b_duals = b_duals if kind != "none" else []
        steps = [t.item() for t in b_steps]
        numbers = (
            1 - beta1, beta2, 1 - beta2, eps, delta, thresh, factor,
            *(rate / (1 - beta1**t) for t in steps),
            *((1 - beta2**t) ** 0.5 for t in steps),
        )  # fmt: skip
        tensors = (b_params, b_grads, b_duals, b_m, b_s)
        if not run_compiled(_adabreg_kernel, tensors, numbers, flags, "AdaBreg"):
            # the step counters were incremented already: the fallback must not again
            fallback((b_params, b_grads, b_duals, b_m, b_s, b_steps), hp)
