"""Helpers of the functional steps shared by every method (no optimizer class here).

Learning rates as numbers or 1-element tensors (:func:`check_lr`, :func:`lr_value`),
real parameters only (:func:`check_real`), the step counters (:func:`new_step`,
:func:`increment_steps_`), the choice of implementation (:func:`resolve_foreach`) and
the device/dtype buckets of ``torch._foreach_*`` calls (:func:`group_by_device_dtype`),
and :func:`prepare_step`, the start of every functional step.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from sparseopt._validation import check_nonneg
from sparseopt.fsdp import is_dtensor
from sparseopt.penalties import Penalty, make_penalty

__all__ = [
    "SGDScalars",
    "TensorLists",
    "check_lr",
    "check_real",
    "group_by_device_dtype",
    "increment_steps_",
    "lr_value",
    "new_step",
    "fused_adam_",
    "fused_sgd_",
    "prepare_step",
    "resolve_foreach",
    "resolve_fused",
]

#: The tensor lists of one functional call (parameters, gradients, state), in the order
#: the method's for-loop and ``foreach`` implementations unpack them.
TensorLists = Sequence[list[Any]]


def check_lr(lr: Any) -> float | Tensor:
    """Validate a learning rate: a finite number >= 0, or a 1-element real tensor holding one.

    As in ``torch.optim``, a tensor learning rate (0-d, or of shape ``(1,)``, ``(1, 1)``,
    ...) is accepted and kept as it is (lr schedulers update it in place); a tensor with
    more or fewer elements is refused with ``"Tensor lr must be 1-element"``.

    Returns:
        ``lr`` itself.

    Raises:
        ValueError: naming the offending value.

    Example:
        >>> check_lr(torch.tensor([0.1]))
        tensor([0.1000])
        >>> check_lr(torch.tensor([0.1, 0.2]))
        Traceback (most recent call last):
        ...
        ValueError: Invalid learning rate value: a tensor of shape (2,); Tensor lr must be 1-element
    """
    if isinstance(lr, Tensor):
        if lr.numel() != 1:
            raise ValueError(
                f"Invalid learning rate value: a tensor of shape {tuple(lr.shape)}; "
                "Tensor lr must be 1-element"
            )
        if lr.is_complex() or lr.dtype == torch.bool:
            raise ValueError(
                f"Invalid learning rate value: {lr!r}; a tensor lr must hold a real number"
            )
        check_nonneg("learning rate", lr.item())
        return lr
    check_nonneg("learning rate", lr)
    return lr


def lr_value(lr: float | Tensor) -> float:
    """The learning rate as a Python number (``lr.item()`` for a 1-element tensor).

    Every step reads its tensor learning rate once, as ``torch.optim`` does in eager mode
    (``param.add_(grad, alpha=-lr)`` with a tensor ``lr`` converts it the same way), so a
    tensor ``lr`` gives exactly the trajectory of the number it holds.
    """
    return lr.item() if isinstance(lr, Tensor) else lr


def check_real(optimizer: str, params: Iterable[Tensor]) -> None:
    """Refuse complex parameters with a ``ValueError`` naming the optimizer and the dtype.

    The penalties are defined on real entries (sign, soft/hard thresholds) and the
    adaptive methods square gradients entrywise, so a complex parameter has no defined
    update here. Its real and imaginary parts can be trained as one real parameter of
    shape ``(..., 2)``, read in ``forward`` through :func:`torch.view_as_complex`.
    """
    for p in params:
        if p.is_complex():
            raise ValueError(
                f"Invalid parameter dtype: {p.dtype} (shape {tuple(p.shape)}); {optimizer} "
                "does not support complex parameters: train the real and imaginary parts as "
                "a real parameter of shape (..., 2) and use torch.view_as_complex in forward"
            )


def new_step() -> Tensor:
    """A new step counter: a float32 0-d CPU tensor holding 0 (as ``torch.optim.Adam``'s)."""
    return torch.zeros((), dtype=torch.float32)


def resolve_foreach(foreach: bool | None, tensors: Sequence[Tensor]) -> bool:
    """Decide between the ``foreach`` and the for-loop implementation.

    An explicit ``True``/``False`` wins. By default the multi-tensor path is used for
    dense (strided, real floating) tensors on any device: on CPU it is as fast or
    faster than the loop for networks of many small tensors, and on CUDA it is what
    ``torch.optim`` picks too.
    """
    if foreach is not None:
        return foreach
    if torch.jit.is_scripting():
        return False
    return all(t.layout == torch.strided and t.is_floating_point() for t in tensors)


#: Added to CPU step counters: a 0-d tensor (with ``alpha``) skips the slow scalar path.
_ONE = torch.ones((), dtype=torch.float32, device="cpu")


def increment_steps_(state_steps: list[Tensor]) -> None:
    """Add 1 to the 0-d step counters ``state_steps`` in place (one ``foreach`` call).

    As ``torch.optim.Adam`` does: CPU counters get a 0-d CPU tensor with ``alpha``,
    which avoids wrapping the Python number once per tensor; other devices get ``1``.
    """
    if not state_steps:
        return
    if state_steps[0].is_cpu:
        torch._foreach_add_(state_steps, _ONE, alpha=1.0)
    else:
        torch._foreach_add_(state_steps, 1)


def group_by_device_dtype(
    *tensorlists: Sequence[Tensor],
) -> list[tuple[list[Tensor], ...]]:
    """Split parallel lists of tensors into buckets sharing device and dtype of the first list.

    ``torch._foreach_*`` kernels need every tensor of one call on one device and dtype.

    Example:
        >>> a = [torch.zeros(2), torch.zeros(2, dtype=torch.float64), torch.ones(3)]
        >>> [len(b[0]) for b in group_by_device_dtype(a, a)]
        [2, 1]
    """
    first = tensorlists[0]
    if first and all(t.device == first[0].device and t.dtype == first[0].dtype for t in first):
        return [tuple(list(lst) for lst in tensorlists)]  # the usual case: one bucket
    buckets: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, t in enumerate(first):
        buckets.setdefault((t.device, t.dtype), []).append(i)
    return [tuple([lst[i] for i in idx] for lst in tensorlists) for idx in buckets.values()]


def prepare_step(
    params: Sequence[Tensor],
    lr: float | Tensor,
    penalty: Penalty | str | None,
    foreach: bool | None,
    state_steps: Sequence[Tensor] = (),
) -> tuple[float, Penalty, bool]:
    """The start every functional step shares (the one step-counter convention).

    Increments the step counters ``state_steps`` (one :func:`increment_steps_` call),
    and returns ``lr`` as a number (:func:`lr_value`), the penalty as an object
    (:func:`~sparseopt.penalties.make_penalty`: a name takes its default options) and
    whether to run the ``foreach`` implementation (:func:`resolve_foreach`).
    """
    increment_steps_(list(state_steps))
    return lr_value(lr), make_penalty(penalty), resolve_foreach(foreach, params)


# torch's fused optimizer kernels (what ``torch.optim.Adam/SGD(fused=True)`` run) are not
# public API: bound here once; a torch without them makes every ``fused`` request fall
# back to the ``foreach`` implementation (tests force that).
_FUSED_ADAM: Any = getattr(torch, "_fused_adam_", None)
_FUSED_SGD: Any = getattr(torch, "_fused_sgd_", None)

_FUSED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

#: Devices the fused kernels run on.
_FUSED_DEVICES = ("cpu", "cuda")


def resolve_fused(
    fused: bool | None,
    foreach: bool | None,
    tensors: Sequence[Tensor],
    kernel: str,
    devices: tuple[str, ...] = _FUSED_DEVICES,
) -> bool:
    """Whether to run a fused implementation: ``fused``, or by default where it is faster.

    The default (``fused=None``) is fused only when ``foreach`` is not chosen either
    (an explicit ``foreach=True/False`` asks for that implementation) and every tensor
    is on one of ``devices`` (where the method's fused path measured faster than its
    ``foreach`` path: docs/optimizers.md). ``kernel`` (``"adam"`` or ``"sgd"``) names the
    torch kernel it needs; without it (a torch that moved it) the answer is ``False`` and
    the public ``foreach`` path runs. Dense floating-point tensors on CPU or CUDA only.
    """
    found = _FUSED_ADAM if kernel == "adam" else _FUSED_SGD
    if found is None or fused is False or torch.jit.is_scripting():
        return False
    if fused is None and (
        foreach is not None or any(t.device.type not in devices for t in tensors)
    ):
        return False
    # DTensors (FSDP2) take the foreach path: torch has no DTensor rule for _fused_sgd_
    return all(
        t.layout == torch.strided
        and t.dtype in _FUSED_DTYPES
        and t.device.type in _FUSED_DEVICES
        and not is_dtensor(t)
        for t in tensors
    )


def _device_steps(steps: list[Tensor], device: torch.device) -> list[Tensor]:
    """The CPU step counters as tensors on ``device`` (the fused kernels read them there)."""
    if device.type == "cpu" or not steps:
        return steps
    return list(torch.stack(steps).to(device, non_blocking=True).unbind())


class SGDScalars(NamedTuple):
    """``torch.optim.SGD``'s hyperparameters for one step, and whether to fuse the buffer update."""

    weight_decay: float
    momentum: float
    dampening: float
    nesterov: bool
    maximize: bool
    fused: bool = False


def fused_adam_(
    tensors: tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor], list[Tensor]],
    lr: float,
    betas: tuple[float, float],
    eps: float,
    maximize: bool,
) -> None:
    r"""One ``torch.optim.Adam(fused=True)`` step without weight decay, one pass per tensor.

    ``tensors`` = (params, grads, exp_avgs, exp_avg_sqs, state_steps) on one device and
    dtype, the steps already incremented: ``params[i] -= lr / (1-β₁ᵗ) · m / (√s /
    √(1-β₂ᵗ) + ε)`` after the moment updates.
    """
    params, grads, exp_avgs, exp_avg_sqs, state_steps = tensors
    steps = _device_steps(state_steps, params[0].device)
    _FUSED_ADAM(
        params, grads, exp_avgs, exp_avg_sqs, [], steps, lr=lr, beta1=betas[0],
        beta2=betas[1], weight_decay=0.0, eps=eps, amsgrad=False, maximize=maximize
    )  # fmt: skip


def fused_sgd_(
    tensors: tuple[list[Tensor], list[Tensor], list[Any]],
    lr: float,
    sgd: SGDScalars,
    first_step: bool,
) -> None:
    r"""One ``torch.optim.SGD(fused=True)`` step, one pass per tensor (same device and dtype).

    ``tensors`` = (params, grads, momentum buffers; ignored when ``sgd.momentum == 0``).
    With ``first_step`` the buffers (allocated, any content) are set to the direction, as
    ``torch.optim.SGD`` does; otherwise :math:`b \leftarrow \mu b + (1 - \text{dampening}) d`.
    """
    params, grads, bufs = tensors
    weight_decay, momentum, dampening, nesterov, maximize, _ = sgd
    _FUSED_SGD(
        params, grads, bufs if momentum != 0 else [], weight_decay=weight_decay,
        momentum=momentum, lr=lr, dampening=dampening, nesterov=nesterov, maximize=maximize,
        is_first_step=first_step,
    )  # fmt: skip
