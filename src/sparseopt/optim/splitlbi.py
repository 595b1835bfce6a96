r"""Split linearized Bregman iteration (S²-LBI / DessiLBI) for deep networks.

The weights :math:`W` are coupled to a sparse *structure* variable :math:`\Gamma` by
the augmented loss :math:`L(W) + \|W-\Gamma\|^2/(2\nu)`: :math:`W` follows (momentum)
gradient descent on it, while :math:`\Gamma` follows a linearized Bregman (inverse
scale space) iteration through a dual variable :math:`V`. Starting from
:math:`\Gamma = V = 0`, the support of :math:`\Gamma` starts empty and grows along
the training: the iterates trace a regularisation path of sparse structures.

References:
    - Y. Fu, C. Liu, D. Li, X. Sun, J. Zeng & Y. Yao, "Split LBI for deep learning:
      structural sparsity via differential inclusion paths" (S²-LBI),
      arXiv:1904.10873 (2019).
    - Y. Fu, C. Liu, D. Li, X. Sun, J. Zeng & Y. Yao, "DessiLBI: Exploring structural
      sparsity of deep networks via differential inclusion paths", ICML 2020,
      arXiv:2007.02010.
    - Original code: https://github.com/DessiLBI2020/DessiLBI (``slbi_opt.py``,
      class ``SLBI``; ``mu`` there is :math:`\nu` here).
"""

from __future__ import annotations

__all__ = ["SplitLBI", "splitlbi"]

from collections.abc import Callable, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple, Unpack

import torch
from torch import Tensor

from sparseopt._validation import check_positive
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
_RECIPE = get_optimizer_info("splitlbi")


_DEPLOY_MODES = ("masked", "gamma")


def _check_deploy(name: str, value: Any) -> None:
    if value not in _DEPLOY_MODES:
        raise ValueError(f"Invalid {name} value: {value!r}; expected 'masked' or 'gamma'")


