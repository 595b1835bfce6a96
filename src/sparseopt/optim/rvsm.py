r"""Relaxed variable splitting method (RVSM) and its group version (RGSM).

The weights :math:`w` are split from a sparse copy :math:`u` through the relaxed
objective :math:`f(w) + \lambda P(u) + \tfrac\beta2\|w-u\|^2`, minimised by
alternating a gradient step in :math:`w` with an exact minimisation in :math:`u`,
which is a proximal map of the (possibly nonconvex) penalty :math:`P`: hard
thresholding for ℓ0, soft thresholding for ℓ1, the Zhang–Xin closed form for
transformed ℓ1, and their group versions (RGSM, whole filters or channels). The
network to deploy is :math:`u`, which is exactly sparse; :math:`w` stays dense.

References:
    - T. Dinh & J. Xin, "Convergence of a relaxed variable splitting method for learning
      sparse neural networks via ℓ1, ℓ0, and transformed-ℓ1 penalties",
      arXiv:1812.05719 (2018).
    - F. Xue & J. Xin, "Learning sparse neural networks via ℓ0 and Tℓ1 by a relaxed
      variable splitting method with application to multi-scale curve classification",
      WCGO 2019, arXiv:1902.07419.
    - B. Yang, J. Lyu, S. Zhang, Y.-Y. Qi & J. Xin, "Channel pruning for deep neural
      networks via a relaxed group-wise splitting method", AI4I 2019 (RGSM).
    - S. Zhang & J. Xin, "Minimization of transformed L1 penalty: closed form
      representation and iterative thresholding algorithms", Comm. Math. Sci. 15 (2017).
    - Original code: https://github.com/tdinh15/rvsm-rgsm-admm (``main.py``).
"""

from __future__ import annotations

__all__ = ["RVSM", "rvsm"]

from collections.abc import Callable
from types import MappingProxyType
from typing import Any, NamedTuple, Unpack

import torch
from torch import Tensor

from sparseopt._validation import check_nonneg
from sparseopt.fsdp import foreach_copy_
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
from sparseopt.optim._functional import TensorLists, group_by_device_dtype, prepare_step
from sparseopt.optim._schema import Hyper
from sparseopt.optim._sgd import (
    SGDKeywords,
    SGDOptimizer,
    SGDScalars,
    sgd_direction,
    sgd_directions_foreach,
)
from sparseopt.optim.registry import get_optimizer_info
from sparseopt.penalties import NoPenalty, Penalty, dead_threshold

#: The registry entry: the one source of this class's defaults.
_RECIPE = get_optimizer_info("rvsm")


