"""Train a small transformer whose attention heads and MLP neurons die, then remove them.

Nothing is downloaded: the model is a Hugging Face ``BertModel`` built from a config,
the data scikit-learn's 8×8 digits read as sequences of 8 rows of 8 pixels (a token per
row, a linear embedding, mean pooling, a linear classifier). The walk-through:

1. :func:`sparseopt.coupled.detect_coupled_groups` finds one head set and one neuron
   set per layer (a head = its query/key/value rows and biases + its output-projection
   columns; a neuron = its intermediate row and bias + its output column);
2. :func:`sparseopt.coupled.pack_coupled` packs each set into one ``(G, |g|)``
   parameter, so a ``group_l1`` penalty on its rows (``coupled_param_groups``) acts on
   the joint norm of every head / neuron, in any sparseopt optimizer;
3. a sparse optimizer trains it (SplitLBI by default; AdaBreg and RVSM as in the
   benchmark ``benchmarks/transformer_heads.py``);
4. :func:`sparseopt.prune.heads.shrink_coupled` removes the dead heads and neurons
   physically; the outputs are checked equal.

    pip install "sparseopt[hf]"
    python examples/transformer_heads.py                   # about a minute on one CPU core
    python examples/transformer_heads.py --method adabreg
    python examples/transformer_heads.py --smoke           # a few seconds (what the tests run)
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import BertConfig, BertModel

import sparseopt as so
from sparseopt.coupled import (
    coupled_param_groups,
    dead_groups,
    detect_coupled_groups,
    pack_coupled,
    zero_groups_,
)
from sparseopt.data import load_dataset
from sparseopt.prune.heads import shrink_coupled

#: Each method's options and λ for the coupled group_l1 penalty (``head_scale``: the
#: heads' λ relative to the neurons'), chosen on the validation split with
#: ``benchmarks/transformer_heads.py`` (see docs/transformers.md).
METHODS: dict[str, dict[str, Any]] = {
    "splitlbi": {
        "lr": 0.05,
        "kappa": 1.0,
        "nu": 10.0,
        "momentum": 0.9,
        "lam": 0.018,
        "head_scale": 1.15,
    },
    "adabreg": {"lr": 2e-3, "lam": 0.3},
    "rvsm": {"lr": 0.05, "beta": 1.0, "momentum": 0.9, "lam": 0.0012, "head_scale": 1.25},
    "adam": {"lr": 2e-3},  # the dense baseline
}


class DigitsTransformer(nn.Module):
    """8 row tokens → linear embedding → BERT encoder (from a config) → mean → classes."""

    def __init__(
        self,
        hidden: int = 64,
        layers: int = 4,
        heads: int = 8,
        intermediate: int = 256,
        classes: int = 10,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        config = BertConfig(
            vocab_size=1,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=intermediate,
            max_position_embeddings=8,
            type_vocab_size=1,
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=0.0,
        )
        config._attn_implementation = "eager"
        self.embed = nn.Linear(8, hidden)
        self.encoder = BertModel(config, add_pooling_layer=False)
        self.classifier = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: a batch of digits as ``(N, 8, 8)`` (or ``(N, 1, 8, 8)``) rows."""
        h = self.encoder(inputs_embeds=self.embed(x.reshape(-1, 8, 8))).last_hidden_state
        return self.classifier(h.mean(1))


