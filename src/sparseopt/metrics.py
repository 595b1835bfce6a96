"""Sparse-aware counts: density, parameters and multiply-accumulates (MACs).

**Density.** :func:`density` reads the weights of a model (or, given an optimizer, the
deployable network the optimizer would ship, see
:meth:`sparseopt.optim._base.SparseOptimizer.deployable`, or the optimizer's support,
or explicit boolean masks) and reports

- the overall fraction of nonzero parameters;
- per layer weight (:func:`sparseopt.groups.layer_weights`: Conv and Linear weights,
  ``nn.MultiheadAttention``'s projection weights, Hugging Face ``Conv1D`` weights read
  as ``(out, in)``): nonzero weights, live filters (output channels of a conv,
  neurons = rows of a Linear weight: a filter is live if any of its weights is
  nonzero) and live input channels (columns);
- per structure over the whole network: live conv filters, live neurons, live input
  channels (:meth:`DensityReport.structure`).

**Parameters and MACs.** :func:`count_params` counts parameters (all, and nonzero).
:func:`count_macs` runs one dry forward pass with forward hooks on every Conv1d/2d/3d
and Linear module and counts, per sample,

.. math::
    \\text{MACs}_{\\text{dense}} = |W| \\cdot P, \\qquad
    \\text{MACs}_{\\text{sparse}} = \\operatorname{nnz}(W) \\cdot P, \\qquad
    \\text{MACs}_{\\text{struct}} = f_{\\text{live}}\\, c_{\\text{live}}\\, k \\cdot P,

where :math:`|W|` is the weight's size (``out · in/groups · kernel``), :math:`P` the
number of output positions per sample (``H_out · W_out`` for Conv2d, the product of
the leading dimensions for Linear), :math:`f_{\\text{live}}`, :math:`c_{\\text{live}}`
the live filters and input channels and :math:`k` the kernel size. So the sparse count
is the dense count times the layer's density (unstructured sparsity: each nonzero
weight is used once per output position), and for a physically shrunk model (see
:mod:`sparseopt.prune`) the dense count is exact. The structured count is what a
layer costs once only its live filters and live input channels are kept.
Attention modules (``nn.MultiheadAttention`` and :mod:`sparseopt.prune.heads`' pruned
one), whose projections run as no ``nn.Linear`` call, count their q/k/v and output
projections as Linear layers and the products :math:`QK^\top` and :math:`AV` as
:math:`L_q L_k` MACs per query and per value row (live rows only in the structured
count), so a transformer's count after removing heads equals the masked model's
structured count. Conventions (as in fvcore / ptflops): one MAC per weight use; bias additions,
BatchNorm, activations, pooling and the residual additions count **0 MACs**; FLOPs
are reported as 2 × MACs.

Example:
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> with torch.no_grad():
    ...     net[0].weight[1:] = 0
    >>> rep = density(net)
    >>> rep.layers["0"].filters_alive, rep.layers["0"].filters
    (1, 3)
    >>> round(rep.weight_density, 4)  # (4 + 6) nonzero of 12 + 6 weights
    0.5556
    >>> macs = count_macs(net, (4,))
    >>> macs.dense, macs.sparse  # 12 + 6 dense; 4 + 6 nonzero weights, one use each
    (18, 10)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from sparseopt.fsdp import full_tensor, global_int
from sparseopt.groups import (
    ATTENTION_WEIGHTS,
    group_norms,
    is_attention,
    is_hf_conv1d,
    layer_kind,
    layer_weights,
    module_params,
)

__all__ = [
    "DensityReport",
    "LayerDensity",
    "LayerMacs",
    "MacReport",
    "ParamCount",
    "count_macs",
    "count_params",
    "density",
    "effective_weights",
]

_SOURCES = ("deployable", "support", "weights")


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
        """Fraction of nonzero entries over the layer weights only (Conv/Linear, attention
        projections; :func:`sparseopt.groups.layer_weights`)."""
        return self.weights_nonzero / max(self.weights, 1)

    def structure(self) -> dict[str, int]:
        """Live structures over the network: conv filters, Linear neurons, input channels.

        Keys: ``filters``/``filters_alive`` (conv output channels), ``neurons``/
        ``neurons_alive`` (Linear rows), ``channels``/``channels_alive`` (input channels
        of convs and input features of Linear layers).
        """
        out = dict.fromkeys(
            ("filters", "filters_alive", "neurons", "neurons_alive", "channels", "channels_alive"),
            0,
        )
        for layer in self.layers.values():
            key = "filters" if layer.kind == "conv" else "neurons"
            out[key] += layer.filters
            out[f"{key}_alive"] += layer.filters_alive
            out["channels"] += layer.channels
            out["channels_alive"] += layer.channels_alive
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view (for JSON logs)."""
        return {
            "params": self.params,
            "nonzero": self.nonzero,
            "overall": self.overall,
            "weights": self.weights,
            "weights_nonzero": self.weights_nonzero,
            "weight_density": self.weight_density,
            "structure": self.structure(),
            "layers": {
                name: {**asdict(layer), "density": layer.density}
                for name, layer in self.layers.items()
            },
        }


