"""Real speed-up of shrinking a group-sparse network, next to its MAC ratio.

For Bungert et al.'s Fashion-MNIST convnet (``sparseopt.models.build_model("convnet",
(1, 28, 28), 10)``: conv 64@5×5 → pool → conv 64@5×5 → pool → fc 1024 → fc 128 →
fc 10; 1.29 M parameters) the script zeroes a random fraction ``1 − d`` of the filters
/ neurons of every layer but the output one (filter-group sparsity at filter density
``d``; biases stay nonzero, so :func:`sparseopt.prune.shrink` folds their constants),
shrinks the network physically, checks that both compute the same outputs and times
both, at batch 256 (and batch 1), in one process: every model (dense and shrunk, at every
density) runs short blocks in turn, the order rotating from round to round, so a burst
of load from other jobs lands on all alike. The table gives the median forward time with
its 10th–90th percentile spread, the speed-up (ratio of medians; in brackets the ratio
of the 10th percentiles, the least loaded runs) and the MAC ratio (dense MACs / shrunk
MACs); the target is a measured speed-up of at least 0.7 × the MAC ratio. The machine
line names the CPU model read from the system (or the GPU with ``--device cuda``).

Usage::

    python benchmarks/shrink_speed.py                  # table, 1 thread
    python benchmarks/shrink_speed.py --out /tmp/shrink   # and /tmp/shrink.md, .json
    python benchmarks/shrink_speed.py --densities 1 0.5 0.25 0.1 --repeats 15
    python benchmarks/shrink_speed.py --frozen         # both models frozen for inference
    python benchmarks/shrink_speed.py --device cuda --quick --out /tmp/shrink_gpu
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparseopt.metrics import count_macs
from sparseopt.models import build_model
from sparseopt.prune import freeze_for_inference, shrink

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import interleave, spread, where, write

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


def forward_job(model: nn.Module, batch: int, device: str, channels_last: bool) -> Any:
    """A call that runs ``model`` on a fixed random batch (inference mode)."""
    x = torch.randn(batch, *SHAPE, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def job() -> None:
        model(x)

    for _ in range(3):  # warm-up (allocator, oneDNN primitives)
        job()
    return job


def run(
    densities: list[float],
    repeats: int,
    seed: int,
    batches: list[int],
    channels_last: bool = False,
    frozen: bool = False,
    device: str = "cpu",
    block: int = 3,
) -> dict[str, Any]:
    """Build, check and time every (density, dense/shrunk, batch); rows as plain data."""
    rows, jobs = [], []
    for d in densities:
        dense = group_sparse_convnet(d, seed)
        res = shrink(dense, torch.randn(2, *SHAPE))
        small = res.model.eval()
        x = torch.randn(64, *SHAPE)
        with torch.no_grad():
            diff = float((dense(x) - small(x)).abs().max())
        macs_dense = count_macs(dense, SHAPE).dense
        macs_small = count_macs(small, SHAPE).dense
        rows.append(
            {
                "density": d,
                "params_dense": sum(p.numel() for p in dense.parameters()),
                "params_shrunk": sum(p.numel() for p in small.parameters()),
                "macs_dense": macs_dense,
                "macs_shrunk": macs_small,
                "mac_ratio": macs_dense / macs_small,
                "max_abs_diff": diff,
                "widths": {k: v[1] for k, v in res.plan.widths.items()},
            }
        )
        dense, small = dense.to(device), small.to(device)
        if channels_last:
            dense = dense.to(memory_format=torch.channels_last)
            small = small.to(memory_format=torch.channels_last)
        if frozen:  # both in their deployment form: traced, frozen, oneDNN-optimised
            example = torch.randn(2, *SHAPE, device=device)
            dense = freeze_for_inference(dense, example)  # type: ignore[assignment]
            small = freeze_for_inference(small, example)  # type: ignore[assignment]
        for bs in batches:
            jobs += [forward_job(m, bs, device, channels_last) for m in (dense, small)]
    times = iter(interleave(jobs, repeats, block, device))
    for row in rows:
        row["latency_ms"], row["speedup"], row["speedup_p10"] = {}, {}, {}
        for bs in batches:
            t_dense, t_small = spread(next(times)), spread(next(times))
            row["latency_ms"][str(bs)] = {
                "dense": {k: v * 1e3 for k, v in t_dense.items()},
                "shrunk": {k: v * 1e3 for k, v in t_small.items()},
            }
            row["speedup"][str(bs)] = t_dense["median"] / t_small["median"]
            row["speedup_p10"][str(bs)] = t_dense["p10"] / t_small["p10"]
        main = str(max(batches))
        row["efficiency"] = row["speedup"][main] / row["mac_ratio"]
        row["target_met"] = row["speedup"][main] >= 0.7 * row["mac_ratio"]
    return {
        "model": "convnet (Bungert et al.) 1x28x28",
        "batch_sizes": batches,
        "rounds": repeats,
        "block": block,
        "channels_last": channels_last,
        "frozen": frozen,
        "rows": rows,
    }


def table(result: dict[str, Any]) -> str:
    """Markdown table of :func:`run`'s result (medians, p10–p90 in brackets)."""
    bs = [str(b) for b in result["batch_sizes"]]
    head = ["filter density", "params (shrunk)", "MACs dense", "MACs shrunk", "MAC ratio"]
    for b in bs:
        head += [f"dense ms @{b}", f"shrunk ms @{b}", f"speed-up @{b} (p10)"]
    head += [f"speed-up / MAC ratio @{bs[-1]}", "≥ 0.7?"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def ms(t: dict[str, float]) -> str:
        return f"{t['median']:.3f} ({t['p10']:.3f}–{t['p90']:.3f})"

    for r in result["rows"]:
        cells = [
            f"{r['density']:g}",
            f"{r['params_shrunk']:,}",
            f"{r['macs_dense'] / 1e6:.2f} M",
            f"{r['macs_shrunk'] / 1e6:.3f} M",
            f"{r['mac_ratio']:.1f}",
        ]
        for b in bs:
            lat = r["latency_ms"][b]
            cells += [
                ms(lat["dense"]),
                ms(lat["shrunk"]),
                f"{r['speedup'][b]:.1f} ({r['speedup_p10'][b]:.1f})",
            ]
        cells += [f"{r['efficiency']:.2f}", "yes" if r["target_met"] else "no"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--densities", type=float, nargs="+", default=[1.0, 0.5, 0.25, 0.1])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--repeats", type=int, default=15, help="interleaved rounds")
    parser.add_argument("--block", type=int, default=3, help="timed calls per model per round")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="4 rounds of 2 calls (smoke run)")
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
    parser.add_argument("--out", metavar="PATH", help="write PATH.md and PATH.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.block = 4, 2
    torch.set_num_threads(args.threads)
    result = {
        **where(args.device),
        "command": "python benchmarks/shrink_speed.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        **run(
            args.densities,
            args.repeats,
            args.seed,
            sorted(args.batch_sizes),
            args.channels_last,
            args.frozen,
            args.device,
            args.block,
        ),
    }
    worst = max(r["max_abs_diff"] for r in result["rows"])
    text = "\n".join(
        [
            f"Machine: {result['machine']}; device {result['device']}, {result['threads']} "
            f"thread(s); {result['date']}. {result['model']}, "
            f"{'channels_last, ' if result['channels_last'] else ''}"
            f"{'frozen TorchScript (oneDNN)' if result['frozen'] else 'eager'}; "
            f"{result['rounds']} interleaved rounds of {result['block']} calls.",
            f"Command: `{result['command']}`",
            "",
            table(result),
            "",
            f"max |dense − shrunk| output difference: {worst:.1e}",
        ]
    )
    print(json.dumps(result, indent=2) if args.json else text)
    if args.out:
        write(args.out, text, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
