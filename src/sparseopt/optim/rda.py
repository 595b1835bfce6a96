r"""ℓ1-regularized dual averaging (ℓ1-RDA) with the initial weights as prox centre.

Xiao's regularized dual averaging replaces the SGD iterate by the minimiser of the
average of all past linearised losses plus the regulariser and a growing proximal
term. For :math:`\lambda\|w\|_1` the minimiser is a soft threshold of the *averaged*
gradient, with a threshold that grows like :math:`\sqrt t`: unlike proximal SGD,
whose per-step threshold :math:`\tau\lambda` vanishes with the learning rate, RDA
keeps producing genuinely sparse iterates. He et al. make it work for deep networks
by centring the proximal term at the (random) initial weights :math:`w_0` instead of
at 0. An optional AdaGrad-type diagonal metric (Duchi, Hazan & Singer) gives the
adaptive variant.

References:
    - L. Xiao, "Dual averaging methods for regularized stochastic learning and online
      optimization", JMLR 11 (2010) 2543-2596.
    - X. He, D. Jia, Y. Xu, J. Zhang & Z. Zhao (He et al.), "Make ℓ1 regularization
      effective in training sparse CNN", Comput. Optim. Appl. 77 (2020),
      arXiv:1807.04222.
    - J. Duchi, E. Hazan & Y. Singer, "Adaptive subgradient methods for online learning
      and stochastic optimization", JMLR 12 (2011) (primal-dual / RDA form).
    - Y. Nesterov, "Primal-dual subgradient methods for convex problems", Math.
      Program. 120 (2009) (weighted dual averaging, our treatment of ``lr``).
    - No official code of He et al. is public; this implementation follows the papers.
"""

from __future__ import annotations

__all__ = ["RDA", "rda"]

import math
import warnings
from collections.abc import Callable, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple, Unpack

import torch
from torch import Tensor

from sparseopt._validation import check_nonneg, check_positive
from sparseopt.fsdp import foreach_copy_
from sparseopt.groups import group_dims
from sparseopt.optim._base import SparseOptimizer, StepBatch
from sparseopt.optim._compiled import (
    check_compiled,
    hard,
    penalty_kind,
    resolve_compiled,
    run_compiled,
    soft,
)
from sparseopt.optim._functional import TensorLists, group_by_device_dtype, prepare_step
from sparseopt.optim._schema import COMMON_DEFAULTS, CommonKeywords, Hyper
from sparseopt.optim.registry import get_optimizer_info
from sparseopt.penalties import (
    L0,
    L1,
    TL1,
    GroupL0,
    GroupL1,
    NoPenalty,
    Penalty,
    dead_threshold,
    group_hard_threshold,
    group_soft_threshold,
    tl1_threshold,
)

#: The registry entry: the one source of this class's defaults.
_RECIPE = get_optimizer_info("rda")


#: Penalties with a closed-form prox under the adaptive (diagonal) metric.
_ADAPTIVE_PENALTIES = (NoPenalty, L1, L0, TL1, GroupL1, GroupL0)


#: Adaptive penalties whose iterate is computed from the metric c itself
#: (:func:`_adaptive_metric_iterate_`); ``l1``, ``l0`` and ``none`` use the scaled form.
_METRIC_PENALTIES = (TL1, GroupL1, GroupL0)


#: The running sums of learning rates, kept as float64 0-d CPU tensors.
_SUM_KEYS = ("lr_sum", "lr_sq_sum")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"Invalid {name} value: {value!r}; expected a bool")


def _as_sum(value: Any) -> Tensor:
    """A running sum as the float64 0-d CPU tensor RDA keeps (from a number or a tensor)."""
    return torch.as_tensor(value, dtype=torch.float64, device="cpu").reshape(()).clone()