class RVSM(SGDOptimizer):
    r"""Relaxed variable splitting: SGD on :math:`w` coupled to a sparse :math:`u = \operatorname{prox}(w)`.

    The method minimises :math:`f(w) + \lambda P(u) + \tfrac\beta2\|w-u\|^2` (λ and
    :math:`P` are the param group's penalty). With learning rate :math:`\tau` (``lr``),
    :math:`u_0 = \operatorname{prox}_{(1/\beta)\lambda P}(w_0)` and loss gradient
    :math:`g_t = \nabla f(w_t)`, one step is

    .. math::
        \begin{aligned}
        d_t &= \operatorname{SGD}(g_t + \text{wd}\cdot w_t)
              \quad\text{(momentum, dampening, Nesterov as in } \texttt{torch.optim.SGD})\\
        w_{t+1} &= w_t - \tau d_t - \tau\beta\,(w_t - u_t)\\
        u_{t+1} &= \operatorname{prox}_{(1/\beta)\lambda P}(w_{t+1})
        \end{aligned}

    i.e. ``u = penalty.prox(w, t=1/beta)``: for ``l1`` the soft threshold at
    :math:`\lambda/\beta`, for ``l0`` the hard threshold at :math:`\sqrt{2\lambda/\beta}`,
    for ``tl1`` the Tℓ1 prox with :math:`\mu=\lambda/\beta`, and for ``group_l1`` /
    ``group_l0`` (RGSM) the group versions, which zero whole filters or channels.
    Momentum and weight decay act on the loss gradient only; the coupling force
    :math:`\beta(w_t-u_t)` is applied directly, as in the original ``main.py`` (which
    applies it just before its SGD step, so that its weight decay sees the coupled
    weights; here every term is evaluated at :math:`w_t`). For
    ``l1`` it equals :math:`\operatorname{clip}(\beta w, -\lambda, \lambda)`, the
    gradient of the Moreau envelope of :math:`\lambda\|w\|_1`: large β behaves like a
    subgradient method on the Lasso, small β like a weak pull of small weights to 0.

    The **deployed network is** :math:`u` (exactly sparse), not :math:`w`:
    :meth:`deployable` returns :math:`u`, :meth:`deployed` evaluates with it,
    :meth:`finalize` copies :math:`u` into the parameters (keeping :math:`u`), and
    :meth:`u_of` gives the live state tensor.

    On CPUs: a weight whose input unit died gets no loss gradient, so the coupling
    alone shrinks it geometrically (by about :math:`1-\tau\beta` per step), and for
    hundreds of steps or more it is a subnormal number, which some CPUs compute far more
    slowly (docs/optimizers.md, "Subnormal numbers on CPUs"). sparseopt's trainer
    flushes subnormals while it trains; in a loop of your own, call
    :func:`sparseopt.engine.build.set_flush_denormal_all` (``True``) first, or
    ``torch.set_flush_denormal(True)`` before any multi-threaded op.

    Dense limits: parameters whose group has penalty ``none`` have no :math:`u` and take
    plain SGD steps. With λ = 0 (then :math:`u = w`) or β = 0 the coupling vanishes and
    :math:`w` follows ``torch.optim.SGD`` exactly. For β = 0 the prox step
    :math:`1/\beta` is infinite and the β → 0 limit of :math:`u` would be the empty
    network, so we define :math:`u = w` instead: β = 0 switches the splitting off.

    Args:
        params: parameters or param groups (see :func:`sparseopt.param_groups`). Real
            floating-point tensors only: complex parameters raise ``ValueError`` (the
            penalties act on real entries).
        lr: :math:`\tau` (default: the registry recipe, docs/recipes.md; the original's initial rate is
            0.1), a number or a 1-element tensor.
        penalty: :math:`P`, a name or :class:`~sparseopt.penalties.Penalty`: ``"l0"``,
            ``"l1"`` (default, as every sparseopt optimizer but RDA and ProxSGD), ``"tl1"``, ``"group_l0"``,
            ``"group_l1"``.
        lam: λ (default: the registry recipe's λ of ``penalty``).
        groups: grouping for group penalties (``"filter"``, ``"channel"``, ...).
        a: the Tℓ1 parameter :math:`a > 0`.
        group_weight: ``group_l1``'s ``"sqrt"`` (:math:`w_g=\sqrt{|g|}`,
            default) or ``"one"``; ``group_l0``'s ``"one"`` (default) or ``"size"``.
        beta: :math:`\beta \ge 0`, the relaxation (coupling) parameter (default: the recipe's). The
            original code uses β = 1e-2 with λ = 1e-6 and ℓ0 (threshold
            :math:`\sqrt{2\lambda/\beta}\approx 0.014`); our default keeps the
            thresholds λ/β (ℓ1) and :math:`\sqrt{2\lambda/\beta}` (ℓ0) sensible at the
            recipe's λ of each penalty. The explicit coupling step is stable for
            :math:`\tau\beta < 2`.
        momentum: momentum factor on the loss gradient (default: the recipe's; the
            original trains with 0.9 and Nesterov).
        dampening: dampening for momentum (default 0).
        nesterov: Nesterov momentum (default False).
        weight_decay: L2 weight decay added to the loss gradient (default 0; the
            original uses 5e-4).
        foreach: use the multi-tensor (``torch._foreach_*``) implementation; ``None``
            picks it for dense tensors.
        maximize: maximize the objective instead of minimizing it.
        compiled: ``True`` runs each step as one ``torch.compile`` kernel per param-group
            batch (:mod:`sparseopt.optim._compiled`), reading and writing :math:`g, b, w,
            u` once (7 passes over memory instead of about 13), equal to the for-loop
            reference up to rounding (unpenalised groups then equal ``torch.optim.SGD``
            up to rounding, not bit for bit). Compiled: penalties ``none``, ``l1`` and
            ``l0`` (any β ≥ 0) with every SGD option; ``tl1`` and the group penalties
            (RGSM), the first momentum step (it creates the buffers) and inputs Inductor
            cannot compile (DTensor parameters, sparse gradients, other devices or
            dtypes) take the eager path; a kernel that fails to build (no C++ compiler)
            switches the compiled path off for the process. Where ``compiled=True`` falls
            back it warns once. ``lr`` and λ reach the kernel as tensor data, so schedules
            never recompile. Default ``None``: the eager path.

    State (per parameter):
        - ``step``: the number of steps taken (float32 0-d CPU tensor; converted from
          a plain number when loaded, as ``torch.optim.Adam`` does);
        - ``u``: the sparse variable :math:`u` (penalised parameters only);
        - ``momentum_buffer``: the SGD momentum buffer (only when ``momentum != 0``).

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 0.05, -0.5]))
        >>> opt = RVSM([w], lr=0.1, penalty="l0", lam=0.02, beta=1.0)  # threshold 0.2
        >>> opt.deployable(w)  # u = hard threshold of w before the first step
        tensor([ 1.0000,  0.0000, -0.5000])
        >>> (0.5 * w.pow(2).sum()).backward()
        >>> _ = opt.step()
        >>> w.detach()  # w - 0.1 w - 0.1 (w - u)
        tensor([ 0.9000,  0.0400, -0.4500])
        >>> opt.u_of(w)
        tensor([ 0.9000,  0.0000, -0.4500])

    References:
        - Dinh & Xin, arXiv:1812.05719; Xue & Xin, WCGO 2019, arXiv:1902.07419.
        - Yang, Lyu, Zhang, Qi & Xin, AI4I 2019 (RGSM).
        - https://github.com/tdinh15/rvsm-rgsm-admm
    """

    hyperparameters = MappingProxyType(
        {
            **SGDOptimizer.hyperparameters,
            "beta": Hyper(check_nonneg),
            "compiled": Hyper(check_compiled, missing=None),
        }
    )
    state_keys = ("momentum_buffer", "u")

    def __init__(
        self,
        params: Any,
        lr: float = _RECIPE.defaults["lr"],
        *,
        beta: float = _RECIPE.defaults["beta"],
        momentum: float = _RECIPE.defaults["momentum"],
        compiled: bool | None = None,
        **common: Unpack[SGDKeywords],
    ) -> None:
        super().__init__(params, locals())

    def _init_state(
        self, group: dict[str, Any], penalty: Penalty, p: Tensor, state: dict[str, Any]
    ) -> None:
        if "u" not in state and not isinstance(penalty, NoPenalty):
            state["u"] = _u_of_w(p.detach(), penalty, group["beta"])

    def _update(self, batch: StepBatch) -> None:
        bufs, us = batch.state.values()
        us = [] if isinstance(batch.penalty, NoPenalty) else us
        rvsm(batch.params, batch.grads, bufs, us, batch.steps, **batch.hyper)

    # --------------------------------------------------------- deployable network

    @torch.no_grad()
    def u_of(self, p: Tensor) -> Tensor:
        r"""The sparse variable :math:`u` of parameter ``p``.

        After ``p``'s first step this is the live state tensor (not a copy: do not
        modify it); before, it is computed as
        :math:`\operatorname{prox}_{(1/\beta)\lambda P}(p)` (a new tensor). Parameters
        with penalty ``none`` have no :math:`u`: ``p`` itself is returned.
        """
        group = self._group_of(p)
        penalty = self.penalty_of(group)
        if isinstance(penalty, NoPenalty):
            return p
        state = self.state.get(p)
        if state is not None and "u" in state:
            return state["u"]
        return _u_of_w(p.detach(), penalty, group["beta"])

    @torch.no_grad()
    def deployable(self, p: Tensor) -> Tensor:
        r"""The value of ``p`` in the deployed network: :math:`u` (a new tensor).

        Parameters with penalty ``none`` are returned as they are (``p`` itself).
        """
        u = self.u_of(p)
        return u if u is p else u.clone()

    @torch.no_grad()
    def finalize(self) -> None:
        r"""Copy :math:`u` into the parameters: :math:`w \leftarrow u`.

        :math:`u` and the momentum buffers are kept, so the coupling force
        :math:`\beta(w-u)` is 0 right after; training can continue from there.
        """
        super().finalize()

    def _lam_changed(self, group: dict[str, Any], old: Penalty, new: Penalty) -> None:
        r"""Recompute :math:`u = \operatorname{prox}_{(1/\beta)\lambda_{\text{new}}P}(w)`; :math:`w` is unchanged."""
        for p, state in self._states_with(group, "u"):
            state["u"].copy_(_u_of_w(p.detach(), new, group["beta"]))


