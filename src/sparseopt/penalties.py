r"""Sparsity-promoting penalties and their proximal maps.

A penalty :math:`J` acts on one parameter tensor. Every penalty here is a small,
frozen, stateless object exposing

- ``value(x)``: :math:`J(x)` as a 0-d tensor;
- ``prox(x, t)``: :math:`\operatorname{prox}_{tJ}(x) = \arg\min_y \tfrac12\|y-x\|^2 + t J(y)`;
- ``subgrad(x)``: one element of :math:`\partial J(x)` (0 at 0 for the ℓ1 family);
- ``support(x)``: where ``x`` is alive (elementwise, or per group broadcast);
- ``spec()``: a plain ``dict`` of strings and floats, so that optimizer
  ``param_groups`` and state dicts stay loadable with ``torch.load(weights_only=True)``;
  :func:`from_spec` inverts it.

The maths lives in free functions (:func:`soft_threshold`, :func:`hard_threshold`,
:func:`tl1_threshold`, :func:`group_soft_threshold`, :func:`group_hard_threshold`)
that are vectorised over the whole tensor and keep its dtype and device.

=========== ============================================ =========================================
name        :math:`J(x)`                                  :math:`\operatorname{prox}_{tJ}(x)`
=========== ============================================ =========================================
``l1``      :math:`\lambda\sum|x_i|`                      soft threshold at :math:`t\lambda`
``l0``      :math:`\lambda\,\#\{x_i\neq0\}`               hard threshold at :math:`\sqrt{2t\lambda}`
``tl1``     :math:`\lambda\sum (a+1)|x_i|/(a+|x_i|)`      closed form of Zhang & Xin (2017)
``group_l1`` :math:`\lambda\sum_g w_g\|x_g\|_2`            group soft threshold at :math:`t\lambda w_g`
``group_l0`` :math:`\lambda\sum_g w_g 1[x_g\neq0]`          group hard threshold at :math:`\sqrt{2t\lambda w_g}`
``none``    0                                             identity
=========== ============================================ =========================================

References:
    - Parikh & Boyd, "Proximal Algorithms", Found. Trends Optim. 1(3), 2014.
    - S. Zhang & J. Xin, "Minimization of transformed L1 penalty: closed form
      representation and iterative thresholding algorithms", Comm. Math. Sci. 15 (2017).
    - Bungert, Roith, Tenbrinck & Burger, "A Bregman Learning Framework for Sparse
      Neural Networks", JMLR 23 (2022) — group weights :math:`w_g=\sqrt{|g|}`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
from torch import Tensor

from sparseopt._validation import check_nonneg as _check_nonneg
from sparseopt._validation import check_positive
from sparseopt.fsdp import foreach_copy_
from sparseopt.groups import canonical_grouping, group_dims, group_norms, group_size

__all__ = [
    "L0",
    "L1",
    "PENALTIES",
    "TL1",
    "GroupL0",
    "GroupL1",
    "NoPenalty",
    "Penalty",
    "dead_threshold",
    "from_spec",
    "group_hard_threshold",
    "group_soft_threshold",
    "hard_threshold",
    "make_penalty",
    "soft_threshold",
    "tl1_threshold",
    "tl1_threshold_value",
]


# --------------------------------------------------------------------------- checks


def _check_step(t: float) -> float:
    if isinstance(t, Tensor):
        if t.numel() != 1:
            raise ValueError(
                f"Invalid t value: a tensor of shape {tuple(t.shape)}; expected a scalar"
            )
        t = t.item()
    return _check_nonneg("t", t)


# ---------------------------------------------------------------- free prox functions


def _public_softshrink(x: Tensor, thresh: float, *, out: Tensor) -> Tensor:
    """``out ← x − clip(x, −τ, τ)`` with public operators (two passes)."""
    return torch.sub(x, x.clamp(-thresh, thresh), out=out)


def _public_hardshrink(x: Tensor, thresh: float, *, out: Tensor) -> Tensor:
    """``out ← x·1{|x| > τ}`` with public operators (:func:`hard_threshold` into ``out``)."""
    dead = x.abs() <= thresh
    return out.copy_(x).masked_fill_(dead, 0)


def _bind_kernel(name: str, fallback: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """The torch kernel at the dotted path ``name`` if it exists and works, else ``fallback``.

    The one-pass kernels with ``out=`` are not public API: a torch release may move
    them. They are tried once on a small tensor against the public form; if missing or
    different, the public two-pass form is used (same results, one more pass).
    """
    try:
        kernel: Any = torch
        for part in name.split("."):
            kernel = getattr(kernel, part)
        x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0])
        if torch.equal(kernel(x, 1.0, out=torch.empty(5)), fallback(x, 1.0, out=torch.empty(5))):
            return kernel
    except (AttributeError, RuntimeError, TypeError):  # moved, renamed or re-signed
        return fallback
    return fallback


# One-pass kernels with ``out=``: softshrink(x, τ) = x − clip(x, −τ, τ) and
# hardshrink(x, τ) = x·1{|x| > τ}, bitwise equal to the public two-pass forms above
# (tests/test_penalties.py forces the fallback and compares).
_softshrink = _bind_kernel("_C._nn.softshrink", _public_softshrink)
_hardshrink = _bind_kernel("ops.aten.hardshrink.out", _public_hardshrink)


def soft_threshold(x: Tensor, thresh: float) -> Tensor:
    r"""Soft thresholding :math:`\operatorname{sign}(x)\max(|x|-\tau, 0)`, the prox of :math:`\tau\|\cdot\|_1`.

    Computed as :math:`x - \operatorname{clip}(x, -\tau, \tau)`, two elementwise passes.

    Example:
        >>> soft_threshold(torch.tensor([-2.0, 0.5, 3.0]), 1.0)
        tensor([-1.,  0.,  2.])
    """
    return x - x.clamp(-thresh, thresh)


def hard_threshold(x: Tensor, thresh: float) -> Tensor:
    r"""Hard thresholding :math:`x\,\mathbf 1\{|x| > \tau\}`.

    With :math:`\tau=\sqrt{2t\lambda}` it is the prox of :math:`t\lambda\|\cdot\|_0`
    (at :math:`|x|=\tau` both 0 and :math:`x` are minimisers; we return 0).

    Example:
        >>> hard_threshold(torch.tensor([-2.0, 0.5, 3.0]), 1.0)
        tensor([-2.,  0.,  3.])
    """
    return x.masked_fill(x.abs() <= thresh, 0)


def tl1_threshold_value(mu: float | Tensor, a: float) -> float | Tensor:
    r"""The threshold :math:`\tau` below which :math:`\operatorname{prox}_{\mu\rho_a}` is 0.

    :math:`\tau = \mu(a+1)/a` if :math:`\mu \le a^2/(2(a+1))` (subcritical), else
    :math:`\tau = \sqrt{2\mu(a+1)} - a/2` (supercritical, where the prox jumps).
    A tensor ``mu`` (one μ per entry, μ ≥ 0) gives a tensor of thresholds.
    """
    if isinstance(mu, Tensor):
        return torch.where(
            mu <= a * a / (2.0 * (a + 1.0)),
            mu * ((a + 1.0) / a),
            (2.0 * (a + 1.0) * mu).sqrt() - a / 2.0,
        )
    if mu <= a * a / (2.0 * (a + 1.0)):
        return mu * (a + 1.0) / a
    return math.sqrt(2.0 * mu * (a + 1.0)) - a / 2.0


def tl1_threshold(x: Tensor, mu: float | Tensor, a: float) -> Tensor:
    r"""Prox of :math:`\mu\rho_a`, :math:`\rho_a(x) = (a+1)|x|/(a+|x|)` (transformed ℓ1).

    ``mu`` is a number, or a tensor of μ ≥ 0 broadcasting against ``x`` (one μ per
    entry: the prox is separable, so each entry gets its own closed form).

    For :math:`|x| \le \tau` (:func:`tl1_threshold_value`) the result is 0, otherwise

    .. math::
        \operatorname{sign}(x)\Big[\tfrac23(a+|x|)\cos\tfrac{\varphi}{3} - \tfrac{2a}{3}
        + \tfrac{|x|}{3}\Big],\quad
        \varphi = \arccos\Big(1 - \frac{27\mu a(a+1)}{2(a+|x|)^3}\Big).

    Reference: Zhang & Xin, Comm. Math. Sci. 15 (2017), Theorem 3.1.

    Example:
        >>> tl1_threshold(torch.tensor([0.1, 2.0]), 0.5, 1.0)
        tensor([0.0000, 1.8794])
    """
    if not isinstance(mu, Tensor) and mu == 0:
        return x.clone()
    ax = x.abs()
    tau = tl1_threshold_value(mu, a)
    u = a + ax
    arg = (1.0 - 27.0 * mu * a * (a + 1.0) / (2.0 * u.pow(3))).clamp(-1.0, 1.0)
    phi = torch.arccos(arg)
    mag = (2.0 / 3.0) * u * torch.cos(phi / 3.0) - 2.0 * a / 3.0 + ax / 3.0
    return torch.where(ax > tau, torch.sign(x) * mag, torch.zeros_like(x))


def _shrink_factor(norms: Tensor, thresh: float | Tensor) -> Tensor:
    # max(0, 1 - thresh / ||x_g||), exactly 0 where the group is 0 (no 0/0).
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    return torch.where(norms > thresh, 1.0 - thresh / safe, torch.zeros_like(norms))


def group_soft_threshold(x: Tensor, thresh: float | Tensor, groups: str) -> Tensor:
    r"""Group soft thresholding :math:`x_g\max(0, 1-\tau/\|x_g\|_2)` for every group ``g``.

    The prox of :math:`\tau\sum_g\|x_g\|_2`; a zero group stays zero. ``thresh`` is a
    number or a tensor of :func:`~sparseopt.groups.group_norms`' shape (one
    :math:`\tau_g` per group).

    Example:
        >>> w = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
        >>> group_soft_threshold(w, 1.0, "row")
        tensor([[2.4000, 3.2000],
                [0.0000, 0.0000]])
    """
    return x * _shrink_factor(group_norms(x, groups), thresh)


def group_hard_threshold(x: Tensor, thresh: float | Tensor, groups: str) -> Tensor:
    r"""Group hard thresholding :math:`x_g\,\mathbf 1\{\|x_g\|_2 > \tau\}` (``thresh``: a number or one per group).

    With :math:`\tau=\sqrt{2t\lambda}` it is the prox of :math:`t\lambda\,\#\{g: x_g\ne0\}`.
    """
    return x.masked_fill(group_norms(x, groups) <= thresh, 0)


# ------------------------------------------------------------------ penalty classes


@dataclass(frozen=True)
class Penalty:
    """Base class: a stateless penalty :math:`J` on one tensor (see the module docstring).

    Subclasses set ``name`` and ``convex`` and implement :meth:`value`, :meth:`prox`,
    :meth:`subgrad` and :meth:`support`.
    """

    name: ClassVar[str] = ""
    convex: ClassVar[bool] = True
    grouped: ClassVar[bool] = False

    def value(self, x: Tensor) -> Tensor:
        """:math:`J(x)` as a 0-d tensor of ``x``'s dtype."""
        raise NotImplementedError

    def prox(self, x: Tensor, t: float) -> Tensor:
        r""":math:`\arg\min_y \tfrac12\|y-x\|^2 + t\,J(y)`, a new tensor like ``x``."""
        raise NotImplementedError

    def subgrad(self, x: Tensor) -> Tensor:
        r"""One element of :math:`\partial J(x)` (0 where :math:`J` is not differentiable at 0)."""
        raise NotImplementedError

    def support(self, x: Tensor) -> Tensor:
        """Boolean tensor shaped like ``x``: True where ``x`` is alive."""
        return x != 0

    def prox_(self, x: Tensor, t: float) -> Tensor:
        """In-place :meth:`prox`: overwrite ``x`` with the prox and return it."""
        return x.copy_(self.prox(x, t))

    def prox_foreach_(self, xs: Sequence[Tensor], t: float) -> None:
        """In-place :meth:`prox` of every tensor in ``xs`` (fused where the penalty allows)."""
        for x in xs:
            self.prox_(x, t)

    def prox_into_(
        self, outs: Sequence[Tensor], xs: Sequence[Tensor], t: float, scale: float = 1.0
    ) -> None:
        r"""``outs[i] ← scale · prox_{tJ}(xs[i])`` for every ``i``; ``outs`` may be ``xs``.

        The optimizers' hot path: ``l1`` and ``l0`` write a one-pass kernel
        (``softshrink`` / ``hardshrink``) straight into ``outs``, ``group_l1`` one
        reduction and one multiply; the result equals :meth:`prox` (tested), except
        that a zero may come out as ``-0.0``.
        """
        outs, xs = list(outs), list(xs)
        if not all(o is x for o, x in zip(outs, xs, strict=True)):
            foreach_copy_(outs, xs)  # tensor by tensor for DTensors (FSDP2)
        self.prox_foreach_(outs, t)
        if scale != 1.0:
            torch._foreach_mul_(outs, scale)

    def check(self, x: Tensor) -> None:
        """Raise ``ValueError`` if this penalty cannot act on ``x`` (e.g. a group penalty on 1-D)."""

    def spec(self) -> dict[str, str | float]:
        """Plain-data description: ``{"penalty": name, ...}``; :func:`from_spec` inverts it."""
        out: dict[str, str | float] = {"penalty": self.name}
        for f in fields(self):
            out[f.name] = getattr(self, f.name)
        return out

    @property
    def is_zero(self) -> bool:
        """True when the penalty is identically 0 (``none``, or λ = 0)."""
        return getattr(self, "lam", 0.0) == 0.0


