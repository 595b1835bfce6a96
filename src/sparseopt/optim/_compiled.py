r"""Compiled optimizer steps: one ``torch.compile`` kernel per step (``compiled=True``).

The eager ``foreach`` steps of RDA (adaptive), SplitLBI and RVSM are sequences of
elementwise ``torch._foreach_*`` kernels, each one pass over memory: about 22, 17 and 13
passes where their memory-traffic limits are 7, 9 and 7 (docs/optimizers.md); the fused
steps of AdaBreg, LinBreg and ProxSGD (torch's fused Adam/SGD kernel, then a primal-map
or prox pass) make 9, 5 (7 with momentum) and 7 where theirs are 8, 4 (6) and 5. Written as
one pure function of torch ops over lists of tensors and compiled with
``torch.compile(fullgraph=True, dynamic=False)``, Inductor fuses each tensor's update
into one loop that reads and writes every tensor once: the step runs near its limit.

This module holds what the six methods' compiled paths share (the maths stays in each
method's file, next to its for-loop reference):

- :func:`resolve_compiled`: whether a call can take the compiled path (``compiled`` asked
  for, dense real floating tensors on CPU or CUDA, no DTensor, a penalty with a compiled
  prox), warning once when ``compiled=True`` must fall back;
- :func:`run_compiled`: builds (once per kernel, flags and list layout) and runs a kernel;
  where Inductor cannot build it (no C++ compiler, ...) it warns once, switches the
  compiled path off for the process and returns ``False``: the caller then runs its
  ``foreach`` step on the same tensors, bit for bit the ``foreach`` result;
- the elementwise pieces the kernels share: :func:`sgd_direction_expr` (``torch.optim.SGD``'s
  direction), :func:`soft`, :func:`hard`.

**No recompilation when schedules change hyperparameters.** Every number a kernel uses
(learning rate, λ and every value derived from them and from the running sums) reaches
it in one 1-D tensor of scalars (the parameters' device, float64 for float64 tensors and
float32 otherwise), never as a Python number, so a new learning rate or λ is new data, not
a new graph. Only the layout (number, shapes, dtypes and devices of the tensors) and the
structural flags (penalty kind, momentum on or off, Nesterov, maximize, ...) select a
kernel. Each such kernel is compiled from its own copy of the function's code object, so
Dynamo's per-function recompilation limit (``torch._dynamo.config.recompile_limit``,
a hard error under ``fullgraph=True``) never counts kernels of different layouts against
each other; :data:`KERNEL_CACHE_SIZE` of them are kept (least recently used dropped).

References:
    - J. Ansel et al., "PyTorch 2: faster machine learning through dynamic Python bytecode
      transformation and graph compilation", ASPLOS 2024 (TorchDynamo and TorchInductor).
"""

from __future__ import annotations

import itertools
import types
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from sparseopt.fsdp import is_dtensor
from sparseopt.penalties import L0, L1, NoPenalty, Penalty

__all__ = [
    "KERNEL_CACHE_SIZE",
    "check_compiled",
    "compilations",
    "hard",
    "penalty_kind",
    "resolve_compiled",
    "run_compiled",
    "sgd_direction_expr",
    "sgd_scalars",
    "soft",
]

#: Dtypes Inductor compiles the steps for.
_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

#: Device types the compiled path runs on (CUDA needs Triton; there it runs, 1.4-3.8x slower
#: than the eager paths on the models measured: docs/optimizers.md, "CUDA").
_DEVICES = ("cpu", "cuda")

#: How many compiled kernels are kept (one per method, flags and tensor layout).
KERNEL_CACHE_SIZE = 64


def _build_errors() -> tuple[type[BaseException], ...]:
    """Errors meaning "Inductor/Dynamo could not build the kernel" (raised before it runs).

    Imported here, not at module level: ``torch._dynamo`` and ``torch._inductor`` take
    about 1.2 s to import, which every ``import sparseopt`` would pay (the eager path, the
    default, never needs them).
    """
    import torch._dynamo.exc
    import torch._inductor.exc

    return (
        torch._dynamo.exc.TorchDynamoException,  # BackendCompilerFailed, InductorError, ...
        torch._dynamo.exc.FailOnRecompileLimitHit,
        torch._inductor.exc.CppCompileError,
        OSError,  # no compiler executable
    )


_kernels: OrderedDict[Any, Callable[..., Any]] = OrderedDict()
_ids = itertools.count()
_warned: set[str] = set()
#: Why the compiled path is off for this process (a kernel failed to build), or ``None``.
_disabled: str | None = None
#: Kernels built so far in this process (read by :func:`compilations`).
_built = 0


def check_compiled(name: str, value: Any) -> None:
    """The ``compiled`` hyperparameter: ``True``, ``False`` or ``None`` (``ValueError``)."""
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"Invalid {name} value: {value!r}; expected True, False or None")


def compilations() -> int:
    """How many compiled kernels this process has built (one per method, flags and layout)."""
    return _built


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, UserWarning, stacklevel=4)


def penalty_kind(penalty: Penalty) -> str | None:
    """``"none"``, ``"l1"`` or ``"l0"``: the penalties with a compiled prox; ``None`` for others."""
    kinds: dict[type, str] = {NoPenalty: "none", L1: "l1", L0: "l0"}
    return kinds.get(type(penalty))


def _unsupported(tensors: Sequence[Tensor], penalty: Penalty) -> str | None:
    """Why these tensors and this penalty cannot take the compiled path, or ``None``."""
    if penalty_kind(penalty) is None:
        return f"penalty {penalty.name!r} has no compiled step (none, l1 and l0 have)"
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile is not supported on this Python/platform"
    for t in tensors:
        if is_dtensor(t):
            return "DTensor (sharded) parameters"
        if t.layout != torch.strided:
            return f"{t.layout} tensors (sparse gradients)"
        if t.dtype not in _DTYPES:
            return f"dtype {t.dtype}"
        if t.device.type not in _DEVICES:
            return f"device {t.device.type}"
    return None


