"""The layer that follows a Conv/Linear layer in a sequential network, and what lies between.

One rule for two users: :func:`sparseopt.prune.widen` (which input columns of the next
layer belong to a widened layer's new units) and :func:`sparseopt.init.flattened_channels`
(which input features of a Linear layer come from one channel of the convolution before
it). In a tree of :class:`torch.nn.Sequential` the leaves run in forward order; between
two Conv/Linear layers only per-channel modules may lie (activations, pooling, dropout,
``Identity``, BatchNorm) and a ``Flatten``, after which the next Linear layer reads each
channel's ``S`` positions as one block of ``S`` consecutive features (PyTorch flattens
``(C, *spatial)`` channel-major).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = ["PASS_THROUGH", "Chain", "is_layer", "leaves", "next_layer"]

#: Leaves that act on each channel alone (and keep the channel count).
PASS_THROUGH = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.Hardtanh,
    nn.ReLU6,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.dropout._DropoutNd,
    nn.Identity,
)


def is_layer(m: nn.Module) -> bool:
    """Whether ``m`` is a Conv or Linear layer."""
    return isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))


def leaves(model: nn.Module, user: str = "grow") -> list[tuple[str, nn.Module]]:
    """Leaf modules in forward order; raises ``ValueError`` (naming ``user``) unless the
    model is a tree of Sequentials."""
    for name, m in model.named_modules():
        if len(list(m.children())) > 0 and not isinstance(m, nn.Sequential):
            raise ValueError(
                f"{user} supports sequential networks only (nn.Sequential trees); module "
                f"{name or '<root>'!r} is a {type(m).__name__}"
            )
    return [(n, m) for n, m in model.named_modules() if len(list(m.children())) == 0]


@dataclass
class Chain:
    """A Conv/Linear ``layer``, the BatchNorms after it, whether a ``Flatten`` follows,
    and the next Conv/Linear layer ``nxt``."""

    layer: nn.Module
    norms: list[nn.Module]
    flatten: bool
    nxt: nn.Module


def next_layer(named: list[tuple[str, nn.Module]], name: str, action: str = "widen") -> Chain:
    """The :class:`Chain` from leaf ``name`` of ``named`` (:func:`leaves`) to the next
    Conv/Linear layer; raises ``ValueError`` (``cannot {action} …``) when ``name`` is not a
    Conv/Linear leaf, when anything but :data:`PASS_THROUGH`, BatchNorm or ``Flatten`` lies
    between, or when it is the last layer."""
    names = [n for n, _ in named]
    if name not in names:
        raise ValueError(f"Invalid layer name: {name!r} is not a leaf module of the model")
    i = names.index(name)
    layer = named[i][1]
    if not is_layer(layer):
        raise ValueError(f"Invalid layer: {name!r} is a {type(layer).__name__}, not Conv/Linear")
    norms: list[nn.Module] = []
    flatten = False
    for n, m in named[i + 1 :]:
        if is_layer(m):
            return Chain(layer, norms, flatten, m)
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            norms.append(m)
        elif isinstance(m, nn.Flatten):
            flatten = True
        elif not isinstance(m, PASS_THROUGH):
            raise ValueError(
                f"cannot {action} {name!r}: {n!r} ({type(m).__name__}) lies between it and "
                "the next Conv/Linear layer"
            )
    raise ValueError(f"cannot {action} {name!r}: it is the last Conv/Linear layer (the output)")
