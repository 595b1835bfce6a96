"""Training engine: loop, evaluation, checkpoints, faults, logging and DDP.

:func:`train` runs one :class:`~sparseopt.config.TrainConfig` end to end and returns a
:class:`TrainResult`; :class:`Trainer` is the same machinery as an object, for finer
control. What a run does:

- loads the dataset (:func:`sparseopt.data.load_dataset`) into memory once and
  iterates over seeded ``torch.randperm`` index batches of the tensors directly (the
  permutation of epoch ``e`` depends only on ``(seed, e)``, like
  ``DistributedSampler.set_epoch``); in a distributed run every rank takes the
  ``rank::world_size`` slice of the same padded permutation, so the union of the ranks'
  batches is the single-process batch;
- builds the model, sparsely initialises it (:func:`sparseopt.sparse_init_`), creates
  the optimizer from the registry and an optional per-epoch learning-rate schedule;
- evaluates the **deployable** sparse network (inside ``optimizer.deployed()``: W masked
  by supp Γ for SplitLBI, u for RVSM) on the validation and test parts after every
  epoch (and once before training, epoch 0), with its density overall and per layer;
- writes a run directory::

      config.yaml        resolved configuration (every default filled in)
      checkpoint.pt      latest checkpoint, written atomically (temp file + os.replace)
      checkpoints/       one checkpoint per epoch (with keep_checkpoints)
      metrics.csv        one row per epoch (per-layer densities as layer_density/<name>)
      metrics.jsonl      the same as JSON lines
      log.txt            the lines printed during training
      model_sparse.pt    state dict of the deployable sparse network (at the end)
      path.npz, path.json  the solution path, one point per epoch (with record_path)
      summary.json       final metrics, wall time and the resolved config
      accuracy.png       (loss.png for regression) and density.png vs epoch,
      layer_density.png  per-layer nonzero weights and live filters
      tensorboard/       when torch.utils.tensorboard imports

Faults: SIGINT/SIGTERM finish the current step, checkpoint (mid-epoch if need be) and
raise :class:`TrainingInterrupted`; resuming (``train(resume=run_dir)``) continues to
bitwise the same weights and metrics on CPU as an uninterrupted run. A non-finite loss
raises :class:`NonFiniteLossError` before the update, leaving the last good checkpoint.

Structure tools from the config, run as callbacks before the user's ones and always in
this order (so their checkpoint keys are stable and ``--resume`` restores them):
:class:`~sparseopt.path.PathRecorder` (``record_path``, on by default; a
``PathRecorder`` among the user's callbacks replaces it),
:class:`~sparseopt.control.TargetDensity` (``target_density``: λ is steered every
``target_density_every`` steps) and :class:`~sparseopt.prune.grow.GrowCallback`
(``grow_every``/``grow_tau``: saturated layers are widened; resuming such a run widens
the freshly built model to the checkpoint's layer widths before loading it).

Callbacks: any object with some of ``on_train_begin(trainer)``,
``on_step_end(trainer, step)``, ``on_epoch_end(trainer, epoch, metrics)``,
``on_train_end(trainer, result)`` (see
:class:`Callback`). ``on_epoch_end`` runs on every rank after evaluation and before the
epoch's checkpoint, so it may change the optimizer (e.g. ``optimizer.set_lam``) or add
keys to ``metrics`` (plain data); a callback's ``state_dict()``/``load_state_dict()``, if
it has them, are saved in and restored from checkpoints.

Distributed: under ``torchrun`` (``WORLD_SIZE > 1``) the process group is initialised
(gloo on CPU, NCCL on CUDA), the model is wrapped in
:class:`~torch.nn.parallel.DistributedDataParallel` so every rank sees the same averaged
gradient and performs the same optimizer update (the sparse state stays identical), and
rank 0 alone prints and writes.

Example:
    >>> from sparseopt.config import TrainConfig
    >>> result = train(TrainConfig(epochs=1, limit_batches=2, quiet=True, out=str(tmp)))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sparseopt.config import RESUME_OVERRIDABLE, TrainConfig, load_config_file
from sparseopt.control import TargetDensity
from sparseopt.health import HealthMonitor, constant_output, empty_layers
from sparseopt.logging_utils import (
    ProgressBar,
    atomic_torch_save,
    atomic_write_text,
    format_duration,
    format_epoch_line,
    open_tensorboard,
    write_metrics,
)
from sparseopt.path import PathRecorder
from sparseopt.prune._files import load_tensor_file, non_finite
from sparseopt.prune.grow import GrowCallback, layer_saturation, match_widths

__all__ = [
    "CHECKPOINT_FORMAT",
    "EXIT_DIVERGED",
    "RUN_FILES",
    "TIME_KEYS",
    "Callback",
    "CallbackProtocol",
    "ConfigError",
    "NonFiniteLossError",
    "OutputWriteError",
    "TrainResult",
    "Trainer",
    "TrainingError",
    "TrainingInterrupted",
    "load_checkpoint",
    "train",
]

#: Version of the checkpoint layout.
CHECKPOINT_FORMAT = 1
#: Exit code of the command line when the loss became NaN/Inf.
EXIT_DIVERGED = 3
#: Metrics keys that measure time (they differ between otherwise identical runs).
TIME_KEYS = ("train_time", "epoch_time", "elapsed")

#: Below this many parameters a CPU run defaults to one intra-op thread.
SMALL_MODEL_PARAMS = 1_000_000

_CHECKPOINT = "checkpoint.pt"
_CONFIG = "config.yaml"
_LOG = "log.txt"

#: What a run writes in its directory (``--overwrite`` replaces these and nothing else).
RUN_FILES = (
    _CONFIG,
    _CHECKPOINT,
    "checkpoints",
    "metrics.csv",
    "metrics.jsonl",
    _LOG,
    "model_sparse.pt",
    "summary.json",
    "path.npz",
    "path.json",
    "path_chunks",
    "accuracy.png",
    "loss.png",
    "density.png",
    "layer_density.png",
    "tensorboard",
)


# ----------------------------------------------------------------------------- errors


class ConfigError(ValueError):
    """The configuration cannot be run: unknown name, invalid option, unusable run dir."""


class TrainingError(RuntimeError):
    """Training stopped before the last epoch."""


class NonFiniteLossError(TrainingError):
    """The training loss became NaN or infinite; the update was not applied.

    Attributes:
        epoch, step: where it happened (1-based epoch, 0-based batch index).
        checkpoint: the last good checkpoint, or ``None``.
    """

    def __init__(self, message: str, *, epoch: int, step: int, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.step = step
        self.checkpoint = checkpoint


class OutputWriteError(TrainingError):
    """A file of the run could not be written (disk full, permissions); exit status 1.

    Files are written atomically, so the previous version of the file (e.g. the last
    good checkpoint) is intact.
    """


class TrainingInterrupted(TrainingError):
    """A signal (or ``KeyboardInterrupt``) stopped training; a checkpoint was written.

    Attributes:
        signum: the signal number (``SIGINT`` for ``KeyboardInterrupt``).
        run_dir: the run directory to resume (``sparseopt train --resume RUN_DIR``).
        exit_code: ``128 + signum`` (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, message: str, *, signum: int, run_dir: Path | None) -> None:
        super().__init__(message)
        self.signum = signum
        self.run_dir = run_dir

    @property
    def exit_code(self) -> int:
        """Conventional shell exit status of a process killed by ``signum``."""
        return 128 + int(self.signum)