class SplitLBI(SGDOptimizer):
    r"""Split LBI (S²-LBI / DessiLBI): weights, sparse structure :math:`\Gamma` and dual :math:`V`.

    With learning rate :math:`\alpha` (``lr``), :math:`\kappa` (``kappa``), :math:`\nu`
    (``nu``) and the param group's penalty :math:`J` (λ included), one step on a
    penalised parameter :math:`W` with loss gradient :math:`g_t` is

    .. math::
        \begin{aligned}
        d_t &= \operatorname{momentum}(g_t + \text{wd}\cdot W_t)
              \quad\text{(as in } \texttt{torch.optim.SGD}\text{)}\\
        V_{t+1} &= V_t + \tfrac{\alpha}{\nu}\,(W_t - \Gamma_t)\\
        W_{t+1} &= W_t - \kappa\alpha\,\big(d_t + \tfrac1\nu(W_t - \Gamma_t)\big)\\
        \Gamma_{t+1} &= \kappa\,\operatorname{prox}_{J}(V_{t+1})
        \end{aligned}

    with :math:`\Gamma_0 = V_0 = 0` (the prox has step 1; for ``l1`` it is the soft
    threshold at λ, for ``group_l1`` the group soft threshold at :math:`\lambda w_g`;
    ``l0``, ``tl1`` and ``group_l0`` use their own prox). Momentum and weight decay act
    on the loss gradient only, never on the coupling term (for penalised groups without
    dampening the buffer update :math:`b \leftarrow g + \beta b` is one fused pass, equal
    to SGD's two up to rounding). Parameters whose group has
    penalty ``none`` have no :math:`\Gamma, V` and take plain SGD(-momentum) steps with
    rate :math:`\kappa\alpha` — exactly ``torch.optim.SGD(lr=kappa * lr, ...)``. A group
    with λ = 0 is still coupled (then :math:`\Gamma = \kappa V`, a dense structure).

    The support of :math:`\Gamma` is empty until :math:`|V|` first exceeds λ and then
    grows: the solution path. The **deployable** sparse network is
    :math:`W\odot\mathbf 1[\Gamma\ne0]` (``deploy="masked"``, support per group for group
    penalties) or :math:`\Gamma` itself (``deploy="gamma"``).

    Args:
        params: parameters or param groups (see :func:`sparseopt.param_groups`). Real
            floating-point tensors only: complex parameters raise ``ValueError`` (the
            penalties act on real entries).
        lr: :math:`\alpha` (default: the registry recipe, docs/recipes.md; the DessiLBI CIFAR scripts use
            0.1 and the original makes it required), a number or a 1-element tensor. The weights
            move with rate :math:`\kappa\alpha`.
        penalty: penalty name or :class:`~sparseopt.penalties.Penalty` acting on
            :math:`\Gamma` (default ``"l1"``).
        lam: λ (default: the registry recipe's λ of ``penalty``; the DessiLBI convention is
            1: the original's prox is the soft threshold at 1; the path is driven by :math:`\alpha/\nu` and the
            number of steps rather than by λ).
        groups: grouping for group penalties (``"filter"``, ``"channel"``, ...).
        a: the Tℓ1 parameter.
        group_weight: ``group_l1``'s ``"sqrt"`` (:math:`w_g=\sqrt{|g|}`, the library
            default) or ``"one"`` (:math:`w_g = 1`, what DessiLBI's filter shrinkage uses);
            ``group_l0``'s ``"one"`` (default) or ``"size"``.
        kappa: :math:`\kappa > 0` (default: the recipe's; DessiLBI uses 1).
        nu: :math:`\nu > 0`, the coupling parameter (``mu`` in the original; default:
            the recipe's; the original's default is 100).
        momentum: momentum on the loss gradient (default: the recipe's; DessiLBI's own
            default is 0.9).
        dampening: momentum dampening (default 0).
        nesterov: Nesterov momentum (default False; our addition, as in SGD).
        weight_decay: L2 weight decay added to the loss gradient (default 0). Unlike
            the original, it is not skipped for 1-D parameters: use param groups.
        deploy: ``"masked"`` (default) or ``"gamma"``, see :meth:`deployable`.
        foreach: use the multi-tensor (``torch._foreach_*``) implementation; ``None``
            picks it for dense tensors.
        maximize: maximize the objective instead of minimizing it.
        compiled: ``True`` runs each step as one ``torch.compile`` kernel per param-group
            batch (:mod:`sparseopt.optim._compiled`), reading and writing
            :math:`g, b, W, \Gamma, V` once (9 passes over memory instead of about 17),
            equal to the for-loop reference up to rounding (unpenalised groups then equal
            ``torch.optim.SGD`` up to rounding, not bit for bit). Compiled: penalties
            ``none``, ``l1`` and ``l0`` with every SGD option; ``tl1`` and the group
            penalties, the first momentum step (it creates the buffers) and inputs
            Inductor cannot compile (DTensor parameters, sparse gradients, other devices
            or dtypes) take the eager path; a kernel that fails to build (no C++ compiler)
            switches the compiled path off for the process. Where ``compiled=True`` falls
            back it warns once. ``lr`` and λ reach the kernel as tensor data, so schedules
            never recompile. Default ``None``: the eager path.

    State (per parameter):
        - ``step``: float32 0-d CPU tensor, the number of steps this parameter has
          taken (the plain ``int`` of earlier versions, or any plain number, in a
          loaded state dict is converted);
        - ``gamma``: :math:`\Gamma` (penalised parameters only);
        - ``dual``: :math:`V` (penalised parameters only);
        - ``momentum_buffer``: the SGD momentum buffer (only when ``momentum != 0``).

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([3.0, 0.5]))
        >>> opt = SplitLBI([w], lr=0.5, nu=1.0, lam=1.0, momentum=0.0)  # l1 penalty, λ = 1
        >>> for _ in range(3):
        ...     opt.zero_grad()
        ...     (0.5 * (w - torch.tensor([2.0, 0.5])).pow(2).sum()).backward()
        ...     opt.step()
        >>> opt.gamma(w)  # only the large coordinate has entered the support
        tensor([1., 0.])
        >>> w.detach(), opt.deployable(w)  # dense weights, sparse deployable network
        (tensor([1.3750, 0.2500]), tensor([1.3750, 0.0000]))

    References:
        - Fu et al., "Split LBI for deep learning" (S²-LBI), arXiv:1904.10873.
        - Fu et al., "DessiLBI", ICML 2020, arXiv:2007.02010.
        - https://github.com/DessiLBI2020/DessiLBI
    """

    hyperparameters = MappingProxyType(
        {
            "kappa": Hyper(check_positive),
            "nu": Hyper(check_positive),
            **SGDOptimizer.hyperparameters,
            "deploy": Hyper(_check_deploy, missing="masked", functional=False),
            "compiled": Hyper(check_compiled, missing=None),
        }
    )
    state_keys = ("momentum_buffer", "gamma", "dual")
    support_grows_with_steps = True

    def __init__(
        self,
        params: Any,
        lr: float = _RECIPE.defaults["lr"],
        *,
        kappa: float = _RECIPE.defaults["kappa"],
        nu: float = _RECIPE.defaults["nu"],
        momentum: float = _RECIPE.defaults["momentum"],
        deploy: str = "masked",
        compiled: bool | None = None,
        **common: Unpack[SGDKeywords],
    ) -> None:
        super().__init__(params, locals())

    def _init_state(
        self, group: dict[str, Any], penalty: Penalty, p: Tensor, state: dict[str, Any]
    ) -> None:
        if "dual" not in state and not isinstance(penalty, NoPenalty):
            # Γ = V = 0: the structure starts from the empty support.
            state["gamma"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["dual"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _update(self, batch: StepBatch) -> None:
        bufs, gammas, duals = batch.state.values()
        if isinstance(batch.penalty, NoPenalty):
            gammas = duals = []
        splitlbi(
            batch.params, batch.grads, bufs, gammas, duals, state_steps=batch.steps, **batch.hyper
        )

    # --------------------------------------------------------- deployable network

    def gamma(self, p: Tensor) -> Tensor | None:
        r"""The structure variable :math:`\Gamma` of ``p`` (the live state tensor, not a copy).

        ``None`` for parameters without a penalty or before their first step.
        """
        self._group_of(p)  # raises for foreign tensors
        return self.state[p].get("gamma") if p in self.state else None

    @torch.no_grad()
    def deployable(self, p: Tensor) -> Tensor:
        r"""The value of ``p`` in the deployable sparse network (a new tensor).

        - ``deploy="masked"``: :math:`W\odot\mathbf 1[\operatorname{supp}\Gamma]`, with
          the support taken per group for group penalties (``penalty.support(Γ)``);
        - ``deploy="gamma"``: :math:`\Gamma` itself.

        Before a penalised parameter's first step :math:`\Gamma = 0`, so its support is
        empty and both modes give zeros: the start of the path is the empty network
        (as in the original, whose :math:`\Gamma` is initialised to 0). Parameters with
        penalty ``none`` are returned as they are (``p`` itself).
        """
        group = self._group_of(p)
        penalty = self.penalty_of(group)
        if isinstance(penalty, NoPenalty):
            return p
        gamma = self.state[p].get("gamma") if p in self.state else None
        if gamma is None:
            return torch.zeros_like(p)
        if group["deploy"] == "gamma":
            return gamma.clone()
        return p.detach().masked_fill(~penalty.support(gamma), 0)

    @torch.no_grad()
    def finalize(self) -> None:
        r"""Copy the deployable network into the parameters, permanently.

        ``masked``: :math:`W \leftarrow W\odot\mathbf 1[\Gamma\ne0]`; ``gamma``:
        :math:`W \leftarrow \Gamma`. :math:`V`, :math:`\Gamma` and the momentum buffers
        are left unchanged, so :math:`\Gamma = \kappa\operatorname{prox}_J(V)` still holds
        and the finalized weights agree with :math:`\Gamma`'s support; further steps
        continue the same path (from the new :math:`W`).
        """
        super().finalize()

    def _lam_changed(self, group: dict[str, Any], old: Penalty, new: Penalty) -> None:
        r"""Recompute :math:`\Gamma = \kappa\operatorname{prox}_{J_{\text{new}}}(V)`; :math:`V` and :math:`W` are unchanged."""
        for _, state in self._states_with(group, "dual"):
            _gamma_from_dual_([state["gamma"]], [state["dual"]], new, group["kappa"])


# ------------------------------------------------------------------------- functional


def _gamma_from_dual_(
    gammas: list[Tensor],
    duals: list[Tensor],
    penalty: Penalty,
    kappa: float,
    foreach: bool = False,
) -> None:
    """Γ ← κ·prox_J(V) in place (one fused pass for ℓ1 / ℓ0, see :meth:`Penalty.prox_into_`).

    ``foreach``: one :meth:`~sparseopt.penalties.Penalty.prox_into_` call over the lists;
    otherwise one call per tensor (the same per-tensor kernels, so the same result).
    """
    if foreach:
        penalty.prox_into_(gammas, duals, 1.0, scale=kappa)
        return
    for gamma, dual in zip(gammas, duals, strict=True):
        penalty.prox_into_([gamma], [dual], 1.0, scale=kappa)


def splitlbi(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffer_list: list[Tensor | None],
    gammas: list[Tensor],
    duals: list[Tensor],
    *,
    lr: float | Tensor,
    kappa: float,
    nu: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    weight_decay: float,
    maximize: bool,
    penalty: str | Penalty,
    foreach: bool | None = None,
    compiled: bool | None = None,
    state_steps: Sequence[Tensor] = (),
) -> None:
    r"""Functional Split LBI step; see :class:`SplitLBI` for the algorithm.

    Updates ``params``, ``gammas`` (Γ), ``duals`` (V) and the momentum buffers in place;
    ``None`` entries of ``momentum_buffer_list`` are replaced by new buffers (when
    ``momentum != 0``). With penalty ``none`` the step is SGD with rate ``kappa * lr``
    and ``gammas``/``duals`` are ignored (pass empty lists). ``foreach=None`` picks the
    multi-tensor implementation for dense tensors (:func:`resolve_foreach`). ``lr`` may be
    a 1-element tensor (read once). ``state_steps`` (0-d step counters, optional) are
    incremented first. ``compiled=True``: the compiled step (see :class:`SplitLBI`),
    falling back to the path ``foreach`` selects.
    """
    lr, penalty, foreach = prepare_step(params, lr, penalty, foreach, state_steps)
    coupled = not isinstance(penalty, NoPenalty)
    if coupled and not (len(gammas) == len(duals) == len(params)):
        raise ValueError(
            f"splitlbi: expected one gamma and one dual per parameter, got {len(params)} "
            f"params, {len(gammas)} gammas and {len(duals)} duals"
        )
    func = _multi_tensor_splitlbi if foreach else _single_tensor_splitlbi
    sgd = SGDScalars(weight_decay, momentum, dampening, nesterov, maximize, fused=coupled)
    hp = _Scalars(lr, kappa, nu, sgd, penalty, coupled)
    lists = (params, grads, momentum_buffer_list, gammas, duals)
    # the first momentum step (it creates the buffers) runs the eager path
    has_bufs = momentum == 0 or all(b is not None for b in momentum_buffer_list)
    if params and has_bufs and resolve_compiled(compiled, [*params, *grads], penalty, "SplitLBI"):
        _compiled_splitlbi(lists, hp, func)
    else:
        func(lists, hp)


class _Scalars(NamedTuple):
    """The scalars of one functional step (``lr`` as a number, the penalty as an object)."""

    lr: float
    kappa: float
    nu: float
    sgd: SGDScalars
    penalty: Penalty
    coupled: bool


def _single_tensor_splitlbi(lists: TensorLists, hp: _Scalars) -> None:
    params, grads, momentum_buffer_list, gammas, duals = lists
    lr, kappa, nu, sgd, penalty, coupled = hp
    lr_w = kappa * lr  # rate of the weights
    a = lr / nu  # rate of the dual
    c = kappa * a  # rate of the coupling term in the weights
    for i, w in enumerate(params):
        # momentum on the loss gradient only; the one-pass buffer update when coupled
        d, momentum_buffer_list[i] = sgd_direction(w, grads[i], momentum_buffer_list[i], sgd)
        if coupled:
            gamma, dual = gammas[i], duals[i]
            # V += (α/ν)(W − Γ), with the old W and Γ
            dual.add_(w, alpha=a).add_(gamma, alpha=-a)
            # W −= κα (d + (W − Γ)/ν): the coupling as a lerp towards Γ, then the gradient
            w.lerp_(gamma, c)
            w.add_(d, alpha=-lr_w)
            _gamma_from_dual_([gamma], [dual], penalty, kappa, foreach=False)
        else:
            w.add_(d, alpha=-lr_w)


def _multi_tensor_splitlbi(lists: TensorLists, hp: _Scalars) -> None:
    params, grads, momentum_buffer_list, gammas, duals = lists
    lr, kappa, nu, sgd, penalty, coupled = hp
    if len(params) == 0:
        return
    lr_w = kappa * lr
    a = lr / nu
    c = kappa * a
    n = len(params)
    if not coupled:  # placeholders so every bucket has the same layout
        gammas = duals = params
    # the index list travels through the bucketing so new momentum buffers find their slot
    indices: list[Any] = list(range(n))
    buckets = group_by_device_dtype(params, grads, momentum_buffer_list, gammas, duals, indices)
    for b_params, b_grads, b_bufs, b_gammas, b_duals, b_idx in buckets:
        b_bufs = list(b_bufs)
        d = sgd_directions_foreach(b_params, b_grads, b_bufs, sgd)
        if sgd.momentum != 0:  # new buffers go back to their slots
            for j, buf in zip(b_idx, b_bufs, strict=True):
                momentum_buffer_list[j] = buf
        if coupled:
            torch._foreach_add_(b_duals, b_params, alpha=a)
            torch._foreach_add_(b_duals, b_gammas, alpha=-a)
            torch._foreach_lerp_(b_params, b_gammas, c)
            torch._foreach_add_(b_params, d, alpha=-lr_w)
            _gamma_from_dual_(b_gammas, b_duals, penalty, kappa, foreach=True)
        else:
            torch._foreach_add_(b_params, d, alpha=-lr_w)


# --------------------------------------------------------------------- compiled


def _splitlbi_kernel(
    ws: list[Tensor],
    gs: list[Tensor],
    bufs: list[Tensor],
    gammas: list[Tensor],
    duals: list[Tensor],
    s: Tensor,
    *,
    kind: str,
    has_momentum: bool,
    nesterov: bool,
    maximize: bool,
    decay: bool,
) -> None:
    r"""One Split LBI step as a pure function of torch ops, for ``torch.compile``.

    ``s`` = (:math:`\kappa\alpha`, :math:`\alpha/\nu`, :math:`\kappa\alpha/\nu`,
    momentum, 1 − dampening, weight decay, :math:`\kappa`, the threshold: λ for ``l1``,
    :math:`\sqrt{2\lambda}` for ``l0``). The arithmetic is :func:`_single_tensor_splitlbi`'s;
    each tensor's update reads :math:`g, b, W, \Gamma, V` once and writes :math:`b, W,
    \Gamma, V`. ``kind="none"``: the SGD step of unpenalised groups (no Γ, V).
    """
    for i in range(len(ws)):
        w = ws[i]
        buf = bufs[i] if has_momentum else None
        d = sgd_direction_expr(
            w, gs[i], buf, s[3], s[4], s[5],
            has_momentum=has_momentum, nesterov=nesterov, maximize=maximize, decay=decay,
        )  # fmt: skip
        if kind == "none":
            w.sub_(s[0] * d)
            continue
        gamma, dual = gammas[i], duals[i]
        dual.add_(s[1] * (w - gamma))  # V += (α/ν)(W − Γ), the old W and Γ
        w.copy_(w + s[2] * (gamma - w) - s[0] * d)  # W −= κα (d + (W − Γ)/ν)
        shrunk = soft(dual, s[7]) if kind == "l1" else hard(dual, s[7])
        gamma.copy_(s[6] * shrunk)  # Γ = κ prox_J(V)


def _compiled_splitlbi(
    lists: TensorLists, hp: _Scalars, fallback: Callable[[TensorLists, _Scalars], None]
) -> None:
    """The compiled Split LBI step (``compiled=True``): :func:`_splitlbi_kernel` per bucket.

    Penalties ``none``, ``l1`` and ``l0`` (checked by the caller); the momentum buffers
    exist. A bucket whose kernel cannot be built runs ``fallback`` (the eager step).
    """
    params, grads, momentum_buffer_list, gammas, duals = lists
    lr, kappa, nu, sgd, penalty, coupled = hp
    momentum = sgd.momentum
    sgd_numbers, sgd_flags = sgd_scalars(sgd)
    numbers = (kappa * lr, lr / nu, kappa * (lr / nu), *sgd_numbers)
    numbers += (kappa, dead_threshold(penalty, 1.0))
    flags = {"kind": penalty_kind(penalty), **sgd_flags}
    n = len(params)
    bufs: list[Any] = momentum_buffer_list if momentum != 0 else [None] * n
    if not coupled:  # placeholders so every bucket has the same layout
        gammas = duals = params
    for bucket in group_by_device_dtype(params, grads, bufs, gammas, duals):
        b_params, b_grads, b_bufs, b_gammas, b_duals = bucket
        tensors = (
            b_params,
            b_grads,
            b_bufs if momentum != 0 else [],
            b_gammas if coupled else [],
            b_duals if coupled else [],
        )
        if not run_compiled(_splitlbi_kernel, tensors, numbers, flags, "SplitLBI"):
            fallback((b_params, b_grads, b_bufs, *tensors[3:]), hp)