@dataclass(frozen=True)
class NoPenalty(Penalty):
    """:math:`J = 0`: identity prox; parameters follow the optimizer's dense limit."""

    name: ClassVar[str] = "none"

    def value(self, x: Tensor) -> Tensor:
        return x.new_zeros(())

    def prox(self, x: Tensor, t: float) -> Tensor:
        _check_step(t)
        return x.clone()

    def prox_(self, x: Tensor, t: float) -> Tensor:
        return x

    def prox_foreach_(self, xs: Sequence[Tensor], t: float) -> None:
        return None

    def subgrad(self, x: Tensor) -> Tensor:
        return torch.zeros_like(x)


@dataclass(frozen=True)
class L1(Penalty):
    r""":math:`J(x)=\lambda\|x\|_1`; prox is soft thresholding at :math:`t\lambda`.

    Example:
        >>> L1(lam=0.5).prox(torch.tensor([1.0, -0.2]), t=1.0)
        tensor([0.5000, 0.0000])
    """

    name: ClassVar[str] = "l1"
    lam: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "lam", _check_nonneg("lam", self.lam))

    def value(self, x: Tensor) -> Tensor:
        return self.lam * x.abs().sum()

    def prox(self, x: Tensor, t: float) -> Tensor:
        return soft_threshold(x, _check_step(t) * self.lam)

    def prox_(self, x: Tensor, t: float) -> Tensor:
        return _softshrink(x, _check_step(t) * self.lam, out=x)

    def prox_foreach_(self, xs: Sequence[Tensor], t: float) -> None:
        self.prox_into_(xs, xs, t)

    def prox_into_(
        self, outs: Sequence[Tensor], xs: Sequence[Tensor], t: float, scale: float = 1.0
    ) -> None:
        thr = _check_step(t) * self.lam
        for o, x in zip(outs, xs, strict=True):
            _softshrink(x, thr, out=o)  # x - clip(x, -thr, thr) in one pass
        if scale != 1.0 and len(outs):
            torch._foreach_mul_(list(outs), scale)

    def subgrad(self, x: Tensor) -> Tensor:
        return self.lam * torch.sign(x)


