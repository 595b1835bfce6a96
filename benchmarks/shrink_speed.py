"""Real speed-up of shrinking a group-sparse network, next to its MAC ratio.

For Bungert et al.'s Fashion-MNIST convnet (``sparseopt.models.build_model("convnet",
(1, 28, 28), 10)``: conv 64@5×5 → pool → conv 64@5×5 → pool → fc 1024 → fc 128 →
fc 10; 1.29 M parameters) the script zeroes a random fraction ``1 − d`` of the filters
/ neurons of every layer but the output one (filter-group sparsity at filter density
``d``; biases stay nonzero, so :func:`sparseopt.prune.shrink` folds their constants),
shrinks the network physically, checks that both compute the same outputs and times
both on the CPU, side by side in one process (interleaved runs, median), at batch 256
(and batch 1). The target is a measured speed-up of at least 0.7 × the MAC ratio
(dense MACs / shrunk MACs).

Usage::

    python benchmarks/shrink_speed.py                  # table
    python benchmarks/shrink_speed.py --json           # machine-readable
    python benchmarks/shrink_speed.py --densities 1 0.5 0.25 0.1 --repeats 15
    python benchmarks/shrink_speed.py --frozen         # both models frozen for inference
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Any

import torch
from torch import nn

from sparseopt.metrics import count_macs
from sparseopt.models import build_model
from sparseopt.prune import freeze_for_inference, shrink

SHAPE = (1, 28, 28)


@torch.no_grad()
def group_sparse_convnet(density: float, seed: int) -> nn.Module:
    """The convnet with a random ``1 - density`` of filters/neurons zeroed (output layer kept)."""
    torch.manual_seed(seed)
    model = build_model("convnet", SHAPE, 10).eval()
    gen = torch.Generator().manual_seed(seed)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))][:-1]
    for m in layers:
        n = m.weight.shape[0]
        keep = max(1, round(density * n))
        dead = torch.randperm(n, generator=gen)[keep:]
        m.weight[dead] = 0
    return model


@torch.inference_mode()
def time_pair(
    a: nn.Module, b: nn.Module, batch: int, repeats: int, channels_last: bool = False
) -> tuple[float, float]:
    """Median seconds per forward of ``a`` and ``b``, measured interleaved."""
    x = torch.randn(batch, *SHAPE)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    for _ in range(3):
        a(x)
        b(x)
    inner = max(1, int(0.05 / max(_once(a, x), 1e-6))) if batch == 1 else 1
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(_many(a, x, inner))
        tb.append(_many(b, x, inner))
    return statistics.median(ta), statistics.median(tb)


def _once(m: nn.Module, x: torch.Tensor) -> float:
    t0 = time.perf_counter()
    m(x)
    return time.perf_counter() - t0


def _many(m: nn.Module, x: torch.Tensor, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        m(x)
    return (time.perf_counter() - t0) / n


def run(
    densities: list[float],
    repeats: int,
    seed: int,
    batches: list[int],
    channels_last: bool = False,
    frozen: bool = False,
) -> dict[str, Any]:
    rows = []
    for d in densities:
        dense = group_sparse_convnet(d, seed)
        res = shrink(dense, torch.randn(2, *SHAPE))
        small = res.model.eval()
        x = torch.randn(64, *SHAPE)
        with torch.no_grad():
            diff = float((dense(x) - small(x)).abs().max())
        macs_dense = count_macs(dense, SHAPE).dense
        macs_small = count_macs(small, SHAPE).dense
        row: dict[str, Any] = {
            "density": d,
            "params_dense": sum(p.numel() for p in dense.parameters()),
            "params_shrunk": sum(p.numel() for p in small.parameters()),
            "macs_dense": macs_dense,
            "macs_shrunk": macs_small,
            "mac_ratio": macs_dense / macs_small,
            "max_abs_diff": diff,
            "widths": {k: v[1] for k, v in res.plan.widths.items()},
            "latency_ms": {},
            "speedup": {},
        }
        if channels_last:
            dense = dense.to(memory_format=torch.channels_last)
            small = small.to(memory_format=torch.channels_last)
        if frozen:  # both in their deployment form: traced, frozen, oneDNN-optimised
            example = torch.randn(2, *SHAPE)
            dense = freeze_for_inference(dense, example)  # type: ignore[assignment]
            small = freeze_for_inference(small, example)  # type: ignore[assignment]
        for bs in batches:
            t_dense, t_small = time_pair(dense, small, bs, repeats, channels_last)
            row["latency_ms"][str(bs)] = [t_dense * 1e3, t_small * 1e3]
            row["speedup"][str(bs)] = t_dense / t_small
        main = str(max(batches))
        row["efficiency"] = row["speedup"][main] / row["mac_ratio"]
        row["target_met"] = row["speedup"][main] >= 0.7 * row["mac_ratio"]
        rows.append(row)
    return {
        "model": "convnet (Bungert et al.) 1x28x28",
        "batch_sizes": batches,
        "repeats": repeats,
        "channels_last": channels_last,
        "frozen": frozen,
        "threads": torch.get_num_threads(),
        "nproc": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "rows": rows,
    }


def table(result: dict[str, Any]) -> str:
    """Markdown table of :func:`run`'s result."""
    bs = [str(b) for b in result["batch_sizes"]]
    head = ["filter density", "params (shrunk)", "MACs dense", "MACs shrunk", "MAC ratio"]
    for b in bs:
        head += [f"dense ms @{b}", f"shrunk ms @{b}", f"speed-up @{b}"]
    head += [f"speed-up / MAC ratio @{bs[-1]}", "≥ 0.7?"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        cells = [
            f"{r['density']:g}",
            f"{r['params_shrunk']:,}",
            f"{r['macs_dense'] / 1e6:.2f} M",
            f"{r['macs_shrunk'] / 1e6:.3f} M",
            f"{r['mac_ratio']:.1f}",
        ]
        for b in bs:
            td, ts = r["latency_ms"][b]
            cells += [f"{td:.2f}", f"{ts:.3f}", f"{r['speedup'][b]:.1f}"]
        cells += [f"{r['efficiency']:.2f}", "yes" if r["target_met"] else "no"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--densities", type=float, nargs="+", default=[1.0, 0.5, 0.25, 0.1])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--channels-last", action="store_true", help="run both models in channels_last format"
    )
    parser.add_argument(
        "--frozen",
        action="store_true",
        help="time both models after sparseopt.prune.freeze_for_inference "
        "(traced, frozen TorchScript with oneDNN convolutions)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(
        args.densities,
        args.repeats,
        args.seed,
        sorted(args.batch_sizes),
        args.channels_last,
        args.frozen,
    )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{result['model']}, CPU, {result['threads']} threads (nproc {result['nproc']}), "
            f"{'channels_last, ' if result['channels_last'] else ''}"
            f"{'frozen TorchScript (oneDNN), ' if result['frozen'] else 'eager, '}"
            f"torch {result['torch']}, median of {result['repeats']} interleaved runs"
        )
        print(table(result))
        worst = max(r["max_abs_diff"] for r in result["rows"])
        print(f"max |dense − shrunk| output difference: {worst:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