class RDA(SparseOptimizer):
    r"""ℓ1-regularized dual averaging with the initial weights :math:`w_0` as prox centre.

    With a constant learning rate :math:`a` (``lr``), loss gradients :math:`g_k` and
    their mean :math:`\bar g_t = \frac1t\sum_{k\le t} g_k`, step :math:`t` sets

    .. math::
        w_{t+1} = \arg\min_w\; \langle \bar g_t, w\rangle + \lambda P(w)
            + \frac{1}{2c_t}\|w - w_0\|^2
        = \operatorname{prox}_{c_t\lambda P}\big(w_0 - c_t\,\bar g_t\big),
        \qquad c_t = \frac{a\sqrt t}{\gamma},

    where :math:`w_0` is the parameter at its first step (He et al.'s prox centre)
    and λP the param group's penalty. For ``l1``:
    :math:`w_{t+1} = \operatorname{soft}(w_0 - c_t\bar g_t,\ c_t\lambda)`, which is
    Xiao's ℓ1-RDA with :math:`\beta_t = \gamma\sqrt t/a` (and prox centre :math:`w_0`
    instead of 0). Parameters with penalty ``none`` get the dense limit
    :math:`w_0 - c_t\bar g_t`; group penalties (and ``l0``, ``tl1``) use their prox
    with the scalar step :math:`c_t`.

    **Learning rate schedules.** A varying ``lr`` :math:`a_k` enters as a weight:
    :math:`\bar g_t = S_t / A_t` with the weighted gradient sum
    :math:`S_t = \sum_{k\le t} a_k g_k` and :math:`A_t = \sum_{k\le t} a_k`, and
    :math:`c_t = \sqrt{\textstyle\sum_{k\le t} a_k^2}/\gamma`. For a constant ``lr``
    this is the formula above; when a scheduler lowers ``lr``, new gradients count
    less and :math:`c_t` grows more slowly, and at ``lr = 0`` the iterate is frozen.
    (Simply multiplying :math:`c_t` by the current ``lr`` would instead pull the
    weights back to :math:`w_0` as ``lr`` decays.) The state keeps :math:`S_t`, not
    :math:`\bar g_t`: one step is then :math:`S \leftarrow S + a_t g_t` and
    :math:`w_{t+1} = \operatorname{prox}_{c_t\lambda P}(w_0 - (c_t/A_t) S_t)`: three
    elementwise passes, as many as SGD with momentum takes.

    **Adaptive variant** (``adaptive=True``, the recipe's default; our reading, since
    He et al.'s exact adaptive rule is not available to us): the scalar metric is
    replaced by the AdaGrad diagonal of Duchi, Hazan & Singer's RDA form, which gives
    the coordinatewise closed form

    .. math::
        w_{t+1,i} = \operatorname{prox}_{c_{t,i}\lambda P}\big(w_{0,i} - c_{t,i}\bar g_{t,i}\big),
        \qquad c_{t,i} = \frac{\sum_{k\le t} a_k^2}{\gamma\,(\delta + \sqrt{s_{t,i}})},
        \quad s_{t,i} = \sum_{k\le t} a_k^2 g_{k,i}^2.

    For a constant ``lr`` :math:`a`, :math:`c_{t,i} = a t/(\gamma(\delta/a +
    \|g_{1:t,i}\|_2))`: with :math:`w_0 = 0` this is Duchi et al.'s ℓ1-RDA-AdaGrad
    with :math:`\eta = a/\gamma`. Here γ is scale-free (gradients of size :math:`G`
    give :math:`c_t\approx a\sqrt t/(\gamma G)`), so its recipe's γ (100) is not the
    plain variant's (2, docs/recipes.md): with ``adaptive=False`` pass ``gamma`` too.
    The prox is coordinatewise for ``l1`` (soft threshold at :math:`c_{t,i}\lambda`),
    ``l0`` (hard threshold at :math:`\sqrt{2c_{t,i}\lambda}`), ``tl1``
    (:func:`~sparseopt.penalties.tl1_threshold` with :math:`\mu_i = c_{t,i}\lambda`)
    and ``none``. A group penalty couples the entries of a group, and under a metric
    that differs within the group its prox has no closed form; for ``group_l1`` and
    ``group_l0`` the metric is therefore constant on each group, with :math:`s_{t,i}`
    replaced by the group's largest :math:`\max_{i\in g} s_{t,i}` (a block-scalar
    AdaGrad metric, still positive and non-decreasing in :math:`t`, as Duchi et al.'s
    analysis asks), and the iterate is the exact group prox at step :math:`c_{t,g}`
    (our choice). The largest, not the mean: no entry then steps further than
    coordinatewise AdaGrad would move it (with the group's mean, entries whose
    gradients exceed the group's RMS overshoot; on the curve CNN of the words task that
    version stayed at chance, 52 %, where the largest learned, 77 %: docs/recipes.md,
    round 9).
    Other :class:`~sparseopt.penalties.Penalty` subclasses raise ``ValueError``.

    The iterate is recomputed from :math:`w_0` and :math:`S_t` at every step, so it
    is exactly sparse and is the deployable network itself; :meth:`set_lam` needs no
    state change (the next step uses the new λ). For the same reason, edits made to a
    parameter between steps (e.g. a mask applied by hand) are overwritten by the next
    step: change ``prox_center`` (or the gradient sum) to make them stick.

    Args:
        params: parameters or param groups (see :func:`sparseopt.param_groups`). Real
            floating-point tensors only: complex parameters raise ``ValueError`` (the
            penalties act on real entries).
        lr: :math:`a` (default: the registry recipe, docs/recipes.md), a number or a 1-element tensor: only
            ``lr / gamma`` matters while it is constant; see above for schedules.
        penalty: penalty name or :class:`~sparseopt.penalties.Penalty` (default: the
            registry recipe's, ``"l0"``).
        lam: λ (default: the registry recipe's λ of ``penalty``).
        groups: grouping for group penalties (``"filter"``, ``"channel"``, ...).
        a: the Tℓ1 parameter.
        group_weight: ``group_l1``'s ``"sqrt"`` (:math:`w_g=\sqrt{|g|}`,
            default) or ``"one"``; ``group_l0``'s ``"one"`` (default) or ``"size"``.
        gamma: :math:`\gamma > 0` (default: the recipe's), an inverse step size: the iterate
            stays within :math:`c_t\|\bar g_t\|` of :math:`w_0`, with
            :math:`c_t = (\text{lr}/\gamma)\sqrt t`, and the ℓ1 threshold is
            :math:`c_t\lambda`.
        adaptive: use the AdaGrad diagonal metric (default: the recipe's, ``True``).
        eps: :math:`\delta > 0` in the adaptive metric (default 1e-10, like
            ``torch.optim.Adagrad``'s ``eps``).
        weight_decay: decoupled weight decay :math:`\omega \ge 0` (default 0), as in
            ``torch.optim.AdamW``: before each step the iterate shrinks,
            :math:`w \leftarrow (1 - a\omega) w`. Since the iterate is recomputed from
            the state, the prox centre carries the decay, :math:`w_0 \leftarrow w_0 -
            a\omega w`: the unthresholded point :math:`z = w_0 - c\bar g` moves by
            :math:`-a\omega w`, which shrinks live ``l1``/``group_l1``/unpenalised
            entries by exactly :math:`(1 - a\omega)` and leaves dead ones where they are
            (for ``l0``/``tl1`` a shrunk entry may fall below the threshold). Our choice;
            not part of Xiao's or He et al.'s algorithm.
        foreach: use the multi-tensor (``torch._foreach_*``) implementation; ``None``
            picks it for dense tensors.
        maximize: maximize the objective instead of minimizing it.
        compiled: ``True`` runs each step as one ``torch.compile`` kernel per param-group
            batch (:mod:`sparseopt.optim._compiled`): the adaptive step then reads and
            writes each tensor once (7 passes over memory instead of about 22; on
            ResNet-18 at one CPU thread 2.8–4.6× faster, docs/optimizers.md), equal to the
            for-loop reference up to rounding. Compiled: penalties ``none``, ``l1`` and
            ``l0``, adaptive or plain, with weight decay and ``maximize``; ``tl1`` and
            the group penalties, a first step whose :math:`\sum a_k^2` is 0, and inputs
            Inductor cannot compile (DTensor parameters, sparse gradients, other
            devices or dtypes) take the eager path; a kernel that fails to build (no C++
            compiler) switches the compiled path off for the process. Where
            ``compiled=True`` falls back it warns once. ``lr`` and λ reach the kernel as
            tensor data, so schedules never recompile. The first step of each param
            group compiles (about a second per kernel, 15 s for ResNet-18). Default
            ``None``: the eager path.

    State (per parameter):
        - ``step``: float32 0-d CPU tensor, :math:`t`, the number of steps taken;
        - ``lr_sum``: float64 0-d CPU tensor, :math:`A_t = \sum_{k\le t} a_k`;
        - ``lr_sq_sum``: float64 0-d CPU tensor, :math:`\sum_{k\le t} a_k^2`;
        - ``grad_sum``: :math:`S_t = \sum_{k\le t} a_k g_k` (with ``maximize``, of the
          negated gradients), so that :math:`\bar g_t = S_t / A_t`;
        - ``prox_center``: :math:`w_0` (moved by ``weight_decay``, if any);
        - ``sum_sq``: :math:`s_t` (only with ``adaptive=True``).

    The two sums stay float64 on the CPU whatever the parameters' dtype and device
    (in float32 a sum of 10⁵ steps of 0.1 would drift by percents), also through
    :meth:`load_state_dict`. State dicts of earlier versions (``grad_avg``
    :math:`= \bar g_t`; a plain-number ``step``, ``lr_sum`` and ``lr_sq_sum``) are
    converted on loading.

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 0.05, -0.5]))
        >>> opt = RDA([w], penalty="l1", lam=0.1, gamma=2.0, adaptive=False)  # plain: c_1 = 1/2
        >>> w.grad = torch.tensor([1.0, 0.0, -0.2])
        >>> _ = opt.step()  # soft(w0 - 0.5 g, 0.5 * 0.1)
        >>> w.detach()
        tensor([ 0.4500,  0.0000, -0.3500])

    References:
        - Xiao, JMLR 11 (2010); He et al., Comput. Optim. Appl. 77 (2020),
          arXiv:1807.04222; Duchi, Hazan & Singer, JMLR 12 (2011).
    """

    hyperparameters = MappingProxyType(
        {
            "gamma": Hyper(check_positive),
            "adaptive": Hyper(_check_bool, missing=False),
            "eps": Hyper(check_positive),
            "weight_decay": Hyper(check_nonneg, missing=0.0),
            "compiled": Hyper(check_compiled, missing=None),
        }
    )
    state_keys = ("grad_sum", "prox_center", "sum_sq", "lr_sum", "lr_sq_sum")
    #: The recipe's penalty (``l0`` since round 11, docs/recipes.md) is the default here too.
    common_defaults = MappingProxyType({**COMMON_DEFAULTS, "penalty": _RECIPE.defaults["penalty"]})

    def __init__(
        self,
        params: Any,
        lr: float = _RECIPE.defaults["lr"],
        *,
        gamma: float = _RECIPE.defaults["gamma"],
        adaptive: bool = _RECIPE.defaults["adaptive"],
        eps: float = 1e-10,
        weight_decay: float = 0.0,
        compiled: bool | None = None,
        **common: Unpack[CommonKeywords],
    ) -> None:
        super().__init__(params, locals())

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for param_state in self.state.values():  # state of earlier versions
            if "grad_avg" in param_state:
                grad_avg = param_state.pop("grad_avg")
                param_state["grad_sum"] = grad_avg.mul(float(param_state["lr_sum"]))
            for key in _SUM_KEYS:
                value = param_state.get(key)
                if value is not None and not (
                    torch.is_tensor(value) and value.dtype == torch.float64 and value.is_cpu
                ):
                    param_state[key] = _as_sum(value)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict (see :meth:`torch.optim.Optimizer.load_state_dict`).

        ``torch.optim`` casts every state tensor but ``step`` to its parameter's dtype
        and device; the running sums ``lr_sum`` and ``lr_sq_sum`` are then set back
        to their exact values from ``state_dict``, as float64 0-d CPU tensors.
        """
        saved = {
            pid: {k: s[k] for k in _SUM_KEYS if k in s} for pid, s in state_dict["state"].items()
        }
        super().load_state_dict(state_dict)
        ids = [pid for g in state_dict["param_groups"] for pid in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for pid, p in zip(ids, params, strict=True):
            for key, value in saved.get(pid, {}).items():
                self.state[p][key] = _as_sum(value)

    def _validate_group(self, group: dict[str, Any]) -> None:
        if not group["adaptive"] and group["gamma"] == _RECIPE.defaults["gamma"]:
            warnings.warn(
                f"RDA(adaptive=False) with gamma={group['gamma']:g}, the adaptive variant's "
                "recipe: the plain variant then steps about 50 times less than at its "
                "studied gamma 2 (docs/recipes.md); pass gamma",
                UserWarning,
                stacklevel=4,
            )

    # ---------------------------------------------------------------------- step

    def _init_state(
        self, group: dict[str, Any], penalty: Penalty, p: Tensor, state: dict[str, Any]
    ) -> None:
        if "grad_sum" not in state:
            state["lr_sum"] = _as_sum(0.0)
            state["lr_sq_sum"] = _as_sum(0.0)
            state["grad_sum"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["prox_center"] = p.detach().clone(memory_format=torch.preserve_format)
        if group["adaptive"] and "sum_sq" not in state:
            state["sum_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _update(self, batch: StepBatch) -> None:
        grad_sums, prox_centers, sum_sqs, lr_sums, lr_sq_sums = batch.state.values()
        sum_sqs = sum_sqs if batch.group["adaptive"] else []
        rda(
            batch.params,
            batch.grads,
            grad_sums,
            prox_centers,
            sum_sqs,
            lr_sums,
            lr_sq_sums,
            state_steps=batch.steps,
            **batch.hyper,
        )

    def _lam_changed(self, group: dict[str, Any], old: Penalty, new: Penalty) -> None:
        """Nothing to do: the iterate is recomputed from the gradient average at every step."""


# ------------------------------------------------------------------------- functional


def rda(
    params: list[Tensor],
    grads: list[Tensor],
    grad_sums: list[Tensor],
    prox_centers: list[Tensor],
    sum_sqs: list[Tensor],
    lr_sums: list[Tensor],
    lr_sq_sums: list[Tensor],
    *,
    lr: float | Tensor,
    gamma: float,
    adaptive: bool = False,
    eps: float = 1e-10,
    weight_decay: float = 0.0,
    maximize: bool = False,
    penalty: str | Penalty = "l1",
    foreach: bool | None = None,
    compiled: bool | None = None,
    state_steps: Sequence[Tensor] = (),
) -> None:
    r"""Functional RDA step; see :class:`RDA` for the algorithm.

    Adds ``lr`` to every entry of ``lr_sums`` and ``lr**2`` to every entry of
    ``lr_sq_sums`` (0-d tensors, float64 for exact running sums: :math:`A = \sum a_k`
    and :math:`\sum a_k^2`); updates ``grad_sums`` (:math:`S = \sum a_k g_k`) and, when
    ``adaptive``, ``sum_sqs`` (:math:`s_t`; pass an empty list otherwise) in place, and
    writes :math:`w_{t+1}` into ``params``. ``prox_centers`` (:math:`w_0`) are only
    read, unless ``weight_decay`` moves them (:math:`w_0 \leftarrow w_0 - \text{lr}\,
    \omega\, w`, before the step). ``lr`` may be a 1-element tensor (read once). ``state_steps`` (0-d step
    counters, optional) are incremented first. ``compiled=True``: the compiled step
    (see :class:`RDA`), falling back to the path ``foreach`` selects.

    Example:
        >>> from sparseopt.penalties import make_penalty
        >>> w = torch.tensor([1.0, 0.05])
        >>> g_sum, w0 = torch.zeros(2), w.clone()
        >>> sums, sq_sums = ([torch.zeros((), dtype=torch.float64)] for _ in range(2))
        >>> pen = make_penalty("l1", lam=0.1)
        >>> for g in ([1.0, 0.0], [0.0, 0.0]):  # w2 = soft(w0 - sqrt(2)/2 * mean g, ...)
        ...     rda([w], [torch.tensor(g)], [g_sum], [w0], [], sums, sq_sums,
        ...         lr=1.0, gamma=2.0, penalty=pen)
        >>> sums, g_sum
        ([tensor(2., dtype=torch.float64)], tensor([1., 0.]))
        >>> w
        tensor([0.5757, 0.0000])
    """
    lr, penalty, foreach = prepare_step(params, lr, penalty, foreach, state_steps)
    if len(params) == 0:
        return
    if adaptive:
        if not isinstance(penalty, _ADAPTIVE_PENALTIES):
            raise ValueError(
                f"Invalid penalty value for adaptive RDA: {penalty!r}; expected a "
                "built-in penalty (none, l1, l0, tl1, group_l1, group_l0)"
            )
        if len(sum_sqs) != len(params):
            raise ValueError(
                f"rda(adaptive=True): got {len(sum_sqs)} sum_sqs for {len(params)} parameters"
            )
    if len(lr_sums) != len(params) or len(lr_sq_sums) != len(params):
        raise ValueError(
            f"rda: got {len(lr_sums)} lr_sums and {len(lr_sq_sums)} lr_sq_sums for "
            f"{len(params)} parameters"
        )
    # The running sums, updated in one call each and read back in one: A_t and Σ a_k².
    n = len(params)
    torch._foreach_add_(lr_sums, lr)
    torch._foreach_add_(lr_sq_sums, lr * lr)
    values = torch.stack([*lr_sums, *lr_sq_sums]).tolist()
    func = _multi_tensor_rda if foreach else _single_tensor_rda
    hp = _Scalars(lr, gamma, adaptive, eps, weight_decay, maximize, penalty)
    lists = (params, grads, grad_sums, prox_centers, sum_sqs, values[:n], values[n:])
    if resolve_compiled(compiled, [*params, *grads], penalty, "RDA"):
        _compiled_rda(lists, hp, func)
    else:
        func(lists, hp)


def _delta(eps: float, like: Tensor) -> float:
    """δ as ``like``'s dtype can hold it: at least its smallest normal number (in float16
    1e-10 rounds to 0, and an entry whose gradient was always 0 would give 0/0)."""
    return max(eps, torch.finfo(like.dtype).tiny)


def _metric_root(sum_sq: Tensor, eps: float) -> Tensor:
    r"""A new tensor :math:`d = \delta + \sqrt{s_t}`: the AdaGrad metric is
    :math:`c = \sum a_k^2/(\gamma d)`."""
    return sum_sq.sqrt().add_(_delta(eps, sum_sq))


def _adaptive_scale(
    sum_sq: Tensor, lr_sum: float, lr_sq_sum: float, gamma: float, eps: float
) -> Tensor:
    r"""A new tensor :math:`n = -A/c_t = -\gamma A(\delta + \sqrt{s_t})/\sum a_k^2`."""
    return _metric_root(sum_sq, eps).mul_(-gamma * lr_sum / lr_sq_sum)


def _adaptive_iterate_(
    w: Tensor, w0: Tensor, grad_sum: Tensor, scale: Tensor, lr_sum: float, penalty: Penalty
) -> None:
    r"""Write the adaptive iterate into ``w``, given ``scale`` :math:`n = -A/c` (coordinatewise).

    With :math:`z = w_0 - (c/A) S` and :math:`q = S + n w_0 = -A z/c`, the soft
    threshold is :math:`\operatorname{soft}(z, c\lambda) = \operatorname{soft}(q, A\lambda)/n`
    (soft thresholding is odd and positively homogeneous), so only scalar thresholds
    are needed; the hard threshold keeps :math:`z` where :math:`z^2/c > 2\lambda`, i.e.
    :math:`z\,q < -2A\lambda`.
    """
    torch.addcmul(grad_sum, w0, scale, out=w)  # q
    if isinstance(penalty, L1) and not penalty.is_zero:
        penalty.prox_(w, lr_sum)
        w.div_(scale)
    elif isinstance(penalty, L0) and not penalty.is_zero:
        keep = torch.div(w, scale).mul_(w) < -2.0 * lr_sum * penalty.lam  # z q < -2 A λ
        w.div_(scale).mul_(keep)
    else:
        w.div_(scale)


def _adaptive_metric_iterate_(
    w: Tensor,
    w0: Tensor,
    grad_sum: Tensor,
    sum_sq: Tensor,
    sums: tuple[float, float],
    gamma: float,
    eps: float,
    penalty: Penalty,
) -> None:
    r"""Write the adaptive iterate for ``tl1`` and the group penalties into ``w``.

    :math:`c = \sum a_k^2/(\gamma(\delta + \sqrt s))` per entry (``tl1``) or per group
    with :math:`s` the group's largest (``group_l1``, ``group_l0``); then
    :math:`w = \operatorname{prox}_{c\lambda P}(w_0 - (c/A) S)` in closed form.
    ``sums``: :math:`(A_t, \sum a_k^2)`.
    """
    lr_sum, lr_sq_sum = sums
    if isinstance(penalty, GroupL1 | GroupL0):
        sum_sq = sum_sq.amax(dim=group_dims(sum_sq.ndim, penalty.groups), keepdim=True)
    k = lr_sq_sum / gamma  # c = k / d, d = δ + √s
    d = _metric_root(sum_sq, eps)
    torch.addcdiv(w0, grad_sum, d, value=-k / lr_sum, out=w)  # z = w0 - (c/A) S
    if penalty.is_zero:
        return
    c = d.reciprocal_().mul_(k)  # may be inf in float16: the threshold then kills
    if isinstance(penalty, TL1):
        w.copy_(tl1_threshold(w, c.mul_(penalty.lam), penalty.a))
    elif isinstance(penalty, GroupL1):
        w.copy_(
            group_soft_threshold(w, c.mul_(penalty.lam * penalty.weight(w.shape)), penalty.groups)
        )
    elif isinstance(penalty, GroupL0):
        thr = c.mul_(2.0 * penalty.lam * penalty.weight(w.shape)).sqrt_()
        w.copy_(group_hard_threshold(w, thr, penalty.groups))


class _Scalars(NamedTuple):
    """The scalars of one functional step (``lr`` as a number, the penalty as an object)."""

    lr: float
    gamma: float
    adaptive: bool
    eps: float
    weight_decay: float
    maximize: bool
    penalty: Penalty


def _single_tensor_rda(lists: TensorLists, hp: _Scalars) -> None:
    r"""``lr_sums`` and ``lr_sq_sums``: :math:`A_t` and :math:`\sum a_k^2` after this step (floats)."""
    params, grads, grad_sums, prox_centers, sum_sqs, lr_sums, lr_sq_sums = lists
    lr, gamma, adaptive, eps, weight_decay, maximize, penalty = hp
    weight = -lr if maximize else lr
    decay = lr * weight_decay
    for i, w in enumerate(params):
        lr_sum, lr_sq_sum = lr_sums[i], lr_sq_sums[i]
        g, grad_sum, w0 = grads[i], grad_sums[i], prox_centers[i]
        if decay != 0:  # decoupled: w <- (1 - lr wd) w, carried by the prox centre
            w0.add_(w, alpha=-decay)
        grad_sum.add_(g, alpha=weight)
        if adaptive:
            sum_sqs[i].addcmul_(g, g, value=lr * lr)
        if lr_sq_sum == 0:  # no gradient has any weight yet: the minimiser is w0
            w.copy_(w0)
        elif adaptive and isinstance(penalty, _METRIC_PENALTIES):
            _adaptive_metric_iterate_(
                w, w0, grad_sum, sum_sqs[i], (lr_sum, lr_sq_sum), gamma, eps, penalty
            )
        elif adaptive:
            scale = _adaptive_scale(sum_sqs[i], lr_sum, lr_sq_sum, gamma, eps)
            _adaptive_iterate_(w, w0, grad_sum, scale, lr_sum, penalty)
        else:
            c = math.sqrt(lr_sq_sum) / gamma
            torch.add(w0, grad_sum, alpha=-c / lr_sum, out=w)
            if not penalty.is_zero:
                penalty.prox_(w, c)


def _parts_by_sums(
    lr_sums: list[float], lr_sq_sums: list[float], tensorlists: tuple[list[Tensor], ...]
) -> list[tuple[float, float, tuple[list[Tensor], ...]]]:
    r"""``tensorlists`` split by the parameters' running sums :math:`(A_t, \sum a_k^2)`.

    Parameters skipped in some steps (no grad) have their own running sums; usually all
    sums agree and there is one part.
    """
    n = len(lr_sums)
    if lr_sums.count(lr_sums[0]) == n and lr_sq_sums.count(lr_sq_sums[0]) == n:
        return [(lr_sums[0], lr_sq_sums[0], tensorlists)]
    by_sums: dict[tuple[float, float], list[int]] = {}
    for i, key in enumerate(zip(lr_sums, lr_sq_sums, strict=True)):
        by_sums.setdefault(key, []).append(i)
    return [
        (lr_sum, lr_sq_sum, tuple([lst[i] for i in idx] for lst in tensorlists))
        for (lr_sum, lr_sq_sum), idx in by_sums.items()
    ]


def _multi_tensor_rda(lists: TensorLists, hp: _Scalars) -> None:
    r"""``lr_sums`` and ``lr_sq_sums``: :math:`A_t` and :math:`\sum a_k^2` after this step (floats)."""
    params, grads, grad_sums, prox_centers, sum_sqs, lr_sums, lr_sq_sums = lists
    lr, gamma, adaptive, eps, weight_decay, maximize, penalty = hp
    lr_sq = lr * lr
    # (without ``adaptive`` there are no sum_sqs: ``params`` fills their place, unused)
    tensorlists = (params, grads, grad_sums, prox_centers, sum_sqs if adaptive else params)
    parts = _parts_by_sums(lr_sums, lr_sq_sums, tensorlists)
    weight = -lr if maximize else lr
    decay = lr * weight_decay
    prox = not penalty.is_zero
    for lr_sum, lr_sq_sum, part in parts:
        for ws, gs, sums, w0s, sqs in group_by_device_dtype(*part):
            if decay != 0:  # decoupled: w <- (1 - lr wd) w, carried by the prox centre
                torch._foreach_add_(w0s, ws, alpha=-decay)
            torch._foreach_add_(sums, gs, alpha=weight)
            if adaptive:
                torch._foreach_addcmul_(sqs, gs, gs, value=lr_sq)
            if lr_sq_sum == 0:  # no gradient has any weight yet: the minimiser is w0
                foreach_copy_(ws, w0s)
            elif adaptive and isinstance(penalty, _METRIC_PENALTIES):
                for w, w0, grad_sum, sq in zip(ws, w0s, sums, sqs, strict=True):
                    _adaptive_metric_iterate_(
                        w, w0, grad_sum, sq, (lr_sum, lr_sq_sum), gamma, eps, penalty
                    )
            elif adaptive:
                scales = torch._foreach_sqrt(sqs)
                torch._foreach_add_(scales, _delta(eps, scales[0]))  # one dtype per bucket
                torch._foreach_mul_(scales, -gamma * lr_sum / lr_sq_sum)
                if type(penalty) is L1 and prox:
                    for w, w0, grad_sum, scale in zip(ws, w0s, sums, scales, strict=True):
                        torch.addcmul(grad_sum, w0, scale, out=w)
                    penalty.prox_into_(ws, ws, lr_sum)
                    torch._foreach_div_(ws, scales)
                else:
                    for w, w0, grad_sum, scale in zip(ws, w0s, sums, scales, strict=True):
                        _adaptive_iterate_(w, w0, grad_sum, scale, lr_sum, penalty)
            else:
                c = math.sqrt(lr_sq_sum) / gamma
                alpha = -c / lr_sum
                for w, w0, grad_sum in zip(ws, w0s, sums, strict=True):
                    torch.add(w0, grad_sum, alpha=alpha, out=w)
                if prox:
                    penalty.prox_into_(ws, ws, c)


# --------------------------------------------------------------------- compiled


def _rda_kernel(
    ws: list[Tensor],
    gs: list[Tensor],
    sums: list[Tensor],
    w0s: list[Tensor],
    sqs: list[Tensor],
    s: Tensor,
    *,
    adaptive: bool,
    kind: str,
    decay: bool,
) -> None:
    r"""One RDA step as a pure function of torch ops, for ``torch.compile`` (:func:`_compiled_rda`).

    ``s`` holds the step's numbers: the gradient weight :math:`\pm a_t`, :math:`a_t^2`,
    the decay :math:`a_t\omega`, the scale (adaptive: :math:`-\gamma A_t/\sum a_k^2`, so
    that :math:`n = \text{scale}\,(\delta + \sqrt{s_t}) = -A_t/c_t`; plain:
    :math:`-c_t/A_t`), δ and the threshold (adaptive ``l1``: :math:`A_t\lambda`, ``l0``:
    :math:`-2A_t\lambda`; plain ``l1``: :math:`c_t\lambda`, ``l0``: :math:`\sqrt{2c_t\lambda}`).
    The arithmetic is :func:`_single_tensor_rda`'s (the adaptive iterate through
    :math:`q = S + n w_0`, :func:`_adaptive_iterate_`); each tensor's update reads
    :math:`g, S, s, w_0` (and :math:`w` with decay) once and writes :math:`S, s, w`.
    """
    for i in range(len(ws)):
        w, g, grad_sum, w0 = ws[i], gs[i], sums[i], w0s[i]
        if decay:
            w0.sub_(s[2] * w)
        grad_sum.add_(s[0] * g)
        if adaptive:
            sq = sqs[i]
            sq.add_(s[1] * (g * g))
            scale = (sq.sqrt() + s[4]) * s[3]  # n = -A/c
            q = grad_sum + w0 * scale
            if kind == "l1":
                w.copy_(soft(q, s[5]) / scale)
            elif kind == "l0":
                z = q / scale
                w.copy_(z * (z * q < s[5]))  # keep where z q < -2 A λ
            else:
                w.copy_(q / scale)
        else:
            z = w0 + s[3] * grad_sum  # w0 - (c/A) S
            if kind == "l1":
                w.copy_(soft(z, s[5]))
            elif kind == "l0":
                w.copy_(hard(z, s[5]))
            else:
                w.copy_(z)


def _rda_plain_kernel(
    ws: list[Tensor],
    gs: list[Tensor],
    sums: list[Tensor],
    w0s: list[Tensor],
    s: Tensor,
    *,
    adaptive: bool,
    kind: str,
    decay: bool,
) -> None:
    """:func:`_rda_kernel` of the plain variant (no ``sum_sq`` list)."""
    _rda_kernel(ws, gs, sums, w0s, [], s, adaptive=False, kind=kind, decay=decay)


def _compiled_rda(
    lists: TensorLists, hp: _Scalars, fallback: Callable[[TensorLists, _Scalars], None]
) -> None:
    r"""The compiled RDA step (``compiled=True``): :func:`_rda_kernel` per part and bucket.

    Penalties ``none``, ``l1`` and ``l0`` (checked by the caller). A bucket whose
    :math:`\sum a_k^2` is still 0 (only ``lr = 0`` so far), or whose kernel cannot be built,
    runs ``fallback`` (the eager step) on its tensors.
    """
    params, grads, grad_sums, prox_centers, sum_sqs, lr_sums, lr_sq_sums = lists
    lr, gamma, adaptive, eps, weight_decay, maximize, penalty = hp
    kind = penalty_kind(penalty)
    lam = getattr(penalty, "lam", 0.0)
    tensorlists = (params, grads, grad_sums, prox_centers, sum_sqs if adaptive else params)
    flags = {"adaptive": adaptive, "kind": kind, "decay": lr * weight_decay != 0}
    for lr_sum, lr_sq_sum, part in _parts_by_sums(lr_sums, lr_sq_sums, tensorlists):
        if adaptive:
            scale = -gamma * lr_sum / lr_sq_sum if lr_sq_sum else 0.0
            thresh = lr_sum * lam if kind == "l1" else -2.0 * lr_sum * lam
        else:
            c = math.sqrt(lr_sq_sum) / gamma
            scale = -c / lr_sum if lr_sum else 0.0
            thresh = dead_threshold(penalty, c)
        for ws, gs, sums, w0s, sqs in group_by_device_dtype(*part):
            numbers = (-lr if maximize else lr, lr * lr, lr * weight_decay, scale)
            numbers += (_delta(eps, ws[0]), thresh)
            bucket = (ws, gs, sums, w0s, sqs) if adaptive else (ws, gs, sums, w0s)
            if lr_sq_sum == 0 or not run_compiled(
                _rda_kernel if adaptive else _rda_plain_kernel, bucket, numbers, flags, "RDA"
            ):
                n = len(ws)
                fallback((ws, gs, sums, w0s, sqs if adaptive else [], [lr_sum] * n,
                          [lr_sq_sum] * n), hp)  # fmt: skip