@dataclass(frozen=True)
class L0(Penalty):
    r""":math:`J(x)=\lambda\,\#\{i: x_i\ne0\}`; prox is hard thresholding at :math:`\sqrt{2t\lambda}`."""

    name: ClassVar[str] = "l0"
    convex: ClassVar[bool] = False
    lam: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "lam", _check_nonneg("lam", self.lam))

    def value(self, x: Tensor) -> Tensor:
        return self.lam * (x != 0).sum().to(x.dtype)

    def prox(self, x: Tensor, t: float) -> Tensor:
        return hard_threshold(x, math.sqrt(2.0 * _check_step(t) * self.lam))

    def prox_(self, x: Tensor, t: float) -> Tensor:
        return _hardshrink(x, math.sqrt(2.0 * _check_step(t) * self.lam), out=x)

    def prox_into_(
        self, outs: Sequence[Tensor], xs: Sequence[Tensor], t: float, scale: float = 1.0
    ) -> None:
        thr = math.sqrt(2.0 * _check_step(t) * self.lam)
        for o, x in zip(outs, xs, strict=True):
            _hardshrink(x, thr, out=o)  # x·1{|x| > thr} in one pass
        if scale != 1.0 and len(outs):
            torch._foreach_mul_(list(outs), scale)

    def subgrad(self, x: Tensor) -> Tensor:
        return torch.zeros_like(x)