def _u_of_w(w: Tensor, penalty: Penalty, beta: float) -> Tensor:
    """``u = prox_{(1/β)P}(w)`` as a new tensor; ``u = w`` (a copy) when β = 0 or P = 0."""
    if beta == 0 or penalty.is_zero:
        return w.clone(memory_format=torch.preserve_format)
    return penalty.prox(w, 1.0 / beta)


# ------------------------------------------------------------------------- functional


def rvsm(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffer_list: list[Tensor | None],
    us: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: float | Tensor,
    beta: float,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    maximize: bool = False,
    penalty: str | Penalty = "l1",
    foreach: bool | None = None,
    compiled: bool | None = None,
) -> None:
    r"""Functional RVSM step; see :class:`RVSM` for the algorithm.

    Updates ``params`` (:math:`w`), ``state_steps`` (0-d step counters) and ``us`` (:math:`u`, which must hold
    :math:`u_t`, e.g. :math:`\operatorname{prox}_{(1/\beta)P}(w_0)` at the first step)
    in place; when ``momentum != 0`` the buffers are updated in place and ``None``
    entries of ``momentum_buffer_list`` are replaced by new ones. Pass an empty ``us``
    for parameters without a penalty (then the step is SGD). ``lr`` may be a 1-element
    tensor (read once). ``compiled=True``: the compiled step (see :class:`RVSM`), falling
    back to the path ``foreach`` selects.

    Example:
        >>> from sparseopt.penalties import make_penalty
        >>> w = torch.tensor([1.0, 0.05])
        >>> pen = make_penalty("l1", lam=0.1)
        >>> u = pen.prox(w, 1.0)  # u_0 for beta = 1
        >>> step = torch.tensor(0.0)
        >>> rvsm([w], [torch.zeros(2)], [None], [u], [step], lr=0.5, beta=1.0, penalty=pen)
        >>> w, u  # w - 0.5 (w - u_0), then u = soft(w, 0.1)
        (tensor([0.9500, 0.0250]), tensor([0.8500, 0.0000]))
    """
    if us and len(us) != len(params):
        raise ValueError(f"rvsm: got {len(us)} u tensors for {len(params)} parameters")
    lr, penalty, foreach = prepare_step(params, lr, penalty, foreach, state_steps)
    func = _multi_tensor_rvsm if foreach else _single_tensor_rvsm
    sgd = SGDScalars(weight_decay, momentum, dampening, nesterov, maximize)
    hp = _Scalars(lr, beta, sgd, penalty)
    lists = (params, grads, momentum_buffer_list, us)
    # the first momentum step (it creates the buffers) runs the eager path
    has_bufs = momentum == 0 or all(b is not None for b in momentum_buffer_list)
    if params and has_bufs and resolve_compiled(compiled, [*params, *grads], penalty, "RVSM"):
        _compiled_rvsm(lists, hp, func)
    else:
        func(lists, hp)


