"""Training engine: loop, evaluation, checkpoints, faults, logging and DDP.

A package of free-standing parts that the loop calls down into (nothing below reaches
back up):

- :mod:`~sparseopt.engine.build`: the one place that turns a
  :class:`~sparseopt.config.TrainConfig` into dataset, model, optimizer, schedule and
  callbacks (used by ``train``, ``compare``, ``prune`` and the benchmarks);
- :mod:`~sparseopt.engine.checkpoint`: RNG states, atomic save, checked load;
- :mod:`~sparseopt.engine.rundir`: the run directory and every file written there;
- :mod:`~sparseopt.engine.distributed`: process group, rank-0 output, collectives;
- :mod:`~sparseopt.engine.evaluate`: loss, accuracy and densities of the deployable network;
- :mod:`~sparseopt.engine.batches`: seeded, rank-sharded index batches;
- :mod:`~sparseopt.engine.signals`: SIGINT/SIGTERM as a stop request;
- :mod:`~sparseopt.engine.report`: the header, epoch rows and closing lines;
- :mod:`~sparseopt.engine.callbacks`: :class:`Callback`, :class:`TrainResult`;
- :mod:`~sparseopt.engine.trainer`: the loop (:class:`Trainer`, :func:`train`);
- :mod:`~sparseopt.engine.errors`: the exceptions the commands turn into exit codes;
- :mod:`~sparseopt.engine.judge`: the failure detection's verdict on a finished run's
  final network, after the fact (the pruning baselines of ``compare``).

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
  by supp Γ for SplitLBI, u for RVSM) on the validation part after every epoch (and
  once before training, epoch 0), with its density overall and per layer, and on the
  test part at the last epoch and every ``test_every`` epochs (every epoch when there
  is no validation part);
- writes a run directory (:mod:`sparseopt.engine.rundir` lists its files).

Checkpoints: ``checkpoint.pt`` at the start, after an epoch once ``checkpoint_seconds``
have passed since the last one (:class:`~sparseopt.engine.checkpoint.CheckpointClock`),
after the last epoch and on interruption. Faults: SIGINT/SIGTERM finish the current
step, checkpoint (mid-epoch if need be) and raise :class:`TrainingInterrupted`; resuming (``train(resume=run_dir)``) continues to
bitwise the same weights and metrics on CPU as an uninterrupted run. A non-finite loss
raises :class:`NonFiniteLossError` before the update, leaving the last good checkpoint.

Structure tools from the config, run as callbacks before the user's ones and always in
this order (so their checkpoint keys are stable and ``--resume`` restores them):
:class:`~sparseopt.path.PathRecorder` (``record_path``, on by default; a
``PathRecorder`` among the user's callbacks replaces it),
:class:`~sparseopt.control.TargetDensity` (``target_density``: λ is steered every
``target_density_every`` steps) and :class:`~sparseopt.prune.grow.GrowCallback`
(``grow_every``/``grow_tau``: saturated layers are widened; resuming such a run widens
the freshly built model to the checkpoint's layer widths before loading it), then
:class:`~sparseopt.control.LamWarmup` (``lam_warmup`` without ``target_density``).

Callbacks: any object with some of ``on_train_begin(trainer)``,
``on_before_optimizer_step(trainer, optimizer)`` (after the backward pass, before
clipping and the step), ``on_step_end(trainer, step)``, ``on_epoch_end(trainer, epoch, metrics)``,
``on_train_end(trainer, result)`` (see
:class:`Callback`). ``on_epoch_end`` runs on every rank after evaluation and before the
epoch's checkpoint (if one is due), so it may change the optimizer (e.g. ``optimizer.set_lam``) or add
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

from sparseopt.config import TrainConfig  # re-exported: engine.TrainConfig, as before
from sparseopt.engine.build import SMALL_MODEL_PARAMS
from sparseopt.engine.checkpoint import CHECKPOINT_FORMAT, load_checkpoint
from sparseopt.engine.errors import (
    EXIT_DIVERGED,
    ConfigError,
    NonFiniteLossError,
    OutputWriteError,
    TrainingError,
    TrainingInterrupted,
)
from sparseopt.engine.rundir import RUN_FILES, TIME_KEYS
from sparseopt.engine.trainer import Callback, CallbackProtocol, Trainer, TrainResult, train

__all__ = [
    "CHECKPOINT_FORMAT",
    "EXIT_DIVERGED",
    "RUN_FILES",
    "SMALL_MODEL_PARAMS",
    "TIME_KEYS",
    "Callback",
    "CallbackProtocol",
    "ConfigError",
    "NonFiniteLossError",
    "OutputWriteError",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingError",
    "TrainingInterrupted",
    "load_checkpoint",
    "train",
]
