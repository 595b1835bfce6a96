"""Enlarge saturated layers during training, function-preserving (*network enlargement*).

In DessiLBI (Fu et al., "DessiLBI: Exploring structural sparsity of deep networks via
differential inclusion paths", ICML 2020, arXiv 2007.02010; and S²-LBI, arXiv
1904.10873) the support of the structure variable :math:`\\Gamma` grows along the
training. When it has grown over most of a layer — the fraction of *selected* filters

.. math::
    \\rho_\\ell = \\frac{\\#\\{o : \\Gamma_\\ell[o] \\ne 0\\}}{\\text{out}_\\ell} > \\tau
    \\qquad (\\tau = 0.8 \\text{ in DessiLBI})

— the layer is too small for the data, and it is widened. :func:`widen` adds ``k``
output units to a Conv/Linear layer :math:`\\ell` of a sequential network:

- incoming weights of the new units: small random (``init_scale`` × PyTorch's default
  Kaiming-uniform draw); their biases 0;
- a BatchNorm right after the layer gets ``k`` new channels (γ = 1, β = 0, running
  mean 0, running variance 1);
- the next Conv/Linear layer gets ``k`` new input channels (``k · S`` new input
  features after a ``Flatten`` of an ``S``-position map) with **zero** weights.

Zero outgoing weights make the widened network compute exactly the same function; the
new units still learn, since the gradient of their outgoing weights is the (nonzero)
activation of the new units times the back-propagated error.

The optimizer is carried along by :func:`sparseopt.optim.resize_parameter_`: every
replaced parameter is swapped in its param group (same hyperparameters) and every state
tensor of the parameter's shape (Γ, V, momentum buffers, Adam moments) is padded with
zeros — new entries start outside supp Γ with V = 0 for SplitLBI. A sparse optimizer
then sets what its new entries need (its ``_state_resized``): LinBreg and AdaBreg set
the new entries of the dual to :math:`\\theta/\\delta + \\partial J(\\theta)` so the new
incoming weights survive the next primal update. Other methods keep zero-padded state
(for RDA that cuts the new incoming weights to zero at the next step, so widening is of
no use there).

Only sequential networks are supported: an :class:`torch.nn.Sequential` (possibly of
nested ``Sequential`` children, like every model of :mod:`sparseopt.models` except
ResNet) whose leaves between two Conv/Linear layers are BatchNorm, activations,
pooling, dropout, ``Flatten`` or ``Identity``.

Example:
    >>> torch.manual_seed(0) and None
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> x = torch.randn(5, 4)
    >>> y = net(x)
    >>> _ = widen(net, "0", 2)
    >>> net[0].out_features, net[2].in_features, torch.equal(net(x), y)
    (5, 5, True)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from sparseopt._sequential import is_layer, leaves, next_layer
from sparseopt.optim import resize_parameter_

__all__ = ["GrowCallback", "grow_saturated", "layer_saturation", "match_widths", "widen"]


def _pad(t: Tensor, dim: int, new_size: int, fill: float = 0.0) -> Tensor:
    shape = list(t.shape)
    shape[dim] = new_size
    out = torch.full(shape, fill, dtype=t.dtype, device=t.device)
    out.narrow(dim, 0, t.shape[dim]).copy_(t)
    return out


def _replace(
    module: nn.Module,
    attr: str,
    value: Tensor,
    dim: int,
    optimizer: torch.optim.Optimizer | None,
) -> None:
    old = getattr(module, attr)
    if not isinstance(old, nn.Parameter):  # a buffer (BatchNorm running stats)
        setattr(module, attr, value)
        return
    new = nn.Parameter(value, requires_grad=old.requires_grad)
    setattr(module, attr, new)
    if optimizer is not None:
        resize_parameter_(optimizer, old, new, dim)


@torch.no_grad()
def widen(
    model: nn.Module,
    layer: str,
    k: int,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    init_scale: float = 0.1,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Add ``k`` output units to the Conv/Linear leaf ``layer`` of a sequential network.

    Function-preserving (see the module docstring); the optimizer's param groups and
    state are updated in place.

    Args:
        model: a sequential network (modified in place and returned).
        layer: the module name, e.g. ``"features.conv1"``.
        k: number of new filters / neurons (``k >= 1``).
        optimizer: the optimizer training ``model`` (optional).
        init_scale: scale of the new incoming weights relative to a default init.
        generator: random generator for the new incoming weights.

    Raises:
        ValueError: not a sequential network, ``layer`` is not a widenable Conv/Linear
            leaf (e.g. the output layer), or ``k < 1``.
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"Invalid k value: {k!r}; expected an int >= 1")
    chain = next_layer(leaves(model), layer)
    lay, nxt = chain.layer, chain.nxt
    w = lay.weight
    out_old = w.shape[0]
    out_new = out_old + k
    # incoming weights: default Kaiming-uniform draw (as nn.Conv/Linear.reset_parameters)
    fan_in = math.prod(w.shape[1:])
    bound = init_scale * math.sqrt(6.0 / ((1 + 5.0) * fan_in))  # a = sqrt(5)
    rows = (torch.rand((k, *w.shape[1:]), generator=generator, dtype=w.dtype) * 2 - 1) * bound
    _replace(lay, "weight", torch.cat([w.detach(), rows.to(w.device)], 0), 0, optimizer)
    if lay.bias is not None:
        _replace(lay, "bias", _pad(lay.bias.detach(), 0, out_new), 0, optimizer)
    if isinstance(lay, nn.modules.conv._ConvNd):
        lay.out_channels = out_new
    else:
        lay.out_features = out_new
    for bn in chain.norms:
        if bn.num_features != out_old:
            raise ValueError(f"cannot widen {layer!r}: a BatchNorm has {bn.num_features} features")
        if bn.weight is not None:
            _replace(bn, "weight", _pad(bn.weight.detach(), 0, out_new, 1.0), 0, optimizer)
            _replace(bn, "bias", _pad(bn.bias.detach(), 0, out_new), 0, optimizer)
        if bn.running_mean is not None:
            bn.running_mean = _pad(bn.running_mean, 0, out_new)
            bn.running_var = _pad(bn.running_var, 0, out_new, 1.0)
        bn.num_features = out_new
    wn = nxt.weight
    in_old = wn.shape[1]
    if isinstance(nxt, nn.Linear) and chain.flatten:
        if in_old % out_old:
            raise ValueError(
                f"cannot widen {layer!r}: {in_old} flattened features are not a multiple of "
                f"{out_old} channels"
            )
        per = in_old // out_old
    else:
        per = 1
        if in_old != out_old:
            raise ValueError(
                f"cannot widen {layer!r}: the next layer takes {in_old} inputs, not {out_old}"
            )
    _replace(nxt, "weight", _pad(wn.detach(), 1, in_old + k * per), 1, optimizer)
    if isinstance(nxt, nn.modules.conv._ConvNd):
        nxt.in_channels = in_old + k
    else:
        nxt.in_features = in_old + k * per
    return model


# ----------------------------------------------------------------- saturation


@torch.no_grad()
def layer_saturation(
    model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, float]:
    """Fraction of selected filters of every widenable Conv/Linear layer.

    A filter (output channel / neuron) is *selected* when any entry of its row is in
    ``optimizer.support(p)`` (supp Γ for SplitLBI) or, without an optimizer with a
    ``support`` method, when any of its weights is nonzero. Only layers that
    :func:`widen` can act on are listed (not the output layer).
    """
    support = getattr(optimizer, "support", None)
    owned = {id(p) for g in optimizer.param_groups for p in g["params"]} if optimizer else set()
    out: dict[str, float] = {}
    named = leaves(model)
    for name, m in named:
        if not is_layer(m):
            continue
        try:
            next_layer(named, name)
        except ValueError:
            continue
        w = m.weight
        s = support(w) if support is not None and id(w) in owned else (w != 0)
        rows = s.flatten(1).any(1)
        out[name] = int(rows.sum()) / max(rows.numel(), 1)
    return out


@torch.no_grad()
def grow_saturated(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    tau: float = 0.8,
    grow_by: float | int = 0.5,
    max_width: int | None = None,
    layers: Iterable[str] | None = None,
    init_scale: float = 0.1,
    generator: torch.Generator | None = None,
) -> dict[str, tuple[int, int]]:
    """Widen every layer whose fraction of selected filters exceeds ``tau``.

    Args:
        model: a sequential network (modified in place).
        optimizer: its optimizer (state and param groups are carried along).
        tau: saturation threshold τ (0.8 as in DessiLBI).
        grow_by: new units per widened layer: a float is a fraction of the current
            width (rounded up), an int a count (our default: +50 %).
        max_width: never widen a layer beyond this width.
        layers: restrict to these layer names.
        init_scale, generator: see :func:`widen`.

    Returns:
        ``{layer: (old_width, new_width)}`` for every widened layer.
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"Invalid tau value: {tau!r}; expected a number in [0, 1]")
    if isinstance(grow_by, bool) or not isinstance(grow_by, (int, float)) or grow_by <= 0:
        raise ValueError(f"Invalid grow_by value: {grow_by!r}; expected a number > 0")
    allowed = set(layers) if layers is not None else None
    saturation = layer_saturation(model, optimizer)
    grown: dict[str, tuple[int, int]] = {}
    for name, rho in saturation.items():
        if (allowed is not None and name not in allowed) or rho <= tau:
            continue
        width = model.get_submodule(name).weight.shape[0]
        k = grow_by if isinstance(grow_by, int) else math.ceil(grow_by * width)
        if max_width is not None:
            k = min(k, max_width - width)
        if k < 1:
            continue
        widen(model, name, k, optimizer=optimizer, init_scale=init_scale, generator=generator)
        grown[name] = (width, width + k)
    return grown


