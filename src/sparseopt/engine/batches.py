"""Training batches: seeded index permutations of in-memory tensors, sharded by rank.

The permutation of epoch ``e`` depends only on ``(seed, e)`` (like
``DistributedSampler.set_epoch``); in a distributed run every rank takes the
``rank::world_size`` slice of the same padded permutation, so the union of the ranks'
batches is the single-process batch. Augmentation (random crop + flip) is seeded per
``(seed, epoch, step, rank)``, so a resumed run draws the same crops.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from sparseopt.engine.distributed import Dist

__all__ = ["Batches"]


def _perm_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch)) % (2**63 - 1)


def _aug_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    return (((int(seed) * 1_000_003 + epoch) * 1_000_033 + step) * 1_009 + rank) % (2**63 - 1)


class Batches:
    """The batches of one training split.

    Args:
        x, y: the training tensors (on the training device).
        seed: the run's seed.
        batch_size: the global batch size (each rank takes ``ceil(batch_size / world)``).
        limit: at most this many batches per epoch (``None``: all).
        augment: random crop (padding 4) and horizontal flip of image batches.
        ctx: the process's place in a distributed run.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        *,
        seed: int,
        batch_size: int,
        limit: int | None = None,
        augment: bool = False,
        ctx: Dist | None = None,
    ) -> None:
        self.x, self.y = x, y
        self.seed, self.limit = seed, limit
        self.ctx = ctx or Dist(device=x.device)
        self.per_rank = max(1, math.ceil(batch_size / self.ctx.world_size))
        self._augment: Any = None
        if augment:
            from sparseopt.data.augment import random_crop_flip

            self._augment = random_crop_flip
        self._aug_gen = torch.Generator(device="cpu")
        #: generator of the permutations (its state is part of a checkpoint)
        self.perm_gen = torch.Generator(device="cpu")

    def __len__(self) -> int:
        """Number of batches per epoch (this rank's)."""
        per_rank = math.ceil(len(self.x) / self.ctx.world_size)
        k = math.ceil(per_rank / self.per_rank)
        return min(k, self.limit) if self.limit is not None else k

    def epoch(self, epoch: int) -> list[Tensor]:
        """This rank's index batches of epoch ``epoch`` (1-based), on the data's device."""
        n, ctx = len(self.x), self.ctx
        self.perm_gen.manual_seed(_perm_seed(self.seed, epoch))
        perm = torch.randperm(n, generator=self.perm_gen)
        if ctx.distributed:
            total = math.ceil(n / ctx.world_size) * ctx.world_size
            if total > n:
                perm = torch.cat([perm, perm[: total - n]])
            perm = perm[ctx.rank :: ctx.world_size]
        batches = list(perm.to(self.x.device).split(self.per_rank))
        return batches[: self.limit] if self.limit is not None else batches

    def batch(self, idx: Tensor, epoch: int, step: int) -> tuple[Tensor, Tensor]:
        """The (augmented) samples of index batch ``idx``, step ``step`` of ``epoch``."""
        xb, yb = self.x[idx], self.y[idx]
        if self._augment is not None:
            self._aug_gen.manual_seed(_aug_seed(self.seed, epoch, step, self.ctx.rank))
            xb = self._augment(xb, padding=4, generator=self._aug_gen)
        return xb, yb