class _Scalars(NamedTuple):
    """The scalars of one functional step (``lr`` as a number, the penalty as an object)."""

    lr: float
    beta: float
    sgd: SGDScalars
    penalty: Penalty

    @property
    def split(self) -> bool:
        """Whether ``u`` is split from ``w`` (β > 0 and a nonzero penalty); else ``u = w``."""
        return self.beta > 0 and not self.penalty.is_zero


def _single_tensor_rvsm(lists: TensorLists, hp: _Scalars) -> None:
    params, grads, momentum_buffer_list, us = lists
    lr, beta, sgd, penalty = hp
    split = hp.split
    for i, w in enumerate(params):
        d, momentum_buffer_list[i] = sgd_direction(w, grads[i], momentum_buffer_list[i], sgd)
        if not us:
            w.add_(d, alpha=-lr)
            continue
        u = us[i]
        if split:
            w.lerp_(u, lr * beta)  # w - τβ(w - u), with the w of before the step
        w.add_(d, alpha=-lr)
        u.copy_(w)
        if split:
            penalty.prox_(u, 1.0 / beta)


def _multi_tensor_rvsm(lists: TensorLists, hp: _Scalars) -> None:
    params, grads, momentum_buffer_list, us = lists
    lr, beta, sgd, penalty = hp
    split = hp.split
    indices = list(range(len(params)))
    u_list: list[Tensor | None] = list(us) if us else [None] * len(params)
    for bucket in group_by_device_dtype(params, grads, momentum_buffer_list, u_list, indices):
        device_params, device_grads, device_bufs, device_us, device_indices = bucket
        directions = sgd_directions_foreach(device_params, device_grads, device_bufs, sgd)
        for j, i in enumerate(device_indices):
            momentum_buffer_list[i] = device_bufs[j]
        if not us:
            torch._foreach_add_(device_params, directions, alpha=-lr)
            continue
        if split:
            torch._foreach_lerp_(device_params, device_us, lr * beta)
        torch._foreach_add_(device_params, directions, alpha=-lr)
        if split:
            penalty.prox_into_(device_us, device_params, 1.0 / beta)
        else:
            foreach_copy_(device_us, device_params)