def match_widths(
    model: nn.Module,
    state: Mapping[str, Tensor],
    optimizer: torch.optim.Optimizer | None = None,
) -> nn.Module:
    """Widen a freshly built sequential model to the layer widths of a grown run's state.

    ``grow_every`` widens layers during training, so the checkpoint (and
    ``model_sparse.pt``) of such a run no longer fits ``build_model``'s shapes. Every
    Conv/Linear layer whose saved weight has more output units is widened, in forward
    order, by the difference (:func:`sparseopt.prune.widen`, which also widens the next
    layer's inputs); then ``model.load_state_dict(state)`` fits. The new values are
    placeholders for the state to overwrite. An ``optimizer`` of ``model`` without state
    yet is given the new parameters. Returns ``model``.

    Raises:
        ValueError: a layer cannot be widened (not a sequential network, the output layer).
    """
    scratch = torch.Generator().manual_seed(0)  # the values are overwritten by `state`
    for name, m in list(model.named_modules()):
        if not isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
            continue
        saved = state.get(f"{name}.weight" if name else "weight")
        if saved is None:
            continue
        extra = int(saved.shape[0]) - int(m.weight.shape[0])
        if extra > 0:
            widen(model, name, extra, optimizer=optimizer, generator=scratch)
    return model


@dataclass
class GrowCallback:
    """Engine callback: every ``every`` epochs, :func:`grow_saturated` the model.

    Attributes:
        every: period in epochs.
        tau, grow_by, max_width, layers, init_scale: see :func:`grow_saturated`.
        seed: seed of the new incoming weights.
        history: ``(epoch, {layer: (old, new)})`` for every growth that happened.

    The callback reads ``trainer.model`` and ``trainer.optimizer``. Parameters are
    replaced in the optimizer's param groups, so schedulers keep working; wrappers that
    hold parameter references of their own (DDP, ``torch.compile``, EMA copies) must be
    rebuilt after a growth.
    """

    every: int = 5
    tau: float = 0.8
    grow_by: float | int = 0.5
    max_width: int | None = None
    layers: list[str] | None = None
    init_scale: float = 0.1
    seed: int = 0
    history: list[tuple[int, dict[str, tuple[int, int]]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"Invalid every value: {self.every!r}; expected an int >= 1")
        self._gen = torch.Generator().manual_seed(self.seed)

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, Any] | None = None) -> None:
        """Grow when ``epoch`` (1-based count of finished epochs) is a multiple of ``every``.

        Growth is skipped after the trainer's last epoch (``trainer.config.epochs``): the
        new units could not train any more, and the final metrics would describe another
        network than the one saved. Every growth is logged through ``trainer.log``.
        """
        if epoch % self.every != 0:
            return
        config = getattr(trainer, "config", None)
        if config is not None and epoch >= getattr(config, "epochs", epoch + 1):
            return
        model = getattr(trainer, "model", trainer)
        optimizer = getattr(trainer, "optimizer", None)
        grown = grow_saturated(
            model,
            optimizer,
            tau=self.tau,
            grow_by=self.grow_by,
            max_width=self.max_width,
            layers=self.layers,
            init_scale=self.init_scale,
            generator=self._gen,
        )
        if not grown:
            return
        self.history.append((epoch, grown))
        if isinstance(metrics, dict):
            metrics["grown"] = {k: list(v) for k, v in grown.items()}
        log = getattr(trainer, "log", None)
        if log is not None:
            log(
                f"grow after epoch {epoch}: "
                + ", ".join(f"{k} {a} → {b}" for k, (a, b) in grown.items())
            )

    def summary(self) -> str:
        """One line: what grew, or that no layer was saturated."""
        if not self.history:
            return (
                f"grow: no layer was saturated (none had more than τ = {self.tau:g} of its "
                "filters selected)"
            )
        parts = [
            f"{k} {a} → {b} (epoch {epoch})"
            for epoch, grown in self.history
            for k, (a, b) in grown.items()
        ]
        return "grow: " + ", ".join(parts)

    def state_dict(self) -> dict[str, Any]:
        """Generator state and growth history (tensors and plain data), for checkpoints."""
        return {
            "generator": self._gen.get_state(),
            "history": [
                [int(e), {k: [int(a), int(b)] for k, (a, b) in g.items()}] for e, g in self.history
            ],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`, so a resumed run grows exactly as an uninterrupted one."""
        self._gen.set_state(state["generator"])
        self.history = [
            (int(e), {k: (int(a), int(b)) for k, (a, b) in g.items()}) for e, g in state["history"]
        ]
