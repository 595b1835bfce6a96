"""Distributed data parallel training on CPU (gloo): two processes on localhost.

The two ranks are started like ``torchrun`` starts them (``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``); each trains the same configuration and saves its final
parameters and optimizer state. Every rank must end with bitwise the same sparse state
(all-reduced gradients → identical updates), close to a single-process run of the same
global batches, and only rank 0 writes the run directory.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from sparseopt.config import TrainConfig
from sparseopt.engine import train

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo"
)

#: name -> (optimizer, config changes): the runs of the 2-process worker. The long
#: SplitLBI run covers the epochs where its support (Γ) changes most (issue 12, item 17).
RUNS: dict[str, tuple[str, dict[str, Any]]] = {
    "adabreg": ("adabreg", {}),
    "splitlbi": ("splitlbi", {}),
    "splitlbi-long": ("splitlbi", {"epochs": 7, "limit_batches": 6}),
    "linbreg-clip": ("linbreg", {"clip_grad_norm": 0.5}),  # the all-reduced gradient's norm
    "rda-clip-ratio": ("rda", {"clip_grad_ratio": 1.1}),  # and its running mean
}

WORKER = textwrap.dedent(
    """
    import os, sys
    import torch
    import torch.distributed as dist
    from sparseopt.config import TrainConfig
    from sparseopt.engine import TrainingInterrupted, train

    out, save = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo")  # the engine uses an existing process group
    rank = dist.get_rank()
    for name, (optimizer, changes) in {runs!r}.items():
        settings = {{**{config!r}, **changes}}
        cfg = TrainConfig(**settings, optimizer=optimizer, out=os.path.join(out, name))
        res = train(cfg)
        assert (res.run_dir is None) == (rank != 0)
        torch.save(
            {{"model": res.model.state_dict(), "optimizer": res.optimizer.state_dict(),
              "history": res.history}},
            os.path.join(save, f"{{name}}-rank{{rank}}.pt"),
        )
    # the clipped run cut mid-epoch 2 (Ctrl-C in a callback) and resumed on both ranks
    class Stop:
        def on_step_end(self, trainer, step=None):
            if trainer.global_step == 6:
                raise KeyboardInterrupt
    optimizer, changes = {runs!r}["linbreg-clip"]
    cfg = TrainConfig(**{{**{config!r}, **changes}}, optimizer=optimizer,
                      out=os.path.join(out, "cut"))
    try:
        train(cfg, callbacks=[Stop()], install_signal_handlers=False)
        raise AssertionError("the cut run went on")
    except TrainingInterrupted:
        pass
    res = train(resume=os.path.join(out, "cut"), install_signal_handlers=False)
    torch.save({{"history": res.history}}, os.path.join(save, f"cut-rank{{rank}}.pt"))
    import gc
    gc.collect()  # free the models (reference cycles) before gloo shuts down
    dist.barrier()
    dist.destroy_process_group()
    """
)

CONFIG: dict[str, Any] = {
    "epochs": 2,
    "limit_batches": 4,
    "batch_size": 64,
    "quiet": True,
    "plots": False,
    "tensorboard": False,
    "device": "cpu",
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(argv: list[str], world: int = 2, timeout: float = 240) -> list[tuple[int, str]]:
    """Run ``argv`` as ``world`` gloo ranks (the torchrun environment on a free port);
    each rank's return code and output (stdout and stderr)."""
    port = _free_port()
    procs = []
    for rank in range(world):
        env = dict(
            os.environ,
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(world),
            LOCAL_WORLD_SIZE=str(world),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            OMP_NUM_THREADS="1",
        )
        procs.append(
            subprocess.Popen(
                argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [(p.returncode, out) for p, out in zip(procs, outputs, strict=True)]


def _flat(state: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(state, dict):
        out: dict[str, Any] = {}
        for k, v in state.items():
            out.update(_flat(v, f"{prefix}{k}/"))
        return out
    if isinstance(state, (list, tuple)):
        out = {}
        for i, v in enumerate(state):
            out.update(_flat(v, f"{prefix}{i}/"))
        return out
    return {prefix: state}


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ddp")
    out, save = root / "runs", root / "states"
    save.mkdir()
    script = root / "worker.py"
    script.write_text(WORKER.format(runs=RUNS, config=CONFIG))
    results = run_ranks([sys.executable, str(script), str(out), str(save)])
    for rank, (code, output) in enumerate(results):
        assert code == 0, f"rank {rank} failed:\n{output[-3000:]}"
    return out, save


@pytest.mark.parametrize("optimizer", list(RUNS))
def test_ranks_end_with_identical_sparse_state(ddp_run: tuple[Path, Path], optimizer: str) -> None:
    _, save = ddp_run
    r0 = torch.load(save / f"{optimizer}-rank0.pt", weights_only=True)
    r1 = torch.load(save / f"{optimizer}-rank1.pt", weights_only=True)
    f0, f1 = _flat(r0), _flat(r1)
    assert f0.keys() == f1.keys()
    for key, v in f0.items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(v, f1[key]), key
        elif not any(t in key for t in ("time", "elapsed")):
            assert v == f1[key], key
    # the sparse optimizers really hold state (duals / Γ) and it is not trivial
    assert any(
        isinstance(v, torch.Tensor) and v.numel() > 1 for v in _flat(r0["optimizer"]).values()
    )


@pytest.mark.parametrize("optimizer", list(RUNS))
def test_ddp_is_close_to_a_single_process_run(
    ddp_run: tuple[Path, Path], tmp_path: Path, optimizer: str
) -> None:
    """Equal up to float rounding: the gradient is the same mean, summed in another order.

    DistributedDataParallel averages two half-batch gradients where the single process
    sums the whole batch at once, so the last bits differ; the long SplitLBI run checks
    that this stays at float32 rounding (no support flip amplifies it here).
    """
    _, save = ddp_run
    ddp = torch.load(save / f"{optimizer}-rank0.pt", weights_only=True)
    name, changes = RUNS[optimizer]
    settings = {**CONFIG, **changes}
    single = train(TrainConfig(**settings, optimizer=name, out=str(tmp_path / "single")))
    for name, p in single.model.state_dict().items():
        torch.testing.assert_close(ddp["model"][name], p, rtol=1e-4, atol=1e-5, msg=name)
    # the same global batches: the same training loss up to float rounding
    for a, b in zip(ddp["history"], single.history, strict=True):
        if a["train_loss"] is not None:
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        clips = "clip_grad_norm" in changes or "clip_grad_ratio" in changes
        if clips and a["train_loss"] is not None:  # the test clips
            assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
            assert a["clipped"] == b["clipped"] and a["clipped"] > 0
        assert a["density"] == pytest.approx(b["density"], abs=2e-3)


def test_only_rank_zero_writes(ddp_run: tuple[Path, Path]) -> None:
    out, _ = ddp_run
    for name in RUNS:
        run = out / name
        assert (run / "checkpoint.pt").is_file() and (run / "metrics.csv").is_file()
        log = (run / "log.txt").read_text()
        assert "× 2 processes" in log
        assert log.count("sparseopt train:") == 1  # one writer


def test_a_clipped_run_resumed_mid_epoch_keeps_its_gradient_norms_on_every_rank(
    ddp_run: tuple[Path, Path],
) -> None:
    """Cut in epoch 2 and resumed: every rank's rows are the uninterrupted run's, the
    gradient norms of the epoch's steps before the cut included (rank 1 too, whose share
    of the summed partial sums rank 0 carries)."""
    _, save = ddp_run
    whole = torch.load(save / "linbreg-clip-rank0.pt", weights_only=True)["history"]
    for rank in (0, 1):
        cut = torch.load(save / f"cut-rank{rank}.pt", weights_only=True)["history"]
        for a, b in zip(cut[1:], whole[1:], strict=True):
            for key in ("train_loss", "grad_norm", "grad_norm_max", "clipped"):
                assert a[key] == pytest.approx(b[key], rel=1e-6), (rank, a["epoch"], key)