# ----------------------------------------------------------------------------- callbacks


@runtime_checkable
class CallbackProtocol(Protocol):
    """What the engine calls; every method is optional (see :class:`Callback`)."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None: ...


class Callback:
    """Base class of training callbacks; every hook is a no-op.

    Hooks run on every rank of a distributed run (use ``trainer.is_main`` for I/O).
    ``on_epoch_end`` sees the metrics of the finished epoch (evaluated on the deployable
    network) before they are logged and checkpointed; changes to the optimizer made there
    are part of that epoch's checkpoint. Give a callback ``state_dict()`` and
    ``load_state_dict(state)`` (plain data / tensors) to make it resumable.

    Example:
        >>> class Recorder(Callback):
        ...     def __init__(self):
        ...         self.densities = []
        ...     def on_epoch_end(self, trainer, epoch, metrics):
        ...         self.densities.append(metrics["density"])
    """

    def on_train_begin(self, trainer: Trainer) -> None:
        """Called once before the first (or first resumed) epoch."""

    def on_step_end(self, trainer: Trainer, step: int) -> None:
        """Called after every optimizer step; ``step`` is the global step count (from 1)."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        """Called after epoch ``epoch`` (1-based) was trained and evaluated."""

    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None:
        """Called once after the last epoch, with the final result."""


# ----------------------------------------------------------------------------- result


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        config: the resolved configuration.
        run_dir: the run directory (``None`` on ranks other than 0).
        history: one metrics dict per epoch, epoch 0 being the initial network.
        metrics: the last epoch's metrics (``test_acc``, ``density``...).
        wall_time: seconds spent in training and evaluation, summed over resumptions.
        model: the trained model (training state; see ``model_sparse.pt`` or
            ``optimizer.deployed()`` for the deployable network).
        optimizer: the optimizer.
        sizes: number of samples of the ``train``, ``val`` and ``test`` splits.
        health: ``{"status", "reason", "hint"}`` of :class:`sparseopt.health.HealthMonitor`
            (also in ``summary.json``); :attr:`status` is its ``status``.
    """

    config: TrainConfig
    run_dir: Path | None
    history: list[dict[str, Any]]
    metrics: dict[str, Any]
    wall_time: float
    model: nn.Module = field(repr=False)
    optimizer: torch.optim.Optimizer = field(repr=False)
    health: dict[str, Any] = field(default_factory=lambda: {"status": "ok", "reason": ""})
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """``ok``, ``stalled`` or ``collapsed`` (:mod:`sparseopt.health`)."""
        return str(self.health.get("status", "ok"))

    @property
    def test_acc(self) -> float | None:
        """Final test accuracy of the deployable network (``None`` for regression)."""
        return self.metrics.get("test_acc")

    @property
    def test_loss(self) -> float | None:
        """Final test loss of the deployable network."""
        return self.metrics.get("test_loss")

    @property
    def density(self) -> float:
        """Final fraction of nonzero parameters of the deployable network (all parameters)."""
        return float(self.metrics["density"])


# ----------------------------------------------------------------------------- helpers


def _device(spec: str, local_rank: int) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("Invalid device value: 'cuda'; CUDA is not available on this machine")
        if spec == "cuda":
            return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    return torch.device(spec)


def _rng_state() -> dict[str, Any]:
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


def _set_rng_state(state: Mapping[str, Any]) -> None:
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


