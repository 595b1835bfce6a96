"""A training step whose weights and optimizer state hold subnormal numbers, with and
without flushing them to zero (``torch.set_flush_denormal``), against the same step from
a state of normal numbers — on the CPU the benchmark runs on.

Why: RVSM's dense copy ``w`` of a weight whose input unit died is pulled towards
``u = 0`` by β and decays geometrically, for many steps as a subnormal number, which
some CPUs compute in microcode (what was seen: docs/optimizers.md, "Subnormal numbers on
CPUs"). sparseopt's trainer flushes subnormals while it trains on CPU
(:func:`sparseopt.engine.build.flush_denormals`); this benchmark measures what that buys
on the machine at hand. The default fraction, 55 %, is what a 20-epoch RVSM LeNet-5 run
on full Fashion-MNIST left subnormal in ``fc1``.

For each optimizer (registry recipe), LeNet-5 on a fixed random batch of 64 images
(28×28) takes one step (forward, backward, ``optimizer.step()``) from a saved state,
restored before every step (a copy: no arithmetic): the **normal** state (a few steps in)
and the **subnormal** one (the same, with a fraction of every weight and float state
tensor — ``--fraction``, 0.55 — replaced by values between 1e-39 and 1e-38, signs kept),
each with flushing **off** and **on**. The four jobs of all optimizers run in short
interleaved blocks (``_timing.interleave``). Columns: median step time (10th–90th
percentile) and the ratio of each to the normal state with flushing off.

Usage::

    python benchmarks/denormals.py                      # rvsm, sgd, adam; 1 thread
    python benchmarks/denormals.py --optimizers rvsm --rounds 10 --out /tmp/denormals

``--out PATH`` writes ``PATH.md`` and ``PATH.json``.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import interleave, spread, where, write

from sparseopt.engine.build import fastest_implementation
from sparseopt.models import build_model
from sparseopt.optim.registry import create_optimizer, get_optimizer_info

STATES = ("normal", "subnormal")


def subnormal_copy(tensors: list[torch.Tensor], fraction: float, gen: torch.Generator) -> None:
    """Replace ``fraction`` of the entries of each floating tensor by subnormals in
    [1e-39, 1e-38) with the entry's sign (in place)."""
    for t in tensors:
        if not t.is_floating_point() or t.numel() < 2:
            continue
        pick = torch.rand(t.shape, generator=gen) < fraction
        size = 1e-39 + 9e-39 * torch.rand(t.shape, generator=gen)
        sign = torch.where(t < 0, -1.0, 1.0)
        t.copy_(torch.where(pick, sign * size, t))


def _floats(opt: torch.optim.Optimizer, model: torch.nn.Module) -> list[torch.Tensor]:
    state = [v for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    return [*model.parameters(), *(v for v in state if v.is_floating_point() and v.ndim)]


def jobs_for(name: str, fraction: float, seed: int) -> tuple[list[str], list[Callable[[], None]]]:
    """Four jobs (state × flushing) of optimizer ``name``, each one step from its state."""
    torch.manual_seed(seed)
    model = build_model("lenet5", (1, 28, 28), 10)
    info = get_optimizer_info(name)
    opt = create_optimizer(model, name, **fastest_implementation(info, model))
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    torch.set_flush_denormal(False)
    for _ in range(3):  # the state exists
        step()
    saved = {"normal": copy.deepcopy((model.state_dict(), opt.state_dict()))}
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        subnormal_copy(_floats(opt, model), fraction, gen)
    saved["subnormal"] = copy.deepcopy((model.state_dict(), opt.state_dict()))

    def job(state: str, flush: bool) -> Callable[[], None]:
        def run() -> None:
            torch.set_flush_denormal(flush)
            model_sd, opt_sd = saved[state]
            model.load_state_dict(model_sd)
            opt.load_state_dict(opt_sd)
            step()
            torch.set_flush_denormal(False)

        return run

    labels, jobs = [], []
    for state in STATES:
        for flush in (False, True):
            labels.append(f"{name} | {state} | {'on' if flush else 'off'}")
            jobs.append(job(state, flush))
    return labels, jobs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizers", nargs="+", default=["rvsm", "sgd", "adam"])
    parser.add_argument("--fraction", type=float, default=0.55)
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds")
    parser.add_argument("--block", type=int, default=3, help="timed steps per job per round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", metavar="PATH", help="write PATH.md and PATH.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not torch.set_flush_denormal(False):
        print("this CPU cannot flush subnormals (torch.set_flush_denormal: False)")
        return 1
    labels: list[str] = []
    jobs: list[Callable[[], None]] = []
    for name in args.optimizers:
        names, fns = jobs_for(name, args.fraction, args.seed)
        labels += names
        jobs += fns
    times = interleave(jobs, args.rounds, args.block)
    rows: list[dict[str, Any]] = []
    for i, label in enumerate(labels):
        base = spread(times[i - i % 4])["median"]  # the optimizer's normal state, off
        s = spread(times[i])
        rows.append(
            {"job": label, **{k: 1e3 * v for k, v in s.items()}, "ratio": s["median"] / base}
        )
    result = {
        **where("cpu"),
        "command": "python benchmarks/denormals.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "fraction": args.fraction,
        "rows": rows,
    }
    text = "\n".join(
        [
            f"Machine: {result['machine']}; {result['threads']} thread(s); {result['date']}.",
            f"Command: `{result['command']}`",
            "",
            "| optimizer | state | flushing | median ms (p10–p90) | × normal, off |",
            "|---|---|---|---:|---:|",
            *(
                f"| {r['job']} | {r['median']:.2f} ({r['p10']:.2f}–{r['p90']:.2f}) | {r['ratio']:.2f} |"
                for r in rows
            ),
        ]
    )
    print(text)
    if args.out:
        write(args.out, text, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
