"""``optimizer.step()`` of every sparseopt method against its memory-traffic limit and torch.

For each model (the ~1.29 M-parameter Fashion-MNIST ConvNet of Bungert et al. and
ResNet-18), every optimizer steps its own copy of the same parameters with fixed random
gradients, in one process. The methods are timed in **short interleaved blocks**: each
round runs a few steps of every method, in an order that rotates from round to round,
so a burst of load from other jobs lands on all methods alike rather than on one. A
stream probe (``torch.add(x, y, out=z)`` and ``z.copy_(x)`` over as many elements as the
model has parameters) runs in the same rotation and gives the memory bandwidth under the
same conditions; the best of them (its 10th-percentile time) sets the bandwidth.

Columns: the median step time, the 10th and 90th percentiles (the spread), the **limit**
— the bytes the step must read and write (parameters, gradients, state: the passes
listed in ``PASSES``, times the parameter bytes) divided by the measured bandwidth — and
the ratio to it, and the ratio to torch's fastest counterpart on the device
(``SGD(momentum=0.9)`` foreach or fused, ``Adam`` foreach or fused, whichever is faster
in this run).

Usage::

    python benchmarks/step_overhead.py                       # CPU, 1 thread, both models
    python benchmarks/step_overhead.py --device cuda --quick --out results/steps
    python benchmarks/step_overhead.py --models convnet --rounds 40 --out /tmp/steps

``--out PATH`` writes ``PATH.md`` (the table) and ``PATH.json`` (every number).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import sparseopt as so
from sparseopt.models import build_model

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import interleave, spread, where, write

#: Input shape of each benchmarked model (10 classes).
MODELS = {"convnet": (1, 28, 28), "resnet18": (3, 32, 32)}

#: Passes over memory (in parameter-sized tensors) a step must make at the least:
#: each read or write of the parameters, the gradient and each state tensor counts one.
PASSES = {
    "sgd": 5,  # g r, b rw, p rw
    "adam": 7,  # g r, m rw, s rw, p rw
    "linbreg": 4,  # g r, v rw, p w
    "linbreg_m": 6,  # g r, b rw, v rw, p w
    "adabreg": 8,  # g r, m rw, s rw, v rw, p w
    "splitlbi": 9,  # g r, b rw, W rw, Γ rw, V rw
    "rda": 7,  # g r, S rw, s rw, w0 r, w w (the adaptive metric, the default)
    "rda_plain": 5,  # g r, S rw, w0 r, w w
    "rvsm": 7,  # g r, b rw, w rw, u rw
    "proxsgd": 5,  # g r, b rw, p rw
}


@dataclass
class Case:
    """One benchmarked optimizer configuration."""

    label: str
    name: str
    kwargs: dict[str, Any]
    passes: str  # key of PASSES
    versus: str  # "sgd" or "adam": which torch counterpart it is compared with
    times: list[float] = field(default_factory=list)
    warmup_s: float = 0.0  # the untimed first steps (they include compiling, if any)


def cases() -> list[Case]:
    """The configurations: torch's counterparts, then every method (default and other paths)."""
    sgd = {"lr": 0.1, "momentum": 0.9}
    return [
        Case("torch SGD momentum=0.9 (foreach)", "sgd", {**sgd, "foreach": True}, "sgd", "sgd"),
        Case("torch SGD momentum=0.9 (fused)", "sgd", {**sgd, "fused": True}, "sgd", "sgd"),
        Case("torch Adam (foreach)", "adam", {"lr": 1e-3, "foreach": True}, "adam", "adam"),
        Case("torch Adam (fused)", "adam", {"lr": 1e-3, "fused": True}, "adam", "adam"),
        Case("LinBreg", "linbreg", {"lr": 0.1, "lam": 1e-3, "momentum": 0.0}, "linbreg", "sgd"),
        Case(
            "LinBreg (foreach)",
            "linbreg",
            {"lr": 0.1, "lam": 1e-3, "momentum": 0.0, "foreach": True},
            "linbreg",
            "sgd",
        ),
        Case(
            "LinBreg (compiled)",
            "linbreg",
            {"lr": 0.1, "lam": 1e-3, "momentum": 0.0, "compiled": True},
            "linbreg",
            "sgd",
        ),
        Case("LinBreg momentum=0.9", "linbreg", {"lr": 0.1, "lam": 1e-3}, "linbreg_m", "sgd"),
        Case(
            "LinBreg momentum=0.9 (foreach)",
            "linbreg",
            {"lr": 0.1, "lam": 1e-3, "foreach": True},
            "linbreg_m",
            "sgd",
        ),
        Case(
            "LinBreg momentum=0.9 (compiled)",
            "linbreg",
            {"lr": 0.1, "lam": 1e-3, "compiled": True},
            "linbreg_m",
            "sgd",
        ),
        Case("AdaBreg", "adabreg", {"lr": 1e-3, "lam": 1e-3}, "adabreg", "adam"),
        Case(
            "AdaBreg (foreach)",
            "adabreg",
            {"lr": 1e-3, "lam": 1e-3, "foreach": True},
            "adabreg",
            "adam",
        ),
        Case(
            "AdaBreg (compiled)",
            "adabreg",
            {"lr": 1e-3, "lam": 1e-3, "compiled": True},
            "adabreg",
            "adam",
        ),
        Case("SplitLBI", "splitlbi", {"lr": 0.01, "lam": 1.0}, "splitlbi", "sgd"),
        Case(
            "SplitLBI (compiled)",
            "splitlbi",
            {"lr": 0.01, "lam": 1.0, "compiled": True},
            "splitlbi",
            "sgd",
        ),
        Case("RDA", "rda", {"penalty": "l1", "lam": 1e-4}, "rda", "sgd"),
        Case(
            "RDA (compiled)", "rda", {"penalty": "l1", "lam": 1e-4, "compiled": True}, "rda", "sgd"
        ),
        Case(
            "RDA plain",
            "rda",
            {"penalty": "l1", "lam": 1e-4, "adaptive": False, "gamma": 2.0},
            "rda_plain",
            "sgd",
        ),
        Case("RVSM l1", "rvsm", {"lr": 0.1, "lam": 1e-4}, "rvsm", "sgd"),
        Case(
            "RVSM l1 (compiled)", "rvsm", {"lr": 0.1, "lam": 1e-4, "compiled": True}, "rvsm", "sgd"
        ),
        Case(
            "ProxSGD momentum=0.9",
            "proxsgd",
            {"lr": 0.1, "penalty": "l1", "lam": 1e-4},
            "proxsgd",
            "sgd",
        ),
        Case(
            "ProxSGD momentum=0.9 (foreach)",
            "proxsgd",
            {"lr": 0.1, "penalty": "l1", "lam": 1e-4, "foreach": True},
            "proxsgd",
            "sgd",
        ),
        Case(
            "ProxSGD momentum=0.9 (compiled)",
            "proxsgd",
            {"lr": 0.1, "penalty": "l1", "lam": 1e-4, "compiled": True},
            "proxsgd",
            "sgd",
        ),
    ]


