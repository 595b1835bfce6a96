"""RDA's compiled step against its eager ``foreach`` step (issue 14): a measurement.

RDA's recipe is the adaptive variant (AdaGrad diagonal metric), whose eager ``foreach``
step makes about 22 elementwise passes over memory where 7 would do (docs/optimizers.md).
The library's compiled step (``RDA(compiled=True)``, ``sparseopt.optim._compiled``) runs it
as one ``torch.compile`` kernel. This script times the functional
``sparseopt.optim.rda.rda(..., adaptive=True)`` with ``compiled=True`` against
``foreach=True`` on the same parameters and gradients (ℓ1, one param group), in short
interleaved blocks (``_timing.interleave``), one thread, with the learning rate changing
every step (it must not recompile), and checks that both give the same iterates. It times
the library's code path, not a copy of it; ``benchmarks/step_overhead.py`` has the
compiled rows of every method against the memory-traffic limit.

Usage::

    python benchmarks/compiled_rda_step.py                    # ConvNet and ResNet-18
    python benchmarks/compiled_rda_step.py --models convnet --rounds 10 --out /tmp/crda
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

from sparseopt.models import build_model
from sparseopt.optim import _compiled
from sparseopt.optim.rda import rda
from sparseopt.penalties import make_penalty

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import interleave, spread, where, write

#: Input shape of each benchmarked model (10 classes).
MODELS = {"mlp": (1, 8, 8), "convnet": (1, 28, 28), "resnet18": (3, 32, 32)}
GAMMA, LAM, EPS = 100.0, 1e-3, 1e-10


def measure(model_name: str, rounds: int, block: int) -> dict[str, Any]:
    """Eager against compiled step times (seconds), the compile time, the kernels built
    after the first step (0: no recompilation) and the largest difference of the iterates."""
    torch.manual_seed(0)
    net = build_model(model_name, MODELS[model_name], 10)
    params = [p.detach().clone() for p in net.parameters()]
    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(p.shape, generator=gen) * 1e-2 for p in params]
    pen = make_penalty("l1", lam=LAM)

    def fresh() -> dict[str, Any]:
        def sums() -> list[torch.Tensor]:
            return [torch.zeros((), dtype=torch.float64) for _ in params]

        return {
            "w": [p.clone() for p in params],
            "S": [torch.zeros_like(p) for p in params],
            "w0": [p.clone() for p in params],
            "s": [torch.zeros_like(p) for p in params],
            "A": sums(),
            "Q": sums(),
            "t": 0,
        }

    def stepper(st: dict[str, Any], **impl: Any) -> Any:
        def step() -> None:
            st["t"] += 1
            lr = 1.0 / (1.0 + 0.01 * st["t"])  # a schedule: a new number every step
            rda(st["w"], grads, st["S"], st["w0"], st["s"], st["A"], st["Q"], lr=lr,
                gamma=GAMMA, adaptive=True, eps=EPS, penalty=pen, **impl)  # fmt: skip

        return step

    eager_state, comp_state = fresh(), fresh()
    eager, compiled = stepper(eager_state, foreach=True), stepper(comp_state, compiled=True)
    t0 = time.perf_counter()
    compiled()
    compile_s = time.perf_counter() - t0
    built = _compiled.compilations()
    eager()
    times = interleave([eager, compiled], rounds, block)
    pairs = zip(eager_state["w"], comp_state["w"], strict=True)
    diff = max(float((a - b).abs().max()) for a, b in pairs)
    return {
        "model": model_name,
        "params": sum(p.numel() for p in params),
        "steps": 1 + rounds * block,
        "compile_s": compile_s,
        "recompiles": _compiled.compilations() - built,
        "eager": spread(times[0]),
        "compiled": spread(times[1]),
        "max_abs_diff": diff,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["convnet", "resnet18"], choices=list(MODELS))
    p.add_argument("--rounds", type=int, default=20, help="interleaved rounds")
    p.add_argument("--block", type=int, default=3, help="timed steps per variant per round")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", metavar="PATH", help="write PATH.md and PATH.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = where("cpu")
    rows = [measure(m, args.rounds, args.block) for m in args.models]
    lines = [
        f"Machine: {info['machine']}; {info['threads']} thread(s); {info['date']}.",
        "",
        "| model | params | eager ms: median (p10–p90) | compiled ms: median (p10–p90) "
        "| eager / compiled | compile s | max abs diff |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        e, c = r["eager"], r["compiled"]
        lines.append(
            f"| {r['model']} | {r['params']:,} | {1e3 * e['median']:.3f} ({1e3 * e['p10']:.3f}–"
            f"{1e3 * e['p90']:.3f}) | {1e3 * c['median']:.3f} ({1e3 * c['p10']:.3f}–"
            f"{1e3 * c['p90']:.3f}) | {e['median'] / c['median']:.2f} | {r['compile_s']:.1f} "
            f"| {r['max_abs_diff']:.1e} |"
        )
    text = "\n".join(lines)
    print(text)
    if args.out:
        write(args.out, text, {**info, "rows": rows})
    return 0 if all(r["max_abs_diff"] < 1e-5 and r["recompiles"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
