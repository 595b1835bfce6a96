"""Timing helpers shared by the speed benchmarks (``step_overhead.py``, ``shrink_speed.py``).

- :func:`interleave`: short blocks of every job in turn, the order rotating from round to
  round, so that a burst of load from other processes lands on all jobs alike;
- :func:`spread`: median, 10th and 90th percentile of a list of times;
- :func:`where`: the machine line (the CPU model read from the system by the repro
  helpers' ``machine()``, or the GPU) and the date;
- :func:`write`: ``PATH.md`` and ``PATH.json`` for ``--out PATH``.
"""

from __future__ import annotations

import datetime
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "repro"))

from _common import machine


def interleave(
    jobs: Sequence[Callable[[], Any]], rounds: int, block: int, device: str = "cpu"
) -> list[list[float]]:
    """Seconds of every call of every job: ``rounds`` rounds of ``block`` calls per job.

    The jobs run in turn, starting one job later each round. On CUDA every call is
    synchronised before and after.
    """
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times: list[list[float]] = [[] for _ in jobs]
    order = list(range(len(jobs)))
    for r in range(rounds):
        shift = r % len(order)
        for j in order[shift:] + order[:shift]:
            for _ in range(block):
                sync()
                t0 = time.perf_counter()
                jobs[j]()
                sync()
                times[j].append(time.perf_counter() - t0)
    return times


def spread(times: Sequence[float]) -> dict[str, float]:
    """Median, 10th and 90th percentile (seconds) of ``times``."""
    ordered = sorted(times)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]

    return {"median": statistics.median(ordered), "p10": pct(0.1), "p90": pct(0.9)}


def where(device: str) -> dict[str, Any]:
    """The machine (CPU model from the system, or the GPU), threads, torch version, date."""
    info = machine()
    name = info["cuda"] if device == "cuda" else info["cpu"]
    return {
        "machine": f"{name}, {info['cpu_count']} CPUs, torch {info['torch']}",
        "device": device,
        "threads": torch.get_num_threads(),
        "date": datetime.date.today().isoformat(),
    }


def write(path: str, text: str, result: dict[str, Any]) -> None:
    """Write ``text`` to ``PATH.md`` and ``result`` to ``PATH.json``."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text + "\n", encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(result, indent=2), encoding="utf-8")
