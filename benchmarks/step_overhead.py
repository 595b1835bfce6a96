"""Median ``optimizer.step()`` time of every sparseopt method next to torch's SGD and Adam.

All optimizers run in one process on identical copies of the ~1.29 M-parameter
Fashion-MNIST ConvNet of Bungert et al. (conv 1→64 5×5, pool, conv 64→64 5×5,
pool, fc 1024→1024→128→10) with fixed random gradients. The methods are timed in
interleaved rounds (every method once per round, in turn) so that drift in the
machine's speed hits all of them alike; the table reports the median step time,
its ratio to the reference baseline (``torch.optim.SGD(momentum=0.9, foreach=True)``
or ``torch.optim.Adam(foreach=True)``), the target ratio from the issue, and the
extra optimizer memory per parameter (bytes of state tensors / parameters).

Usage::

    python benchmarks/step_overhead.py                 # table
    python benchmarks/step_overhead.py --json out.json # and machine-readable results
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch

import sparseopt as so
from sparseopt.models import build_model


@dataclass
class Case:
    label: str
    name: str
    kwargs: dict[str, Any]
    baseline: str  # label of the reference case
    target: float | None  # maximum ratio to the baseline
    times: list[float] = field(default_factory=list)


SGD_M = "SGD momentum=0.9 (foreach)"
ADAM = "Adam (foreach)"


def cases() -> list[Case]:
    """The benchmarked configurations and the issue's targets."""
    return [
        Case(SGD_M, "sgd", {"lr": 0.1, "momentum": 0.9, "foreach": True}, SGD_M, None),
        Case(ADAM, "adam", {"lr": 1e-3, "foreach": True}, ADAM, None),
        Case("LinBreg", "linbreg", {"lr": 0.1, "lam": 1e-3}, SGD_M, 1.5),
        Case(
            "LinBreg momentum=0.9", "linbreg", {"lr": 0.1, "lam": 1e-3, "momentum": 0.9}, SGD_M, 1.5
        ),
        Case("AdaBreg", "adabreg", {"lr": 1e-3, "lam": 1e-3}, ADAM, 1.3),
        Case("SplitLBI", "splitlbi", {"lr": 0.01, "lam": 1.0}, SGD_M, 2.5),
        Case("RDA", "rda", {"lam": 1e-4}, SGD_M, 1.5),
        Case("RVSM l0", "rvsm", {"lr": 0.1, "lam": 1e-4, "penalty": "l0"}, SGD_M, 2.0),
        Case("RVSM l1", "rvsm", {"lr": 0.1, "lam": 1e-4, "penalty": "l1"}, SGD_M, 2.0),
        Case("ProxSGD", "proxsgd", {"lr": 0.1, "lam": 1e-4}, SGD_M, 1.3),
        Case(
            "ProxSGD momentum=0.9", "proxsgd", {"lr": 0.1, "lam": 1e-4, "momentum": 0.9}, SGD_M, 1.3
        ),
    ]


def _state_bytes(opt: torch.optim.Optimizer) -> int:
    total = 0
    for state in opt.state.values():
        for value in state.values():
            if torch.is_tensor(value) and value.numel() > 1:
                total += value.numel() * value.element_size()
    return total


def run(steps: int, rounds: int, warmup: int, device: str, seed: int) -> dict[str, Any]:
    """Time every case; return the results as plain data."""
    torch.manual_seed(seed)
    template = build_model("convnet", (1, 28, 28), 10).to(device)
    n_params = sum(p.numel() for p in template.parameters())
    gen = torch.Generator().manual_seed(seed)
    grads = [torch.randn(p.shape, generator=gen).to(device) * 1e-2 for p in template.parameters()]
    table = cases()
    runners = []
    for case in table:
        model = build_model("convnet", (1, 28, 28), 10).to(device)
        model.load_state_dict(template.state_dict())
        for p, g in zip(model.parameters(), grads, strict=True):
            p.grad = g.clone()
        opt = so.create_optimizer(model, case.name, **case.kwargs)
        for _ in range(warmup):
            opt.step()
        runners.append(opt)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(rounds):
        for case, opt in zip(table, runners, strict=True):
            for _ in range(steps):
                sync()
                t0 = time.perf_counter()
                opt.step()
                sync()
                case.times.append(time.perf_counter() - t0)
    medians = {c.label: statistics.median(c.times) for c in table}
    rows = []
    for case, opt in zip(table, runners, strict=True):
        ratio = medians[case.label] / medians[case.baseline]
        rows.append(
            {
                "method": case.label,
                "median_ms": medians[case.label] * 1e3,
                "baseline": case.baseline,
                "ratio": ratio,
                "target": case.target,
                "meets_target": None if case.target is None else ratio <= case.target,
                "state_bytes_per_param": _state_bytes(opt) / n_params,
            }
        )
    return {
        "params": n_params,
        "device": device,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "steps_per_round": steps,
        "rounds": rounds,
        "rows": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    lines = [
        f"ConvNet with {result['params']:,} parameters, device {result['device']}, "
        f"{result['threads']} threads, torch {result['torch']}, "
        f"{result['rounds']} rounds x {result['steps_per_round']} steps",
        "",
        "| method | median step (ms) | ratio | vs | target | met | state bytes/param |",
        "|---|---:|---:|---|---:|:---:|---:|",
    ]
    for r in result["rows"]:
        target = "" if r["target"] is None else f"≤ {r['target']:.1f}×"
        met = "" if r["meets_target"] is None else ("yes" if r["meets_target"] else "**no**")
        lines.append(
            f"| {r['method']} | {r['median_ms']:.3f} | {r['ratio']:.2f}× | {r['baseline']} | "
            f"{target} | {met} | {r['state_bytes_per_param']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per method per round")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = run(args.steps, args.rounds, args.warmup, args.device, args.seed)
    print(markdown(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