@dataclass(frozen=True)
class TL1(Penalty):
    r"""Transformed ℓ1: :math:`J(x)=\lambda\sum_i (a+1)|x_i|/(a+|x_i|)`, :math:`a>0`.

    Interpolates between ℓ0 (:math:`a\to0^+`) and ℓ1 (:math:`a\to\infty`); its prox
    is the closed form :func:`tl1_threshold` with :math:`\mu = t\lambda`.
    """

    name: ClassVar[str] = "tl1"
    convex: ClassVar[bool] = False
    lam: float = 1.0
    a: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "lam", _check_nonneg("lam", self.lam))
        object.__setattr__(self, "a", check_positive("a", self.a))

    def value(self, x: Tensor) -> Tensor:
        ax = x.abs()
        return self.lam * ((self.a + 1.0) * ax / (self.a + ax)).sum()

    def prox(self, x: Tensor, t: float) -> Tensor:
        return tl1_threshold(x, _check_step(t) * self.lam, self.a)

    def subgrad(self, x: Tensor) -> Tensor:
        a = self.a
        return self.lam * a * (a + 1.0) * torch.sign(x) / (a + x.abs()).pow(2)


@dataclass(frozen=True)
class _GroupPenalty(Penalty):
    grouped: ClassVar[bool] = True
    #: The ``group_weight`` values the penalty takes, its default first: ``"one"``
    #: (:math:`w_g = 1`), ``"sqrt"`` (:math:`\sqrt{|g|}`), ``"size"`` (:math:`|g|`).
    WEIGHTS: ClassVar[tuple[str, ...]] = ("sqrt", "one")
    lam: float = 1.0
    groups: str = "filter"
    group_weight: str = "sqrt"

    def __post_init__(self) -> None:
        object.__setattr__(self, "lam", _check_nonneg("lam", self.lam))
        canonical_grouping(self.groups)  # validates the name
        if self.group_weight not in self.WEIGHTS:
            expected = " or ".join(repr(w) for w in self.WEIGHTS)
            raise ValueError(
                f"Invalid group_weight value: {self.group_weight!r}; expected {expected} "
                f"for {self.name}"
            )

    def weight(self, shape: torch.Size | tuple[int, ...]) -> float:
        """The group weight :math:`w_g` for a tensor of this shape (all groups are equal size)."""
        if self.group_weight == "one":
            return 1.0
        size = group_size(shape, self.groups)
        return math.sqrt(size) if self.group_weight == "sqrt" else float(size)

    def check(self, x: Tensor) -> None:
        group_dims(x.ndim, self.groups)

    def support(self, x: Tensor) -> Tensor:
        return (group_norms(x, self.groups) != 0).expand_as(x)


