"""ONNX export of a (shrunk) network, checked with onnxruntime.

:func:`export_onnx` writes an ONNX file with a dynamic batch axis (PyTorch's
``torch.onnx.export``, the ``torch.export``-based exporter) and, before the file gets its
final name, runs it with onnxruntime at several batch sizes against the eager model.
The file is written atomically (:func:`sparseopt.prune._files.atomic_write`): a failed
export or check leaves no file and an earlier file of that name untouched.

Needs ``pip install "sparseopt[onnx]"`` (``onnx``, ``onnxscript``, ``onnxruntime``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from sparseopt.prune._files import atomic_write

__all__ = ["CHECK_BATCH_SIZES", "export_onnx", "onnx_missing"]

#: Batch sizes at which the exported file is compared with the eager model.
CHECK_BATCH_SIZES = (1, 7, 256)


def onnx_missing() -> str | None:
    """``None`` if ONNX export and checking can run, else what to install (one line)."""
    import importlib.util

    missing = [
        m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None
    ]
    if missing:
        return f'ONNX export needs {", ".join(missing)}: pip install "sparseopt[onnx]"'
    return None


@torch.no_grad()
def export_onnx(
    model: nn.Module,
    example_inputs: torch.Tensor,
    path: str | os.PathLike[str],
    *,
    check_batch_sizes: Sequence[int] = CHECK_BATCH_SIZES,
    atol: float = 1e-5,
    seed: int = 0,
) -> dict[int, float]:
    """Export ``model`` (eval mode) to ONNX at ``path`` with a dynamic batch axis.

    The input is named ``input`` and the output ``output``; axis 0 of both is ``batch``.
    Before the file is renamed into place it is loaded by onnxruntime (CPU) and run on
    random inputs shaped like ``example_inputs`` at every batch size in
    ``check_batch_sizes``.

    Args:
        model: the network (its train/eval mode is restored afterwards).
        example_inputs: one example batch (any batch size); its dtype and the shape
            after the batch axis define the inputs.
        path: the ``.onnx`` file to write (its directory must exist).
        check_batch_sizes: batch sizes of the check (default 1, 7 and 256).
        atol: largest allowed max abs difference from the eager output.
        seed: seed of the random check inputs.

    Returns:
        The max abs difference from the eager model per checked batch size.

    Raises:
        ImportError: onnx, onnxscript or onnxruntime is missing.
        ValueError: the ONNX output differs from the eager one by more than ``atol``
            (nothing is written then).

    Example:
        >>> import tempfile
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU())
        >>> out = Path(tempfile.mkdtemp()) / "net.onnx"
        >>> diffs = export_onnx(net, torch.randn(2, 3), out)  # doctest: +SKIP
    """
    reason = onnx_missing()
    if reason is not None:
        raise ImportError(reason)
    import onnxruntime as ort

    example = example_inputs
    if example.shape[0] < 2:  # a size-1 axis would be specialised: trace with two samples
        example = torch.cat([example] * 2)[:2]
    was_training = model.training
    model.eval()
    diffs: dict[int, float] = {}

    def write(tmp: Path) -> None:
        batch = torch.export.Dim("batch", min=1)
        with _quiet():
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                input_names=["input"],
                output_names=["output"],
                dynamic_shapes=({0: batch},),
                verbose=False,
            )
            program.save(str(tmp))
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        gen = torch.Generator().manual_seed(seed)
        for n in check_batch_sizes:
            x = torch.randn((n, *example.shape[1:]), generator=gen).to(example.dtype)
            ref = model(x)
            got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
            diff = float((ref - got).abs().max()) if ref.numel() else 0.0
            diffs[n] = diff
            if not (got.shape == ref.shape and diff <= atol):  # NaN fails too
                raise ValueError(
                    f"the ONNX model differs from the eager model at batch {n}: shape "
                    f"{tuple(got.shape)} vs {tuple(ref.shape)}, max abs difference "
                    f"{diff:.3g} > atol {atol:g}; nothing was written"
                )

    try:
        atomic_write(path, write)
    finally:
        model.train(was_training)
    return diffs


@contextlib.contextmanager
def _quiet():
    """The exporter prints progress lines and warns about its own internals."""
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)
