"""Experiment 5: multi-scale curve classification with RVSM (Xue & Xin, WCGO 2019).

Regular vs shaky curves with the 3-conv ``curvecnn`` (three conv + max-pool stages, one
FC layer: the paper's architecture); RVSM with ℓ0 and transformed-ℓ1 (a = 1) penalties
on the FC weights (convolutions unpenalised), beside dense SGD. Published: > 99 % test
accuracy with > 86 % of the FC weights zero. Columns: test accuracy, fraction of FC
weights that are zero.

``--dataset curves`` (default): the synthetic smooth curves (``sparseopt.data.curves``).
``--dataset words``: words rendered in fonts, regular against trembling, at several scales
(``sparseopt.data.words``, the paper's kind of data); the other sparse optimizers run
too, with their registry defaults, and ``--test-fonts STIX`` holds fonts out of training
(test on an unseen font). ``--paper-only`` keeps the three rows of the paper.

    python benchmarks/repro/exp5_curves.py --quick --out runs/repro/exp5
    python benchmarks/repro/exp5_curves.py --dataset words --out runs/repro/exp5-words
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
#: The paper's RVSM has no refit (the recipe's since round 90).
FC_ONLY = {"optimizer": "rvsm", "conv_penalty": "none", "beta": 1.0, "refit": 0.0}
METHODS: list[tuple[str, dict[str, Any]]] = [
    ("SGD (dense)", {"optimizer": "sgd"}),
    ("RVSM-ℓ0", {**FC_ONLY, "linear_penalty": "l0", "linear_lam": 5e-4}),
    ("RVSM-Tℓ1", {**FC_ONLY, "linear_penalty": "tl1", "a": 1.0, "linear_lam": 5e-3}),
]
#: The paper's rows train with SGD's settings (momentum 0.9, lr per dataset); the other
#: sparse optimizers (words only) keep their registry recipes (lr, penalty, λ, sparse start,
#: schedule, refit); every row shares the batch size 32.
#: Words: lr 0.02 from three dense-SGD runs on earlier versions of the generator (0.05
#: oscillated near chance for 6 epochs, 0.01 learned slowly); RVSM λ not swept (CPU
#: budget): ℓ0 keeps 5e-4 (hard threshold √(2λ/β) = 0.032), Tℓ1 (a = 1) takes 1e-2
#: (threshold 2λ/β = 0.02), the λ that reached 97.8 % FC zeros on the curves.
PAPER = {"curves": {"lr": 0.01, "momentum": 0.9}, "words": {"lr": 0.02, "momentum": 0.9}}
LAM = {"curves": {}, "words": {"RVSM-Tℓ1": 1e-2}}
OTHERS = ("linbreg", "adabreg", "splitlbi", "rda", "proxsgd")

#: Budgets (smoke, quick, full): images, size and epochs per dataset.
BUDGETS: dict[str, dict[str, tuple[Any, Any, Any]]] = {
    "curves": {
        "n_train": (64, 2000, 4000),
        "n_test": (32, 1000, 2000),
        "image_size": (16, 32, 64),
        "epochs": (1, 20, 60),
    },
    "words": {
        "n_train": (64, 2000, 8000),
        "n_test": (32, 1000, 2000),
        "epochs": (1, 8, 10),
    },
}


def example_figure(out: Path, report: C.Report, seed: int = 0) -> Path:
    """Pairs of words, plain and with the tremor, in every font family and several sizes."""
    import numpy as np

    from sparseopt.data.words import FONTS, Tremor, render_shaky, render_word, sample_scene

    plt, path = C.figure(out, "words_examples", report)
    families = list(dict.fromkeys(f for f, _ in FONTS))
    words = ("hand", "wave", "quiz", "garden", "moon", "little")
    fig, axes = plt.subplots(
        len(families), len(words), figsize=(1.9 * len(words), 1.75 * len(families))
    )
    for r, family in enumerate(families):
        faces = [i for i, (f, _) in enumerate(FONTS) if f == family]
        for c, word in enumerate(words):
            rng = np.random.default_rng([seed, r, c])
            scene, x_height = sample_scene(rng, word, faces[c % len(faces)], 32, 64)
            plain = render_word(scene)
            shaky, _ = render_shaky(scene, Tremor.sample(rng, x_height))
            ax = axes[r, c]
            ax.imshow(np.concatenate([plain, np.full((2, 64), 255, np.uint8), shaky]), cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(family, fontsize=8)
    fig.suptitle("words: regular (top of each pair) and trembling (bottom), 32×64", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    from PIL import Image

    with Image.open(path) as img:  # grey only: a single channel is 3-4x smaller
        grey = img.convert("L")
    grey.save(path, optimize=True)
    return path


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = C.parser(TITLE, dataset=None)
    p.add_argument("--dataset", choices=sorted(BUDGETS), default="curves")
    p.add_argument(
        "--test-fonts", default=None, help="words: fonts held out for the test part (e.g. STIX)"
    )
    p.add_argument(
        "--paper-only", action="store_true", help="words: only dense SGD, RVSM-ℓ0, RVSM-Tℓ1"
    )
    args = p.parse_args(argv)
    if args.test_fonts and args.dataset != "words":
        p.error("--test-fonts needs --dataset words")
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
    budget = {k: C.budget(args, *v) for k, v in BUDGETS[args.dataset].items()}
    epochs = C.epochs(args, *BUDGETS[args.dataset]["epochs"])
    options = {k: v for k, v in budget.items() if k != "epochs"}
    if args.test_fonts:
        options["test_fonts"] = args.test_fonts
    report.extra["dataset"] = {"name": args.dataset, **options}
    base = {
        "dataset": args.dataset,
        "data_dir": str(out / "cache"),
        "dataset_options": options,
        "model": "curvecnn",
        "epochs": epochs,
        "schedule": "cosine",
        "batch_size": 32,
        "limit_batches": C.budget(args, 2, None, None),
    }
    methods = []
    for label, cfg in METHODS:
        lam = LAM[args.dataset].get(label)
        methods.append(
            (label, {**PAPER[args.dataset], **cfg, **({"linear_lam": lam} if lam else {})})
        )
    if args.dataset == "words":
        example_figure(out, report, args.seed)
        if not args.paper_only:
            # their recipes' schedules too (RDA's is constant), not the paper rows' cosine
            methods += [(name, {"optimizer": name, "schedule": None}) for name in OTHERS]
    for label, cfg in methods:
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
