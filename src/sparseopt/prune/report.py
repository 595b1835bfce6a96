"""Before/after report of a simplification: parameters, MACs, latency, file size; export.

:func:`measure_latency` times ``model(x)`` in eval mode under
:func:`torch.inference_mode` (median of several timed runs after warm-up; CUDA runs
are synchronised). :func:`compare_models` puts a dense (masked) model and its shrunk
version side by side (eager, and optionally both frozen by
:func:`~sparseopt.prune.freeze_for_inference`); :func:`save_artifacts` writes the small model as a state dict and
as a ``torch.export`` program (``torch.export.export`` + ``torch.export.save``,
falling back to TorchScript tracing when export fails).
"""

from __future__ import annotations

import io
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparseopt.metrics import count_macs
from sparseopt.prune.deploy import freeze_for_inference, torchscript_quietly

__all__ = [
    "ModelStats",
    "ShrinkReport",
    "compare_models",
    "measure_latency",
    "save_artifacts",
    "state_dict_bytes",
]


@torch.inference_mode()
def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int = 1,
    *,
    device: str | torch.device = "cpu",
    repeats: int = 7,
    warmup: int = 2,
    min_time: float = 0.0,
) -> float:
    """Median wall-clock seconds of one forward pass on a random batch.

    Args:
        model: the network (moved to ``device`` and put in eval mode; its mode is
            restored), or a frozen :class:`torch.jit.ScriptModule` (from
            :func:`~sparseopt.prune.freeze_for_inference`; run as it is, float32 input).
        input_shape: per-sample shape.
        batch_size: batch size.
        device: where to run.
        repeats: timed runs (the median is returned).
        warmup: untimed runs first.
        min_time: repeat each timed run until it lasts at least this long (seconds) and
            divide, for very fast models.
    """
    device = torch.device(device)
    scripted = isinstance(model, torch.jit.ScriptModule)
    was_training = False if scripted else model.training
    if not scripted:
        model.eval()
        model.to(device)
    p = next(model.parameters(), None)
    dtype = p.dtype if p is not None else torch.float32
    x = torch.randn(batch_size, *input_shape, dtype=dtype, device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    try:
        for _ in range(warmup):
            model(x)
        sync()
        times = []
        for _ in range(repeats):
            n = 0
            t0 = time.perf_counter()
            while True:
                model(x)
                n += 1
                sync()
                elapsed = time.perf_counter() - t0
                if elapsed >= min_time:
                    break
            times.append(elapsed / n)
    finally:
        if not scripted:
            model.train(was_training)
    return statistics.median(times)


def state_dict_bytes(model: nn.Module) -> int:
    """Size in bytes of ``torch.save(model.state_dict())``."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


@dataclass
class ModelStats:
    """Size and speed of one model.

    Attributes:
        params: number of parameters.
        nonzero: nonzero parameters.
        macs: dense MACs per sample.
        macs_sparse: MACs per sample that involve a nonzero weight.
        file_bytes: size of the saved state dict.
        latency: seconds per forward pass, by ``"<device>@<batch>"`` (e.g. ``"cpu@256"``).
    """

    params: int
    nonzero: int
    macs: int
    macs_sparse: int
    file_bytes: int
    latency: dict[str, float] = field(default_factory=dict)


@dataclass
class ShrinkReport:
    """Dense (masked) model vs shrunk model; see :func:`compare_models`."""

    before: ModelStats
    after: ModelStats

    def speedups(self) -> dict[str, float]:
        """Latency ratio before/after per ``device@batch``."""
        return {
            k: self.before.latency[k] / v
            for k, v in self.after.latency.items()
            if k in self.before.latency and v > 0
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view."""
        return {
            "before": asdict(self.before),
            "after": asdict(self.after),
            "mac_ratio": self.before.macs / max(self.after.macs, 1),
            "speedup": self.speedups(),
        }

    def table(self) -> str:
        """A plain-text before/after table."""
        b, a = self.before, self.after
        rows = [
            f"{'':<20} {'before':>16} {'after':>16} {'ratio':>8}",
            f"{'parameters':<20} {b.params:>16,} {a.params:>16,} {b.params / max(a.params, 1):>8.2f}",
            f"{'nonzero params':<20} {b.nonzero:>16,} {a.nonzero:>16,} {b.nonzero / max(a.nonzero, 1):>8.2f}",
            f"{'MACs / sample':<20} {b.macs:>16,} {a.macs:>16,} {b.macs / max(a.macs, 1):>8.2f}",
            f"{'file size (bytes)':<20} {b.file_bytes:>16,} {a.file_bytes:>16,} "
            f"{b.file_bytes / max(a.file_bytes, 1):>8.2f}",
        ]
        for key, tb in b.latency.items():
            ta = a.latency.get(key)
            if ta is None:
                continue
            rows.append(
                f"{'latency ' + key + ' ms':<20} {tb * 1e3:>16.3f} {ta * 1e3:>16.3f} {tb / ta:>8.2f}"
            )
        return "\n".join(rows)


def _stats(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_sizes: Sequence[int],
    devices: Sequence[str],
    repeats: int,
    frozen: bool = False,
) -> ModelStats:
    macs = count_macs(model, input_shape)
    params = sum(p.numel() for p in model.parameters())
    nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    latency: dict[str, float] = {}
    for dev in devices:
        variants: list[tuple[str, nn.Module]] = [(dev, model)]
        if frozen and batch_sizes:
            model.to(dev)
            p = next(model.parameters(), None)
            example = torch.randn(
                2, *input_shape, device=dev, dtype=p.dtype if p is not None else None
            )
            variants.append((f"{dev}-frozen", freeze_for_inference(model, example)))
        for key, net in variants:
            for bs in batch_sizes:
                latency[f"{key}@{bs}"] = measure_latency(
                    net,
                    input_shape,
                    bs,
                    device=dev,
                    repeats=repeats,
                    min_time=0.02 if bs == 1 else 0.0,
                )
        model.to("cpu")
    return ModelStats(params, nonzero, macs.dense, macs.sparse, state_dict_bytes(model), latency)


def compare_models(
    before: nn.Module,
    after: nn.Module,
    input_shape: Sequence[int],
    *,
    batch_sizes: Sequence[int] = (1, 256),
    devices: Sequence[str] | None = None,
    repeats: int = 7,
    frozen: bool = False,
) -> ShrinkReport:
    """Parameters, MACs, latency (CPU, and CUDA when present) and file size of two models.

    Args:
        before: the dense (masked) model.
        after: the shrunk model.
        input_shape: per-sample input shape.
        batch_sizes: batch sizes to time.
        devices: devices to time on (default ``["cpu"]`` plus ``"cuda"`` if available).
        repeats: timed runs per measurement (median).
        frozen: also time both models after :func:`~sparseopt.prune.freeze_for_inference`
            (keys ``"<device>-frozen@<batch>"``), the form to deploy them in.
    """
    if devices is None:
        devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    return ShrinkReport(
        _stats(before, input_shape, batch_sizes, devices, repeats, frozen),
        _stats(after, input_shape, batch_sizes, devices, repeats, frozen),
    )


def save_artifacts(
    model: nn.Module,
    example_inputs: torch.Tensor,
    out_dir: str | os.PathLike[str],
    *,
    stem: str = "shrunk",
    export: bool = True,
    frozen: bool = False,
) -> dict[str, Path]:
    """Save ``model`` (eval mode) as ``<stem>_state_dict.pt`` and an exported program.

    The program is ``<stem>.pt2`` from ``torch.export.export`` + ``torch.export.save``
    (load with ``torch.export.load(path).module()``); if export fails it is
    ``<stem>.torchscript.pt`` from :func:`torch.jit.trace` instead (neither when
    ``export`` is false). With ``frozen`` it
    also writes ``<stem>.frozen.torchscript.pt``: the traced and frozen module of
    :func:`~sparseopt.prune.freeze_for_inference` before its oneDNN optimisation, which
    does not survive saving — load it with
    ``torch.jit.optimize_for_inference(torch.jit.load(path))``.

    Returns:
        The written paths by kind (``"state_dict"``, ``"export"`` or ``"torchscript"``,
        ``"frozen"``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    paths: dict[str, Path] = {}
    try:
        sd_path = out / f"{stem}_state_dict.pt"
        torch.save(model.state_dict(), sd_path)
        paths["state_dict"] = sd_path
        if export:
            try:
                program = torch.export.export(model, (example_inputs,))
                ep_path = out / f"{stem}.pt2"
                torch.export.save(program, ep_path)
                paths["export"] = ep_path
            except Exception:  # export is best effort: fall back to TorchScript
                ts_path = out / f"{stem}.torchscript.pt"
                torch.jit.save(torch.jit.trace(model, example_inputs), ts_path)
                paths["torchscript"] = ts_path
        if frozen:
            fr_path = out / f"{stem}.frozen.torchscript.pt"
            module = freeze_for_inference(model, example_inputs, optimize=False)
            with torchscript_quietly():  # deprecated but still the fastest CPU form
                torch.jit.save(module, fr_path)
            paths["frozen"] = fr_path
    finally:
        model.train(was_training)
    return paths