@dataclass(frozen=True)
class GroupL1(_GroupPenalty):
    r"""Group lasso :math:`J(x)=\lambda\sum_g w_g\|x_g\|_2`.

    ``group_weight="sqrt"`` (default, Bungert et al.) uses :math:`w_g=\sqrt{|g|}`,
    ``"one"`` uses :math:`w_g = 1`. Prox: group soft threshold at :math:`t\lambda w_g`.

    Example:
        >>> pen = GroupL1(lam=1.0, groups="filter")
        >>> w = torch.randn(8, 3, 3, 3)
        >>> pen.support(pen.prox(w, t=10.0)).any().item()
        False
    """

    name: ClassVar[str] = "group_l1"

    def value(self, x: Tensor) -> Tensor:
        return self.lam * self.weight(x.shape) * group_norms(x, self.groups).sum()

    def prox(self, x: Tensor, t: float) -> Tensor:
        return group_soft_threshold(
            x, _check_step(t) * self.lam * self.weight(x.shape), self.groups
        )

    def prox_into_(
        self, outs: Sequence[Tensor], xs: Sequence[Tensor], t: float, scale: float = 1.0
    ) -> None:
        # One reduction for the group norms, a few ops on the small tensors of group
        # factors scale·max(0, 1 − τ/‖x_g‖), and one multiply written into ``out``.
        t = _check_step(t)
        for o, x in zip(outs, xs, strict=True):
            factor = _shrink_factor(
                group_norms(x, self.groups), t * self.lam * self.weight(x.shape)
            )
            if scale != 1.0:
                factor.mul_(scale)
            torch.mul(x, factor, out=o)

    def subgrad(self, x: Tensor) -> Tensor:
        norms = group_norms(x, self.groups)
        safe = torch.where(norms > 0, norms, torch.ones_like(norms))
        return self.lam * self.weight(x.shape) * torch.where(norms > 0, x / safe, 0)


