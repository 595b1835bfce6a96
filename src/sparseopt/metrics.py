"""Sparse-aware counts: density overall, per layer and per structure.

:func:`density` reads the weights of a model (or, given an optimizer, the
deployable network the optimizer would ship, see
:meth:`sparseopt.optim._base.SparseOptimizer.deployable`) and reports

- the overall fraction of nonzero parameters;
- per Conv/Linear layer: nonzero weights, live filters (output channels / neurons:
  a filter is live if any of its weights is nonzero) and live input channels.

Example:
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> with torch.no_grad():
    ...     net[0].weight[1:] = 0
    >>> rep = density(net)
    >>> rep.layers["0"].filters_alive, rep.layers["0"].filters
    (1, 3)
    >>> round(rep.weight_density, 4)  # (4 + 6) nonzero of 12 + 6 weights
    0.5556
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from sparseopt.groups import group_norms

__all__ = ["DensityReport", "LayerDensity", "density"]


@dataclass(frozen=True)
class LayerDensity:
    """Counts for one Conv/Linear layer's weight."""

    kind: str  # "conv" or "linear"
    shape: tuple[int, ...]
    weights: int
    nonzero: int
    filters: int
    filters_alive: int
    channels: int
    channels_alive: int

    @property
    def density(self) -> float:
        """Fraction of nonzero weights."""
        return self.nonzero / max(self.weights, 1)

    @property
    def filter_density(self) -> float:
        """Fraction of live filters (output channels / neurons)."""
        return self.filters_alive / max(self.filters, 1)

    @property
    def channel_density(self) -> float:
        """Fraction of live input channels / features."""
        return self.channels_alive / max(self.channels, 1)


@dataclass(frozen=True)
class DensityReport:
    """Density of a whole network; see :func:`density`."""

    params: int
    nonzero: int
    weights: int
    weights_nonzero: int
    layers: dict[str, LayerDensity] = field(default_factory=dict)

    @property
    def overall(self) -> float:
        """Fraction of nonzero entries over *all* parameters (biases and norms included)."""
        return self.nonzero / max(self.params, 1)

    @property
    def weight_density(self) -> float:
        """Fraction of nonzero entries over the Conv/Linear weights only."""
        return self.weights_nonzero / max(self.weights, 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view (for JSON logs)."""
        return {
            "params": self.params,
            "nonzero": self.nonzero,
            "overall": self.overall,
            "weights": self.weights,
            "weights_nonzero": self.weights_nonzero,
            "weight_density": self.weight_density,
            "layers": {
                name: {**asdict(layer), "density": layer.density} for name, layer in self.layers.items()
            },
        }


def _layer_density(kind: str, w: Tensor) -> LayerDensity:
    nonzero = int((w != 0).sum())
    filt = group_norms(w, "filter").flatten() != 0
    chan = group_norms(w, "channel").flatten() != 0
    return LayerDensity(
        kind=kind,
        shape=tuple(w.shape),
        weights=w.numel(),
        nonzero=nonzero,
        filters=filt.numel(),
        filters_alive=int(filt.sum()),
        channels=chan.numel(),
        channels_alive=int(chan.sum()),
    )


@torch.no_grad()
def density(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> DensityReport:
    """Count nonzeros of ``model`` overall and per Conv/Linear layer.

    Args:
        model: the network.
        optimizer: if it has a ``deployable(p)`` method (every sparseopt optimizer),
            count the deployable network it would ship (e.g. W masked by supp Γ for
            SplitLBI, u for RVSM) instead of the raw parameters.
    """
    deploy = getattr(optimizer, "deployable", None)

    def value(p: Tensor) -> Tensor:
        return deploy(p) if deploy is not None else p

    params = nonzero = weights = weights_nonzero = 0
    layers: dict[str, LayerDensity] = {}
    seen: set[int] = set()
    for name, module in model.named_modules():
        for p_name, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            v = value(p)
            params += v.numel()
            nonzero += int((v != 0).sum())
            if p_name != "weight":
                continue
            if isinstance(module, torch.nn.modules.conv._ConvNd):
                kind = "conv"
            elif isinstance(module, torch.nn.Linear):
                kind = "linear"
            else:
                continue
            layer = _layer_density(kind, v)
            layers[name] = layer
            weights += layer.weights
            weights_nonzero += layer.nonzero
    return DensityReport(params, nonzero, weights, weights_nonzero, layers)
