r"""Shared building blocks of the SGD-type sparse optimizers (:class:`ProxSGD`, :class:`RVSM`).

- :func:`sgd_direction` / :func:`sgd_directions_foreach`: the search direction
  :math:`d_t` of ``torch.optim.SGD`` (maximize, weight decay, momentum with
  dampening, Nesterov), computed with the very same tensor operations in the same
  order, so that ``param.add_(d, alpha=-lr)`` reproduces ``torch.optim.SGD`` bit for
  bit (for-loop and ``foreach`` alike). Unlike ``torch.optim.SGD``'s multi-tensor path
  they never write into ``p.grad`` (torch's Nesterov branch adds the buffer into the
  gradient in place); the resulting parameters are identical.

The proximal step itself is :meth:`sparseopt.penalties.Penalty.prox_into_`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sparseopt._validation import check_nonneg

__all__ = ["check_sgd_hyperparameters", "sgd_direction", "sgd_directions_foreach"]


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