@dataclass(frozen=True)
class GroupL0(_GroupPenalty):
    r""":math:`J(x)=\lambda\sum_g w_g\,\mathbf 1[x_g\ne0]`; prox is group hard
    thresholding at :math:`\sqrt{2t\lambda w_g}`: a group is kept when
    :math:`\|x_g\|_2^2/(2t) > \lambda w_g`.

    ``group_weight="one"`` (default) counts the nonzero groups, :math:`w_g = 1`
    (:math:`\lambda\,\#\{g: x_g\ne0\}`): a group of many weights has a larger norm at the
    same entries and survives where a small one dies, so with groups of different sizes
    (the rows of a 784-input and an 80-input layer) the large layers keep most of theirs.
    ``"size"`` counts the weights of the nonzero groups, :math:`w_g = |g|`: the
    threshold is then on the group's RMS entry, :math:`\|x_g\|_2/\sqrt{|g|} >
    \sqrt{2t\lambda}` — elementwise ℓ0's threshold on :math:`|x_i|` — whatever the size.
    (:func:`make_penalty` reads group ℓ1's ``"sqrt"``, every optimizer's param-group
    default and what a group ℓ0 group of a state dict saved before 2026-11-28 holds, as
    ``"one"``, which it always meant for group ℓ0.)

    Example:
        >>> x = torch.cat([torch.full((1, 100), 0.1), torch.full((1, 100), 0.3)])
        >>> GroupL0(lam=0.01).prox(x, t=1.0).norm(dim=1).gt(0).tolist()  # ‖x_g‖ ≥ 1 > 0.14
        [True, True]
        >>> GroupL0(lam=0.01, group_weight="size").prox(x, t=1.0).norm(dim=1).gt(0).tolist()
        [False, True]
    """

    name: ClassVar[str] = "group_l0"
    convex: ClassVar[bool] = False
    WEIGHTS: ClassVar[tuple[str, ...]] = ("one", "size")
    group_weight: str = "one"

    def value(self, x: Tensor) -> Tensor:
        count = (group_norms(x, self.groups) != 0).sum().to(x.dtype)
        return self.lam * self.weight(x.shape) * count

    def prox(self, x: Tensor, t: float) -> Tensor:
        thr = math.sqrt(2.0 * _check_step(t) * self.lam * self.weight(x.shape))
        return group_hard_threshold(x, thr, self.groups)

    def subgrad(self, x: Tensor) -> Tensor:
        return torch.zeros_like(x)


