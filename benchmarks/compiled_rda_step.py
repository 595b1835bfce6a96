"""What a compiled step would give RDA's adaptive default (issue 14): a measurement.

RDA's recipe is the adaptive variant (AdaGrad diagonal metric), whose eager ``foreach``
step makes about 22 elementwise passes over memory where 7 would do (docs/optimizers.md).
This script writes the same ℓ1 step as one function of plain torch ops, compiles it with
``torch.compile(fullgraph=True)`` (the Inductor backend fuses it into a few loops), and
times it against ``sparseopt.optim.rda.rda(..., adaptive=True, foreach=True)`` on the same
parameters and gradients, in short interleaved blocks (``_timing.interleave``), one
thread. It checks that both give the same iterates. It is a prototype for the decision,
not a code path of the library: lr constant, one param group, ℓ1 only, dense tensors.

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
from sparseopt.optim.rda import rda
from sparseopt.penalties import make_penalty

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import interleave, spread, where, write

#: Input shape of each benchmarked model (10 classes).
MODELS = {"mlp": (1, 8, 8), "convnet": (1, 28, 28), "resnet18": (3, 32, 32)}
GAMMA, LAM, EPS = 100.0, 1e-3, 1e-10


def _adaptive_l1(ws, gs, sums, sqs, w0s, lr, lr_sum, lr_sq_sum):  # type: ignore[no-untyped-def]
    r"""One adaptive ℓ1-RDA step (see ``rda.py``): :math:`S \mathrel{+}= a g`,
    :math:`s \mathrel{+}= a^2 g^2`, :math:`d = \delta + \sqrt s`, :math:`c = \sum a^2/(\gamma d)`,
    :math:`w = \operatorname{soft}(w_0 - (c/A) S,\ c\lambda)`. The running sums are 0-d
    tensors, so that a new step does not recompile."""
    for w, g, s_, sq, w0 in zip(ws, gs, sums, sqs, w0s, strict=True):
        s_.add_(g, alpha=lr)
        sq.addcmul_(g, g, value=lr * lr)
        d = sq.sqrt() + EPS
        z = w0 - (lr_sq_sum / GAMMA / lr_sum) * s_ / d
        thresh = (lr_sq_sum / GAMMA * LAM) / d
        w.copy_(torch.sign(z) * torch.clamp(z.abs() - thresh, min=0))


def measure(model_name: str, rounds: int, block: int) -> dict[str, Any]:
    """Eager against compiled step times (seconds), the compile time and the largest
    difference of the iterates after every timed step."""
    torch.manual_seed(0)
    net = build_model(model_name, MODELS[model_name], 10)
    params = [p.detach().clone() for p in net.parameters()]
    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(p.shape, generator=gen) * 1e-2 for p in params]
    pen = make_penalty("l1", lam=LAM)

    def fresh() -> dict[str, list[torch.Tensor]]:
        zeros = [torch.zeros_like(p) for p in params]
        return {
            "w": [p.clone() for p in params],
            "S": zeros,
            "s": [torch.zeros_like(p) for p in params],
            "w0": [p.clone() for p in params],
        }

    eager_state, comp_state = fresh(), fresh()
    a_sums = [torch.zeros((), dtype=torch.float64) for _ in params]
    a_sq_sums = [torch.zeros((), dtype=torch.float64) for _ in params]
    sums = [torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)]
    kernel = torch.compile(_adaptive_l1, fullgraph=True, dynamic=False)

    def eager() -> None:
        st = eager_state
        rda(st["w"], grads, st["S"], st["w0"], st["s"], a_sums, a_sq_sums, lr=1.0,
            gamma=GAMMA, adaptive=True, eps=EPS, penalty=pen, foreach=True)  # fmt: skip

    def compiled() -> None:
        st = comp_state
        sums[0] += 1.0
        sums[1] += 1.0
        kernel(st["w"], grads, st["S"], st["s"], st["w0"], 1.0, sums[0], sums[1])

    t0 = time.perf_counter()
    compiled()
    compile_s = time.perf_counter() - t0
    eager()
    times = interleave([eager, compiled], rounds, block)
    pairs = zip(eager_state["w"], comp_state["w"], strict=True)
    diff = max(float((a - b).abs().max()) for a, b in pairs)
    return {
        "model": model_name,
        "params": sum(p.numel() for p in params),
        "steps": 1 + rounds * block,
        "compile_s": compile_s,
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
    return 0 if all(r["max_abs_diff"] < 1e-5 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