def _stream_probe(n: int, device: str) -> list[tuple[Callable[[], None], int]]:
    """Two streaming kernels over ``n`` float32 elements and the bytes each moves."""
    x, y, z = (torch.rand(n, device=device) for _ in range(3))
    return [(lambda: torch.add(x, y, out=z), 12 * n), (lambda: z.copy_(x), 8 * n)]


def run_model(
    model_name: str, device: str, rounds: int, block: int, warmup: int, seed: int
) -> dict[str, Any]:
    """Time every case on one model; return the rows as plain data."""
    shape = MODELS[model_name]
    torch.manual_seed(seed)
    template = build_model(model_name, shape, 10).to(device)
    n_params = sum(p.numel() for p in template.parameters())
    param_bytes = sum(p.numel() * p.element_size() for p in template.parameters())
    gen = torch.Generator().manual_seed(seed)
    grads = [(torch.randn(p.shape, generator=gen) * 1e-2).to(device) for p in template.parameters()]
    table = cases()
    steps: list[Callable[[], Any]] = []
    for case in table:
        model = build_model(model_name, shape, 10).to(device)
        model.load_state_dict(template.state_dict())
        for p, g in zip(model.parameters(), grads, strict=True):
            p.grad = g.clone()
        opt = so.create_optimizer(model, case.name, **case.kwargs)
        t0 = time.perf_counter()
        for _ in range(warmup):
            opt.step()
        case.warmup_s = time.perf_counter() - t0
        steps.append(opt.step)
    probes = _stream_probe(n_params, device)
    times = interleave([*steps, *(fn for fn, _ in probes)], rounds, block, device)
    for case, t in zip(table, times, strict=False):
        case.times = t
    probe_times = times[len(table) :]
    # the best bandwidth seen (10th-percentile time of the faster probe): the physical floor
    bandwidth = max(b / spread(t)["p10"] for (_, b), t in zip(probes, probe_times, strict=True))
    medians = {c.label: statistics.median(c.times) for c in table}
    fastest = {
        key: min(medians[c.label] for c in table if c.name == key) for key in ("sgd", "adam")
    }
    rows = []
    for case in table:
        st = spread(case.times)
        limit = PASSES[case.passes] * param_bytes / bandwidth
        rows.append(
            {
                "method": case.label,
                "median_ms": st["median"] * 1e3,
                "p10_ms": st["p10"] * 1e3,
                "p90_ms": st["p90"] * 1e3,
                "limit_ms": limit * 1e3,
                "passes": PASSES[case.passes],
                "to_limit": st["median"] / limit,
                "to_limit_p10": st["p10"] / limit,
                "versus": case.versus,
                "to_torch": st["median"] / fastest[case.versus],
                "samples": len(case.times),
                # compiled rows: the warm-up's time beyond its steps', i.e. compiling
                "compile_s": max(0.0, case.warmup_s - warmup * st["median"])
                if case.kwargs.get("compiled")
                else None,
            }
        )
    return {
        "model": model_name,
        "params": n_params,
        "bandwidth_gb_s": bandwidth / 1e9,
        "rows": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    """The results as Markdown tables, one per model."""
    out = [
        f"Machine: {result['machine']}; device {result['device']}, {result['threads']} "
        f"thread(s); {result['date']}.",
        f"Command: `{result['command']}`",
        "",
    ]
    for m in result["models"]:
        out += [
            f"**{m['model']}** ({m['params']:,} parameters; measured bandwidth "
            f"{m['bandwidth_gb_s']:.1f} GB/s)",
            "",
            "| method | median ms (p10–p90) | limit ms (passes) | × limit (p10) | × torch fastest |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in m["rows"]:
            compile_s = f" (compile {r['compile_s']:.1f} s)" if r["compile_s"] is not None else ""
            out.append(
                f"| {r['method']}{compile_s} | {r['median_ms']:.3f} ({r['p10_ms']:.3f}–{r['p90_ms']:.3f}) "
                f"| {r['limit_ms']:.3f} ({r['passes']}) | {r['to_limit']:.2f} "
                f"({r['to_limit_p10']:.2f}) | {r['to_torch']:.2f} ({r['versus']}) |"
            )
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--rounds", type=int, default=30, help="interleaved rounds")
    parser.add_argument("--block", type=int, default=3, help="timed steps per method per round")
    parser.add_argument(
        "--warmup", type=int, default=3, help="untimed steps first (compiled rows compile here)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (CPU)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="6 rounds of 2 steps (a smoke run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", metavar="PATH", help="write PATH.md and PATH.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.block, args.warmup = 6, 2, 2
    torch.set_num_threads(args.threads)
    result: dict[str, Any] = {
        **where(args.device),
        "command": "python benchmarks/step_overhead.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "rounds": args.rounds,
        "block": args.block,
        "models": [
            run_model(m, args.device, args.rounds, args.block, args.warmup, args.seed)
            for m in args.models
        ],
    }
    text = markdown(result)
    print(text)
    if args.out:
        write(args.out, text, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