#: Keys every checkpoint of :data:`CHECKPOINT_FORMAT` holds.
_CHECKPOINT_KEYS = (
    "epoch",
    "step_in_epoch",
    "global_step",
    "elapsed",
    "model",
    "optimizer",
    "history",
    "rng",
)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint (or a run directory's latest) with ``weights_only=True``.

    Raises:
        ValueError: one line saying what the file is and why it cannot be used: missing,
            empty, truncated, not a PyTorch file, refused because it holds pickled
            Python objects (never loaded unsafely), or not a sparseopt checkpoint.
    """
    p = Path(path)
    if p.is_dir():
        p = p / _CHECKPOINT
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
    missing = [k for k in _CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise ValueError(
            f"cannot load checkpoint {p}: not a complete sparseopt checkpoint (no "
            f"{', '.join(missing)})"
        )
    return ckpt


def _count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _perm_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch)) % (2**63 - 1)


def _aug_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    return (((int(seed) * 1_000_003 + epoch) * 1_000_033 + step) * 1_009 + rank) % (2**63 - 1)


# ----------------------------------------------------------------------------- trainer


class Trainer:
    """One training run (see the module docstring); :func:`train` is the usual entry.

    Args:
        config: the configuration (a :class:`TrainConfig` or a mapping of its fields);
            with ``resume``, a mapping of the fields to change (only
            :data:`~sparseopt.config.RESUME_OVERRIDABLE` ones) or ``None``.
        callbacks: objects with some of the :class:`Callback` hooks; they run after the
            structure callbacks the config asks for (see the module docstring).
        resume: a run directory to continue from its latest checkpoint.
        install_signal_handlers: catch SIGINT/SIGTERM during :meth:`fit` (main thread only).
        echo: print to stdout (``False``: only ``log.txt`` and the progress bar).
        overwrite: allow ``config.out`` to be an existing directory that is not a run
            directory; the files a run writes (:data:`RUN_FILES`) are replaced there
            (a note on stderr lists them) and every other file is left alone.

    Raises:
        ConfigError: unknown dataset/model/optimizer, invalid options, a run directory
            that already holds a run (without ``resume``), an existing directory that
            is not a run directory (without ``overwrite``), a resume without checkpoint,
            a resume to fewer epochs than the checkpoint has done.
        sparseopt.data.DatasetNotFoundError: the dataset's files are missing.

    Attributes:
        config, data, model, optimizer, scheduler, run_dir, history, epoch (completed
        epochs), global_step, rank, world_size, device.
        callbacks: the structure callbacks of the config, then the caller's.
    """

    def __init__(
        self,
        config: TrainConfig | Mapping[str, Any] | None = None,
        callbacks: Sequence[Any] = (),
        *,
        resume: str | os.PathLike[str] | None = None,
        install_signal_handlers: bool = True,
        echo: bool = True,
        overwrite: bool = False,
    ) -> None:
        self.callbacks = list(callbacks)
        self.overwrite = overwrite
        self.echo = echo
        self.install_signal_handlers = install_signal_handlers
        self._stop_signal: int | None = None
        self._old_handlers: dict[int, Any] = {}
        self._tb: Any = None
        self._log_file: Path | None = None
        self._created_pg = False
        self.history: list[dict[str, Any]] = []
        self.epoch = 0
        self.global_step = 0
        self.elapsed = 0.0
        self._partial: dict[str, float] | None = None
        self._step_in_epoch = 0
        self._saved_epoch = 0  # epoch of the last checkpoint written or loaded

        self._saved_threads = torch.get_num_threads()
        self._caller_rng: dict[str, Any] | None = _rng_state()
        resume_dir = Path(resume) if resume is not None else None
        self.config = self._initial_config(config, resume_dir)
        try:
            self._setup_distributed()
            self._seed_everything(self.config.seed)
            self._setup_data()
            self._setup_model()
            self._set_threads()
            self._setup_optimizer()
            self._setup_callbacks()
            self._setup_health()
            self.run_dir = self._setup_run_dir(resume_dir)
            if resume_dir is not None:
                self._load(resume_dir / _CHECKPOINT)
            if self.run_dir is not None:
                self._write_config()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ setup

    @staticmethod
    def _initial_config(
        config: TrainConfig | Mapping[str, Any] | None, resume_dir: Path | None
    ) -> TrainConfig:
        try:
            if resume_dir is None:
                if config is None:
                    cfg = TrainConfig()
                elif isinstance(config, TrainConfig):
                    cfg = config
                else:
                    cfg = TrainConfig.from_dict(config)
                return cfg.validate().resolve()
            if not (resume_dir / _CHECKPOINT).is_file() or not (resume_dir / _CONFIG).is_file():
                raise ConfigError(
                    f"cannot resume {resume_dir}: no {_CHECKPOINT} and {_CONFIG} there "
                    "(is it a run directory written by sparseopt train?)"
                )
            saved = load_config_file(resume_dir / _CONFIG)
            overrides: dict[str, Any] = {}
            if isinstance(config, TrainConfig):
                default = TrainConfig()
                overrides = {k: v for k, v in config.to_dict().items() if v != getattr(default, k)}
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
            return TrainConfig.from_dict(saved).resolve()
        except ConfigError:
            raise
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def _setup_distributed(self) -> None:
        import torch.distributed as dist

        env_world = int(os.environ.get("WORLD_SIZE", "1"))
        if dist.is_available() and dist.is_initialized():
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        elif env_world > 1:
            if not dist.is_available():  # pragma: no cover - builds without distributed
                raise ConfigError("WORLD_SIZE > 1 but torch.distributed is not available")
            local = int(os.environ.get("LOCAL_RANK", "0"))
            device = _device(self.config.device, local)
            backend = "nccl" if device.type == "cuda" else "gloo"
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group(backend=backend)
            self._created_pg = True
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        else:
            self.rank, self.world_size = 0, 1
        self.local_rank = int(os.environ.get("LOCAL_RANK", str(self.rank)))
        self.device = _device(self.config.device, self.local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.distributed = self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process is rank 0 (the one that prints and writes)."""
        return self.rank == 0

    @staticmethod
    def _seed_everything(seed: int) -> None:
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)  # noqa: NPY002 - seed the legacy global RNG too
        random.seed(seed)

    def _barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def _setup_data(self) -> None:
        from sparseopt.data import load_dataset

        cfg = self.config

        def load() -> Any:
            try:
                return load_dataset(
                    cfg.dataset,
                    data_dir=cfg.data_dir,
                    seed=cfg.seed,
                    val_fraction=cfg.val_fraction,
                    **cfg.dataset_options,
                )
            except FileNotFoundError:
                raise
            except (ValueError, TypeError) as err:
                raise ConfigError(str(err)) from None

        # Rank 0 first, so a dataset that writes a cache does not race with itself.
        if self.is_main:
            self.data = load()
        self._barrier()
        if not self.is_main:
            self.data = load()
        self.task = self.data.task
        if len(self.data.train) == 0:
            raise ConfigError(f"dataset {cfg.dataset!r} has no training samples")
        self._tensors: dict[str, tuple[Tensor, Tensor]] = {}
        for split in ("train", "val", "test"):
            x, y = getattr(self.data, split).tensors
            self._tensors[split] = (x.to(self.device), y.to(self.device))
        if cfg.augment:
            if self._tensors["train"][0].ndim != 4:
                raise ConfigError(
                    f"Invalid augment value: True; dataset {cfg.dataset!r} is not made of images"
                )
            from sparseopt.data.augment import random_crop_flip

            self._augment_fn: Callable[..., Tensor] | None = random_crop_flip
        else:
            self._augment_fn = None
        self._aug_gen = torch.Generator(device="cpu")
        self._perm_gen = torch.Generator(device="cpu")

    def _setup_model(self) -> None:
        from sparseopt.init import sparse_init_
        from sparseopt.models import build_model, get_model_spec

        cfg = self.config
        options = dict(cfg.model_options)
        try:
            spec_options = get_model_spec(cfg.model).options()
        except ValueError as err:
            raise ConfigError(str(err)) from None
        # Options the dataset describes (e.g. the teacher's patch size k and count r for
        # nooverlap) come from the dataset unless the user set any of them.
        described = {
            k: v
            for k, v in self.data.meta.items()
            if k in spec_options and isinstance(v, int) and not isinstance(v, bool)
        }
        if not set(described) & set(options):
            options.update(described)
        try:
            model = build_model(cfg.model, self.data.input_shape, self.data.num_classes, **options)
        except (ValueError, TypeError) as err:
            what = (
                f"{self.data.num_classes} classes"
                if self.task == "classification"
                else "regression, one output"
            )
            raise ConfigError(
                f"cannot build model {cfg.model!r} for dataset {cfg.dataset!r} (input "
                f"{tuple(self.data.input_shape)}, {what}): {err}"
            ) from None
        if cfg.init_density is not None and cfg.init_density < 1.0:
            gen = torch.Generator().manual_seed(cfg.seed)
            try:
                sparse_init_(
                    model,
                    cfg.init_density,
                    groups=cfg.init_groups,
                    distribution=cfg.init_distribution,
                    floor=cfg.init_floor,
                    generator=gen,
                )
            except ValueError as err:
                raise ConfigError(str(err)) from None
        model.to(self.device)
        self._check_output(model)
        self.model = model
        self.train_model: nn.Module = model
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(model, device_ids=ids)

    def _set_threads(self) -> None:
        """Apply ``config.threads``; by default small CPU networks run single-threaded.

        For networks under :data:`SMALL_MODEL_PARAMS` parameters the synchronisation of
        intra-op threads costs more than it saves (and, on a shared machine, much more),
        so unless ``threads`` or ``OMP_NUM_THREADS`` says otherwise they use one thread.
        :meth:`close` restores the previous setting.
        """
        threads = self.config.threads
        if (
            threads is None
            and self.device.type == "cpu"
            and "OMP_NUM_THREADS" not in os.environ
            and _count_params(self.model) < SMALL_MODEL_PARAMS
        ):
            threads = 1
        if threads is not None:
            torch.set_num_threads(threads)

    @torch.no_grad()
    def _check_output(self, model: nn.Module) -> None:
        x = self._tensors["train"][0][:1]
        was_training = model.training
        model.eval()
        try:
            out = model(x)
        except RuntimeError as err:
            raise ConfigError(
                f"model {self.config.model!r} cannot take inputs of shape "
                f"{tuple(self.data.input_shape)} from dataset {self.config.dataset!r}: "
                f"{str(err).splitlines()[0]}"
            ) from None
        finally:
            model.train(was_training)
        if self.task == "classification":
            want = (1, self.data.num_classes)
            ok = tuple(out.shape) == want
        else:
            want = (1,)
            ok = out.numel() == 1
        if not ok:
            raise ConfigError(
                f"model {self.config.model!r} outputs shape {tuple(out.shape)[1:]} per sample but "
                f"dataset {self.config.dataset!r} is {self.task} and needs {want[1:] or 'a scalar'}"
            )

    def _setup_optimizer(self) -> None:
        from sparseopt.optim.registry import create_optimizer, get_optimizer_info

        cfg = self.config
        self.optimizer_info = get_optimizer_info(cfg.optimizer)
        try:
            self.optimizer = create_optimizer(self.model, cfg.optimizer, **cfg.optimizer_kwargs())
        except (ValueError, TypeError) as err:
            raise ConfigError(str(err)) from None
        sched: (
            torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau | None
        )
        if cfg.schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizer, T_max=max(cfg.epochs, 1)
            )
        elif cfg.schedule == "step":
            sched = torch.optim.lr_scheduler.StepLR(
                self.optimizer, step_size=cfg.lr_step_size, gamma=cfg.lr_gamma
            )
        elif cfg.schedule == "multistep":
            sched = torch.optim.lr_scheduler.MultiStepLR(
                self.optimizer, milestones=list(cfg.lr_milestones), gamma=cfg.lr_gamma
            )
        elif cfg.schedule == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="min", factor=cfg.lr_gamma, patience=cfg.lr_patience
            )
        else:
            sched = None
        self.scheduler = sched

    def _setup_callbacks(self) -> None:
        """Put the structure callbacks of the config before the caller's callbacks.

        Always in the order PathRecorder (``record_path``), TargetDensity
        (``target_density``), GrowCallback (``grow_every``), so that the checkpoint
        keys ``"{i}:{Class}"`` of every callback are the same in a resumed run.
        """
        cfg = self.config
        user = self.callbacks
        builtin: list[Any] = []
        if cfg.record_path and not any(isinstance(cb, PathRecorder) for cb in user):
            builtin.append(PathRecorder())
        if cfg.target_density is not None:
            if any(isinstance(cb, TargetDensity) for cb in user):
                raise ConfigError(
                    f"target_density is set ({cfg.target_density:g}) and a TargetDensity "
                    "callback was passed too; use one of them"
                )
            if all(g.get("penalty", "none") == "none" for g in self.optimizer.param_groups):
                raise ConfigError(
                    f"Invalid target_density value: {cfg.target_density!r}; no weight is "
                    "penalised (penalty 'none'), so there is no λ to steer"
                )
            builtin.append(
                TargetDensity.for_optimizer(
                    cfg.optimizer, cfg.target_density, every_steps=cfg.target_density_every
                )
            )
        if cfg.grow_every is not None:
            if self.distributed:
                raise ConfigError(
                    f"Invalid grow_every value: {cfg.grow_every!r}; growing layers is not "
                    "supported in distributed runs (DistributedDataParallel keeps the old "
                    "parameters)"
                )
            try:
                widenable = layer_saturation(self.model, self.optimizer)
            except ValueError as err:
                raise ConfigError(
                    f"Invalid grow_every value: {cfg.grow_every!r}; model {cfg.model!r} "
                    f"cannot grow: {err}"
                ) from None
            if not widenable:
                raise ConfigError(
                    f"Invalid grow_every value: {cfg.grow_every!r}; model {cfg.model!r} has no "
                    "layer that can be widened (only a Conv/Linear layer followed by another "
                    "one can)"
                )
            builtin.append(GrowCallback(every=cfg.grow_every, tau=cfg.grow_tau, seed=cfg.seed))
        self.callbacks = [*builtin, *user]

    def _setup_health(self) -> None:
        """The stall/collapse monitor (:mod:`sparseopt.health`) and its probe batch."""
        cfg = self.config
        lr, lam = self._lr_lam()
        classes = self.data.num_classes if self.task == "classification" else None
        self.health = HealthMonitor(
            classes,
            patience=cfg.stall_epochs or 0,
            lr=lr,
            lam=lam,
            sparse=self.optimizer_info.sparse,
        )
        x = self._tensors["val"][0]
        if len(x) < 2:
            x = self._tensors["train"][0]
        self._probe = x[:256]

    def _check_health(self, row: Mapping[str, Any]) -> None:
        """Observe one epoch; print the monitor's warnings (rank 0)."""
        if not self.config.stall_epochs:
            return
        with self._deployed():
            constant = constant_output(self.model, self._probe)
        empty = empty_layers(row.get("layer_filters_alive") or {})
        for line in self.health.observe(row, constant_output=constant, empty_layers=empty):
            self.log(f"warning: {line}", always=True)

    def _out_error(self, run_dir: Path) -> str:
        """Why a fresh run may not write into ``run_dir`` ("" if it may); rank 0.

        A new or empty directory is fine, and so is a run directory of ours that
        never reached its first checkpoint (its ``log.txt`` starts with the run
        header). A run with a checkpoint is resumed, not replaced; any other existing
        directory needs ``overwrite``, and then only :data:`RUN_FILES` are replaced.
        """
        if run_dir.exists() and not run_dir.is_dir():
            return f"cannot use --out {run_dir}: it is a file, not a directory"
        if (run_dir / _CHECKPOINT).exists():
            return (
                f"{run_dir} already holds a run; resume it with --resume {run_dir} "
                "or choose another --out"
            )
        if not run_dir.is_dir():
            return ""
        present = sorted(p.name for p in run_dir.iterdir())
        if not present or self._own_fresh_run(run_dir):
            return ""
        replaced = [name for name in RUN_FILES if name in present]
        if not self.overwrite:
            shown = ", ".join(present[:5]) + (", …" if len(present) > 5 else "")
            clash = f"; --overwrite would replace {', '.join(replaced)}" if replaced else ""
            return (
                f"--out {run_dir} exists and is not a run directory (it holds {shown}); "
                f"choose a new --out, or pass --overwrite to train into it{clash} "
                "(other files are left alone)"
            )
        what = (
            f"files of these names are replaced: {', '.join(replaced)}"
            if replaced
            else "no file there has the name of a run output"
        )
        print(
            f"sparseopt: note: --overwrite: training into the existing directory {run_dir}; "
            f"{what}; other files are left alone",
            file=sys.stderr,
            flush=True,
        )
        return ""

    @staticmethod
    def _own_fresh_run(run_dir: Path) -> bool:
        """A run directory of ours stopped before its first checkpoint (nothing to keep)."""
        try:
            with open(run_dir / _LOG, encoding="utf-8") as f:
                first = f.readline()
        except (OSError, UnicodeDecodeError):
            return False
        allowed = set(RUN_FILES)
        return first.startswith("sparseopt train: ") and all(
            p.name in allowed for p in run_dir.iterdir()
        )

    def _setup_run_dir(self, resume_dir: Path | None) -> Path | None:
        cfg = self.config
        error = ""
        run_dir: Path | None = None
        if self.is_main:
            if resume_dir is not None:
                run_dir = resume_dir
            else:
                if cfg.out:
                    run_dir = Path(cfg.out)
                    error = self._out_error(run_dir)
                else:
                    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
                    base = Path("runs") / (cfg.name or f"{stamp}-{cfg.dataset}-{cfg.optimizer}")
                    run_dir, k = base, 1
                    while run_dir.exists():
                        k += 1
                        run_dir = base.with_name(f"{base.name}-{k}")
            if not error and run_dir is not None:
                try:
                    run_dir.mkdir(parents=True, exist_ok=True)
                    if resume_dir is None:
                        (run_dir / _LOG).unlink(missing_ok=True)  # a fresh run's own log
                except OSError as err:
                    error = f"cannot create run directory {run_dir}: {err.strerror or err}"
        if self.distributed:
            import torch.distributed as dist

            box = [str(run_dir) if run_dir is not None else "", error]
            dist.broadcast_object_list(box, src=0)
            run_dir_s, error = box
            run_dir = Path(run_dir_s) if run_dir_s else None
        if error:
            raise ConfigError(error)
        assert run_dir is not None
        self.config = cfg.replace(out=str(run_dir))
        if self.is_main:
            self._log_file = run_dir / _LOG
            return run_dir
        return None

    def _write_config(self) -> None:
        """Write ``config.yaml`` atomically, unless it already says the same (resume)."""
        import yaml

        assert self.run_dir is not None
        text = yaml.safe_dump(self.config.to_dict(), sort_keys=False, default_flow_style=None)
        path = self.run_dir / _CONFIG
        with contextlib.suppress(OSError):
            if path.read_text(encoding="utf-8") == text:
                return
        self._write(path, lambda p: atomic_write_text(p, text))

    def _write(self, path: Path, write: Callable[[Path], Any]) -> Any:
        """``write(path)``; a failure to write (disk full...) is one :class:`OutputWriteError`."""
        try:
            return write(path)
        except OSError as err:
            reason = err.strerror or str(err) or type(err).__name__
            raise OutputWriteError(self._write_failure(path, reason)) from None
        except RuntimeError as err:  # torch.save reports a failed write as a RuntimeError
            if "writ" not in str(err).lower():
                raise
            reason = " ".join(str(err).split())[:200]
            raise OutputWriteError(self._write_failure(path, reason)) from None

    def _write_failure(self, path: Path, reason: str) -> str:
        run = self.run_dir or self.config.out
        if (Path(run) / _CHECKPOINT).is_file():
            keep = (
                f"the previous {_CHECKPOINT} (epoch {self._saved_epoch}) is intact; free some "
                f"space and resume with: sparseopt train --resume {run}"
            )
        else:
            keep = "no checkpoint was written yet"
        return f"cannot write {path}: {reason}; {keep}"

    # ------------------------------------------------------------------ output

    def log(self, line: str, *, always: bool = False) -> None:
        """Print ``line`` (rank 0, unless quiet) and append it to ``log.txt``."""
        if not self.is_main:
            return
        if self._log_file is not None:
            log_file = self._log_file

            def append(path: Path) -> None:
                with open(path, "a", encoding="utf-8") as f:
                    f.write(line + "\n")

            self._write(log_file, append)
        if self.echo and (always or not self.config.quiet):
            print(line, flush=True)

    def _describe(self) -> str:
        cfg, d = self.config, self.data
        sizes = f"{len(d.train)} train / {len(d.val)} val / {len(d.test)} test"
        opt = f"{cfg.optimizer} lr {cfg.lr:g}" if cfg.lr is not None else cfg.optimizer
        if self.optimizer_info.sparse:
            pens = []
            for g in self.optimizer.param_groups:
                if g.get("penalty", "none") != "none":
                    grp = f"/{g['groups']}" if g.get("groups") else ""
                    pens.append(f"{g.get('name', 'w')} {g['penalty']}{grp} λ={g['lam']:g}")
            if pens:
                opt += " (" + ", ".join(pens) + ")"
        if cfg.target_density is not None:
            opt += (
                f", λ steered to density {100 * cfg.target_density:g}% "
                f"every {cfg.target_density_every} steps"
            )
        if cfg.grow_every is not None:
            opt += f", grow every {cfg.grow_every} epochs (τ = {cfg.grow_tau:g})"
        # The sparse start covers the penalisable weights; the epoch lines' "density"
        # counts every parameter (biases and norms too), so it starts higher.
        init = ""
        if cfg.init_density < 1:
            floor = " + at least one per unit" if cfg.init_floor else ""
            init = f", sparse start: {100 * cfg.init_density:g}% of weights{floor}"
        dist_s = f" × {self.world_size} processes" if self.distributed else ""
        return (
            f"sparseopt train: {cfg.dataset} ({sizes}), {cfg.model} "
            f"({_count_params(self.model):,} params{init}), {opt}, {cfg.epochs} epochs × "
            f"{self._batches_per_epoch()} batches of {cfg.batch_size}, "
            f"{self.device}{dist_s} → {self.run_dir}"
        )

    # ------------------------------------------------------------------ batches

    def _per_rank_batch(self) -> int:
        return max(1, math.ceil(self.config.batch_size / self.world_size))

    def _batches_per_epoch(self) -> int:
        n = len(self._tensors["train"][0])
        per_rank = math.ceil(n / self.world_size)
        k = math.ceil(per_rank / self._per_rank_batch())
        if self.config.limit_batches is not None:
            k = min(k, self.config.limit_batches)
        return k

    def epoch_batches(self, epoch: int) -> list[Tensor]:
        """This rank's index batches of epoch ``epoch`` (1-based), on the data's device.

        The permutation depends only on ``(seed, epoch)``; distributed ranks take the
        ``rank::world_size`` slice of it, padded like ``DistributedSampler``.
        """
        n = len(self._tensors["train"][0])
        self._perm_gen.manual_seed(_perm_seed(self.config.seed, epoch))
        perm = torch.randperm(n, generator=self._perm_gen)
        if self.distributed:
            total = math.ceil(n / self.world_size) * self.world_size
            if total > n:
                perm = torch.cat([perm, perm[: total - n]])
            perm = perm[self.rank :: self.world_size]
        batches = list(perm.to(self.device).split(self._per_rank_batch()))
        if self.config.limit_batches is not None:
            batches = batches[: self.config.limit_batches]
        return batches

    def _batch(self, idx: Tensor, epoch: int, step: int) -> tuple[Tensor, Tensor]:
        x, y = self._tensors["train"]
        xb, yb = x[idx], y[idx]
        if self._augment_fn is not None:
            self._aug_gen.manual_seed(_aug_seed(self.config.seed, epoch, step, self.rank))
            xb = self._augment_fn(xb, padding=4, generator=self._aug_gen)
        return xb, yb

    def loss_fn(self, out: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
        """Cross-entropy for classification, mean squared error for regression."""
        if self.task == "classification":
            return F.cross_entropy(out, y, reduction=reduction)
        return F.mse_loss(out.reshape(y.shape), y, reduction=reduction)

    # ------------------------------------------------------------------ evaluation

    def _deployed(self) -> contextlib.AbstractContextManager[Any]:
        deployed = getattr(self.optimizer, "deployed", None)
        return deployed() if deployed is not None else contextlib.nullcontext()

    @torch.no_grad()
    def _evaluate_split(self, split: str) -> tuple[float | None, float | None]:
        x, y = self._tensors[split]
        n = len(x)
        if n == 0:
            return None, None
        lo = n * self.rank // self.world_size
        hi = n * (self.rank + 1) // self.world_size
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.float64, device=self.device)
        bs = self.config.eval_batch_size
        for start in range(lo, hi, bs):
            xb, yb = x[start : min(start + bs, hi)], y[start : min(start + bs, hi)]
            out = self.model(xb)
            loss_sum += self.loss_fn(out, yb, reduction="sum").double()
            if self.task == "classification":
                correct += (out.argmax(dim=1) == yb).sum().double()
        stats = torch.stack([loss_sum, correct])
        if self.distributed:
            import torch.distributed as dist

            dist.all_reduce(stats)
        loss = float(stats[0]) / n
        acc = float(stats[1]) / n if self.task == "classification" else None
        return loss, acc

    def evaluate(self) -> dict[str, Any]:
        """Loss/accuracy on the validation and test parts and density, of the deployable network."""
        from sparseopt.metrics import density

        if self.distributed:
            # Each rank updated its batch-norm statistics on its own shard; evaluate (and
            # checkpoint) rank 0's, as DistributedDataParallel does at the next forward.
            import torch.distributed as dist

            for buf in self.model.buffers():
                dist.broadcast(buf, src=0)
        was_training = self.model.training
        self.model.eval()
        out: dict[str, Any] = {}
        try:
            with self._deployed():
                for split in ("val", "test"):
                    loss, acc = self._evaluate_split(split)
                    out[f"{split}_loss"] = loss
                    if self.task == "classification":
                        out[f"{split}_acc"] = acc
        finally:
            self.model.train(was_training)
        rep = density(self.model, self.optimizer)
        out["density"] = rep.overall
        out["weight_density"] = rep.weight_density
        out["nonzero"] = rep.nonzero
        out["params"] = rep.params
        out["layer_density"] = {name: layer.density for name, layer in rep.layers.items()}
        out["layer_filters_alive"] = {
            name: layer.filters_alive for name, layer in rep.layers.items()
        }
        return out

    def _lr_lam(self) -> tuple[float, float | None]:
        groups = self.optimizer.param_groups
        lr = float(groups[0]["lr"])
        lam = None
        for g in groups:
            if g.get("penalty", "none") != "none" and "lam" in g:
                lam = float(g["lam"])
                break
        return lr, lam

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume, as tensors and plain data (``weights_only`` loadable)."""
        cb_states = {}
        for i, cb in enumerate(self.callbacks):
            if hasattr(cb, "state_dict"):
                cb_states[f"{i}:{type(cb).__name__}"] = cb.state_dict()
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "step_in_epoch": self._step_in_epoch,
            "global_step": self.global_step,
            "elapsed": self.elapsed,
            "partial": dict(self._partial) if self._partial else None,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": {**_rng_state(), "perm": self._perm_gen.get_state()},
            "history": self.history,
            "callbacks": cb_states,
            "health": self.health.state_dict(),
            "config": self.config.to_dict(),
        }

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoint.pt`` atomically (rank 0); returns its path.

        Raises:
            OutputWriteError: the file could not be written (e.g. the disk is full); the
                previous checkpoint is intact.
        """
        state = self.state_dict()
        if not self.is_main or self.run_dir is None:
            return None
        path = self._write(self.run_dir / _CHECKPOINT, lambda p: atomic_torch_save(state, p))
        if self.config.keep_checkpoints and self._step_in_epoch == 0:
            kept = self.run_dir / "checkpoints" / f"epoch_{self.epoch:04d}.pt"
            self._write(kept, lambda p: atomic_torch_save(state, p))
        self._saved_epoch = self.epoch
        return path

    def _load(self, path: Path) -> None:
        try:
            ckpt = load_checkpoint(path)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        done = int(ckpt["epoch"])
        if self.config.epochs < done:
            raise ConfigError(
                f"cannot resume {path.parent} with --epochs {self.config.epochs}: it has "
                f"already trained {done} epoch{'' if done == 1 else 's'}; give --epochs {done} or "
                "more (nothing was "
                "changed)"
            )
        try:
            if self.config.grow_every is not None:
                match_widths(self.model, ckpt["model"], self.optimizer)
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            detail = " ".join(str(err).split()) or type(err).__name__
            if len(detail) > 600:
                detail = detail[:600] + " …"
            raise ConfigError(
                f"cannot load checkpoint {path}: it does not fit the model and optimizer built "
                f"from its config: {detail}"
            ) from None
        if self.scheduler is not None and ckpt.get("scheduler") is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        self.epoch = done
        self._saved_epoch = done
        self._step_in_epoch = int(ckpt["step_in_epoch"])
        self.global_step = int(ckpt["global_step"])
        self.elapsed = float(ckpt["elapsed"])
        partial = ckpt.get("partial")
        # The saved partial sums are global (all ranks); rank 0 carries them.
        if partial and self.is_main:
            self._partial = dict(partial)
        elif partial:
            self._partial = {k: 0.0 for k in partial}
        else:
            self._partial = None
        self.history = list(ckpt["history"])
        _set_rng_state(ckpt["rng"])
        self._perm_gen.set_state(ckpt["rng"]["perm"])
        # a checkpoint from before the health checks: count its epochs as observed
        self.health.load_state_dict(ckpt.get("health") or {"epochs_seen": int(ckpt["epoch"])})
        states = ckpt.get("callbacks") or {}
        for i, cb in enumerate(self.callbacks):
            key = f"{i}:{type(cb).__name__}"
            if key in states and hasattr(cb, "load_state_dict"):
                cb.load_state_dict(states[key])

    # ------------------------------------------------------------------ signals

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._stop_signal is None:
            self._stop_signal = signum
            # A second signal acts immediately (default behaviour).
            signal.signal(signum, self._old_handlers.get(signum, signal.SIG_DFL))

    def _install_signals(self) -> None:
        if not self.install_signal_handlers:
            return
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old_handlers[sig] = signal.getsignal(sig)
            signal.signal(sig, self._on_signal)

    def _restore_signals(self) -> None:
        for sig, handler in self._old_handlers.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._old_handlers = {}

    def _sync_flags(self, nonfinite: bool) -> tuple[bool, bool]:
        stop = self._stop_signal is not None
        if not self.distributed:
            return nonfinite, stop
        import torch.distributed as dist

        flags = torch.tensor([float(nonfinite), float(self._stop_signal or 0)], device=self.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        if flags[1] > 0 and self._stop_signal is None:
            self._stop_signal = int(flags[1])
        return bool(flags[0] > 0), bool(flags[1] > 0)

    def _interrupted(self, where: str) -> TrainingInterrupted:
        signum = int(self._stop_signal or signal.SIGINT)
        name = signal.Signals(signum).name
        return TrainingInterrupted(
            f"interrupted by {name} {where}; checkpoint saved in {self.run_dir or self.config.out}. "
            f"Resume with: sparseopt train --resume {self.run_dir or self.config.out}",
            signum=signum,
            run_dir=self.run_dir,
        )

    # ------------------------------------------------------------------ training

    def _smaller_lr_hint(self) -> str:
        """A command that retrains with a 10× smaller lr into a new directory.

        ``--resume`` keeps the learning rate of the run (it is part of the state being
        continued), so the way out of a divergence is a new run with the same settings:
        ``config.yaml`` of the run is a valid ``--config`` file and flags override it.
        """
        lr = self._lr_lam()[0] if self.config.lr is None else float(self.config.lr)
        new_lr = float(f"{lr / 10:.3g}")
        run = Path(self.run_dir or self.config.out or "run")
        base = run.with_name(f"{run.name}-lr{new_lr:g}")
        out, k = base, 1
        while out.exists():
            k += 1
            out = base.with_name(f"{base.name}-{k}")
        return (
            f"Try a 10x smaller lr (now {lr:g}) in a new run: sparseopt train --config "
            f"{run / _CONFIG} --lr {new_lr:g} --out {out}"
        )

    def _check_finite_model(self, what: str) -> None:
        """Stop (exit status 3) before a model with NaN/Inf weights is written as ``what``."""
        bad = non_finite(self.model)
        if self.distributed:  # every rank holds the same parameters; agree anyway
            import torch.distributed as dist

            flag = torch.tensor([float(bool(bad))], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if flag.item() and not bad:
                bad = ["(another rank)"]
        if not bad:
            return
        names = ", ".join(bad[:4]) + (", …" if len(bad) > 4 else "")
        ckpt = self.run_dir / _CHECKPOINT if self.run_dir is not None else None
        raise NonFiniteLossError(
            f"training diverged: after epoch {self.epoch} the network holds NaN/Inf in "
            f"{names}; {what} was not written. The last good checkpoint (epoch "
            f"{self._saved_epoch}) is {ckpt}. {self._smaller_lr_hint()}",
            epoch=self.epoch,
            step=-1,
            checkpoint=ckpt,
        )

    def _global_partial(self) -> dict[str, float]:
        part = dict(self._partial or {"loss_sum": 0.0, "correct": 0.0, "count": 0.0, "time": 0.0})
        if self.distributed:
            import torch.distributed as dist

            keys = ("loss_sum", "correct", "count")
            t = torch.tensor([part[k] for k in keys], dtype=torch.float64, device=self.device)
            dist.all_reduce(t)
            part.update({k: float(v) for k, v in zip(keys, t.tolist(), strict=True)})
        return part

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        batches = self.epoch_batches(epoch)
        start = self._step_in_epoch
        part = self._partial or {"loss_sum": 0.0, "correct": 0.0, "count": 0.0, "time": 0.0}
        t0 = time.perf_counter() - part["time"]
        bar = ProgressBar(
            len(batches),
            f"epoch {epoch}/{self.config.epochs}",
            enabled=None if (self.is_main and not self.config.quiet) else False,
            initial=start,
        )
        step_hooks = [
            cb.on_step_end for cb in self.callbacks if callable(getattr(cb, "on_step_end", None))
        ]
        self.train_model.train()
        try:
            for step in range(start, len(batches)):
                xb, yb = self._batch(batches[step], epoch, step)
                out = self.train_model(xb)
                loss = self.loss_fn(out, yb)
                loss_value = float(loss.detach())
                nonfinite, stop = self._sync_flags(not math.isfinite(loss_value))
                if nonfinite:
                    ckpt = self.run_dir / _CHECKPOINT if self.run_dir is not None else None
                    raise NonFiniteLossError(
                        f"training diverged: the loss is {loss_value} at epoch {epoch}, batch "
                        f"{step + 1}; the update was not applied. The last good checkpoint "
                        f"(epoch {self._saved_epoch}) is {ckpt}. {self._smaller_lr_hint()}",
                        epoch=epoch,
                        step=step,
                        checkpoint=ckpt,
                    )
                if stop:
                    self._step_in_epoch = step
                    part["time"] = time.perf_counter() - t0
                    self._partial = part
                    self._partial = self._global_partial()
                    bar.close()
                    self.save_checkpoint()
                    raise self._interrupted(f"during epoch {epoch} (after {step} batches)")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.global_step += 1
                for hook in step_hooks:
                    try:
                        hook(self, self.global_step)
                    except KeyboardInterrupt:  # stop at the next step, with a checkpoint
                        self._stop_signal = self._stop_signal or signal.SIGINT
                n = len(yb)
                part["loss_sum"] += loss_value * n
                part["count"] += n
                if self.task == "classification":
                    part["correct"] += float((out.detach().argmax(dim=1) == yb).sum())
                bar.update(loss=loss_value)
        finally:
            bar.close()
        part["time"] = time.perf_counter() - t0
        self._partial = part
        total = self._global_partial()
        row: dict[str, Any] = {"train_loss": total["loss_sum"] / max(total["count"], 1)}
        if self.task == "classification":
            row["train_acc"] = total["correct"] / max(total["count"], 1)
        row["train_time"] = total["time"]
        return row

    def fit(self) -> TrainResult:
        """Train to ``config.epochs`` (from the resumed point), then write the final outputs.

        Raises:
            TrainingInterrupted: SIGINT/SIGTERM (or ``KeyboardInterrupt`` in a callback);
                the checkpoint allows resuming.
            NonFiniteLossError: the loss became NaN/Inf.
        """
        cfg = self.config
        self._install_signals()
        try:
            self.log(self._describe())
            if self.is_main and self.run_dir is not None:
                self._tb = open_tensorboard(
                    self.run_dir / "tensorboard", cfg.tensorboard, lambda m: self.log(f"note: {m}")
                )
            if self.epoch > 0 or self._step_in_epoch > 0:
                self.log(
                    f"resuming from epoch {self.epoch}"
                    + (f", batch {self._step_in_epoch}" if self._step_in_epoch else "")
                )
            for cb in self.callbacks:
                hook = getattr(cb, "on_train_begin", None)
                if hook is not None:
                    hook(self)
            if not self.history:
                t0 = time.perf_counter()
                lr, lam = self._lr_lam()
                train_part: dict[str, Any] = {"train_loss": None, "train_time": 0.0}
                if self.task == "classification":
                    train_part["train_acc"] = None
                evaluation = self.evaluate()
                self.elapsed += time.perf_counter() - t0
                row = self._row(0, 0, train_part, evaluation, lr, lam, 0.0)
                self.history.append(row)
                self.save_checkpoint()
                self._emit(row)
            for epoch in range(self.epoch + 1, cfg.epochs + 1):
                self._run_epoch(epoch)
            return self._finish()
        finally:
            self._restore_signals()
            if self._tb is not None:
                self._tb.close()
                self._tb = None

    def _run_epoch(self, epoch: int) -> None:
        t_start = time.perf_counter()
        resumed_time = (self._partial or {}).get("time", 0.0)
        lr, lam = self._lr_lam()
        train_part = self._train_epoch(epoch)
        plateau = isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        if self.scheduler is not None and not plateau:
            self.scheduler.step()
        evaluation = self.evaluate()
        if plateau:
            monitored = evaluation.get("val_loss")
            if monitored is None:
                monitored = evaluation.get("test_loss", train_part.get("train_loss"))
            if monitored is not None:
                self.scheduler.step(float(monitored))  # type: ignore[union-attr]
        # resumed_time: the part of this epoch run before an interruption
        epoch_time = time.perf_counter() - t_start + resumed_time
        self.elapsed += epoch_time
        row = self._row(epoch, self.global_step, train_part, evaluation, lr, lam, epoch_time)
        self.epoch = epoch
        self._step_in_epoch = 0
        self._partial = None
        self.history.append(row)
        self._check_health(row)
        interrupted = False
        for cb in self.callbacks:
            hook = getattr(cb, "on_epoch_end", None)
            if hook is None:
                continue
            try:
                hook(self, epoch, row)
            except KeyboardInterrupt:
                interrupted = True
                if self._stop_signal is None:
                    self._stop_signal = signal.SIGINT
        _, stop = self._sync_flags(False)
        self._check_finite_model(_CHECKPOINT)
        self.save_checkpoint()
        self._emit(row)
        if stop or interrupted:
            raise self._interrupted(f"after epoch {epoch}")

    def _row(
        self,
        epoch: int,
        step: int,
        train_part: Mapping[str, Any],
        evaluation: Mapping[str, Any],
        lr: float,
        lam: float | None,
        epoch_time: float,
    ) -> dict[str, Any]:
        """One history row, keys in a fixed order (the CSV columns)."""
        row: dict[str, Any] = {"epoch": epoch, "step": step}
        keys = ["train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"]
        if self.task != "classification":
            keys = [k for k in keys if not k.endswith("_acc")]
        merged = {**train_part, **evaluation}
        for key in keys:
            row[key] = merged.get(key)
        for key in ("density", "weight_density", "nonzero", "params"):
            row[key] = merged[key]
        row["lr"], row["lam"] = lr, lam
        row["train_time"] = train_part.get("train_time")
        row["epoch_time"] = epoch_time
        row["elapsed"] = self.elapsed
        row["layer_density"] = merged["layer_density"]
        row["layer_filters_alive"] = merged["layer_filters_alive"]
        return row

    def _emit(self, row: Mapping[str, Any]) -> None:
        if not self.is_main:
            return
        self.log(format_epoch_line(row, self.config.epochs, self.task))
        if self.run_dir is not None:
            self._write(
                self.run_dir / "metrics.csv", lambda p: write_metrics(self.history, p.parent)
            )
        if self._tb is not None:
            for key, value in row.items():
                if key == "epoch":
                    continue
                if isinstance(value, (int, float)) and value is not None:
                    self._tb.add_scalar(key, value, row["epoch"])
                elif isinstance(value, Mapping):
                    for sub, v in value.items():
                        if isinstance(v, (int, float)):
                            self._tb.add_scalar(f"{key}/{sub}", v, row["epoch"])
            self._tb.flush()

    def _finish(self) -> TrainResult:
        from sparseopt.metrics import density

        final = dict(self.history[-1])
        result = TrainResult(
            config=self.config,
            run_dir=self.run_dir,
            history=self.history,
            metrics=final,
            wall_time=self.elapsed,
            model=self.model,
            optimizer=self.optimizer,
            health=self.health.summary(),
            sizes={split: len(t[0]) for split, t in self._tensors.items()},
        )
        if self.is_main and self.run_dir is not None:
            with self._deployed():
                sparse_state = {
                    k: v.detach().clone().cpu() for k, v in self.model.state_dict().items()
                }
            bad = non_finite(sparse_state)
            if bad:
                raise NonFiniteLossError(
                    f"the deployable network holds NaN/Inf in {', '.join(bad[:4])}; "
                    f"model_sparse.pt was not written. {self._smaller_lr_hint()}",
                    epoch=self.epoch,
                    step=-1,
                    checkpoint=self.run_dir / _CHECKPOINT,
                )
            self._write(
                self.run_dir / "model_sparse.pt", lambda p: atomic_torch_save(sparse_state, p)
            )
            rep = density(self.model, self.optimizer)
            layers = rep.to_dict()["layers"]
            summary = {
                "metrics": final,
                **result.health,
                "wall_time": self.elapsed,
                "layers": layers,
                "config": self.config.to_dict(),
            }
            grow = self._grow_callback()
            if grow is not None:
                summary["grown"] = grow.state_dict()["history"]
            summary["sizes"] = dict(result.sizes)
            text = json.dumps(summary, indent=2, default=str) + "\n"
            self._write(self.run_dir / "summary.json", lambda p: atomic_write_text(p, text))
            if self.config.plots:
                self._plots(layers)
            for line in self._summary_lines(final, layers):
                self.log(line, always=True)
        for cb in self.callbacks:
            hook = getattr(cb, "on_train_end", None)
            if hook is not None:
                hook(self, result)
        return result

    def _grow_callback(self) -> GrowCallback | None:
        return next((cb for cb in self.callbacks if isinstance(cb, GrowCallback)), None)

    def _plots(self, layers: Mapping[str, Any]) -> None:
        assert self.run_dir is not None
        try:
            from sparseopt.plots import plot_history, plot_layer_density
        except ImportError:  # pragma: no cover - matplotlib missing
            self.log("note: plots skipped (matplotlib is not installed)")
            return
        title = f"{self.config.dataset} / {self.config.model} / {self.config.optimizer}"
        plot_history(self.history, self.run_dir, self.task, title)
        if layers:
            plot_layer_density(layers, self.run_dir / "layer_density.png", title)

    def _summary_lines(self, final: Mapping[str, Any], layers: Mapping[str, Any]) -> list[str]:
        if self.task == "classification":
            perf = f"test acc {100 * final['test_acc']:.2f}%"
            if final.get("val_acc") is not None:
                perf += f" (val {100 * final['val_acc']:.2f}%)"
        else:
            perf = f"test loss {final['test_loss']:.4g}"
            if final.get("val_loss") is not None:
                perf += f" (val {final['val_loss']:.4g})"
        lines = [
            f"done: {perf}, density {100 * final['density']:.2f}% "
            f"({final['nonzero']:,} of {final['params']:,} parameters nonzero; "
            f"weights {100 * final['weight_density']:.2f}%), "
            f"{self.epoch} epochs in {format_duration(self.elapsed)}"
        ]
        if layers:
            parts = [
                f"{name} {100 * info['density']:.1f}% ({info['filters_alive']}/{info['filters']})"
                for name, info in layers.items()
            ]
            if len(parts) > 8:
                parts = [*parts[:4], "…", *parts[-3:]]
            lines.append("layers (nonzero weights, live filters/neurons): " + ", ".join(parts))
        grow = self._grow_callback()
        if grow is not None:
            lines.append(grow.summary())
        if self.health.status != "ok":
            health = self.health.summary()
            lines.append(f"FAILED — {health['reason']}; {health['hint']}".rstrip("; "))
        lines.append(f"run directory: {self.run_dir}")
        return lines

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Restore the thread count and the caller's global RNG states; tear down the
        process group if this trainer created it.

        :func:`train` calls it; with a :class:`Trainer` of your own, call it (or use the
        trainer as a context manager: ``with Trainer(cfg) as t: t.fit()``).
        """
        torch.set_num_threads(self._saved_threads)
        if self._caller_rng is not None:  # training leaves the global RNGs as it found them
            _set_rng_state(self._caller_rng)
            self._caller_rng = None
        if self._created_pg:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self._created_pg = False


def train(
    config: TrainConfig | Mapping[str, Any] | None = None,
    *,
    callbacks: Sequence[Any] = (),
    resume: str | os.PathLike[str] | None = None,
    install_signal_handlers: bool = True,
    echo: bool = True,
    overwrite: bool = False,
) -> TrainResult:
    """Run one training job end to end (see the module docstring).

    Args:
        config: a :class:`TrainConfig` or a mapping of its fields (``None``: the default
            job); with ``resume``, the fields to change (e.g. ``{"epochs": 50}``).
        callbacks: objects with some of the :class:`Callback` hooks.
        resume: a run directory to continue from its latest checkpoint.
        install_signal_handlers: turn SIGINT/SIGTERM into a checkpoint and
            :class:`TrainingInterrupted` (main thread only).
        echo: print progress lines and the summary to stdout (``log.txt`` is always written).
        overwrite: allow ``config.out`` to be an existing directory that is not a run
            directory (see :class:`Trainer`).

    Returns:
        The :class:`TrainResult`.

    Raises:
        ConfigError: invalid configuration (names, options, run directory).
        sparseopt.data.DatasetNotFoundError: the dataset's files are missing.
        TrainingInterrupted: SIGINT/SIGTERM; resume with ``train(resume=run_dir)``.
        NonFiniteLossError: the loss (or a weight) became NaN/Inf; the last good
            checkpoint is kept and no model with NaN/Inf weights is written.
        OutputWriteError: a file could not be written (disk full); the previous version
            of every file is intact.
    """
    trainer = Trainer(
        config,
        callbacks,
        resume=resume,
        install_signal_handlers=install_signal_handlers,
        echo=echo,
        overwrite=overwrite,
    )
    try:
        return trainer.fit()
    finally:
        trainer.close()
