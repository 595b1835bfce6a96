"""Heads and neurons removed from a small transformer: accuracy, parameters, MACs, latency.

The model and data are those of ``examples/transformer_heads.py``: a Hugging Face
``BertModel`` built from a config (4 layers, hidden 64, 8 heads of 8, intermediate 256;
no download) on scikit-learn's digits read as 8 row tokens. Dense AdamW against
SplitLBI, AdaBreg and RVSM with coupled ``group_l1`` head + neuron groups
(:mod:`sparseopt.coupled`); λ of each method is chosen on the validation split (the
largest fraction of heads + neurons removed with validation accuracy at most 1 point
below dense, else the best validation accuracy), then the test accuracy is reported.

For dense and every chosen run: heads and neurons removed, parameters, MACs per sample
(``torch.utils.flop_counter`` FLOPs / 2: every matmul, attention included) and CPU
latency of the masked network (unshrunk) and of the shrunk one
(:func:`sparseopt.prune.heads.shrink_coupled`), timed interleaved with the dense model
(:func:`sparseopt.prune.measure_latencies`, median of ``--repeats`` rounds), single
threaded.

Usage::

    python benchmarks/transformer_heads.py                       # the table (~15 min, 1 core)
    python benchmarks/transformer_heads.py --methods splitlbi --lams 0.02 0.05
    python benchmarks/transformer_heads.py --json results.json
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sparseopt.coupled import dead_groups, detect_coupled_groups, unpack_coupled
from sparseopt.prune import measure_latencies
from sparseopt.prune.heads import shrink_coupled

_SPEC = importlib.util.spec_from_file_location(
    "transformer_heads_example",
    Path(__file__).resolve().parents[1] / "examples" / "transformer_heads.py",
)
ex = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(ex)

#: λ grids searched on the validation split.
GRIDS: dict[str, list[float]] = {
    "splitlbi": [0.005, 0.01, 0.02, 0.04],
    "adabreg": [0.1, 0.3, 1.0],
    "rvsm": [5e-4, 1e-3, 2e-3, 4e-3],
}


_MODELS = ("model", "sets", "shrunk")


def macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass per sample (FLOPs / 2, matmuls)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(x)
    return counter.get_total_flops() // 2 // len(x)


def removed(model: nn.Module, sets: list[Any]) -> dict[str, int]:
    """Heads and neurons removed (dead) and their totals."""
    dead = dead_groups(model, sets)
    out = {"heads": 0, "heads_removed": 0, "neurons": 0, "neurons_removed": 0}
    for cg in sets:
        key = "heads" if cg.kind == "head" else "neurons"
        out[key] += cg.num_groups
        out[f"{key}_removed"] += len(dead[cg.name])
    return out


def run(
    method: str,
    lam: float | None,
    data: dict,
    epochs: int,
    seed: int,
    finetune: int = 0,
    head_scale: float = 1.0,
) -> dict[str, Any]:
    """Train one configuration; return its numbers and the (unpacked) trained model.

    With ``finetune > 0`` the shrunk network is then trained densely with AdamW
    (learning rate 1e-3, cosine) for that many epochs (simplify, then fine-tune), and
    ``val_acc`` / ``test_acc`` are those of the fine-tuned shrunk network
    (``sparse_val_acc`` / ``sparse_test_acc`` those before fine-tuning). The dense
    baseline gets the same extra epochs (a second cosine cycle), so every network is
    trained for ``epochs + finetune`` epochs.
    """
    t0 = time.perf_counter()
    overrides = {} if lam is None else {"lam": lam}
    if method != "adam":
        overrides["head_scale"] = head_scale
    model, opt = ex.build(method, seed, **overrides)
    ex.train(model, opt, data, epochs=epochs, seed=seed)
    unpack_coupled(model)
    sets = detect_coupled_groups(model)
    out = {
        "method": method,
        "lam": lam,
        "head_scale": head_scale,
        "val_acc": ex.accuracy(model, *data["val"]),
        "test_acc": ex.accuracy(model, *data["test"]),
        **removed(model, sets),
    }
    shrunk = shrink_coupled(model, sets, data["test"][0][:64])
    out["max_abs_diff"] = shrunk.max_abs_diff
    out["sparse_val_acc"], out["sparse_test_acc"] = out["val_acc"], out["test_acc"]
    if finetune > 0:  # dense too: every network gets the same epochs
        opt = torch.optim.AdamW(shrunk.model.parameters(), lr=1e-3, weight_decay=0.0)
        ex.train(shrunk.model, opt, data, epochs=finetune, seed=seed)
        out["val_acc"] = ex.accuracy(shrunk.model, *data["val"])
        out["test_acc"] = ex.accuracy(shrunk.model, *data["test"])
    out["train_s"] = time.perf_counter() - t0
    out["fraction_removed"] = (out["heads_removed"] + out["neurons_removed"]) / (
        out["heads"] + out["neurons"]
    )
    print(
        f"  {method:<8} λ={lam!s:<6} val {out['val_acc']:.2%} test {out['test_acc']:.2%} "
        f"(sparse: val {out['sparse_val_acc']:.2%} test {out['sparse_test_acc']:.2%}) "
        f"heads -{out['heads_removed']}/{out['heads']} neurons "
        f"-{out['neurons_removed']}/{out['neurons']} ({out['train_s']:.0f} s)",
        flush=True,
    )
    return {**out, "model": model, "sets": sets, "shrunk": shrunk.model}


def choose(runs: list[dict[str, Any]], dense_val: float) -> dict[str, Any]:
    """Most removed within 1 point of dense on validation, else best validation accuracy."""
    ok = [r for r in runs if r["val_acc"] >= dense_val - 0.01]
    if ok:
        return max(ok, key=lambda r: (r["fraction_removed"], r["val_acc"]))
    return max(runs, key=lambda r: r["val_acc"])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(GRIDS), choices=list(GRIDS))
    parser.add_argument("--lams", nargs="+", type=float, default=None, help="one grid for all")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=256, help="latency batch size")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--finetune", type=int, default=0, help="AdamW epochs on the shrunk net")
    parser.add_argument(
        "--head-scale", type=float, default=1.0, help="heads' λ = this × λ (neurons: λ)"
    )
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    data = ex.digit_rows(args.seed)
    print(f"dense AdamW, {args.epochs} epochs", flush=True)
    dense = run("adam", None, data, args.epochs, args.seed)
    chosen = []
    for method in args.methods:
        print(f"{method}: λ grid", flush=True)
        runs = [
            run(method, lam, data, args.epochs, args.seed, args.finetune, args.head_scale)
            for lam in args.lams or GRIDS[method]
        ]
        best = choose(runs, dense["val_acc"])
        best["grid"] = [{k: v for k, v in r.items() if k not in _MODELS} for r in runs]
        chosen.append(best)
    x_time = data["test"][0][: args.batch]
    models, rows = [dense["model"]], []
    for r in chosen:
        models += [r["model"], r["shrunk"]]
    latencies = measure_latencies(
        models, tuple(x_time.shape[1:]), args.batch, repeats=args.repeats, warmup=3
    )
    med = [statistics.median(t) * 1e3 for t in latencies]
    dense_ms = med[0]
    dense_macs = macs(dense["model"], x_time)
    rows.append(
        {
            **{k: v for k, v in dense.items() if k not in _MODELS},
            "params": sum(p.numel() for p in dense["model"].parameters()),
            "params_after": sum(p.numel() for p in dense["model"].parameters()),
            "macs": dense_macs,
            "macs_after": dense_macs,
            "ms_before": dense_ms,
            "ms_after": dense_ms,
        }
    )
    for i, r in enumerate(chosen):
        rows.append(
            {
                **{k: v for k, v in r.items() if k not in _MODELS},
                "params": sum(p.numel() for p in r["model"].parameters()),
                "params_after": sum(p.numel() for p in r["shrunk"].parameters()),
                "macs": macs(r["model"], x_time),
                "macs_after": macs(r["shrunk"], x_time),
                "ms_before": med[1 + 2 * i],
                "ms_after": med[2 + 2 * i],
            }
        )
    print()
    print(
        "| method | λ | val acc | test acc | test acc before fine-tuning | heads removed | neurons removed | parameters "
        "before → after | MACs/sample before → after | latency ms (batch "
        f"{args.batch}) masked → shrunk | speed-up vs dense |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['method']} | {_lam(r)} | {r['val_acc']:.2%} "
            f"| {r['test_acc']:.2%} | {r['sparse_test_acc']:.2%} | {r['heads_removed']}/{r['heads']} "
            f"| {r['neurons_removed']}/{r['neurons']} | {r['params']:,} → {r['params_after']:,} "
            f"| {r['macs']:,} → {r['macs_after']:,} | {r['ms_before']:.2f} → {r['ms_after']:.2f} "
            f"| {dense_ms / r['ms_after']:.2f}× |"
        )
    info = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "rows": rows,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(info, indent=2, default=str))
    return info


def _lam(r: dict[str, Any]) -> str:
    if r["lam"] is None:
        return "—"
    if r.get("head_scale", 1.0) != 1.0:
        return f"{r['lam']:g} (heads {r['lam'] * r['head_scale']:.3g})"
    return f"{r['lam']:g}"


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return "unknown"
    for line in out.splitlines():
        if line.startswith("Model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
