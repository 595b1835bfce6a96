"""Probe the final networks of finished runs with today's failure detection.

A change of :mod:`sparseopt.health` (2026-11-28: a classifier that gives two or more
classes the same score for every input counts as collapsed) does not re-run the matrix:
this reloads each run's ``model_sparse.pt`` (the deployable network) with its saved
config, probes it as the trainer does at an epoch's end (the first 256 validation
inputs, else training inputs; :func:`sparseopt.health.probe_constant`, only the classes
the training labels hold) and lists the runs whose final network would now read
``collapsed`` although their summary says otherwise.

Usage::

    python benchmarks/health_rescan.py 'runs/robustness26*/*/*' 'runs/scale26/s*/*/*'

Prints one line per run that changes and the count of runs probed; exits 1 when any run
changes (0 otherwise). Regression runs (no classes) are probed for a constant output only.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path
from typing import Any


def rescan(run_dir: Path, cache: dict[Any, Any]) -> tuple[str, str] | None:
    """``(status now, reason)`` of ``run_dir``'s final network where it differs from the
    saved status's collapse verdict, else ``None`` (the judgement is
    :func:`sparseopt.engine.judge.judge_finished`'s; its one-epoch stall is not asked:
    the trainer's needs ``stall_epochs`` epochs in a row, which the summary judged)."""
    from sparseopt.engine.judge import judge_finished

    status, reason = judge_finished(run_dir, cache)
    saved = json.loads((run_dir / "summary.json").read_text()).get("status", "ok")
    if status == "collapsed" and saved != "collapsed":
        return "collapsed", f"{reason} (saved: {saved})"
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("patterns", nargs="+", help="glob patterns of run directories")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    cache: dict[Any, Any] = {}
    probed = changed = 0
    for pattern in args.patterns:
        for name in sorted(glob.glob(pattern)):
            run_dir = Path(name)
            if not (run_dir / "model_sparse.pt").is_file():
                continue
            probed += 1
            now = rescan(run_dir, cache)
            if now is not None:
                changed += 1
                print(f"{run_dir}: {now[1]}", flush=True)
    print(f"probed {probed} runs; {changed} would read collapsed now")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