def digit_rows(
    seed: int = 0, val_fraction: float = 0.2
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The digits as ``(N, 8, 8)`` row sequences: train / val / test tensors."""
    data = load_dataset("digits", seed=seed, val_fraction=val_fraction)
    out = {}
    for part in ("train", "val", "test"):
        x, y = getattr(data, part).tensors
        out[part] = (x.reshape(-1, 8, 8).float(), y)
    return out


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Classification accuracy of ``model`` in eval mode."""
    was = model.training
    model.eval()
    acc = float((model(x).argmax(1) == y).float().mean())
    model.train(was)
    return acc


def build(
    method: str, seed: int, size: dict[str, int] | None = None, **overrides: Any
) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The model (packed for the sparse methods; ``size``: its config) and its optimizer."""
    torch.manual_seed(seed)
    model = DigitsTransformer(**(size or {}))
    opts = {**METHODS[method], **overrides}
    if method in ("adam", "sgd"):
        return model, torch.optim.AdamW(model.parameters(), lr=opts["lr"], weight_decay=0.0)
    pack_coupled(model)
    start = opts.pop("start_density", None)
    if start is not None:  # sparse start (Bungert et al. §4.1): a fraction of groups alive
        gen = torch.Generator().manual_seed(seed)
        for cg in model.sparseopt_coupled.sets:
            n_dead = cg.num_groups - max(1, round(start * cg.num_groups))
            zero_groups_(model, cg, torch.randperm(cg.num_groups, generator=gen)[:n_dead].tolist())
    penalty = opts.pop("penalty", "group_l1")
    lam = opts.pop("lam")
    head_scale = opts.pop("head_scale", 1.0)  # heads' λ relative to the neurons'
    by_kind = {"head": lam * head_scale} if head_scale != 1.0 else None
    groups = coupled_param_groups(model, penalty=penalty, lam=lam, lam_by_kind=by_kind)
    return model, so.create_optimizer(groups, method, **opts)


def train(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    data: dict[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    epochs: int,
    batch: int = 64,
    seed: int = 0,
) -> None:
    """Minibatch training with a cosine learning-rate schedule."""
    x, y = data["train"]
    steps = epochs * math.ceil(len(x) / batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch):
            idx = perm[i : i + batch]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
    if hasattr(opt, "finalize"):
        opt.finalize()  # the deployable sparse network (SplitLBI: W on supp Γ; RVSM: u)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", default="splitlbi", choices=sorted(METHODS))
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lam", type=float, default=None, help="λ (default: the method's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--finetune", type=int, default=20, help="AdamW epochs on the shrunk network (default 20)"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="a tiny model, 1 epoch on 256 digits (for the tests)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    epochs = 1 if args.smoke else args.epochs
    data = digit_rows(args.seed)
    size = None
    if args.smoke:
        size = {"hidden": 16, "layers": 2, "heads": 2, "intermediate": 32}
        data = {k: (x[:256], y[:256]) for k, (x, y) in data.items()}
    overrides = {} if args.lam is None else {"lam": args.lam}
    model, opt = build(args.method, args.seed, size, **overrides)
    if args.method not in ("adam", "sgd"):
        sets = model.sparseopt_coupled.sets
        print(
            f"{len(sets)} coupled sets:", ", ".join(f"{cg.name} ({cg.num_groups})" for cg in sets)
        )
    train(model, opt, data, epochs=epochs, seed=args.seed)
    result: dict[str, Any] = {"method": args.method, "test_acc": accuracy(model, *data["test"])}
    if args.method in ("adam", "sgd"):
        sets = detect_coupled_groups(model)
        res = shrink_coupled(model, sets, data["test"][0][:32])
    else:
        sets = model.sparseopt_coupled.sets
        res = shrink_coupled(model, inputs=data["test"][0][:32])
    dead = dead_groups(model, sets)
    heads = [cg for cg in sets if cg.kind == "head"]
    neurons = [cg for cg in sets if cg.kind == "neuron"]
    result["heads_removed"] = sum(len(dead[cg.name]) for cg in heads)
    result["heads"] = sum(cg.num_groups for cg in heads)
    result["neurons_removed"] = sum(len(dead[cg.name]) for cg in neurons)
    result["neurons"] = sum(cg.num_groups for cg in neurons)
    result["params_before"] = sum(p.numel() for p in model.parameters())
    result["params_after"] = sum(p.numel() for p in res.model.parameters())
    result["shrunk_test_acc"] = accuracy(res.model, *data["test"])
    result["max_abs_diff"] = res.max_abs_diff
    print(
        f"{args.method}: test accuracy {result['test_acc']:.2%} (shrunk {result['shrunk_test_acc']:.2%}), "
        f"heads removed {result['heads_removed']}/{result['heads']}, "
        f"neurons removed {result['neurons_removed']}/{result['neurons']}, parameters "
        f"{result['params_before']:,} -> {result['params_after']:,} "
        f"(max output difference {res.max_abs_diff:.1e})"
    )
    if args.finetune > 0 and not args.smoke:  # simplify, then fine-tune (DessiLBI)
        ft = torch.optim.AdamW(res.model.parameters(), lr=1e-3, weight_decay=0.0)
        train(res.model, ft, data, epochs=args.finetune, seed=args.seed)
        result["finetuned_test_acc"] = accuracy(res.model, *data["test"])
        print(
            f"shrunk network fine-tuned {args.finetune} epochs: {result['finetuned_test_acc']:.2%}"
        )
    return result


if __name__ == "__main__":
    main()