# --------------------------------------------------------------------- compiled


def _rvsm_kernel(
    ws: list[Tensor],
    gs: list[Tensor],
    bufs: list[Tensor],
    us: list[Tensor],
    s: Tensor,
    *,
    kind: str,
    split: bool,
    has_momentum: bool,
    nesterov: bool,
    maximize: bool,
    decay: bool,
) -> None:
    r"""One RVSM step as a pure function of torch ops, for ``torch.compile``.

    ``s`` = (:math:`\tau`, :math:`\tau\beta`, momentum, 1 − dampening, weight decay, the
    threshold: :math:`\lambda/\beta` for ``l1``, :math:`\sqrt{2\lambda/\beta}` for
    ``l0``). The arithmetic is :func:`_single_tensor_rvsm`'s; each tensor's update reads
    :math:`g, b, w, u` once and writes :math:`b, w, u`. ``split`` is β > 0 (with λ = 0 the
    threshold 0 makes the prox the identity and :math:`u = w`, as in the eager step);
    ``kind="none"``: the SGD step of unpenalised groups (no :math:`u`).
    """
    for i in range(len(ws)):
        w = ws[i]
        buf = bufs[i] if has_momentum else None
        d = sgd_direction_expr(
            w, gs[i], buf, s[2], s[3], s[4],
            has_momentum=has_momentum, nesterov=nesterov, maximize=maximize, decay=decay,
        )  # fmt: skip
        if kind == "none":
            w.sub_(s[0] * d)
            continue
        u = us[i]
        if split:
            new = w + s[1] * (u - w) - s[0] * d  # w − τβ(w − u) − τ d
            w.copy_(new)
            u.copy_(soft(new, s[5]) if kind == "l1" else hard(new, s[5]))
        else:
            new = w - s[0] * d
            w.copy_(new)
            u.copy_(new)


def _compiled_rvsm(
    lists: TensorLists, hp: _Scalars, fallback: Callable[[TensorLists, _Scalars], None]
) -> None:
    """The compiled RVSM step (``compiled=True``): :func:`_rvsm_kernel` per bucket.

    Penalties ``none``, ``l1`` and ``l0`` (checked by the caller); the momentum buffers
    exist. A bucket whose kernel cannot be built runs ``fallback`` (the eager step).
    """
    params, grads, momentum_buffer_list, us = lists
    lr, beta, sgd, penalty = hp
    momentum = sgd.momentum
    kind = penalty_kind(penalty) if us else "none"
    thresh = dead_threshold(penalty, 1.0 / beta if beta > 0 else 0.0)
    sgd_numbers, sgd_flags = sgd_scalars(sgd)
    numbers = (lr, lr * beta, *sgd_numbers, thresh)
    flags = {"kind": kind, "split": beta > 0, **sgd_flags}
    n = len(params)
    bufs: list[Any] = momentum_buffer_list if momentum != 0 else [None] * n
    u_list: list[Any] = list(us) if us else params  # placeholders: the same layout
    for b_params, b_grads, b_bufs, b_us in group_by_device_dtype(params, grads, bufs, u_list):
        b_us = b_us if us else []
        tensors = (b_params, b_grads, b_bufs if momentum != 0 else [], b_us)
        if not run_compiled(_rvsm_kernel, tensors, numbers, flags, "RVSM"):
            fallback((b_params, b_grads, b_bufs, b_us), hp)
