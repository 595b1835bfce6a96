"""Before/after report of a simplification: parameters, MACs, latency, file size; export.

:func:`measure_latency` times ``model(x)`` in eval mode under
:func:`torch.inference_mode` (median of several timed runs after warm-up; CUDA runs
are synchronised); :func:`measure_latencies` times several models in interleaved
rounds. :func:`compare_models` puts a dense (masked) model and its shrunk
version side by side (eager, and optionally both frozen by
:func:`~sparseopt.prune.freeze_for_inference`); :func:`save_artifacts` writes the small model as a state dict and
as a ``torch.export`` program with a dynamic batch dimension (``torch.export.export`` +
``torch.export.save``, falling back to TorchScript tracing when export fails).
"""

from __future__ import annotations

import io
import math
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
    "LATENCY_BATCH_SIZES",
    "LATENCY_REPEATS",
    "ModelStats",
    "ShrinkReport",
    "compare_models",
    "measure_latencies",
    "measure_latency",
    "save_artifacts",
    "state_dict_bytes",
]

#: Default timed rounds per latency (:func:`measure_latencies`, :func:`compare_models`
#: and ``sparseopt prune --repeats``).
LATENCY_REPEATS = 7
#: Default batch sizes of :func:`compare_models`'s latencies (and ``sparseopt prune``'s).
LATENCY_BATCH_SIZES = (1, 256)


def _quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(first quartile, median, third quartile) of ``values`` (all equal for one value)."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


