"""Checkpoints: the global RNG states, atomic save and checked load, callback states.

A checkpoint is a dict of tensors and plain data (loadable with
``torch.load(weights_only=True)``) holding :data:`CHECKPOINT_KEYS` and the layout
version :data:`CHECKPOINT_FORMAT`; :class:`~sparseopt.engine.Trainer` writes it with
:func:`save` (temporary file, ``fsync``, ``os.replace``) after an epoch when
:class:`CheckpointClock` says so, and resumes from it to bitwise the same weights and
metrics on CPU as an uninterrupted run.

A sharded (FSDP2) run keeps only the small part in ``checkpoint.pt`` (``model`` and
``optimizer`` are ``None``) and names, under ``"sharded"``, a directory of
``torch.distributed.checkpoint`` files (``checkpoint.dcp/epoch-NNNN``) where every
rank wrote its own shards of the parameters and optimizer state;
:func:`restore_weights` reads them into a sharded or a whole model.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparseopt.config import RESUME_OVERRIDABLE, TrainConfig, load_run_config
from sparseopt.engine.errors import ConfigError
from sparseopt.logging_utils import atomic_torch_save
from sparseopt.prune._files import load_tensor_file

__all__ = [
    "CHECKPOINT_FILE",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_KEYS",
    "SHARDED_DIR",
    "callback_states",
    "cut_to_shards",
    "initial_config",
    "load_callback_states",
    "load_checkpoint",
    "load_for_resume",
    "restore_weights",
    "rng_state",
    "save",
    "save_shards",
    "seed_everything",
    "set_rng_state",
    "sharded_dir",
]

#: Version of the checkpoint layout.
CHECKPOINT_FORMAT = 1
#: File name of a run directory's latest checkpoint.
CHECKPOINT_FILE = "checkpoint.pt"
_CONFIG = "config.yaml"  # the run directory's config (rundir.CONFIG_FILE)
#: Directory (in the run directory) of a sharded run's ``torch.distributed.checkpoint`` files.
SHARDED_DIR = "checkpoint.dcp"
#: Keys every checkpoint of :data:`CHECKPOINT_FORMAT` holds.
CHECKPOINT_KEYS = (
    "epoch",
    "step_in_epoch",
    "global_step",
    "elapsed",
    "model",
    "optimizer",
    "history",
    "rng",
)


def rng_state() -> dict[str, Any]:
    """The torch, NumPy (legacy global), Python and CUDA RNG states, as tensors and data."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 - the legacy global RNG is what we restore
    version, pystate, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(version),
            "state": torch.tensor(pystate, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the global RNG states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            npst["kind"],
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def seed_everything(seed: int) -> None:
    """Seed torch, the legacy global NumPy RNG and Python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seed the legacy global RNG too
    random.seed(seed)


class CheckpointClock:
    """Whether an epoch's end writes ``checkpoint.pt`` (``TrainConfig.checkpoint_seconds``).

    A checkpoint costs a full serialisation and an ``fsync``: after every epoch of a short
    job that was more than its training (31 checkpoints, about 0.3 s, for the default
    job's 0.4 s of epochs). So the trainer writes one at the start (epoch 0), then at an
    epoch's end when ``seconds`` have passed since the last, and always when ``always``
    (the last epoch, a stop request, kept per-epoch checkpoints); ``seconds = 0``: every
    epoch. A crash or divergence loses at most the epochs since the last checkpoint;
    Ctrl-C and SIGTERM still write one where they stop.

    Args:
        seconds: the least time between two checkpoints at epoch ends.
        ctx: the process group: the ranks' clocks differ, and a sharded checkpoint is
            written by all of them, so a checkpoint is due where any rank finds it due.
    """

    #: The clock (seconds); a test may replace it.
    now = staticmethod(time.monotonic)

    def __init__(self, seconds: float, ctx: Any) -> None:
        self.seconds, self.ctx = float(seconds), ctx
        self._last = self.now()

    def due(self, always: bool = False) -> bool:
        """Whether to write now (every rank gets the same answer); restarts the clock if so."""
        from sparseopt.engine.distributed import any_rank

        due = any_rank(always or self.now() - self._last >= self.seconds, self.ctx)
        if due:
            self.restart()
        return due

    def restart(self) -> None:
        """Count from now: for a checkpoint every rank writes anyway (no collective)."""
        self._last = self.now()


def save(state: Mapping[str, Any], path: Path) -> Path:
    """Write ``state`` atomically (temporary file, fsync, ``os.replace``); returns ``path``."""
    return atomic_torch_save(state, path)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint (or a run directory's latest) with ``weights_only=True``.

    Raises:
        ValueError: one line saying what the file is and why it cannot be used: missing,
            empty, truncated, not a PyTorch file, refused because it holds pickled
            Python objects (never loaded unsafely), or not a sparseopt checkpoint.
    """
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT_FILE
    ckpt = load_tensor_file(p, "checkpoint")
    if not isinstance(ckpt, dict):
        raise ValueError(
            f"cannot load checkpoint {p}: not a sparseopt checkpoint (it holds a "
            f"{type(ckpt).__name__}, not a dict)"
        )
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"cannot load checkpoint {p}: unknown checkpoint format {ckpt.get('format')!r} "
            f"(this version reads format {CHECKPOINT_FORMAT})"
        )
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise ValueError(
            f"cannot load checkpoint {p}: not a complete sparseopt checkpoint (no "
            f"{', '.join(missing)})"
        )
    return ckpt


def _key(i: int, cb: Any) -> str:
    return f"{i}:{type(cb).__name__}"


def callback_states(callbacks: Sequence[Any]) -> dict[str, Any]:
    """``{"i:Class": state}`` of the callbacks that have a ``state_dict()``."""
    return {
        _key(i, cb): cb.state_dict() for i, cb in enumerate(callbacks) if hasattr(cb, "state_dict")
    }


def load_callback_states(callbacks: Sequence[Any], states: Mapping[str, Any]) -> None:
    """Give each callback its state saved by :func:`callback_states` (same order)."""
    for i, cb in enumerate(callbacks):
        key = _key(i, cb)
        if key in states and hasattr(cb, "load_state_dict"):
            cb.load_state_dict(states[key])


def initial_config(
    config: TrainConfig | Mapping[str, Any] | None,
    resume_dir: Path | None,
    *,
    own_controller: bool = False,
) -> TrainConfig:
    """The resolved config of a new run, or of a resumed one with its allowed changes.

    With ``own_controller`` (the caller passes its own
    :class:`~sparseopt.control.TargetDensity`) a new run's recipe target density is off
    (stored as 0), and so is its λ warm-up (RDA's): the caller's controller steers λ.
    A target the caller set stays, and
    :func:`~sparseopt.engine.build.build_callbacks` refuses the two controllers.

    Resuming, ``config`` may be a mapping of the fields to change, or a
    :class:`TrainConfig`: then every :data:`~sparseopt.config.RESUME_OVERRIDABLE` field
    is taken from it (so a field can be set back to its default value) and any other
    field that is not at its default must equal the saved one.

    Raises:
        ConfigError: invalid settings, no run to resume, or a change that is not allowed.
    """
    try:
        if resume_dir is None:
            if config is None:
                cfg = TrainConfig()
            elif isinstance(config, TrainConfig):
                cfg = config
            else:
                cfg = TrainConfig.from_dict(config)
            if own_controller and cfg.target_density is None:
                cfg = cfg.replace(target_density=0.0)
            if own_controller and cfg.lam_warmup is None:  # the recipe's (RDA's): the
                cfg = cfg.replace(lam_warmup=0.0)  # caller's controller steers λ instead
            _own_controller_check(cfg, own_controller)
            return cfg.validate().resolve(controller=own_controller)
        if not (resume_dir / CHECKPOINT_FILE).is_file() or not (resume_dir / _CONFIG).is_file():
            raise ConfigError(
                f"cannot resume {resume_dir}: no {CHECKPOINT_FILE} and {'config.yaml'} there "
                "(is it a run directory written by sparseopt train?)"
            )
        saved = load_run_config(resume_dir / _CONFIG)
        overrides: dict[str, Any] = {}
        if isinstance(config, TrainConfig):
            default = TrainConfig()
            overrides = {
                k: v
                for k, v in config.to_dict().items()
                if k in RESUME_OVERRIDABLE or v != getattr(default, k)
            }
        elif config is not None:
            overrides = {k.replace("-", "_"): v for k, v in dict(config).items()}
        overrides.pop("out", None)
        bad = sorted(
            k for k, v in overrides.items() if k not in RESUME_OVERRIDABLE and saved.get(k) != v
        )
        if bad:
            raise ConfigError(
                f"cannot change {', '.join(bad)} when resuming {resume_dir} (only "
                f"{', '.join(sorted(RESUME_OVERRIDABLE))} may change)"
            )
        saved["quiet"] = False  # presentation is per invocation, not part of the run
        # A run saved before the path recorder existed has no path to continue.
        saved.setdefault("record_path", False)
        saved.update(overrides)
        saved["out"] = str(resume_dir)
        resumed = TrainConfig.from_dict(saved).resolve()
        _own_controller_check(resumed, own_controller)
        return resumed
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _own_controller_check(cfg: TrainConfig, own_controller: bool) -> None:
    """A λ warm-up beside a TargetDensity callback of the caller's is refused: the
    controller steers λ from the first step (a fresh run, or one resumed with it)."""
    if own_controller and cfg.lam_warmup:
        raise ConfigError(
            f"Invalid lam_warmup value: {cfg.lam_warmup!r}; the TargetDensity callback "
            "passed to train() steers λ from the first step (a new run: set it to 0; a "
            "resumed one: resume without the callback)"
        )


def sharded_dir(ckpt: Mapping[str, Any], path: Path) -> Path | None:
    """The shard directory that the checkpoint ``path`` names (``None``: it holds whole
    tensors). The name is relative to the run directory, which holds ``checkpoint.pt``
    and ``checkpoints/epoch_NNNN.pt``.

    Raises:
        ConfigError: the directory is missing.
    """
    name = ckpt.get("sharded")
    if not name:
        return None
    path = Path(path)
    for run_dir in (path.parent, path.parent.parent):
        if (run_dir / name / ".metadata").is_file():
            return run_dir / name
    raise ConfigError(
        f"cannot load checkpoint {path}: its sharded model and optimizer state {name} is "
        "missing (copy the whole run directory, checkpoint.dcp included)"
    )


def save_shards(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    out: str | os.PathLike[str],
    epoch: int,
    step_in_epoch: int,
    publish: Callable[[Path, Path], Any] | None,
    suffix: str = "",
) -> str:
    """Write a sharded model's parameters and optimizer state as
    ``torch.distributed.checkpoint`` files; returns the directory's name (relative to the
    run directory ``out``): ``checkpoint.dcp/epoch-NNNN[-step-SSSSSS][suffix]`` (``-refit``:
    saved at the switch to the refit, before its first step, so that the shards of the end
    of epoch NNNN stay as they were).

    Every rank calls it and writes its own shards into ``NAME.tmp``; ``publish(tmp,
    final)`` (rank 0's run directory; ``None`` on the other ranks) renames it.
    """
    from sparseopt import fsdp

    name = f"{SHARDED_DIR}/epoch-{epoch:04d}"
    if step_in_epoch:
        name += f"-step-{step_in_epoch:06d}"
    name += suffix
    tmp = Path(out) / f"{name}.tmp"
    fsdp.save_sharded(model, optimizer, tmp)  # collective: all ranks wrote
    if publish is not None:
        publish(tmp, Path(out) / name)
    return name


def cut_to_shards(
    ckpt: Mapping[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """A checkpoint of whole tensors with its model and optimizer state cut to this
    rank's shards of the sharded ``model`` (resuming an unsharded run with FSDP2)."""
    from sparseopt import fsdp

    own = model.state_dict()
    model_state = {k: fsdp.shard_like(v, own[k]) for k, v in ckpt["model"].items()}
    opt_state = fsdp.sharded_optimizer_state(optimizer, ckpt["optimizer"])
    return {**ckpt, "model": model_state, "optimizer": opt_state}


def restore_weights(
    ckpt: Mapping[str, Any],
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    grown: bool = False,
) -> None:
    """Load a checkpoint's model and optimizer states (``grown``: widen the freshly
    built model to the checkpoint's layer widths first).

    A sharded run's checkpoint (:func:`sharded_dir`) loads into ``model`` sharded over
    any number of ranks (every rank calls this) or whole in one process.

    Raises:
        ConfigError: they do not fit the model and optimizer built from the config.
    """
    from sparseopt.fsdp import load_sharded_
    from sparseopt.prune.grow import match_widths

    shards = sharded_dir(ckpt, path)
    try:
        if shards is not None:  # FSDP2 rejects grow_every: no widths to match
            load_sharded_(model, optimizer, shards)
            return
        if grown:
            match_widths(model, ckpt["model"], optimizer)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
    except _load_errors() as err:
        detail = " ".join(str(err).split()) or type(err).__name__
        if len(detail) > 600:
            detail = detail[:600] + " …"
        moved = _moved_params(ckpt.get("optimizer"), optimizer)
        if not moved and shards is not None and "param_groups" in detail:
            moved = "a sharded checkpoint: its param groups do not load into today's"
        if moved:
            detail = (
                f"the optimizer's param groups hold other parameters than when it was "
                f"written ({moved}): since 2026-11-29 attention projections (in_proj_weight) "
                "and Hugging Face Conv1D weights are penalised layer weights; start the run "
                "again"
            )
        raise ConfigError(
            f"cannot load checkpoint {path}: it does not fit the model and optimizer built "
            f"from its config: {detail}"
        ) from None


def _moved_params(saved: Any, optimizer: torch.optim.Optimizer) -> str:
    """The parameters that changed param group between a saved optimizer state and
    ``optimizer`` (by ``param_names``), as ``name: old group → new group``; ``""`` when
    none did or the names are not there to tell."""
    try:
        then = {
            n: g.get("name", i)
            for i, g in enumerate(saved["param_groups"])
            for n in g["param_names"]
        }
        now = {
            n: g.get("name", i)
            for i, g in enumerate(optimizer.param_groups)
            for n in g["param_names"]
        }
    except (KeyError, TypeError):
        return ""
    moved = [
        f"{n}: {then.get(n)} → {now.get(n)}"
        for n in sorted(set(then) | set(now))
        if then.get(n) != now.get(n)
    ]
    return ", ".join(moved[:4]) + (f" and {len(moved) - 4} more" if len(moved) > 4 else "")


def _load_errors() -> tuple[type[BaseException], ...]:
    """The errors of a checkpoint that does not fit: torch's, and — once a sharded
    checkpoint was read, which imports it — ``torch.distributed.checkpoint``'s (a
    ``BaseException``). Looked up when an error is matched, so that importing this module
    does not import ``torch.distributed.checkpoint`` (about 1 s, most of ``sparseopt``'s
    start-up)."""
    errors: tuple[type[BaseException], ...] = (RuntimeError, ValueError, KeyError, TypeError)
    api = sys.modules.get("torch.distributed.checkpoint.api")
    return errors if api is None else (*errors, api.CheckpointException)


def load_for_resume(path: Path, epochs: int) -> dict[str, Any]:
    """:func:`load_checkpoint` for a resumed run that is to train to ``epochs``.

    Raises:
        ConfigError: the checkpoint cannot be used, or it has done more than ``epochs``.
    """
    try:
        ckpt = load_checkpoint(path)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    done = int(ckpt["epoch"])
    if epochs < done:
        raise ConfigError(
            f"cannot resume {path.parent} with --epochs {epochs}: it has already trained "
            f"{done} epoch{'' if done == 1 else 's'}; give --epochs {done} or more (nothing "
            "was changed)"
        )
    return ckpt
