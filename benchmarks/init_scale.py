"""Initial cross-entropy of sparse starts: the realised fan-in scaling against the paper's.

A sparse start should begin where a dense He start begins: near ln C. This prints, for
each model and start density, the cross-entropy of the untrained network on 1 000
training images with ``sparse_init_(scale="density")`` (He variance / density, the
paper's rule) and ``scale="fan_in"`` (He over each unit's realised fan-in, the default),
beside the model's own dense initialisation.

Usage::

    python benchmarks/init_scale.py                       # Fashion-MNIST (Debian files)
    python benchmarks/init_scale.py --dataset digits      # no files needed
"""

from __future__ import annotations

import argparse

import torch

from sparseopt.data import load_dataset
from sparseopt.init import SCALES, sparse_init_
from sparseopt.models import build_model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--models", nargs="+", default=["convnet", "lenet5", "mlp"])
    p.add_argument("--densities", nargs="+", type=float, default=[0.01, 0.05, 0.2])
    p.add_argument(
        "--seeds", type=int, default=1, help="mean over the draws of seeds 0..N-1 (default 1)"
    )
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    opts = {"limit_train": 2000, "limit_test": 100} if args.dataset != "digits" else {}
    data = load_dataset(args.dataset, data_dir=args.data_dir, **opts)
    n = min(1000, len(data.train))
    x = torch.stack([data.train[i][0] for i in range(n)])
    y = torch.tensor([int(data.train[i][1]) for i in range(n)])
    seeds = range(max(1, args.seeds))
    which = "seed 0" if len(seeds) == 1 else f"mean over seeds 0-{len(seeds) - 1}"
    print(f"initial cross-entropy on {n} {args.dataset} training images ({which})")
    print("| model | density | dense | " + " | ".join(f"scale={s}" for s in SCALES) + " |")
    print("|---|---:|---:|" + "---:|" * len(SCALES))
    for name in args.models:
        if data.input_shape[-1] < 28 and name in ("convnet", "lenet5"):
            continue
        for r in args.densities:
            losses = []
            for scale in (None, *SCALES):
                total = 0.0
                for seed in seeds:
                    torch.manual_seed(seed)
                    model = build_model(name, data.input_shape, data.num_classes)
                    if scale is not None:
                        gen = torch.Generator().manual_seed(seed)
                        sparse_init_(model, r, scale=scale, generator=gen)
                    with torch.no_grad():
                        total += torch.nn.functional.cross_entropy(model(x), y).item()
                losses.append(total / len(seeds))
            print(f"| {name} | {r:g} | " + " | ".join(f"{v:.2f}" for v in losses) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