@torch.inference_mode()
def measure_latencies(
    models: Sequence[nn.Module],
    input_shape: Sequence[int],
    batch_size: int = 1,
    *,
    device: str | torch.device = "cpu",
    repeats: int = LATENCY_REPEATS,
    warmup: int = 3,
    min_time: float = 0.005,
) -> list[list[float]]:
    """Interleaved wall-clock seconds per forward pass of several models.

    Round ``r`` times every model once, in an order rotated every round, so that a
    slow phase of the machine (another process, frequency scaling, a cold cache) hits
    all models alike instead of whichever was measured during it. Every model first
    runs ``warmup`` untimed rounds (also interleaved).

    Args:
        models: the networks (moved to ``device`` and put in eval mode; their modes are
            restored), or frozen :class:`torch.jit.ScriptModule` (from
            :func:`~sparseopt.prune.freeze_for_inference`; run as they are).
        input_shape: per-sample shape.
        batch_size: batch size.
        device: where to run.
        repeats: timed rounds.
        warmup: untimed rounds first.
        min_time: each timed run repeats the forward pass until it lasts at least this
            long (seconds) and divides, so that fast models are not timed at the
            resolution of the clock.

    Returns:
        One list of ``repeats`` timings (seconds per forward pass) per model.

    Raises:
        ValueError: ``batch_size``, ``repeats`` < 1, ``warmup`` < 0 or a negative or
            non-finite ``min_time``.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"Invalid batch_size value: {batch_size!r}; expected an int >= 1")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"Invalid repeats value: {repeats!r}; expected an int >= 1")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"Invalid warmup value: {warmup!r}; expected an int >= 0")
    if not (min_time >= 0 and math.isfinite(min_time)):
        raise ValueError(f"Invalid min_time value: {min_time!r}; expected a number >= 0")
    device = torch.device(device)
    modes: list[bool | None] = []
    inputs: list[torch.Tensor] = []
    for model in models:
        scripted = isinstance(model, torch.jit.ScriptModule)
        modes.append(None if scripted else model.training)
        if not scripted:
            model.eval()
            model.to(device)
        p = next(model.parameters(), None)
        dtype = p.dtype if p is not None else torch.float32
        inputs.append(torch.randn(batch_size, *input_shape, dtype=dtype, device=device))

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def timed(i: int) -> float:
        n = 0
        t0 = time.perf_counter()
        while True:
            models[i](inputs[i])
            n += 1
            sync()
            elapsed = time.perf_counter() - t0
            if elapsed >= min_time:
                return elapsed / n

    times: list[list[float]] = [[] for _ in models]
    try:
        k = len(models)
        for _ in range(warmup):
            for i in range(k):
                models[i](inputs[i])
        sync()
        for r in range(repeats):
            for j in range(k):
                i = (r + j) % k
                times[i].append(timed(i))
    finally:
        for model, mode in zip(models, modes, strict=True):
            if mode is not None:
                model.train(mode)
    return times


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int = 1,
    *,
    device: str | torch.device = "cpu",
    repeats: int = LATENCY_REPEATS,
    warmup: int = 3,
    min_time: float = 0.005,
) -> float:
    """Median wall-clock seconds of one forward pass on a random batch.

    One model of :func:`measure_latencies` (see there for the arguments).
    """
    times = measure_latencies(
        [model],
        input_shape,
        batch_size,
        device=device,
        repeats=repeats,
        warmup=warmup,
        min_time=min_time,
    )[0]
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
        latency: median seconds per forward pass, by ``"<device>@<batch>"`` (e.g.
            ``"cpu@256"``).
        latency_spread: first and third quartile of those timings, by the same keys.
    """

    params: int
    nonzero: int
    macs: int
    macs_sparse: int
    file_bytes: int
    latency: dict[str, float] = field(default_factory=dict)
    latency_spread: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class ShrinkReport:
    """Dense (masked) model vs shrunk model; see :func:`compare_models`.

    Attributes:
        before, after: the two models' :class:`ModelStats`.
        ratios: per ``device@batch``, the speed-up of every interleaved round
            (before/after timed back to back).
        repeats: timed rounds per measurement.
    """

    before: ModelStats
    after: ModelStats
    ratios: dict[str, list[float]] = field(default_factory=dict)
    repeats: int = 0

    def speedups(self) -> dict[str, float]:
        """Median speed-up (before/after) per ``device@batch``.

        The median of the per-round ratios when they were recorded, else the ratio of
        the median latencies.
        """
        out = {}
        for k, v in self.after.latency.items():
            if self.ratios.get(k):
                out[k] = statistics.median(self.ratios[k])
            elif k in self.before.latency and v > 0:
                out[k] = self.before.latency[k] / v
        return out

    def speedup_spread(self) -> dict[str, list[float]]:
        """First and third quartile of the per-round speed-ups per ``device@batch``."""
        return {k: [*_quartiles(v)[::2]] for k, v in self.ratios.items() if v}

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view."""
        return {
            "before": asdict(self.before),
            "after": asdict(self.after),
            "mac_ratio": self.before.macs / max(self.after.macs, 1),
            "speedup": self.speedups(),
            "speedup_spread": self.speedup_spread(),
            "latency_repeats": self.repeats,
        }

    def table(self) -> str:
        """A plain-text before/after table (latency: median [quartiles] of the rounds)."""
        b, a = self.before, self.after
        rows = [
            f"{'':<20} {'before':>16} {'after':>16} {'ratio':>8}",
            f"{'parameters':<20} {b.params:>16,} {a.params:>16,} {b.params / max(a.params, 1):>8.2f}",
            f"{'nonzero params':<20} {b.nonzero:>16,} {a.nonzero:>16,} {b.nonzero / max(a.nonzero, 1):>8.2f}",
            f"{'MACs / sample':<20} {b.macs:>16,} {a.macs:>16,} {b.macs / max(a.macs, 1):>8.2f}",
            f"{'file size (bytes)':<20} {b.file_bytes:>16,} {a.file_bytes:>16,} "
            f"{b.file_bytes / max(a.file_bytes, 1):>8.2f}",
        ]
        speedups, spread = self.speedups(), self.speedup_spread()
        for key, tb in b.latency.items():
            ta = a.latency.get(key)
            if ta is None:
                continue
            ratio = speedups.get(key, tb / ta)
            lo, hi = spread.get(key, [ratio, ratio])
            rows.append(
                f"{'latency ' + key + ' ms':<20} {tb * 1e3:>16.3f} {ta * 1e3:>16.3f} "
                f"{ratio:>8.2f} [{lo:.2f}-{hi:.2f}]"
            )
        if b.latency:
            rows.append(
                f"latency: median of {self.repeats} interleaved rounds after warm-up; "
                "[first-third quartile] of the per-round speed-up"
            )
        return "\n".join(rows)


def _static_stats(model: nn.Module, input_shape: Sequence[int]) -> ModelStats:
    macs = count_macs(model, input_shape)
    params = sum(p.numel() for p in model.parameters())
    nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    return ModelStats(params, nonzero, macs.dense, macs.sparse, state_dict_bytes(model))


def compare_models(
    before: nn.Module,
    after: nn.Module,
    input_shape: Sequence[int],
    *,
    batch_sizes: Sequence[int] = LATENCY_BATCH_SIZES,
    devices: Sequence[str] | None = None,
    repeats: int = LATENCY_REPEATS,
    frozen: bool = False,
    warmup: int = 3,
    min_time: float = 0.005,
) -> ShrinkReport:
    """Parameters, MACs, latency (CPU, and CUDA when present) and file size of two models.

    The two models are timed by :func:`measure_latencies`: interleaved rounds after a
    warm-up, so that machine noise hits both alike; the report keeps the median and
    the quartiles of every latency and of the per-round speed-ups.

    Args:
        before: the dense (masked) model.
        after: the shrunk model.
        input_shape: per-sample input shape.
        batch_sizes: batch sizes to time.
        devices: devices to time on (default ``["cpu"]`` plus ``"cuda"`` if available).
        repeats: timed rounds per measurement.
        frozen: also time both models after :func:`~sparseopt.prune.freeze_for_inference`
            (keys ``"<device>-frozen@<batch>"``), the form to deploy them in.
        warmup: untimed rounds first.
        min_time: shortest timed run (seconds), see :func:`measure_latencies`.
    """
    if devices is None:
        devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    sb, sa = _static_stats(before, input_shape), _static_stats(after, input_shape)
    report = ShrinkReport(sb, sa, repeats=repeats if batch_sizes else 0)
    for dev in devices:
        pairs: list[tuple[str, nn.Module, nn.Module]] = [(dev, before, after)]
        if frozen and batch_sizes:
            frozen_pair = []
            for model in (before, after):
                model.to(dev)
                p = next(model.parameters(), None)
                example = torch.randn(
                    2, *input_shape, device=dev, dtype=p.dtype if p is not None else None
                )
                frozen_pair.append(freeze_for_inference(model, example))
            pairs.append((f"{dev}-frozen", frozen_pair[0], frozen_pair[1]))
        for key, nb, na in pairs:
            for bs in batch_sizes:
                tb, ta = measure_latencies(
                    [nb, na],
                    input_shape,
                    bs,
                    device=dev,
                    repeats=repeats,
                    warmup=warmup,
                    min_time=min_time,
                )
                name = f"{key}@{bs}"
                for stats, t in ((sb, tb), (sa, ta)):
                    q1, med, q3 = _quartiles(t)
                    stats.latency[name] = med
                    stats.latency_spread[name] = [q1, q3]
                report.ratios[name] = [x / y for x, y in zip(tb, ta, strict=True) if y > 0]
        before.to("cpu")
        after.to("cpu")
    return report


def _export_dynamic_batch(model: nn.Module, example_inputs: torch.Tensor) -> Any:
    """``torch.export.export`` with a dynamic batch dimension (any batch size >= 1)."""
    example = example_inputs
    if example.shape[0] < 2:  # export specialises a size-1 dimension: trace with two samples
        example = torch.cat([example] * 2)[:2] if example.shape[0] else example
    batch = torch.export.Dim("batch", min=1)
    return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))


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
    with a dynamic batch dimension (load with ``torch.export.load(path).module()``; it
    runs at any batch size); if export fails it is ``<stem>.torchscript.pt`` from
    :func:`torch.jit.trace` instead (neither when ``export`` is false). With ``frozen``
    it also writes ``<stem>.frozen.torchscript.pt``: the traced and frozen module of
    :func:`~sparseopt.prune.freeze_for_inference` before its oneDNN optimisation, which
    does not survive saving — load it with
    ``torch.jit.optimize_for_inference(torch.jit.load(path))``.

    Every file is written atomically (a temporary file in ``out_dir``, then renamed).

    Returns:
        The written paths by kind (``"state_dict"``, ``"export"`` or ``"torchscript"``,
        ``"frozen"``).
    """
    from sparseopt.prune._files import atomic_write

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    paths: dict[str, Path] = {}
    try:
        state = model.state_dict()
        paths["state_dict"] = atomic_write(
            out / f"{stem}_state_dict.pt", lambda p: torch.save(state, p)
        )
        if export:
            try:
                program = _export_dynamic_batch(model, example_inputs)
            except Exception:  # export is best effort: fall back to TorchScript
                traced = torch.jit.trace(model, example_inputs)
                paths["torchscript"] = atomic_write(
                    out / f"{stem}.torchscript.pt", lambda p: torch.jit.save(traced, p)
                )
            else:
                paths["export"] = atomic_write(
                    out / f"{stem}.pt2", lambda p: torch.export.save(program, p)
                )
        if frozen:
            module = freeze_for_inference(model, example_inputs, optimize=False)

            def save_frozen(p: Path) -> None:
                with torchscript_quietly():  # deprecated but still the fastest CPU form
                    torch.jit.save(module, p)

            paths["frozen"] = atomic_write(out / f"{stem}.frozen.torchscript.pt", save_frozen)
    finally:
        model.train(was_training)
    return paths
