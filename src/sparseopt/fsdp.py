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

import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "foreach_copy_",
    "full_optimizer_state",
    "full_state",
    "full_tensor",
    "global_int",
    "is_dtensor",
    "is_sharded_model",
    "load_sharded_",
    "save_sharded",
    "shard_like",
    "shard_model",
    "sharded_optimizer_state",
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


# ------------------------------------------------------------------ whole-tensor state dicts
# The engine's checkpoints before sharded ones (and every DDP / single-process run's) hold
# whole tensors in a single process's layout; a sharded resume from one cuts every tensor
# back to this rank's shard (:func:`shard_like`).


def full_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` (a ``model.state_dict()``) with every DTensor gathered (every rank calls it)."""
    return {k: full_tensor(v) if is_dtensor(v) else v for k, v in state.items()}


def full_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``optimizer.state_dict()`` with every DTensor of the state gathered (every rank).

    The parameter indices are those of a single-process optimizer built the same way
    (same param groups in the same order), so the result loads into one.
    """
    sd = optimizer.state_dict()
    sd["state"] = {i: full_state(st) for i, st in sd["state"].items()}
    return sd


def shard_like(full: Tensor, like: Tensor) -> Tensor:
    """``full`` cut to ``like``'s placement (this rank's shard as a DTensor), if ``like``
    is a DTensor of the same shape; ``full`` itself otherwise. No communication."""
    if not is_dtensor(like) or tuple(full.shape) != tuple(like.shape):
        return full
    from torch.distributed.tensor import distribute_tensor

    local = full.to(device=like.device, dtype=like.dtype)
    return distribute_tensor(local, like.device_mesh, like.placements, src_data_rank=None)


def sharded_optimizer_state(
    optimizer: torch.optim.Optimizer, state: Mapping[str, Any]
) -> dict[str, Any]:
    """A whole-tensor optimizer state dict (:func:`full_optimizer_state`, or a
    single-process run's) with every state tensor cut like its (sharded) parameter, ready
    for ``optimizer.load_state_dict``."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    out = dict(state)
    out["state"] = {
        i: {k: shard_like(v, params[int(i)]) if isinstance(v, Tensor) else v for k, v in st.items()}
        for i, st in state["state"].items()
    }
    return out


# ------------------------------------------------------------------ sharded checkpoints


def save_sharded(
    model: nn.Module, optimizer: torch.optim.Optimizer, directory: str | os.PathLike[str]
) -> None:
    """Write ``model`` and ``optimizer`` with ``torch.distributed.checkpoint``: every rank
    writes its own shards into ``directory`` (one ``.distcp`` file per rank plus the
    metadata), nothing is gathered. Call it on every rank.

    The state comes from ``torch.distributed.checkpoint.state_dict.get_state_dict``
    (parameters and optimizer state keyed by parameter name), so the files load into any
    number of ranks, or into one process (:func:`load_sharded_`).
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=os.fspath(directory))


def load_sharded_(
    model: nn.Module, optimizer: torch.optim.Optimizer, directory: str | os.PathLike[str]
) -> None:
    """Load a :func:`save_sharded` directory into ``model`` and ``optimizer``, in place.

    ``model`` may be sharded over any number of ranks (call it on every rank) or whole in
    one process without a process group (``sparseopt path``/``prune`` style use): each
    rank reads the parts of the files it holds. Parameters, optimizer state and param
    groups (λ set by a controller included) come back bitwise.

    A fresh optimizer has no state yet; ``get_state_dict`` creates it with one step of
    learning rate 0 on zero gradients before the files overwrite it.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optim_state}
    import torch.distributed as dist

    alone = not (dist.is_available() and dist.is_initialized())
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process"
        if alone:
            warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
        dcp.load(state, checkpoint_id=os.fspath(directory), no_dist=alone)
    set_state_dict(
        model,
        optimizer,
        model_state_dict=state["model"],
        optim_state_dict=state["optimizer"],
    )
