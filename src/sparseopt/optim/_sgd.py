r"""Shared building blocks of the SGD-type sparse optimizers (:class:`ProxSGD`, :class:`RVSM`).

- :func:`batch_key` (also used by :class:`RDA`): which param groups may share one
  functional call (those with equal penalty and hyperparameters; the updates are per
  tensor, so merging them only saves per-call overhead).
- :func:`sgd_direction` / :func:`sgd_directions_foreach`: the search direction
  :math:`d_t` of ``torch.optim.SGD`` (maximize, weight decay, momentum with
  dampening, Nesterov), computed with the very same tensor operations in the same
  order, so that ``param.add_(d, alpha=-lr)`` reproduces ``torch.optim.SGD`` bit for
  bit (for-loop and ``foreach`` alike). Unlike ``torch.optim.SGD``'s multi-tensor path
  they never write into ``p.grad`` (torch's Nesterov branch adds the buffer into the
  gradient in place); the resulting parameters are identical.
- ``fused=True`` (both functions) updates the momentum buffer in one pass,
  :math:`b \leftarrow d + \mu b` (``torch.add(d, b, alpha=mu, out=b)``) instead of
  torch's two (``b.mul_(mu).add_(d)``). It is the same formula with a single rounding
  (the kernel may use a fused multiply-add), so it equals ``torch.optim.SGD`` only up
  to rounding: the optimizers use it where the result is not required to be SGD bit
  for bit (penalised param groups). It needs zero dampening; with dampening the
  two-pass update is used anyway. The for-loop and ``foreach`` functions run the very
  same per-tensor kernel, so they agree bit for bit with each other.

The proximal step itself is :meth:`sparseopt.penalties.Penalty.prox_into_`.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor

from sparseopt._validation import check_nonneg
from sparseopt.optim._base import check_lr

__all__ = ["batch_key", "check_sgd_hyperparameters", "sgd_direction", "sgd_directions_foreach"]


def batch_key(penalty: Any, group: dict[str, Any], fields: tuple[str, ...]) -> Any:
    """A dict key telling which param groups one functional call may step together.

    Groups with equal penalty and equal values of ``fields`` get equal keys (a tensor
    value, such as a tensor ``lr``, counts by the number it holds); a group with an
    unhashable value gets a key of its own.
    """
    key = (penalty, *[_key_value(group[f]) for f in fields])
    try:
        hash(key)
    except TypeError:
        return id(group)
    return key


def _key_value(value: Any) -> Any:
    return value.item() if isinstance(value, Tensor) and value.numel() == 1 else value


def check_sgd_hyperparameters(group: dict[str, Any]) -> None:
    """Validate the ``torch.optim.SGD`` hyperparameters of a param group (``ValueError``)."""
    check_lr(group["lr"])
    check_nonneg("momentum", group["momentum"])
    check_nonneg("dampening", group["dampening"])
    check_nonneg("weight_decay", group["weight_decay"])
    if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
        raise ValueError(
            f"Invalid nesterov value: {group['nesterov']!r}; Nesterov momentum requires a "
            f"momentum > 0 and zero dampening (momentum={group['momentum']}, "
            f"dampening={group['dampening']})"
        )


@functools.lru_cache(maxsize=64)
def _cpu_scalar(value: float, dtype: torch.dtype) -> Tensor:
    """A cached 0-d CPU tensor holding ``value`` (never modified: a constant)."""
    return torch.tensor(value, dtype=dtype, device="cpu")


def _foreach_scale_(tensors: list[Tensor], factor: float) -> None:
    """``torch._foreach_mul_(tensors, factor)``, bit for bit, without its CPU scalar overhead.

    On CPU ``_foreach_mul_`` with a Python number wraps and casts the number once per
    tensor; a 0-d tensor of the tensors' own dtype skips that. For float32 and float64
    both forms multiply by the same rounded factor (tested against ``torch.optim.SGD``);
    other dtypes and devices keep the Python number.
    """
    first = tensors[0]
    if first.device.type == "cpu" and first.dtype in (torch.float32, torch.float64):
        torch._foreach_mul_(tensors, _cpu_scalar(factor, first.dtype))
    else:
        torch._foreach_mul_(tensors, factor)


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
    fused: bool = False,
) -> tuple[Tensor, Tensor | None]:
    r"""The direction :math:`d_t` of one ``torch.optim.SGD`` step on one tensor.

    ``param.add_(d, alpha=-lr)`` is then exactly ``torch.optim.SGD``'s update. Returns
    ``(d, buffer)``: the buffer is new on the first momentum step (a copy of the
    gradient, as in torch) and updated in place afterwards; ``d`` may be ``grad``
    itself or the buffer, so it must not be modified by the caller. ``fused`` selects
    the one-pass buffer update (see the module docstring).
    """
    d = grad if not maximize else -grad
    if weight_decay != 0:
        d = d.add(param, alpha=weight_decay)
    if momentum != 0:
        if momentum_buffer is None:
            momentum_buffer = d.detach().clone()
        elif fused and dampening == 0:
            torch.add(d, momentum_buffer, alpha=momentum, out=momentum_buffer)
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
    fused: bool = False,
) -> list[Tensor]:
    """:func:`sgd_direction` for lists of tensors sharing one device and dtype (``torch._foreach_*``).

    ``None`` entries of ``momentum_buffer_list`` are replaced by new buffers (when
    ``momentum != 0``). The returned tensors must not be modified by the caller.
    ``fused`` selects the one-pass buffer update (see the module docstring): a loop of
    ``torch.add(..., out=buf)``, the same kernel as :func:`sgd_direction`'s.
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
    fused = fused and dampening == 0
    if all(b is not None for b in momentum_buffer_list):
        bufs: list[Tensor] = list(momentum_buffer_list)  # type: ignore[arg-type]
        if fused:
            for g, buf in zip(grads, bufs, strict=True):
                torch.add(g, buf, alpha=momentum, out=buf)
        else:
            _foreach_scale_(bufs, momentum)
            torch._foreach_add_(bufs, grads, alpha=1 - dampening)
    else:
        bufs = []
        for i, g in enumerate(grads):
            buf = momentum_buffer_list[i]
            if buf is None:
                buf = momentum_buffer_list[i] = g.detach().clone()
            elif fused:
                torch.add(g, buf, alpha=momentum, out=buf)
            else:
                buf.mul_(momentum).add_(g, alpha=1 - dampening)
            bufs.append(buf)
    if nesterov:
        if owned:
            torch._foreach_add_(grads, bufs, alpha=momentum)
            return grads
        return torch._foreach_add(grads, bufs, alpha=momentum)
    return bufs
