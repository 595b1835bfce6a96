"""Framework-independent parts of the integrations: unwrap, measure, build."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sparseopt.groups import base_lam, is_penalised, layer_lams
from sparseopt.metrics import density
from sparseopt.optim._base import SparseOptimizer
from sparseopt.optim.registry import create_optimizer

__all__ = ["build_sparse_optimizer", "density_metrics", "find_sparse_optimizer"]


def find_sparse_optimizer(optimizer: Any) -> SparseOptimizer | None:
    """The sparseopt optimizer inside ``optimizer``, or ``None``.

    Frameworks wrap optimizers (Lightning's ``LightningOptimizer._optimizer``,
    accelerate's ``AcceleratedOptimizer.optimizer``); this follows those attributes.
    """
    for _ in range(8):
        if isinstance(optimizer, SparseOptimizer):
            return optimizer
        inner = getattr(optimizer, "optimizer", None) or getattr(optimizer, "_optimizer", None)
        if inner is None or inner is optimizer:
            return None
        optimizer = inner
    return None


@torch.no_grad()
def density_metrics(
    model: nn.Module, optimizer: SparseOptimizer, *, per_layer: bool = True
) -> dict[str, float]:
    """Densities of the deployable network, with the names ``sparseopt train`` uses.

    ``density`` (nonzero fraction over all parameters), ``weight_density`` (over the
    layer weights, :func:`sparseopt.groups.layer_weights`), ``layer_density/<layer>``
    (one per layer weight, when
    ``per_layer``), ``lam`` (the run's λ, :func:`sparseopt.groups.base_lam`) and, when
    ``per_layer``, ``layer_lam/<layer>`` (the λ acting on each penalised layer,
    :func:`sparseopt.groups.layer_lams`).
    """
    rep = density(model, optimizer)
    out = {"density": rep.overall, "weight_density": rep.weight_density}
    lam = base_lam(optimizer.param_groups)
    if lam is not None:
        out["lam"] = lam
    if per_layer:
        for name, layer in rep.layers.items():
            out[f"layer_density/{name}"] = layer.density
        for name, value in layer_lams(model, optimizer.param_groups).items():
            out[f"layer_lam/{name}"] = value
    return out


def build_sparse_optimizer(
    model: nn.Module,
    name: str,
    *,
    lr: float,
    weight_decay: float = 0.0,
    **kwargs: Any,
) -> SparseOptimizer:
    """``sparseopt.create_optimizer(model, name, ...)`` with decay only on penalised weights.

    Param groups come from :func:`sparseopt.param_groups` (layer weights — Conv, Linear,
    attention projections, Hugging Face ``Conv1D`` — penalised; biases, norms, embeddings and everything else unpenalised), the keywords
    ``penalty``, ``lam``, ``conv_*``, ``linear_*``, ``exclude`` select them, the rest go
    to the optimizer. ``weight_decay`` is set on the penalised groups only (the
    unpenalised group gets 0, as the Hugging Face Trainer exempts biases and norms).

    Raises:
        TypeError: ``name`` is a dense baseline (no deployable network to manage).
    """
    opt = create_optimizer(model, name, lr=lr, weight_decay=weight_decay, **kwargs)
    if not isinstance(opt, SparseOptimizer):
        raise TypeError(
            f"{name!r} is not a sparse optimizer: use sparseopt.list_optimizers(sparse_only=True)"
        )
    for group in opt.param_groups:
        if not is_penalised(group):
            group["weight_decay"] = 0.0
    return opt
