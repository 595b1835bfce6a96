"""Sharded parameters (FSDP2, ``torch.distributed.fsdp.fully_shard``): the few helpers the
library needs so that every optimizer, penalty and whole-model count is the same as in
one process.

Under FSDP2 every parameter is a :class:`torch.distributed.tensor.DTensor`, sharded on
dim 0 across the ranks. Ops on a DTensor dispatch to the local shards and insert the
collectives a reduction needs, so most of the library works unchanged:

- elementwise proxes (ℓ1, ℓ0, Tℓ1) act shard by shard, which is exact;
- group norms over ``filter`` / ``row`` / ``kernel`` groups reduce dims 1, 2, ... that
  every shard holds whole, so they stay local; ``channel`` / ``column`` norms reduce
  dim 0 across the shards, and DTensor all-reduces the partial sums before the prox
  uses them (measured: parameters and state equal to one process to float rounding);
- two things do not work by themselves, and this module fixes them:

  1. ``torch._foreach_copy_`` has no DTensor sharding rule (``NotImplementedError``):
     :func:`foreach_copy_` copies tensor by tensor when a list holds DTensors;
  2. ``int(t)`` / ``t.item()`` of a DTensor count (``(w != 0).sum()``) returns this
     rank's partial sum, so a density counted that way is per shard:
     :func:`global_int` all-reduces it first, and :func:`full_tensor` gathers a whole
     tensor where a caller needs every entry (the solution path's support bits).

Every helper is a no-op on ordinary tensors and costs one dictionary look-up
(``torch.distributed.tensor`` is not imported here: if it was never imported, no
DTensor exists). Collectives run on every rank, so a function that calls them (e.g.
:func:`sparseopt.density` on a sharded model) must be called on every rank.

Example:
    >>> import torch
    >>> global_int(torch.tensor(3)), is_dtensor(torch.zeros(2))
    (3, False)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "foreach_copy_",
    "full_tensor",
    "global_int",
    "is_dtensor",
    "is_sharded_model",
    "shard_model",
]


def is_dtensor(t: object) -> bool:
    """Whether ``t`` is a :class:`torch.distributed.tensor.DTensor` (a sharded parameter)."""
    mod = sys.modules.get("torch.distributed.tensor")
    return mod is not None and isinstance(t, mod.DTensor)


def is_sharded_model(model: nn.Module) -> bool:
    """Whether any parameter of ``model`` is a DTensor (the model went through ``fully_shard``)."""
    return any(is_dtensor(p) for p in model.parameters())


def full_tensor(t: Tensor) -> Tensor:
    """The whole tensor on every rank (an all-gather for a DTensor, ``t`` itself otherwise).

    Boolean DTensors travel as ``uint8`` (gloo has no boolean collectives).
    """
    if not is_dtensor(t):
        return t
    if t.dtype == torch.bool:
        return t.to(torch.uint8).full_tensor().to(torch.bool)
    return t.full_tensor()


def global_int(t: Tensor) -> int:
    """A one-element integer tensor as ``int``, reduced over the ranks if it is a DTensor.

    ``(w != 0).sum()`` of a sharded ``w`` is a DTensor holding a partial sum per rank;
    ``int()`` of it would read this rank's part. Call it on every rank.
    """
    return int(full_tensor(t)) if is_dtensor(t) else int(t)


def foreach_copy_(outs: Sequence[Tensor], xs: Sequence[Tensor]) -> None:
    """``torch._foreach_copy_(outs, xs)``, tensor by tensor when ``outs`` holds DTensors.

    ``_foreach_copy_`` has no DTensor sharding rule in torch 2.13; ``copy_`` has, and
    both shards have the same placement, so the copy stays local.
    """
    if any(is_dtensor(o) for o in outs):
        for o, x in zip(outs, xs, strict=True):
            o.copy_(x)
    else:
        torch._foreach_copy_(list(outs), list(xs))


def shard_model(model: nn.Module, **kwargs: object) -> nn.Module:
    """Apply FSDP2's ``fully_shard`` to every module with parameters of its own, then the root.

    Each Conv/Linear/norm layer becomes its own FSDP unit (its parameters are gathered
    just before its forward and freed after), the root holds what is left. ``kwargs``
    go to ``fully_shard`` (e.g. ``mesh``, ``reshard_after_forward``). Needs an
    initialised process group. Returns ``model`` (sharded in place).
    """
    from torch.distributed.fsdp import fully_shard

    units = [
        m
        for m in model.modules()
        if m is not model and any(True for _ in m.parameters(recurse=False))
    ]
    for m in units:
        fully_shard(m, **kwargs)  # type: ignore[arg-type]
    fully_shard(model, **kwargs)  # type: ignore[arg-type]
    return model
