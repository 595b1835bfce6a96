r"""Shared building blocks of the SGD-type sparse optimizers (:class:`ProxSGD`, :class:`RVSM`).

- :class:`SGDOptimizer` (the base of all three; also :class:`SplitLBI`'s weights take SGD
  steps), with :data:`SGD_HYPERPARAMETERS` and :func:`check_nesterov`: the schema of
  ``torch.optim.SGD``'s hyperparameters.
- :func:`sgd_direction` / :func:`sgd_directions_foreach`: the search direction
  :math:`d_t` of ``torch.optim.SGD`` (maximize, weight decay, momentum with
  dampening, Nesterov), computed with the very same tensor operations in the same
  order, so that ``param.add_(d, alpha=-lr)`` reproduces ``torch.optim.SGD`` bit for
  bit (for-loop and ``foreach`` alike). Unlike ``torch.optim.SGD``'s multi-tensor path
  they never write into ``p.grad`` (torch's Nesterov branch adds the buffer into the
  gradient in place); the resulting parameters are identical.
- Both take the hyperparameters as one :class:`SGDScalars`; its ``fused=True`` updates the momentum buffer in one pass,
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
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from sparseopt._validation import check_nonneg
from sparseopt.optim._base import SparseOptimizer
from sparseopt.optim._functional import SGDScalars
from sparseopt.optim._schema import COMMON_DEFAULTS, CommonKeywords, Hyper

__all__ = [
    "SGD_HYPERPARAMETERS",
    "SGDKeywords",
    "SGDOptimizer",
    "SGDScalars",
    "check_nesterov",
    "sgd_direction",
    "sgd_directions_foreach",
]


#: ``torch.optim.SGD``'s hyperparameters, in :class:`~sparseopt.optim._base.Hyper` form.
SGD_HYPERPARAMETERS: Mapping[str, Hyper] = MappingProxyType(
    {
        "momentum": Hyper(check_nonneg),
        "dampening": Hyper(check_nonneg),
        "nesterov": Hyper(missing=False),
        "weight_decay": Hyper(check_nonneg),
    }
)


class SGDKeywords(CommonKeywords, total=False):
    """:class:`~sparseopt.optim._base.CommonKeywords` and ``torch.optim.SGD``'s fixed-default knobs."""

    dampening: float
    nesterov: bool
    weight_decay: float


class SGDOptimizer(SparseOptimizer):
    """A sparse optimizer whose weights take ``torch.optim.SGD`` steps (ProxSGD, RVSM, SplitLBI).

    Its schema starts from :data:`SGD_HYPERPARAMETERS`; ``dampening`` (0), ``nesterov``
    (False) and ``weight_decay`` (0) are common keywords (:class:`SGDKeywords`), and
    ``momentum`` (whose default is each method's recipe) is the subclass's. Nesterov
    momentum is checked against momentum and dampening (:func:`check_nesterov`).
    """

    hyperparameters = SGD_HYPERPARAMETERS
    common_keywords = SGDKeywords
    common_defaults = MappingProxyType(
        {**COMMON_DEFAULTS, "dampening": 0.0, "nesterov": False, "weight_decay": 0.0}
    )

    def _validate_group(self, group: dict[str, Any]) -> None:
        check_nesterov(group)


def check_nesterov(group: dict[str, Any]) -> None:
    """Nesterov momentum needs a momentum > 0 and zero dampening (``ValueError``)."""
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
    param: Tensor, grad: Tensor, momentum_buffer: Tensor | None, sgd: SGDScalars
) -> tuple[Tensor, Tensor | None]:
    r"""The direction :math:`d_t` of one ``torch.optim.SGD`` step on one tensor.

    ``param.add_(d, alpha=-lr)`` is then exactly ``torch.optim.SGD``'s update. Returns
    ``(d, buffer)``: the buffer is new on the first momentum step (a copy of the
    gradient, as in torch) and updated in place afterwards; ``d`` may be ``grad``
    itself or the buffer, so it must not be modified by the caller. ``fused`` selects
    the one-pass buffer update (see the module docstring).
    """
    weight_decay, momentum, dampening, nesterov, maximize, fused = sgd
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
    params: list[Tensor], grads: list[Tensor], momentum_buffer_list: list[Any], sgd: SGDScalars
) -> list[Tensor]:
    """:func:`sgd_direction` for lists of tensors sharing one device and dtype (``torch._foreach_*``).

    ``None`` entries of ``momentum_buffer_list`` are replaced by new buffers (when
    ``momentum != 0``). The returned tensors must not be modified by the caller.
    ``fused`` selects the one-pass buffer update (see the module docstring): a loop of
    ``torch.add(..., out=buf)``, the same kernel as :func:`sgd_direction`'s.
    """
    weight_decay, momentum, dampening, nesterov, maximize, fused = sgd
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