def resolve_compiled(
    compiled: bool | None, tensors: Sequence[Tensor], penalty: Penalty, owner: str
) -> bool:
    """Whether a functional step takes its compiled path.

    ``compiled`` false or ``None`` (the default): never. ``True``: yes, unless the
    compiled path is off for the process (a kernel failed to build), the step is itself
    being compiled or scripted (the eager code then runs inside the caller's graph), or
    ``tensors`` / ``penalty`` are not supported (see :func:`_unsupported`): then one
    ``UserWarning`` per reason and process, and the caller runs its eager path.
    """
    if not compiled or torch.jit.is_scripting() or torch.compiler.is_compiling():
        return False
    if _disabled is not None:
        return False
    reason = _unsupported(tensors, penalty)
    if reason is not None:
        _warn_once(f"{owner}(compiled=True): {reason}; running the eager (foreach) step")
        return False
    return True


def _fresh_compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.compile(fn)`` over its own copy of ``fn``'s code object (its own Dynamo cache)."""
    global _built
    code = fn.__code__.replace(co_name=f"{fn.__name__}_{next(_ids)}")
    copy = types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__ = fn.__kwdefaults__
    _built += 1
    return torch.compile(copy, fullgraph=True, dynamic=False)


def _layout(tensors: Sequence[Tensor]) -> tuple[Any, ...]:
    return tuple((t.shape, t.stride(), t.dtype, t.device) for t in tensors)


def run_compiled(
    fn: Callable[..., None],
    tensorlists: Sequence[Sequence[Tensor]],
    scalars: Sequence[float],
    flags: dict[str, Any],
    owner: str,
) -> bool:
    """Run the compiled ``fn(*tensorlists, s, **flags)``; ``False`` if it cannot be built.

    ``tensorlists`` share one device and dtype (a bucket of
    :func:`~sparseopt.optim._functional.group_by_device_dtype`); ``scalars`` become the
    1-D tensor ``s`` (float64 for float64 tensors, float32 otherwise, on their device).
    ``flags`` (plain constants) and the tensors' layout select the kernel, built once.
    A build failure (Dynamo or Inductor error, no C++ compiler) happens before the kernel
    touches any tensor: it warns once, switches the compiled path off for the process
    and returns ``False``, and the caller runs its eager step on the same tensors.
    """
    global _disabled
    first = tensorlists[0][0]
    key = (fn, tuple(sorted(flags.items())), len(tensorlists), _layout(tensorlists[0]))
    kernel = _kernels.get(key)
    if kernel is None:
        kernel = _kernels[key] = _fresh_compiled(fn)
        while len(_kernels) > KERNEL_CACHE_SIZE:
            _kernels.popitem(last=False)
    else:
        _kernels.move_to_end(key)
    dtype = torch.float64 if first.dtype == torch.float64 else torch.float32
    s = torch.tensor(list(scalars), dtype=dtype, device=first.device)
    try:
        kernel(*tensorlists, s, **flags)
    except _build_errors() as err:
        _kernels.pop(key, None)
        _disabled = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        _warn_once(
            f"{owner}(compiled=True): torch.compile could not build the step ({_disabled}); "
            "running the eager (foreach) step from now on"
        )
        return False
    return True


# ------------------------------------------------------------- shared kernel pieces


def soft(x: Tensor, thresh: Tensor) -> Tensor:
    r"""Soft thresholding :math:`x - \operatorname{clip}(x, -\tau, \tau)` (``thresh`` 0-d)."""
    return x - torch.clamp(x, -thresh, thresh)


def hard(x: Tensor, thresh: Tensor) -> Tensor:
    r"""Hard thresholding :math:`x\,\mathbf 1\{|x| > \tau\}` (``thresh`` 0-d)."""
    return x.masked_fill(x.abs() <= thresh, 0)


def sgd_scalars(sgd: Any) -> tuple[tuple[float, float, float], dict[str, bool]]:
    """What :func:`sgd_direction_expr` takes from ``torch.optim.SGD``'s settings ``sgd``
    (an :class:`~sparseopt.optim._functional.SGDScalars`): its numbers (momentum,
    1 − dampening, weight decay, consecutive in a kernel's scalars tensor) and its flags."""
    weight_decay, momentum, dampening, nesterov, maximize, _ = sgd
    flags = {"has_momentum": momentum != 0, "nesterov": nesterov, "maximize": maximize,
             "decay": weight_decay != 0}  # fmt: skip
    return (momentum, 1 - dampening, weight_decay), flags


def sgd_direction_expr(
    w: Tensor,
    g: Tensor,
    buf: Tensor | None,
    momentum: Tensor,
    keep: Tensor,
    weight_decay: Tensor,
    *,
    has_momentum: bool,
    nesterov: bool,
    maximize: bool,
    decay: bool,
) -> Tensor:
    r"""``torch.optim.SGD``'s direction :math:`d_t`, updating ``buf`` in place (kernel piece).

    :math:`d = \pm g + \text{wd}\,w`; with momentum :math:`b \leftarrow \mu b +
    (1-\text{dampening})\,d` (``keep`` :math:`= 1-\text{dampening}`), and :math:`d = b`, or
    :math:`d + \mu b` with Nesterov. The buffer must exist (the first step, which creates
    it, runs the eager path).
    """
    d = -g if maximize else g
    if decay:
        d = d + weight_decay * w
    if has_momentum:
        assert buf is not None
        b = buf * momentum + d * keep
        buf.copy_(b)
        d = d + momentum * b if nesterov else b
    return d
