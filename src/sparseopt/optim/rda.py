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

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from sparseopt._validation import check_nonneg, check_positive
from sparseopt.optim._base import (
    PENALTY_DEFAULTS,
    SparseOptimizer,
    resolve_foreach,
)
from sparseopt.penalties import L0, L1, NoPenalty, Penalty, make_penalty

__all__ = ["RDA", "rda"]

_ADAPTIVE_PENALTIES = (NoPenalty, L1, L0)


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
    :math:`\bar g_t = \sum_k a_k g_k / \sum_k a_k` and
    :math:`c_t = \sqrt{\textstyle\sum_{k\le t} a_k^2}/\gamma`. For a constant ``lr``
    this is the formula above; when a scheduler lowers ``lr``, new gradients count
    less and :math:`c_t` grows more slowly, and at ``lr = 0`` the iterate is frozen.
    (Simply multiplying :math:`c_t` by the current ``lr`` would instead pull the
    weights back to :math:`w_0` as ``lr`` decays.)

    **Adaptive variant** (``adaptive=True``; our reading, since He et al.'s exact
    adaptive rule is not available to us): the scalar metric is replaced by the AdaGrad
    diagonal of Duchi, Hazan & Singer's RDA form, which gives the coordinatewise
    closed form

    .. math::
        w_{t+1,i} = \operatorname{prox}_{c_{t,i}\lambda P}\big(w_{0,i} - c_{t,i}\bar g_{t,i}\big),
        \qquad c_{t,i} = \frac{\sum_{k\le t} a_k^2}{\gamma\,(\delta + \sqrt{s_{t,i}})},
        \quad s_{t,i} = \sum_{k\le t} a_k^2 g_{k,i}^2.

    For a constant ``lr`` :math:`a`, :math:`c_{t,i} = a t/(\gamma(\delta/a +
    \|g_{1:t,i}\|_2))`: with :math:`w_0 = 0` this is Duchi et al.'s ℓ1-RDA-AdaGrad
    with :math:`\eta = a/\gamma`. Here γ is scale-free (gradients of size :math:`G`
    give :math:`c_t\approx a\sqrt t/(\gamma G)`). The coordinatewise prox is available
    for ``l1`` (soft threshold at :math:`c_{t,i}\lambda`), ``l0`` (hard threshold at
    :math:`\sqrt{2c_{t,i}\lambda}`) and ``none``; ``tl1`` and group penalties raise
    ``ValueError``.

    The iterate is recomputed from :math:`w_0` and :math:`\bar g_t` at every step, so it
    is exactly sparse and is the deployable network itself; :meth:`set_lam` needs no
    state change (the next step uses the new λ). For the same reason, edits made to a
    parameter between steps (e.g. a mask applied by hand) are overwritten by the next
    step: change ``prox_center`` (or the gradient average) to make them stick.

    Args:
        params: parameters or param groups (see :func:`sparseopt.param_groups`).
        lr: :math:`a` (default 1.0): only ``lr / gamma`` matters while it is constant;
            see above for schedules.
        penalty: penalty name or :class:`~sparseopt.penalties.Penalty` (default ``"l1"``).
        lam: λ (default 1e-3).
        groups: grouping for group penalties (``"filter"``, ``"channel"``, ...).
        a: the Tℓ1 parameter.
        group_weight: ``"sqrt"`` (:math:`w_g=\sqrt{|g|}`) or ``"one"``.
        gamma: :math:`\gamma > 0` (default 10.0), an inverse step size: the iterate
            stays within :math:`c_t\|\bar g_t\|` of :math:`w_0`, with
            :math:`c_t = (\text{lr}/\gamma)\sqrt t`, and the ℓ1 threshold is
            :math:`c_t\lambda`.
        adaptive: use the AdaGrad diagonal metric (default False).
        eps: :math:`\delta > 0` in the adaptive metric (default 1e-10, like
            ``torch.optim.Adagrad``'s ``eps``).
        foreach: use the multi-tensor (``torch._foreach_*``) implementation; ``None``
            picks it for dense tensors.
        maximize: maximize the objective instead of minimizing it.

    State (per parameter):
        - ``step``: float32 0-d CPU tensor, :math:`t`, the number of steps taken;
        - ``lr_sum``: Python float, :math:`\sum_{k\le t} a_k`;
        - ``lr_sq_sum``: Python float, :math:`\sum_{k\le t} a_k^2`;
        - ``grad_avg``: :math:`\bar g_t`, updated as
          :math:`\bar g \leftarrow \bar g + (a_t/\sum_{k\le t}a_k)(g_t - \bar g)`
          (:math:`1/t` for a constant ``lr``);
        - ``prox_center``: :math:`w_0`;
        - ``sum_sq``: :math:`s_t` (only with ``adaptive=True``).

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 0.05, -0.5]))
        >>> opt = RDA([w], lam=0.1, gamma=2.0)  # c_1 = 1/2
        >>> w.grad = torch.tensor([1.0, 0.0, -0.2])
        >>> _ = opt.step()  # soft(w0 - 0.5 g, 0.5 * 0.1)
        >>> w.detach()
        tensor([ 0.4500,  0.0000, -0.3500])

    References:
        - Xiao, JMLR 11 (2010); He et al., Comput. Optim. Appl. 77 (2020),
          arXiv:1807.04222; Duchi, Hazan & Singer, JMLR 12 (2011).
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1.0,
        *,
        penalty: str | Penalty = "l1",
        lam: float = 1e-3,
        groups: str | None = None,
        a: float = 1.0,
        group_weight: str = "sqrt",
        gamma: float = 10.0,
        adaptive: bool = False,
        eps: float = 1e-10,
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
            "gamma": gamma,
            "adaptive": adaptive,
            "eps": eps,
            "foreach": foreach,
            "maximize": maximize,
        }
        if isinstance(penalty, Penalty):
            defaults.update(penalty.spec())
        else:
            defaults["penalty"] = penalty
        self._check_hyperparameters(defaults)
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("adaptive", False)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)

    @staticmethod
    def _check_hyperparameters(group: dict[str, Any]) -> None:
        check_nonneg("learning rate", group["lr"])
        check_positive("gamma", group["gamma"])
        check_positive("eps", group["eps"])
        if not isinstance(group["adaptive"], bool):
            raise ValueError(f"Invalid adaptive value: {group['adaptive']!r}; expected a bool")

    def _validate_group(self, group: dict[str, Any]) -> None:
        self._check_hyperparameters(group)
        if group["adaptive"]:
            penalty = self.penalty_of(group)
            if not isinstance(penalty, _ADAPTIVE_PENALTIES):
                raise ValueError(
                    f"Invalid penalty value for adaptive RDA: {penalty.name!r}; the "
                    "coordinatewise (AdaGrad) metric has a closed-form prox only for "
                    "'l1', 'l0' and 'none' (use adaptive=False for 'tl1' and group penalties)"
                )

    # ---------------------------------------------------------------------- step

    def _init_group(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        grad_avgs: list[Tensor],
        prox_centers: list[Tensor],
        sum_sqs: list[Tensor],
        state_steps: list[Tensor],
        lr_sums: list[float],
        lr_sq_sums: list[float],
    ) -> None:
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("RDA does not support sparse gradients")
            state = self.state[p]
            if len(state) == 0:
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
                state["lr_sum"] = 0.0
                state["lr_sq_sum"] = 0.0
                state["grad_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["prox_center"] = p.detach().clone(memory_format=torch.preserve_format)
            if group["adaptive"] and "sum_sq" not in state:
                state["sum_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            params.append(p)
            grads.append(p.grad)
            grad_avgs.append(state["grad_avg"])
            prox_centers.append(state["prox_center"])
            state_steps.append(state["step"])
            lr_sums.append(state["lr_sum"])
            lr_sq_sums.append(state["lr_sq_sum"])
            if group["adaptive"]:
                sum_sqs.append(state["sum_sq"])

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step.

        Args:
            closure: optional callable that re-evaluates the model and returns the loss.
        """
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            grad_avgs: list[Tensor] = []
            prox_centers: list[Tensor] = []
            sum_sqs: list[Tensor] = []
            state_steps: list[Tensor] = []
            lr_sums: list[float] = []
            lr_sq_sums: list[float] = []
            self._init_group(
                group,
                params,
                grads,
                grad_avgs,
                prox_centers,
                sum_sqs,
                state_steps,
                lr_sums,
                lr_sq_sums,
            )
            if not params:
                continue
            rda(
                params,
                grads,
                grad_avgs,
                prox_centers,
                sum_sqs,
                state_steps,
                lr_sums,
                lr_sq_sums,
                lr=group["lr"],
                gamma=group["gamma"],
                adaptive=group["adaptive"],
                eps=group["eps"],
                maximize=group["maximize"],
                penalty=self.penalty_of(group),
                foreach=group["foreach"],
            )
            for p, lr_sum, lr_sq_sum in zip(params, lr_sums, lr_sq_sums, strict=True):
                self.state[p]["lr_sum"] = lr_sum
                self.state[p]["lr_sq_sum"] = lr_sq_sum
        return loss

    def _lam_changed(self, group: dict[str, Any], old: Penalty, new: Penalty) -> None:
        """Nothing to do: the iterate is recomputed from the gradient average at every step."""


# ------------------------------------------------------------------------- functional


def rda(
    params: list[Tensor],
    grads: list[Tensor],
    grad_avgs: list[Tensor],
    prox_centers: list[Tensor],
    sum_sqs: list[Tensor],
    state_steps: list[Tensor],
    lr_sums: list[float],
    lr_sq_sums: list[float],
    *,
    lr: float,
    gamma: float,
    adaptive: bool = False,
    eps: float = 1e-10,
    maximize: bool = False,
    penalty: str | Penalty = "l1",
    foreach: bool | None = None,
) -> None:
    r"""Functional RDA step; see :class:`RDA` for the algorithm.

    Increments ``state_steps`` (0-d tensors) by 1 and replaces the entries of
    ``lr_sums`` and ``lr_sq_sums`` (floats, :math:`\sum a_k` and :math:`\sum a_k^2`) by
    their values after this step; updates ``grad_avgs`` (:math:`\bar g`) and, when
    ``adaptive``, ``sum_sqs`` (:math:`s_t`; pass an empty list otherwise) in place,
    and writes :math:`w_{t+1}` into ``params``. ``prox_centers`` (:math:`w_0`) are
    only read.

    Example:
        >>> w = torch.tensor([1.0, 0.05])
        >>> g_avg, w0, step, sums, sq_sums = torch.zeros(2), w.clone(), torch.tensor(0.0), [0.0], [0.0]
        >>> pen = make_penalty("l1", lam=0.1)
        >>> for g in ([1.0, 0.0], [0.0, 0.0]):  # w2 = soft(w0 - sqrt(2)/2 * mean g, ...)
        ...     rda([w], [torch.tensor(g)], [g_avg], [w0], [], [step], sums, sq_sums,
        ...         lr=1.0, gamma=2.0, penalty=pen)
        >>> step, sums, g_avg
        (tensor(2.), [2.0], tensor([0.5000, 0.0000]))
        >>> w
        tensor([0.5757, 0.0000])
    """
    penalty = make_penalty(penalty)
    if len(params) == 0:
        return
    if adaptive:
        if not isinstance(penalty, _ADAPTIVE_PENALTIES):
            raise ValueError(
                f"Invalid penalty value for adaptive RDA: {penalty.name!r}; expected "
                "'l1', 'l0' or 'none'"
            )
        if len(sum_sqs) != len(params):
            raise ValueError(
                f"rda(adaptive=True): got {len(sum_sqs)} sum_sqs for {len(params)} parameters"
            )
    if resolve_foreach(foreach, params):
        func = _multi_tensor_rda
    else:
        func = _single_tensor_rda
    func(
        params,
        grads,
        grad_avgs,
        prox_centers,
        sum_sqs,
        state_steps,
        lr_sums,
        lr_sq_sums,
        lr=lr,
        gamma=gamma,
        adaptive=adaptive,
        eps=eps,
        maximize=maximize,
        penalty=penalty,
    )


def _advance(
    lr_sums: list[float], lr_sq_sums: list[float], i: int, lr: float
) -> tuple[float, float]:
    """Add ``lr`` to the running sums of parameter ``i``; return ``(Σ a_k², a_t / Σ a_k)``."""
    lr_sums[i] = lr_sum = lr_sums[i] + lr
    lr_sq_sums[i] = lr_sq_sum = lr_sq_sums[i] + lr * lr
    return lr_sq_sum, (lr / lr_sum if lr_sum > 0 else 0.0)


def _adaptive_scale(sum_sq: Tensor, lr_sq_sum: float, gamma: float, eps: float) -> Tensor:
    r"""A new tensor :math:`n = -1/c_t = -\gamma(\delta + \sqrt{s_t})/\sum a_k^2`."""
    return sum_sq.sqrt().add_(eps).mul_(-gamma / lr_sq_sum)


def _adaptive_iterate_(
    w: Tensor, w0: Tensor, grad_avg: Tensor, scale: Tensor, penalty: Penalty
) -> None:
    r"""Write the adaptive iterate into ``w``, given ``scale`` :math:`n = -1/c` (coordinatewise).

    With :math:`z = w_0 - c\bar g` and :math:`q = \bar g + n w_0 = -z/c`, the soft
    threshold is :math:`\operatorname{soft}(z, c\lambda) = \operatorname{soft}(q, \lambda)/n`
    (soft thresholding is odd and positively homogeneous), so only scalar thresholds
    are needed; the hard threshold keeps :math:`z` where :math:`z^2/c > 2\lambda`, i.e.
    :math:`z\,q < -2\lambda`.
    """
    torch.addcmul(grad_avg, w0, scale, out=w)  # q
    if isinstance(penalty, L1) and not penalty.is_zero:
        penalty.prox_(w, 1.0)
        w.div_(scale)
    elif isinstance(penalty, L0) and not penalty.is_zero:
        keep = torch.div(w, scale).mul_(w) < -2.0 * penalty.lam  # z q < -2 λ
        w.div_(scale).mul_(keep)
    else:
        w.div_(scale)


def _single_tensor_rda(
    params: list[Tensor],
    grads: list[Tensor],
    grad_avgs: list[Tensor],
    prox_centers: list[Tensor],
    sum_sqs: list[Tensor],
    state_steps: list[Tensor],
    lr_sums: list[float],
    lr_sq_sums: list[float],
    *,
    lr: float,
    gamma: float,
    adaptive: bool,
    eps: float,
    maximize: bool,
    penalty: Penalty,
) -> None:
    for i, w in enumerate(params):
        g = grads[i] if not maximize else -grads[i]
        state_steps[i] += 1
        lr_sq_sum, weight = _advance(lr_sums, lr_sq_sums, i, lr)
        grad_avg, w0 = grad_avgs[i], prox_centers[i]
        grad_avg.lerp_(g, weight)
        if adaptive:
            sum_sqs[i].addcmul_(g, g, value=lr * lr)
        if lr_sq_sum == 0:  # no gradient has any weight yet: the minimiser is w0
            w.copy_(w0)
        elif adaptive:
            scale = _adaptive_scale(sum_sqs[i], lr_sq_sum, gamma, eps)
            _adaptive_iterate_(w, w0, grad_avg, scale, penalty)
        else:
            c = math.sqrt(lr_sq_sum) / gamma
            w.copy_(w0).add_(grad_avg, alpha=-c)
            if not penalty.is_zero:
                penalty.prox_(w, c)


def _multi_tensor_rda(
    params: list[Tensor],
    grads: list[Tensor],
    grad_avgs: list[Tensor],
    prox_centers: list[Tensor],
    sum_sqs: list[Tensor],
    state_steps: list[Tensor],
    lr_sums: list[float],
    lr_sq_sums: list[float],
    *,
    lr: float,
    gamma: float,
    adaptive: bool,
    eps: float,
    maximize: bool,
    penalty: Penalty,
) -> None:
    torch._foreach_add_(state_steps, 1.0)
    # Parameters skipped in some steps (no grad) have their own running sums: bucket by
    # (device, dtype, sums). Usually there is one bucket per device and dtype.
    buckets: dict[tuple[Any, ...], list[int]] = {}
    for i, w in enumerate(params):
        key = _advance(lr_sums, lr_sq_sums, i, lr)
        buckets.setdefault((w.device, w.dtype, *key), []).append(i)
    for (_, _, lr_sq_sum, weight), idx in buckets.items():
        ws = [params[i] for i in idx]
        gs = [grads[i] for i in idx]
        avgs = [grad_avgs[i] for i in idx]
        w0s = [prox_centers[i] for i in idx]
        if maximize:
            gs = torch._foreach_neg(gs)
        torch._foreach_lerp_(avgs, gs, weight)
        if adaptive:
            sqs = [sum_sqs[i] for i in idx]
            torch._foreach_addcmul_(sqs, gs, gs, value=lr * lr)
        if lr_sq_sum == 0:
            torch._foreach_copy_(ws, w0s)
        elif adaptive:
            scales = torch._foreach_sqrt(sqs)
            torch._foreach_add_(scales, eps)
            torch._foreach_mul_(scales, -gamma / lr_sq_sum)
            if type(penalty) is L1 and not penalty.is_zero:
                for w, w0, avg, scale in zip(ws, w0s, avgs, scales, strict=True):
                    torch.addcmul(avg, w0, scale, out=w)
                    penalty.prox_(w, 1.0)
                torch._foreach_div_(ws, scales)
            else:
                for w, w0, avg, scale in zip(ws, w0s, avgs, scales, strict=True):
                    _adaptive_iterate_(w, w0, avg, scale, penalty)
        else:
            c = math.sqrt(lr_sq_sum) / gamma
            for w, w0, avg in zip(ws, w0s, avgs, strict=True):
                torch.add(w0, avg, alpha=-c, out=w)
            penalty.prox_into_(ws, ws, c)
