"""Inference form of a (shrunk) network: traced, frozen and optimised TorchScript.

A physically shrunk network has thin layers (a handful of channels) whose eager
PyTorch forward is dominated by per-operator work that does not shrink with the MAC
count: NCHW max pooling with index computation, separate ReLU passes, layout
conversions. :func:`freeze_for_inference` removes most of it with PyTorch's own
inference pipeline:

1. :func:`torch.jit.trace` on an example batch (eval mode);
2. :func:`torch.jit.freeze` — parameters and buffers become constants, eval-mode
   BatchNorm is folded into the preceding convolution;
3. :func:`torch.jit.optimize_for_inference` — on CPU, convolutions run in oneDNN's
   blocked layout with ReLU fused where possible and pooling stays in that layout.

The frozen module computes the same function (checked against the eager model on the
example batch, ``atol`` 1e-5 by default). It is specialised to the example's dtype
and device and to a fixed-structure forward (no data-dependent Python control flow),
like any traced module; other batch sizes work.

TorchScript is deprecated in recent PyTorch (2.10+ warns on ``trace``/``freeze``/
``optimize_for_inference``); this function silences those warnings because it is the
fastest CPU inference form we measured for shrunk networks: on the convnet of
``benchmarks/shrink_speed.py`` at filter density 0.1, batch 256, one thread, 3.8 ms
frozen against 7.3 ms eager (channels-last) and 4.7 ms for ``torch.compile`` with
inductor freezing (2026-11-21, 2-core AMD EPYC, torch 2.13.0+cpu; see
``docs/structure.md``).

Use it for deployment and for fair latency comparisons: time *both* the dense and the
shrunk network frozen (:func:`sparseopt.prune.compare_models` with ``frozen=True``,
``benchmarks/shrink_speed.py --frozen``).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["freeze_for_inference"]


@contextlib.contextmanager
def torchscript_quietly() -> Iterator[None]:
    """Silence torch's TorchScript deprecation warnings (see the module docstring)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch")
        yield


@torch.no_grad()
def freeze_for_inference(
    model: nn.Module,
    example_inputs: torch.Tensor,
    *,
    optimize: bool = True,
    check: bool = True,
    atol: float = 1e-5,
) -> torch.jit.ScriptModule:
    """Trace, freeze and (optionally) optimise ``model`` for inference.

    Args:
        model: the network; traced in eval mode (its own mode is restored afterwards).
        example_inputs: an example batch (any batch size) on the model's device.
        optimize: apply :func:`torch.jit.optimize_for_inference` after freezing.
        check: compare the frozen module's output with ``model``'s on ``example_inputs``.
        atol: tolerance of that check (max abs difference).

    Returns:
        A frozen :class:`torch.jit.ScriptModule` computing ``model``'s eval-mode function.

    Raises:
        TypeError: ``example_inputs`` is not a tensor.
        ValueError: the frozen module's output differs from the model's by more than
            ``atol`` (naming the difference).
    """
    if not isinstance(example_inputs, torch.Tensor):
        raise TypeError(
            f"Invalid example_inputs value: {type(example_inputs).__name__}; expected a tensor"
        )
    was_training = model.training
    model.eval()
    try:
        with torchscript_quietly():
            traced = torch.jit.trace(model, example_inputs, check_trace=False)
            frozen = torch.jit.freeze(traced)
            if optimize:
                frozen = torch.jit.optimize_for_inference(frozen)
        if check:
            ref = model(example_inputs)
            got = frozen(example_inputs)
            diff = float((ref - got).abs().max()) if ref.numel() else 0.0
            if not diff <= atol:
                raise ValueError(
                    f"frozen module differs from the model: max abs difference {diff:.3g} "
                    f"> atol {atol:g}"
                )
    finally:
        model.train(was_training)
    return frozen