def _layer_density(kind: str, w: Tensor) -> LayerDensity:
    # global_int: a sharded (FSDP2) weight's counts are summed over the ranks
    nonzero = global_int((w != 0).sum())
    filt = group_norms(w, "filter") != 0
    chan = group_norms(w, "channel") != 0
    return LayerDensity(
        kind=kind,
        shape=tuple(w.shape),
        weights=w.numel(),
        nonzero=nonzero,
        filters=filt.numel(),
        filters_alive=global_int(filt.sum()),
        channels=chan.numel(),
        channels_alive=global_int(chan.sum()),
    )


def _value_fn(
    optimizer: torch.optim.Optimizer | None,
    source: str,
    masks: Mapping[str, Tensor] | None,
) -> Callable[[str, Tensor], Tensor]:
    """``value(name, p)``: the tensor whose nonzeros are counted for parameter ``p``."""
    if source not in _SOURCES:
        raise ValueError(f"Invalid source value: {source!r}; expected one of {list(_SOURCES)}")
    deploy = getattr(optimizer, "deployable", None) if source != "weights" else None
    support = getattr(optimizer, "support", None) if source == "support" else None
    owned = (
        {id(p) for g in optimizer.param_groups for p in g["params"]}
        if optimizer is not None
        else set()
    )

    def value(name: str, p: Tensor) -> Tensor:
        v: Tensor = p
        if support is not None and id(p) in owned:
            v = support(p).to(p.dtype)  # 1.0 on the support
        elif deploy is not None and id(p) in owned:
            v = deploy(p)
        if masks is not None and name in masks:
            v = v * masks[name].to(device=v.device)
        return v.detach()

    return value


