r"""Shared building blocks of the SGD-type sparse optimizers (:class:`ProxSGD`, :class:`RVSM`).

- :func:`sgd_direction` / :func:`sgd_directions_foreach`: the search direction
  :math:`d_t` of ``torch.optim.SGD`` (maximize, weight decay, momentum with
  dampening, Nesterov), computed with the very same tensor operations in the same
  order, so that ``param.add_(d, alpha=-lr)`` reproduces ``torch.optim.SGD`` bit for
  bit (for-loop and ``foreach`` alike). Unlike ``torch.optim.SGD``'s multi-tensor path
  they never write into ``p.grad`` (torch's Nesterov branch adds the buffer into the
  gradient in place); the resulting parameters are identical.
- :func:`buckets` and :func:`cached_penalty`: cheaper per-step bookkeeping (a fast path
  of :func:`~sparseopt.optim._base.group_by_device_dtype` for the usual single
  device and dtype; the param group's penalty object built once per spec).
- :func:`prox_into_`: ``out ← prox_{tJ}(x)`` over lists of tensors, with one-pass
  kernels for ``l1`` (``softshrink``) and ``l0`` (``hardshrink``). Both are bitwise
  equal to :meth:`Penalty.prox_` (``x - clamp(x, -τ, τ)`` and
  ``x.masked_fill(|x| <= τ, 0)`` with the same rounded threshold); every other
  penalty goes through :meth:`Penalty.prox_foreach_`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from sparseopt._validation import check_nonneg
from sparseopt.optim._base import group_by_device_dtype
from sparseopt.penalties import L0, L1, NoPenalty, Penalty

__all__ = [
    "buckets",
    "cached_penalty",
    "check_sgd_hyperparameters",
    "prox_into_",
    "sgd_direction",
    "sgd_directions_foreach",
    "softshrink_out",
]

#: ``softshrink_out(x, lambd, out=y)``: the soft threshold in one fused pass.
softshrink_out = torch._C._nn.softshrink
_hardshrink = torch.ops.aten.hardshrink.out  # hardshrink(x, lambd, out=...)


def check_sgd_hyperparameters(group: dict[str, Any]) -> None:
    """Validate the ``torch.optim.SGD`` hyperparameters of a param group (``ValueError``)."""
    check_nonneg("learning rate", group["lr"])
    check_nonneg("momentum", group["momentum"])
    check_nonneg("dampening", group["dampening"])
    check_nonneg("weight_decay", group["weight_decay"])
    if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
        raise ValueError(
            f"Invalid nesterov value: {group['nesterov']!r}; Nesterov momentum requires a "
            f"momentum > 0 and zero dampening (momentum={group['momentum']}, "
            f"dampening={group['dampening']})"
        )


def sgd_direction(
    param: Tensor,
    grad: Tensor,
    momentum_buffer: Tensor | None,
    *,
    weight_decay: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    maximize: bool,
) -> tuple[Tensor, Tensor | None]:
    r"""The direction :math:`d_t` of one ``torch.optim.SGD`` step on one tensor.

    ``param.add_(d, alpha=-lr)`` is then exactly ``torch.optim.SGD``'s update. Returns
    ``(d, buffer)``: the buffer is new on the first momentum step (a copy of the
    gradient, as in torch) and updated in place afterwards; ``d`` may be ``grad``
    itself or the buffer, so it must not be modified by the caller.
    """
    d = grad if not maximize else -grad
    if weight_decay != 0:
        d = d.add(param, alpha=weight_decay)
    if momentum != 0:
        if momentum_buffer is None:
            momentum_buffer = d.detach().clone()
        else:
            momentum_buffer.mul_(momentum).add_(d, alpha=1 - dampening)
        d = d.add(momentum_buffer, alpha=momentum) if nesterov else momentum_buffer
    return d, momentum_buffer


def sgd_directions_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffer_list: list[Tensor | None],
    *,
    weight_decay: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    maximize: bool,
) -> list[Tensor]:
    """:func:`sgd_direction` for lists of tensors sharing one device and dtype (``torch._foreach_*``).

    ``None`` entries of ``momentum_buffer_list`` are replaced by new buffers (when
    ``momentum != 0``). The returned tensors must not be modified by the caller.
    """
    owned = False  # whether ``grads`` are our own temporaries (never the user's p.grad)
    if maximize:
        grads = torch._foreach_neg(grads)
        owned = True
        if weight_decay != 0:
            torch._foreach_add_(grads, params, alpha=weight_decay)
    elif weight_decay != 0:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
        owned = True
    if momentum == 0:
        return grads
    if all(b is not None for b in momentum_buffer_list):
        bufs: list[Tensor] = list(momentum_buffer_list)  # type: ignore[arg-type]
        torch._foreach_mul_(bufs, momentum)
        torch._foreach_add_(bufs, grads, alpha=1 - dampening)
    else:
        bufs = []
        for i, g in enumerate(grads):
            buf = momentum_buffer_list[i]
            if buf is None:
                buf = momentum_buffer_list[i] = g.detach().clone()
            else:
                buf.mul_(momentum).add_(g, alpha=1 - dampening)
            bufs.append(buf)
    if nesterov:
        if owned:
            torch._foreach_add_(grads, bufs, alpha=momentum)
            return grads
        return torch._foreach_add(grads, bufs, alpha=momentum)
    return bufs


def prox_into_(penalty: Penalty, outs: Sequence[Tensor], xs: Sequence[Tensor], t: float) -> None:
    r"""``outs[i] ← prox_{tJ}(xs[i])`` for every ``i``; ``outs`` may be ``xs`` (in place).

    ``l1`` and ``l0`` take one fused pass per tensor (``softshrink`` /
    ``hardshrink`` written into ``outs[i]``); other penalties copy ``xs`` into ``outs``
    (unless they are the same tensors) and call :meth:`Penalty.prox_foreach_`.
    All tensors of one call must share device and dtype.
    """
    if len(xs) == 0:
        return
    same = all(o is x for o, x in zip(outs, xs, strict=True))
    if isinstance(penalty, NoPenalty) or penalty.is_zero:
        if not same:
            torch._foreach_copy_(list(outs), list(xs))
        return
    if type(penalty) is L1:
        thr = float(t) * penalty.lam
        for o, x in zip(outs, xs, strict=True):
            softshrink_out(x, thr, out=o)
        return
    if type(penalty) is L0:
        thr = math.sqrt(2.0 * float(t) * penalty.lam)
        for o, x in zip(outs, xs, strict=True):
            _hardshrink(x, thr, out=o)
        return
    if not same:
        torch._foreach_copy_(list(outs), list(xs))
    penalty.prox_foreach_(list(outs), t)


def buckets(*tensorlists: Sequence[Any]) -> list[tuple[list[Any], ...]]:
    """:func:`~sparseopt.optim._base.group_by_device_dtype`, without regrouping in the usual case.

    When every tensor of the first list shares one device and dtype, the lists are
    returned as they are (one bucket).
    """
    first = tensorlists[0]
    device, dtype = first[0].device, first[0].dtype
    if all(t.dtype == dtype and t.device == device for t in first):
        return [tuple(list(lst) for lst in tensorlists)]
    return group_by_device_dtype(*tensorlists)


_PENALTY_KEYS = ("penalty", "lam", "a", "groups", "group_weight")


def cached_penalty(optimizer: Any, group: dict[str, Any]) -> Penalty:
    """``optimizer.penalty_of(group)``, memoised on the group's penalty fields.

    Penalties are frozen and built from plain data, so one object per spec can be
    reused across steps; the cache lives on the optimizer instance (not in its state
    dict) and is bounded.
    """
    key = tuple(group.get(k) for k in _PENALTY_KEYS)
    cache: dict[tuple[Any, ...], Penalty] = optimizer.__dict__.setdefault("_penalty_cache", {})
    penalty = cache.get(key)
    if penalty is None:
        if len(cache) >= 64:
            cache.clear()
        penalty = cache[key] = optimizer.penalty_of(group)
    return penalty
