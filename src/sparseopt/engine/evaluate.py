"""Evaluation of the deployable network: loss, accuracy, densities.

The *deployable* network is what a sparse optimizer hands over at the end (inside
``optimizer.deployed()``: W masked by supp Γ for SplitLBI, u for RVSM; the weights
themselves otherwise). The training loop, ``sparseopt prune`` and the reproduction
scripts all measure it with these functions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sparseopt.engine.distributed import Dist, all_reduce_, broadcast_buffers_
from sparseopt.fsdp import full_tensor, is_sharded_model

__all__ = [
    "accuracy",
    "deployed",
    "deployed_state",
    "density_metrics",
    "evaluate_deployed",
    "evaluate_split",
    "kind_density",
    "loss_fn",
]


def loss_fn(task: str, out: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy for classification, mean squared error for regression."""
    if task == "classification":
        return F.cross_entropy(out, y, reduction=reduction)
    return F.mse_loss(out.reshape(y.shape), y, reduction=reduction)


def deployed(optimizer: Any) -> contextlib.AbstractContextManager[Any]:
    """``optimizer.deployed()`` if the optimizer has one, else a no-op context."""
    ctx = getattr(optimizer, "deployed", None)
    return ctx() if ctx is not None else contextlib.nullcontext()


def deployed_state(model: nn.Module, optimizer: Any = None) -> dict[str, Tensor]:
    """A detached copy of the deployable network's state dict (on the model's device)."""
    with deployed(optimizer):  # whole tensors of a sharded (FSDP2) model: every rank calls
        return {k: full_tensor(v.detach()).clone() for k, v in model.state_dict().items()}


@torch.no_grad()
def evaluate_split(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    task: str,
    batch_size: int = 1024,
    ctx: Dist | None = None,
) -> tuple[float | None, float | None]:
    """Mean loss and accuracy (``None`` for regression) of ``model`` on ``x, y``.

    The model is used as it is (call ``model.eval()`` first). In a distributed run each
    rank evaluates its contiguous share and the sums are all-reduced, so every rank
    gets the numbers of the whole split. ``(None, None)`` for an empty split.
    """
    ctx = ctx or Dist(device=x.device)
    n = len(x)
    if n == 0:
        return None, None
    lo = n * ctx.rank // ctx.world_size
    hi = n * (ctx.rank + 1) // ctx.world_size
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.float64, device=x.device)
    starts = list(range(lo, hi, batch_size))
    if is_sharded_model(model):
        # FSDP2 all-gathers in every forward: every rank runs as many forwards as the
        # largest share needs; a rank with fewer batches runs one sample and drops it
        largest = -(-n // ctx.world_size)
        starts += [-1] * (-(-largest // batch_size) - len(starts))
    for start in starts:
        if start < 0:
            model(x[:1])
            continue
        xb, yb = x[start : min(start + batch_size, hi)], y[start : min(start + batch_size, hi)]
        out = model(xb)
        loss_sum += loss_fn(task, out, yb, reduction="sum").double()
        if task == "classification":
            correct += (out.argmax(dim=1) == yb).sum().double()
    stats = all_reduce_(torch.stack([loss_sum, correct]), ctx)
    loss = float(stats[0]) / n
    acc = float(stats[1]) / n if task == "classification" else None
    return loss, acc


def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1024) -> float:
    """Classification accuracy of ``model`` in eval mode on ``x, y`` (0 for no samples)."""
    if len(x) == 0:
        return 0.0
    was_training = model.training
    model.eval()
    try:
        _, acc = evaluate_split(model, x, y, "classification", batch_size)
    finally:
        model.train(was_training)
    return float(acc or 0.0)


def kind_density(model: nn.Module, optimizer: Any = None) -> dict[str, float | None]:
    """``{"conv_density", "linear_density"}``: nonzero fraction of the deployable
    network's Conv and of its Linear weights (``None`` where there is no such layer)."""
    from sparseopt.metrics import density

    rep = density(model, optimizer)
    out: dict[str, float | None] = {}
    for kind in ("conv", "linear"):
        layers = [lay for lay in rep.layers.values() if lay.kind == kind]
        total = sum(lay.weights for lay in layers)
        out[f"{kind}_density"] = (sum(lay.nonzero for lay in layers) / total) if total else None
    return out


def density_metrics(model: nn.Module, optimizer: Any = None) -> dict[str, Any]:
    """The density keys of a metrics row (:func:`sparseopt.metrics.density`): ``density``
    (all parameters), ``weight_density``, ``nonzero``, ``params``, and per layer
    ``layer_density`` and ``layer_filters_alive``."""
    from sparseopt.metrics import density

    rep = density(model, optimizer)
    return {
        "density": rep.overall,
        "weight_density": rep.weight_density,
        "nonzero": rep.nonzero,
        "params": rep.params,
        "layer_density": {name: layer.density for name, layer in rep.layers.items()},
        "layer_filters_alive": {name: layer.filters_alive for name, layer in rep.layers.items()},
    }


def evaluate_deployed(
    model: nn.Module,
    optimizer: Any,
    tensors: Mapping[str, tuple[Tensor, Tensor]],
    task: str,
    batch_size: int = 1024,
    ctx: Dist | None = None,
    splits: tuple[str, ...] = ("val", "test"),
) -> dict[str, Any]:
    """``{split}_loss`` (and ``{split}_acc`` for classification) of the deployable
    network on each of ``splits``, then its :func:`density_metrics`.

    In a distributed run every rank first takes rank 0's buffers (each rank updated
    its batch-norm statistics on its own shard; DistributedDataParallel does the same
    at the next forward), so all ranks evaluate and checkpoint the same network.
    """
    broadcast_buffers_(model, ctx or Dist())
    was_training = model.training
    model.eval()
    out: dict[str, Any] = {}
    try:
        with deployed(optimizer):
            for split in splits:
                x, y = tensors[split]
                loss, acc = evaluate_split(model, x, y, task, batch_size, ctx)
                out[f"{split}_loss"] = loss
                if task == "classification":
                    out[f"{split}_acc"] = acc
    finally:
        model.train(was_training)
    out.update(density_metrics(model, optimizer))
    return out