@torch.no_grad()
def effective_weights(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    source: str = "deployable",
    masks: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """The tensor counted for every parameter of ``model``, by full parameter name.

    Args:
        model: the network.
        optimizer: a sparseopt optimizer (anything with ``deployable``/``support``), or
            ``None`` to count the raw parameters.
        source: ``"deployable"`` (default: the network the optimizer would ship, e.g.
            :math:`W\\odot 1[\\Gamma\\ne0]` for SplitLBI, ``u`` for RVSM), ``"support"``
            (the optimizer's boolean support, per group for group penalties) or
            ``"weights"`` (the raw parameters, ignoring the optimizer).
        masks: optional boolean masks by parameter name, multiplied in on top.

    Raises:
        ValueError: for an unknown ``source``.
    """
    value = _value_fn(optimizer, source, masks)
    out: dict[str, Tensor] = {}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        out[name] = value(name, p)
    return out


@torch.no_grad()
def density(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    source: str = "deployable",
    masks: Mapping[str, Tensor] | None = None,
) -> DensityReport:
    """Count nonzeros of ``model`` overall, per layer weight and per structure.

    Args:
        model: the network.
        optimizer: if it has a ``deployable(p)`` method (every sparseopt optimizer),
            count the deployable network it would ship (e.g. W masked by supp Γ for
            SplitLBI, u for RVSM) instead of the raw parameters.
        source: what to count for the optimizer's parameters: ``"deployable"``
            (default), ``"support"`` (``optimizer.support(p)``) or ``"weights"``
            (the raw parameters); see :func:`effective_weights`.
        masks: optional boolean masks by full parameter name, applied on top.

    Example:
        >>> conv = torch.nn.Conv2d(2, 4, 3)
        >>> with torch.no_grad():
        ...     conv.weight[:3] = 0
        >>> density(conv).structure()["filters_alive"]
        1
    """
    value = _value_fn(optimizer, source, masks)
    params = nonzero = weights = weights_nonzero = 0
    layers: dict[str, LayerDensity] = {}
    of = {w.param_name: w for w in layer_weights(model)}
    for name, _module, p_name, p in module_params(model):
        full = f"{name}.{p_name}" if name else p_name
        v = value(full, p)
        params += v.numel()  # the global size, also for a sharded (FSDP2) parameter
        nonzero += global_int((v != 0).sum())
        w = of.get(full)
        if w is None:
            continue
        # counted as (out, in, *kernel): a Hugging Face Conv1D's weight transposed
        layer = _layer_density(w.kind, v.T if w.transposed else v)
        layers[w.name] = layer
        weights += layer.weights
        weights_nonzero += layer.nonzero
    return DensityReport(params, nonzero, weights, weights_nonzero, layers)


# ------------------------------------------------------------------------ params


@dataclass(frozen=True)
class ParamCount:
    """Number of parameters of a model: all of them and the nonzero ones."""

    total: int
    nonzero: int

    @property
    def density(self) -> float:
        """``nonzero / total``."""
        return self.nonzero / max(self.total, 1)


def count_params(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    source: str = "deployable",
    masks: Mapping[str, Tensor] | None = None,
) -> ParamCount:
    """Count the parameters of ``model`` (shared parameters once), all and nonzero.

    The nonzero count follows :func:`density` (``optimizer``, ``source``, ``masks``).

    Example:
        >>> count_params(torch.nn.Linear(3, 2))
        ParamCount(total=8, nonzero=8)
    """
    rep = density(model, optimizer, source=source, masks=masks)
    return ParamCount(rep.params, rep.nonzero)


# -------------------------------------------------------------------------- MACs


@dataclass(frozen=True)
class LayerMacs:
    """MACs per sample of one Conv/Linear layer (summed over its calls in the forward)."""

    kind: str
    positions: int
    dense: int
    sparse: int
    structured: int

    @property
    def density(self) -> float:
        """``sparse / dense``."""
        return self.sparse / max(self.dense, 1)


@dataclass(frozen=True)
class MacReport:
    """Multiply-accumulates per sample of a network; see :func:`count_macs`.

    Attributes:
        dense: MACs of the dense network (every weight used).
        sparse: MACs that involve a nonzero weight (dense × density, per layer).
        structured: MACs once every layer keeps only its live filters and channels.
        layers: per-layer counts by module name.
    """

    dense: int
    sparse: int
    structured: int
    layers: dict[str, LayerMacs] = field(default_factory=dict)

    @property
    def flops_dense(self) -> int:
        """2 × dense MACs."""
        return 2 * self.dense

    @property
    def flops_sparse(self) -> int:
        """2 × sparse MACs."""
        return 2 * self.sparse

    @property
    def density(self) -> float:
        """``sparse / dense``: the fraction of the dense MACs a sparse kernel would do."""
        return self.sparse / max(self.dense, 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view (for JSON logs)."""
        return {
            "dense": self.dense,
            "sparse": self.sparse,
            "structured": self.structured,
            "flops_dense": self.flops_dense,
            "flops_sparse": self.flops_sparse,
            "density": self.density,
            "layers": {n: {**asdict(v), "density": v.density} for n, v in self.layers.items()},
        }

    def table(self) -> str:
        """A plain-text table, one row per layer and a total."""
        rows = [f"{'layer':<28} {'kind':<6} {'dense MACs':>14} {'sparse MACs':>14} {'density':>8}"]
        for name, v in self.layers.items():
            rows.append(f"{name:<28} {v.kind:<6} {v.dense:>14,} {v.sparse:>14,} {v.density:>8.2%}")
        rows.append(
            f"{'total':<28} {'':<6} {self.dense:>14,} {self.sparse:>14,} {self.density:>8.2%}"
        )
        return "\n".join(rows)


def _attention_macs(
    module: nn.Module, query: Tensor, key: Tensor, value: Callable[[Tensor], Tensor]
) -> tuple[int, int, int, int]:
    r"""(query positions, dense, sparse, structured) MACs of one attention call, one sample.

    Projections count as Linear layers (:math:`|W|\cdot L`, :math:`\operatorname{nnz}(W)\cdot
    L`, live rows × live columns · L), with :math:`L_q` query and :math:`L_k` key
    positions; the two products :math:`QK^\top` and :math:`AV` cost :math:`L_q L_k` MACs
    per query and per value row (all of them dense and sparse; the live rows structured).
    ``value(w)`` is what counts for the parameter ``w`` (the deployable network, masks:
    :func:`effective_weights`, as the Linear layers).
    """
    batch_first = getattr(module, "batch_first", False)
    seq = 1 if query.dim() == 3 and batch_first else 0
    lq, lk = query.shape[seq], key.shape[seq]
    w_in = getattr(module, "in_proj_weight", None)
    if w_in is not None:
        wq, wk, wv = value(w_in).chunk(3)
    else:
        wq, wk, wv = (value(getattr(module, n)) for n in ATTENTION_WEIGHTS[1:])
    wo = value(module.out_proj.weight)

    def linear(w: Tensor, positions: int) -> tuple[int, int, int]:
        nz = w.detach() != 0
        live = int(nz.any(1).sum()) * int(nz.any(0).sum())
        return w.numel() * positions, int(nz.sum()) * positions, live * positions

    parts = [linear(wq, lq), linear(wk, lk), linear(wv, lk), linear(wo, lq)]
    dense, sparse, structured = (sum(v) for v in zip(*parts, strict=True))
    rows = wq.shape[0] + wv.shape[0]
    live_rows = int((wq.detach() != 0).any(1).sum()) + int((wv.detach() != 0).any(1).sum())
    return lq, dense + lq * lk * rows, sparse + lq * lk * rows, structured + lq * lk * live_rows


def count_macs(
    model: nn.Module,
    input_shape: Sequence[int],
    optimizer: torch.optim.Optimizer | None = None,
    *,
    source: str = "deployable",
    masks: Mapping[str, Tensor] | None = None,
) -> MacReport:
    """Count MACs per sample of every Conv/Linear layer with a dry forward pass.

    See the module docstring for the formulas. The model runs once in eval mode (its
    mode is restored) on a zero batch of one sample of ``input_shape`` under
    :func:`torch.no_grad`, so BatchNorm statistics are untouched.

    Args:
        model: the network.
        input_shape: the per-sample input shape, e.g. ``(1, 28, 28)``.
        optimizer, source, masks: what counts as nonzero, as in :func:`density`.

    Example:
        >>> conv = torch.nn.Conv2d(3, 8, 3)  # 8·3·3·3 = 216 weights, 6×6 outputs
        >>> count_macs(conv, (3, 8, 8)).dense
        7776
    """
    weights = {  # whole tensors: a sharded (FSDP2) weight is gathered once, layer by layer
        n: full_tensor(w)
        for n, w in effective_weights(model, optimizer, source=source, masks=masks).items()
    }
    names = {id(p): n for n, p in model.named_parameters()}

    def value(p: Tensor) -> Tensor:  # the counted tensor of a parameter (itself if none)
        return weights.get(names.get(id(p), ""), p)

    acc: dict[str, list[int]] = {}
    kinds: dict[str, str] = {}

    def hook(name: str, kind: str) -> Callable[[nn.Module, Any, Tensor], None]:
        def fn(module: nn.Module, _inputs: Any, output: Tensor) -> None:
            w = weights[names[id(module.weight)]]
            if is_hf_conv1d(module):
                w = w.T  # (out, in)
            out_units = w.shape[0]
            positions = output.numel() // max(out_units, 1)  # batch of one sample
            rows = w.flatten(1) != 0
            live_filters = int(rows.any(1).sum())
            live_channels = int((w.transpose(0, 1).flatten(1) != 0).any(1).sum())
            kernel = w[0, 0].numel() if w.ndim > 2 else 1
            counts = acc.setdefault(name, [0, 0, 0, 0])
            counts[0] = positions
            counts[1] += w.numel() * positions
            counts[2] += int(rows.sum()) * positions
            counts[3] += live_filters * live_channels * kernel * positions
            kinds[name] = kind

        return fn

    def attention_hook(name: str) -> Callable[..., None]:
        def fn(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], _out: Any) -> None:
            query = args[0] if args else kwargs["query"]
            key = args[1] if len(args) > 1 else kwargs.get("key", query)
            counts = acc.setdefault(name, [0, 0, 0, 0])
            for i, c in enumerate(_attention_macs(module, query, key, value)):
                counts[i] = c if i == 0 else counts[i] + c
            kinds[name] = "attention"

        return fn

    handles = []
    # an attention's output projection is counted with it (some call it as a module)
    inside = {id(m.out_proj) for m in model.modules() if is_attention(m)}
    for name, module in model.named_modules():
        # a Hugging Face Conv1D (GPT-2) is a Linear layer stored (in, out)
        kind = layer_kind(module) or ("linear" if is_hf_conv1d(module) else None)
        if id(module) in inside:
            continue
        if kind is not None and getattr(module, "weight", None) is not None:
            handles.append(module.register_forward_hook(hook(name, kind)))
        elif is_attention(module):
            handles.append(module.register_forward_hook(attention_hook(name), with_kwargs=True))
    was_training = model.training
    param = next(model.parameters(), None)
    kwargs = {} if param is None else {"dtype": param.dtype, "device": param.device}
    try:
        model.eval()
        model(torch.zeros(1, *input_shape, **kwargs))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    layers = {n: LayerMacs(kinds[n], c[0], c[1], c[2], c[3]) for n, c in acc.items()}
    return MacReport(
        dense=sum(v.dense for v in layers.values()),
        sparse=sum(v.sparse for v in layers.values()),
        structured=sum(v.structured for v in layers.values()),
        layers=layers,
    )