#: Registry of penalty names to classes.
PENALTIES: dict[str, type[Penalty]] = {
    cls.name: cls for cls in (NoPenalty, L1, L0, TL1, GroupL1, GroupL0)
}


def make_penalty(penalty: str | Penalty | None = "l1", **options: Any) -> Penalty:
    """Build a penalty from a name (or return a given :class:`Penalty` unchanged).

    ``options`` may hold any of ``lam``, ``a``, ``groups``, ``group_weight``; those the
    chosen penalty does not take are ignored, so optimizers can pass a whole
    param group. ``None`` for an option means "the penalty's default"; so does
    ``group_weight="sqrt"`` (the param groups' default, group ℓ1's weight) for
    ``group_l0``, whose weights are ``"one"`` and ``"size"`` (:class:`GroupL0`).

    Raises:
        ValueError: unknown penalty name, or an invalid option value.

    Example:
        >>> make_penalty("tl1", lam=0.1, a=2.0, groups="filter")
        TL1(lam=0.1, a=2.0)
    """
    if isinstance(penalty, Penalty):
        return penalty
    if penalty is None:
        penalty = "none"
    try:
        cls = PENALTIES[penalty]
    except (KeyError, TypeError):
        raise ValueError(
            f"Invalid penalty value: {penalty!r}; expected one of {sorted(PENALTIES)}"
        ) from None
    names = {f.name for f in fields(cls)}
    kwargs = {k: v for k, v in options.items() if k in names and v is not None}
    if cls is GroupL0 and kwargs.get("group_weight") == "sqrt":
        # group ℓ1's weight, every optimizer's param-group default (and what an older
        # state dict's group ℓ0 groups hold): group ℓ0 keeps its own, as it always did
        del kwargs["group_weight"]
    return cls(**kwargs)


def from_spec(spec: Mapping[str, Any]) -> Penalty:
    """Inverse of :meth:`Penalty.spec`.

    Example:
        >>> pen = GroupL1(lam=0.2, groups="channel")
        >>> from_spec(pen.spec()) == pen
        True
    """
    spec = dict(spec)
    return make_penalty(spec.pop("penalty", "none"), **spec)


def dead_threshold(penalty: Penalty, delta: float) -> float:
    r"""The level :math:`t` with :math:`\operatorname{prox}_{\delta J}(y) = 0 \iff |y| \le t`
    (the prox at step ``delta``).

    :math:`|y|` is the entry's magnitude, or the group's norm for group penalties
    (the group weight :math:`w_g` is left out: only ratios of thresholds are used).
    ``l1``/``group_l1``: :math:`\delta\lambda`; ``l0``/``group_l0``:
    :math:`\sqrt{2\delta\lambda}`; ``tl1``: Zhang & Xin's threshold at
    :math:`\mu=\delta\lambda`. Other penalties are treated like ``l1``.
    """
    lam = float(getattr(penalty, "lam", 0.0))
    if isinstance(penalty, (L0, GroupL0)):
        return math.sqrt(2.0 * delta * lam)
    if isinstance(penalty, TL1):
        return tl1_threshold_value(delta * lam, penalty.a) if lam > 0 else 0.0
    return delta * lam
