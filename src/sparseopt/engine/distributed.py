"""Process group, device choice and the collective helpers of a distributed run.

Under ``torchrun`` (``WORLD_SIZE > 1``) :func:`setup` initialises the process group
(gloo on CPU, NCCL on CUDA); every helper here is a no-op in a single process, so the
training loop calls them unconditionally. Rank 0 alone prints and writes
(:attr:`Dist.is_main`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from sparseopt.engine.errors import ConfigError

__all__ = [
    "Dist",
    "all_reduce_",
    "any_rank",
    "broadcast_buffers_",
    "broadcast_object",
    "resolve_device",
    "setup",
    "sum_over_ranks",
]


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """The device of ``spec`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``) for this process.

    Raises:
        ConfigError: CUDA asked for but not available.
    """
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("Invalid device value: 'cuda'; CUDA is not available on this machine")
        if spec == "cuda":
            return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    return torch.device(spec)


@dataclass
class Dist:
    """Where this process stands: rank, world size, device, and who owns the group.

    Attributes:
        rank, world_size, local_rank: as ``torchrun`` sets them (0, 1, 0 alone).
        device: this process's device.
        created_group: whether :func:`setup` initialised the process group (then
            :meth:`close` destroys it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    created_group: bool = False

    @property
    def distributed(self) -> bool:
        """Whether more than one process trains."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process is rank 0 (the one that prints and writes)."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (no-op alone)."""
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        """Destroy the process group if :func:`setup` created it (after a garbage
        collection: an FSDP model's hooks form reference cycles, and a model freed at the
        interpreter's exit, after gloo shut down, can abort the process)."""
        if self.created_group:
            import gc

            import torch.distributed as dist

            if dist.is_initialized():
                gc.collect()
                dist.destroy_process_group()
            self.created_group = False


def setup(device_spec: str) -> Dist:
    """Join (or, under ``torchrun``, initialise) the process group; pick the device.

    Raises:
        ConfigError: ``WORLD_SIZE > 1`` without ``torch.distributed``, or no CUDA.
    """
    import torch.distributed as dist

    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    created = False
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    elif env_world > 1:
        if not dist.is_available():  # pragma: no cover - builds without distributed
            raise ConfigError("WORLD_SIZE > 1 but torch.distributed is not available")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = resolve_device(device_spec, local)
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
        created = True
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    device = resolve_device(device_spec, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return Dist(rank, world, local_rank, device, created)


def all_reduce_(tensor: Tensor, ctx: Dist, op: str = "sum") -> Tensor:
    """Sum (``op="sum"``) or maximum (``"max"``) of ``tensor`` over the ranks, in place."""
    if ctx.distributed:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return tensor


def sum_over_ranks(values: dict[str, float], keys: Sequence[str], ctx: Dist) -> dict[str, float]:
    """``values`` with the entries ``keys`` summed over the ranks (float64, one all-reduce)."""
    if ctx.distributed:
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=ctx.device)
        all_reduce_(t, ctx)
        values.update({k: float(v) for k, v in zip(keys, t.tolist(), strict=True)})
    return values


def any_rank(flag: bool, ctx: Dist) -> bool:
    """Whether ``flag`` holds on some rank."""
    if not ctx.distributed:
        return flag
    t = all_reduce_(torch.tensor([float(flag)], device=ctx.device), ctx, "max")
    return bool(t.item())


def broadcast_buffers_(model: nn.Module, ctx: Dist) -> None:
    """Give every rank rank 0's buffers (batch-norm statistics)."""
    if ctx.distributed:
        import torch.distributed as dist

        for buf in model.buffers():
            dist.broadcast(buf, src=0)


def broadcast_object(values: Sequence[Any], ctx: Dist) -> list[Any]:
    """Rank 0's ``values`` (picklable) on every rank."""
    box = list(values)
    if ctx.distributed:
        import torch.distributed as dist

        dist.broadcast_object_list(box, src=0)
    return box
