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
    saved status's collapse verdict, else ``None``."""
    import torch

    from sparseopt.config import TrainConfig, load_run_config
    from sparseopt.engine.build import build_model, data_tensors, load_data, probe_batch
    from sparseopt.health import classes_present, probe_constant

    cfg = TrainConfig.from_dict(load_run_config(run_dir / "config.yaml")).resolve()
    key = (cfg.dataset, cfg.seed, cfg.val_fraction, json.dumps(cfg.dataset_options, sort_keys=True))
    if key not in cache:
        data = load_data(cfg)
        cache[key] = (data, data_tensors(data))
    data, tensors = cache[key]
    model = build_model(cfg, data, sparse_init=False)
    state = torch.load(run_dir / "model_sparse.pt", map_location="cpu", weights_only=False)
    model.load_state_dict(state.state_dict() if hasattr(state, "state_dict") else state)
    classes = data.num_classes if data.task == "classification" else None
    constant, scores = probe_constant(model, probe_batch(tensors), classes)
    seen = classes_present(tensors["train"][1], classes) if classes else None
    scores = [c for c in scores if seen is None or c in seen]
    saved = json.loads((run_dir / "summary.json").read_text()).get("status", "ok")
    if constant or len(scores) >= 2:
        if saved != "collapsed":
            what = "the same output" if constant else f"one score for classes {scores}"
            return "collapsed", f"{what} for every probe input (saved: {saved})"
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
                print(f"{run_dir}: {now[0]}: {now[1]}", flush=True)
    print(f"probed {probed} runs; {changed} would read collapsed now")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
