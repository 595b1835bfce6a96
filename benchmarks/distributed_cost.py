"""What one training step costs per rank: one process, DDP, or FSDP2 (docs/distributed.md).

Trains an MLP of a few million parameters (``--width``: 784 → W → W → 10) with a sparse
optimizer on random data and reports, per rank, the median step time (forward, backward,
the optimizer's step; 10th–90th percentile), the bytes this rank holds in parameters,
gradients and optimizer state (counted from the tensors: a sharded tensor counts its
local shard), and the process's peak resident memory. Run it alone for one process, or
under ``torchrun`` with ``--mode ddp`` / ``--mode fsdp``::

    OMP_NUM_THREADS=1 python benchmarks/distributed_cost.py --mode single
    OMP_NUM_THREADS=1 torchrun --nproc-per-node 2 benchmarks/distributed_cost.py --mode ddp
    OMP_NUM_THREADS=1 torchrun --nproc-per-node 2 benchmarks/distributed_cost.py --mode fsdp

Rank 0 prints one JSON line (every rank's numbers). The global batch is the same in
every mode (``--batch``), split over the ranks.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

import sparseopt as so
from sparseopt.fsdp import is_dtensor, shard_model


def _local_bytes(tensors: Any) -> int:
    total = 0
    for t in tensors:
        if isinstance(t, torch.Tensor):
            local = t.to_local() if is_dtensor(t) else t
            total += local.numel() * local.element_size()
    return total


def main() -> None:
    """Parse the flags, train ``--steps`` steps, print the JSON line (rank 0)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("single", "ddp", "fsdp"), default="single")
    ap.add_argument("--optimizer", default="adabreg")
    ap.add_argument("--width", type=int, default=1536)
    ap.add_argument("--batch", type=int, default=128, help="global batch")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()

    distributed = args.mode != "single"
    if distributed:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    torch.manual_seed(0)
    w = args.width
    model = nn.Sequential(
        nn.Linear(784, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(), nn.Linear(w, 10)
    )
    n_params = sum(p.numel() for p in model.parameters())
    train_model: nn.Module = model
    if args.mode == "ddp":
        train_model = nn.parallel.DistributedDataParallel(model)
    elif args.mode == "fsdp":
        shard_model(model)
    optimizer = so.create_optimizer(model, args.optimizer, penalty="l1")
    per_rank = args.batch // world
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 784, generator=g)[rank * per_rank : (rank + 1) * per_rank]
    y = torch.randint(0, 10, (args.batch,), generator=g)[rank * per_rank : (rank + 1) * per_rank]
    times: list[float] = []
    for step in range(args.warmup + args.steps):
        if distributed:
            dist.barrier()
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=False)
        nn.functional.cross_entropy(train_model(x), y).backward()
        optimizer.step()
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
    params = list(model.parameters())
    state = [v for p in params for v in optimizer.state[p].values()]
    mine = {
        "rank": rank,
        "step_ms_median": 1e3 * statistics.median(times),
        "step_ms_p10": 1e3 * statistics.quantiles(times, n=10)[0],
        "step_ms_p90": 1e3 * statistics.quantiles(times, n=10)[-1],
        "param_MB": _local_bytes(params) / 2**20,
        "grad_MB": _local_bytes(p.grad for p in params) / 2**20,
        "state_MB": _local_bytes(state) / 2**20,
        "peak_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    rows = [mine]
    if distributed:
        rows = [None] * world  # type: ignore[list-item]
        dist.all_gather_object(rows, mine)
    if rank == 0:
        print(
            json.dumps(
                {
                    "mode": args.mode,
                    "world": world,
                    "optimizer": args.optimizer,
                    "params": n_params,
                    "global_batch": args.batch,
                    "steps": args.steps,
                    "threads": torch.get_num_threads(),
                    "omp": os.environ.get("OMP_NUM_THREADS"),
                    "ranks": rows,
                }
            ),
            flush=True,
        )
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
