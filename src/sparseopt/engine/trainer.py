"""The training loop: :class:`Trainer` and :func:`train`.

The loop calls down into the engine's parts and nothing below reaches back up:
:mod:`~sparseopt.engine.build` (config → data, model, optimizer, schedule, callbacks),
:mod:`~sparseopt.engine.distributed` (process group, collectives),
:mod:`~sparseopt.engine.evaluate` (the deployable network's loss, accuracy),
:mod:`~sparseopt.engine.checkpoint` (resume state) and
:mod:`~sparseopt.engine.rundir` (the files). See :mod:`sparseopt.engine` for what a
run does.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sparseopt import fsdp
from sparseopt.config import TrainConfig
from sparseopt.control import TargetDensity, penalised_density, target_miss
from sparseopt.engine import checkpoint, distributed
from sparseopt.engine.batches import Batches
from sparseopt.engine.build import (
    build,
    eval_batch_size,
    extend_cosine,
    flush_denormals,
    lr_lam,
    set_flush_denormal_all,
)
from sparseopt.engine.callbacks import Callback, CallbackProtocol, TrainResult
from sparseopt.engine.checkpoint import CHECKPOINT_FILE, CHECKPOINT_FORMAT
from sparseopt.engine.errors import (
    ConfigError,
    NonFiniteLossError,
    TrainingInterrupted,
    diverged,
    interrupted,
)
from sparseopt.engine.evaluate import deployed, evaluate_deployed, loss_fn
from sparseopt.engine.refit import Refit
from sparseopt.engine.report import (
    epoch_row,
    failure_line,
    smaller_lr_hint,
    summary_lines,
    summary_record,
)
from sparseopt.engine.rundir import RunDir, claim, tensorboard_row
from sparseopt.engine.signals import StopSignals
from sparseopt.engine.warmup import LinearWarmup, warmup_steps
from sparseopt.groups import layer_lams
from sparseopt.health import empty_layers, probe_constant
from sparseopt.logging_utils import ProgressBar, format_epoch_line, open_tensorboard
from sparseopt.prune._files import non_finite

__all__ = ["Callback", "CallbackProtocol", "TrainResult", "Trainer", "train"]

#: The keys of an epoch's partial sums that are summed over the ranks (each rank's share
#: of the batch); the others (the time, the gradient norms) are every rank's alike.
SUMMED_PARTIAL = ("loss_sum", "correct", "count")

#: The weight of the past in ``clip_grad_ratio``'s running mean of the gradient norms, per
#: step (its memory about 1/(1 - β) = 50 steps: an epoch of the words CNN's study runs).
GRAD_EMA_BETA = 0.98


class Trainer:
    """One training run (see :mod:`sparseopt.engine`); :func:`train` is the usual entry.

    Args:
        config: the configuration (a :class:`TrainConfig` or a mapping of its fields);
            with ``resume``, the fields to change (see
            :func:`~sparseopt.engine.checkpoint.initial_config`) or ``None``.
        callbacks: objects with some of the :class:`Callback` hooks; they run after the
            structure callbacks the config asks for (:func:`~sparseopt.engine.build.build_callbacks`).
        resume: a run directory to continue from its latest checkpoint.
        install_signal_handlers: catch SIGINT/SIGTERM during :meth:`fit` (main thread only).
        echo: print to stdout (``False``: only ``log.txt`` and the progress bar).
        overwrite: allow ``config.out`` to be an existing directory that is not a run
            directory; the files a run writes (:data:`~sparseopt.engine.rundir.RUN_FILES`)
            are replaced there (a note on stderr lists them) and every other file is left alone.

    Raises:
        ConfigError: unknown dataset/model/optimizer, invalid options, a run directory
            that already holds a run (without ``resume``), an existing directory that
            is not a run directory (without ``overwrite``), a resume without checkpoint,
            a resume to fewer epochs than the checkpoint has done.
        sparseopt.data.DatasetNotFoundError: the dataset's files are missing.

    Attributes:
        config, data, model, optimizer, scheduler, run_dir, history, epoch (completed
        epochs), global_step, rank, world_size, device, distributed, is_main.
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
        self.echo = echo
        self.install_signal_handlers = install_signal_handlers
        self._signals = StopSignals()
        self._tb: Any = None
        self._files: RunDir | None = None
        self._adopt(distributed.Dist())
        self.history: list[dict[str, Any]] = []
        self.epoch = 0
        self.global_step = 0
        self.elapsed = 0.0
        self._partial: dict[str, float] | None = None
        self._grad_ema: float | None = None  # clip_grad_ratio's running mean of the norms
        # lr and λ at the start of the running epoch (its row's), kept through a resume
        self._epoch_lr_lam: tuple[float, float | None] | None = None
        self._epoch_layer_lam: dict[str, float] | None = None  # likewise, per layer
        self._step_in_epoch = 0
        self._saved_epoch = 0  # epoch of the last checkpoint written or loaded
        self._saved_threads = torch.get_num_threads()
        self._flushed = False  # whether this trainer turned on flushing of subnormals
        self._flush_threads = 1  # the intra-op thread count it was turned on at
        self._caller_rng: dict[str, Any] | None = checkpoint.rng_state()
        resume_dir = Path(resume) if resume is not None else None
        own_controller = any(isinstance(cb, TargetDensity) for cb in self.callbacks)
        self.config = checkpoint.initial_config(config, resume_dir, own_controller=own_controller)
        try:
            self._adopt(distributed.setup(self.config.device))
            checkpoint.seed_everything(self.config.seed)
            self._setup(build(self.config, ctx=self.dist, callbacks=self.callbacks))
            # at the run's thread count (build sets it): the team that will train
            self._flushed = flush_denormals(self.dist.device)
            self._flush_threads = torch.get_num_threads()
            run_dir = claim(self.config, resume_dir, overwrite, self.dist)
            self.config = self.config.replace(out=str(run_dir))
            self._clock = checkpoint.CheckpointClock(self.config.checkpoint_seconds, self.dist)
            self.run_dir = run_dir if self.is_main else None
            if self.run_dir is not None:
                self._files = RunDir(self.run_dir, lambda: self._saved_epoch)
            if resume_dir is not None:
                self._load(resume_dir / CHECKPOINT_FILE)
            if self._files is not None:
                self._files.write_config(self.config)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ setup

    def _setup(self, built: Any) -> None:
        """Take the built objects; wrap the model for DDP; the health monitor."""
        self.data, self.task, self._tensors = built.data, built.task, built.tensors
        self.model, self.optimizer, self.scheduler = built.model, built.optimizer, built.scheduler
        self.optimizer_info, self.callbacks = built.info, built.callbacks
        self.train_model: nn.Module = self.model
        if self.dist.distributed and not self.config.fsdp:  # FSDP2: build() sharded it
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=ids)
        cfg = self.config
        self.batches = Batches(
            *self._tensors["train"],
            seed=cfg.seed,
            batch_size=cfg.batch_size,
            limit=cfg.limit_batches,
            augment=cfg.augment,
            ctx=self.dist,
        )
        self.health, self._probe = built.health, built.probe
        self._refit = Refit(cfg.epochs, cfg.refit, self.optimizer)
        # the run's lr warm-up counts the trainer's steps from the first (a resumed run's
        # global step comes from its checkpoint); the refit's optimizer has its own
        steps = warmup_steps(cfg.warmup, self.batches_per_epoch())
        self._warmup = LinearWarmup(steps, lambda: self.global_step)
        self._warmup.attach(self.optimizer)

    def _adopt(self, ctx: distributed.Dist) -> None:
        """This process's place: ``dist``, ``rank``, ``world_size``, ``device``,
        ``distributed``, ``is_main`` (rank 0: the one that prints and writes)."""
        self.dist, self.rank, self.world_size = ctx, ctx.rank, ctx.world_size
        self.device, self.distributed, self.is_main = ctx.device, ctx.distributed, ctx.is_main

    def _check_health(self, row: Mapping[str, Any]) -> None:
        """Observe one epoch; print the monitor's warnings (rank 0)."""
        if not self.config.stall_epochs:
            return
        with deployed(self.optimizer):
            constant, scores = probe_constant(self.model, self._probe, self.health.num_classes)
        empty = empty_layers(row.get("layer_filters_alive") or {})
        for line in self.health.observe(
            row, constant_output=constant, empty_layers=empty, constant_scores=scores
        ):
            self.log(f"warning: {line}", always=True)

    def log(self, line: str, *, always: bool = False) -> None:
        """Print ``line`` (rank 0, unless quiet) and append it to ``log.txt``."""
        if not self.is_main:
            return
        if self._files is not None:
            self._files.log(line)
        if self.echo and (always or not self.config.quiet):
            print(line, flush=True)

    # ------------------------------------------------------------------ batches, evaluation

    @property
    def in_refit(self) -> bool:
        """Whether the refit has begun (``trainer.optimizer`` is then the refit's optimizer, without λ)."""
        return self._refit.active

    @property
    def sparse_epochs(self) -> int:
        """Epochs of the sparse optimizer: all of them, less a refit's (``config.refit``)."""
        return self.config.epochs - self._refit.epochs

    @property
    def warmup_steps(self) -> int:
        """:math:`K`, the steps of the run's lr warm-up (``config.warmup``; 0: none)."""
        return self._warmup.steps

    def lr_factor(self) -> float:
        """The factor the run's lr warm-up (``config.warmup``) gives the lr of the next
        step of the sparse phase, 1 after it: a controller coupled to the lr
        (``TargetDensity(lr_coupled=True)``) reads the group's lr times this, since the
        warm-up's hooks leave the group holding the schedule's."""
        return self._warmup.factor()

    def batches_per_epoch(self) -> int:
        """Number of optimizer steps per epoch (this rank's)."""
        return len(self.batches)

    def epoch_batches(self, epoch: int) -> list[Tensor]:
        """This rank's index batches of epoch ``epoch`` (1-based) (:mod:`~sparseopt.engine.batches`)."""
        return self.batches.epoch(epoch)

    def loss_fn(self, out: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
        """Cross-entropy for classification, mean squared error for regression."""
        return loss_fn(self.task, out, y, reduction)

    def evaluate(self, splits: tuple[str, ...] = ("val", "test")) -> dict[str, Any]:
        """Loss/accuracy on ``splits`` and density, of the deployable network."""
        batch = eval_batch_size(self.config, self.device)
        return evaluate_deployed(
            self.model, self.optimizer, self._tensors, self.task, batch, self.dist, splits
        )

    def _splits(self, epoch: int) -> tuple[str, ...]:
        """What epoch ``epoch`` evaluates: validation always; the test split at the last
        epoch, every ``test_every`` epochs, or every epoch without a validation split."""
        every = self.config.test_every
        if epoch == self.config.epochs:
            return ("val", "test")
        if every is None:
            return ("val", "test") if len(self._tensors["val"][0]) == 0 else ("val",)
        return ("val", "test") if epoch % every == 0 else ("val",)

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self, *, sharded: str | None = None) -> dict[str, Any]:
        """Everything needed to resume, as tensors and plain data (``weights_only`` loadable).

        ``sharded``: the shard directory (relative to the run directory) that holds the
        model and optimizer state instead (a sharded run's checkpoint,
        :meth:`save_checkpoint`); ``model`` and ``optimizer`` are then ``None``.
        """
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "step_in_epoch": self._step_in_epoch,
            "global_step": self.global_step,
            "elapsed": self.elapsed,
            "partial": dict(self._partial) if self._partial else None,
            "grad_ema": self._grad_ema,
            "epoch_lr_lam": list(self._epoch_lr_lam) if self._step_in_epoch else None,
            "epoch_layer_lam": self._epoch_layer_lam if self._step_in_epoch else None,
            "model": None if sharded else fsdp.full_state(self.model.state_dict()),
            "optimizer": None if sharded else fsdp.full_optimizer_state(self.optimizer),
            **({"sharded": sharded} if sharded else {}),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": {**checkpoint.rng_state(), "perm": self.batches.perm_gen.get_state()},
            "history": self.history,
            "callbacks": checkpoint.callback_states(self.callbacks),
            "health": self.health.state_dict(),
            "refit": self._refit.state_dict(),
            "config": self.config.to_dict(),
        }

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoint.pt`` atomically (rank 0); returns its path.

        A sharded (FSDP2) model's parameters and optimizer state go to
        ``checkpoint.dcp/epoch-NNNN`` first, every rank writing its own shards with
        ``torch.distributed.checkpoint`` (into a temporary directory that rank 0 then
        renames); ``checkpoint.pt`` names that directory. Every rank calls it.

        Raises:
            OutputWriteError: the file could not be written (e.g. the disk is full); the
                previous checkpoint is intact.
        """
        # a stop at the switch must not overwrite the kept checkpoint of the sparse epochs
        switched = self._refit.active and self.epoch == self._refit.first_epoch - 1
        keep = self.config.keep_checkpoints and self._step_in_epoch == 0 and not switched
        sharded = None
        if fsdp.is_sharded_model(self.model):  # collective: every rank writes its shards
            sharded = checkpoint.save_shards(
                self.model,
                self.optimizer,
                self.config.out,
                self.epoch,
                self._step_in_epoch,
                self._files.publish_shards if self._files is not None else None,
                "-refit" if switched else "",
            )
        state = self.state_dict(sharded=sharded)
        if self._files is None:
            return None
        path = self._files.save_checkpoint(state, self.epoch if keep else None)
        if sharded is not None:
            self._files.drop_shards(but=sharded, kept=self.config.keep_checkpoints)
        self._saved_epoch = self.epoch
        return path

    def _load(self, path: Path) -> None:
        ckpt = checkpoint.load_for_resume(path, self.config.epochs)
        done = int(ckpt["epoch"])
        refit = ckpt.get("refit")
        if refit is not None:  # a checkpoint of the refit: its optimizer, schedule and masks
            self._refit.resume(self, int(ckpt["config"]["epochs"]))
            self._refit_hints()
        if fsdp.is_sharded_model(self.model) and not ckpt.get("sharded"):
            ckpt = checkpoint.cut_to_shards(ckpt, self.model, self.optimizer)
        checkpoint.restore_weights(
            ckpt, path, self.model, self.optimizer, grown=self.config.grow_every is not None
        )
        if refit is not None:
            self._refit.load_state_dict(refit)
        if self.scheduler is not None and ckpt.get("scheduler") is not None:
            t_max = getattr(self.scheduler, "T_max", None)  # the cosine of this run's length
            self.scheduler.load_state_dict(ckpt["scheduler"])
            if t_max is not None and refit is None and self.scheduler.T_max != t_max:
                extend_cosine(self.scheduler, t_max, done)  # an extended run
        self.epoch = self._saved_epoch = done
        self._step_in_epoch = int(ckpt["step_in_epoch"])
        self.global_step = int(ckpt["global_step"])
        self.elapsed = float(ckpt["elapsed"])
        partial = ckpt.get("partial")  # global sums (all ranks): rank 0 carries them
        ema = ckpt.get("grad_ema")  # absent before 2026-11-29 (no clip_grad_ratio then)
        self._grad_ema = None if ema is None else float(ema)
        self._partial = None
        lr_lam_saved = ckpt.get("epoch_lr_lam")  # absent before 2026-11-27: read it now
        self._epoch_lr_lam = (
            (float(lr_lam_saved[0]), None if lr_lam_saved[1] is None else float(lr_lam_saved[1]))
            if lr_lam_saved
            else None
        )
        # absent before 2026-11-27: where the epoch's lr and λ were kept, its layers' λs
        # are unknown, and its row goes without them ({}); else read at the epoch's start
        layer_lam_saved = ckpt.get("epoch_layer_lam")
        self._epoch_layer_lam = (
            dict(layer_lam_saved) if layer_lam_saved is not None else ({} if lr_lam_saved else None)
        )
        if partial:  # the other ranks' shares of the sums are in rank 0's; the gradient
            # norms (and the time) are every rank's alike
            self._partial = {
                k: v if self.is_main or k not in SUMMED_PARTIAL else 0.0 for k, v in partial.items()
            }
        self.history = list(ckpt["history"])
        checkpoint.set_rng_state(ckpt["rng"])
        self.batches.perm_gen.set_state(ckpt["rng"]["perm"])
        # a checkpoint from before the health checks: count its epochs as observed
        self.health.load_state_dict(ckpt.get("health") or {"epochs_seen": done})
        try:  # a callback that refuses the state it saved refuses this resume
            checkpoint.load_callback_states(self.callbacks, ckpt.get("callbacks") or {})
        except ValueError as err:
            if isinstance(err, ConfigError):
                raise
            raise ConfigError(f"cannot resume {path.parent}: {err}") from err

    def _interrupted(self, where: str) -> TrainingInterrupted:
        return interrupted(self._signals.signum, where, self.run_dir, self.config.out)

    # ------------------------------------------------------------------ training

    def _target_miss(self) -> list[str]:
        """The end-of-run warning of a target density that was missed, from the penalised
        density the controller measured last, or the network's when it never updated (held
        through a warm-up as long as the run); a refit warned already when it began."""
        ctl = next((cb for cb in self.callbacks if isinstance(cb, TargetDensity)), None)
        if ctl is None or self._refit.epochs:
            return []
        miss = target_miss(
            ctl.target,
            ctl.history[-1][1] if ctl.history else penalised_density(self.optimizer),
            self.config.optimizer,
            init_density=self.config.init_density,
            ramp=ctl.ramp,
            groups_start_alive=self.config.groups_start_alive(),
        )
        return [miss] if miss else []

    def _refit_hints(self) -> None:
        """A failure that begins in the refit gets the refit's lr as its hint (the support is
        fixed); one from before keeps the sparse phase's."""
        self.health.refit_lr = self._refit.lr
        self.health.refit_from = self._refit.first_epoch
        self.health.refit_warmup = float(self.config.refit_warmup or 0.0)

    def _smaller_lr_hint(self) -> str:
        run = Path(self.run_dir or self.config.out or "run")
        if self._refit.active:  # the refit's optimizer diverged: its own (starting) lr
            return smaller_lr_hint(run, self._refit.lr, "--refit-lr")
        lr = lr_lam(self.optimizer)[0] if self.config.lr is None else float(self.config.lr)
        return smaller_lr_hint(run, lr)

    def _diverged(self, what: str, *, epoch: int, step: int) -> NonFiniteLossError:
        ckpt = self.run_dir / CHECKPOINT_FILE if self.run_dir is not None else None
        return diverged(what, epoch, step, ckpt, self._saved_epoch, self._smaller_lr_hint())

    def _check_finite_model(self, what: str) -> None:
        """Stop (exit status 3) before a model with NaN/Inf weights is written as ``what``."""
        bad = non_finite(self.model)
        # every rank holds the same parameters; agree anyway
        if distributed.any_rank(bool(bad), self.dist) and not bad:
            bad = ["(another rank)"]
        if not bad:
            return
        names = ", ".join(bad[:4]) + (", …" if len(bad) > 4 else "")
        msg = f"after epoch {self.epoch} the network holds NaN/Inf in {names}; {what} was not"
        raise self._diverged(msg + " written", epoch=self.epoch, step=-1)

    def _global_partial(self) -> dict[str, float]:
        part = dict(self._partial or {"loss_sum": 0.0, "correct": 0.0, "count": 0.0, "time": 0.0})
        return distributed.sum_over_ranks(part, SUMMED_PARTIAL, self.dist)

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        batches = self.batches.epoch(epoch)
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
        pre_step_hooks = [
            cb.on_before_optimizer_step
            for cb in self.callbacks
            if callable(getattr(cb, "on_before_optimizer_step", None))
        ]
        clip = self.config.clips()
        self.train_model.train()
        try:
            for step in range(start, len(batches)):
                xb, yb = self.batches.batch(batches[step], epoch, step)
                out = self.train_model(xb)
                loss = self.loss_fn(out, yb)
                loss_value = float(loss.detach())
                nonfinite, stop = self._signals.sync(self.dist, not math.isfinite(loss_value))
                if nonfinite:
                    raise self._diverged(
                        f"the loss is {loss_value} at epoch {epoch}, batch {step + 1}; the "
                        "update was not applied",
                        epoch=epoch,
                        step=step,
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
                for hook in pre_step_hooks:
                    try:
                        hook(self, self.optimizer)
                    except KeyboardInterrupt:  # stop at the next step, with a checkpoint
                        self._signals.request()
                if clip:
                    self._clip_gradient(part, epoch, step)
                self.optimizer.step()
                self.global_step += 1
                for hook in step_hooks:
                    try:
                        hook(self, self.global_step)
                    except KeyboardInterrupt:  # stop at the next step, with a checkpoint
                        self._signals.request()
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
        if clip:  # every rank clipped the same all-reduced gradient: its own numbers
            steps = max(len(batches), 1)  # every step of the epoch measured its norm
            row["grad_norm"] = part.get("grad_norm_sum", 0.0) / steps
            row["grad_norm_max"] = part.get("grad_norm_max", 0.0)
            row["clipped"] = part.get("clipped", 0.0) / steps
        return row

    def _clip_gradient(self, part: dict[str, float], epoch: int, step: int) -> None:
        r"""Scale the gradient down to the bound where its global norm is longer.

        :math:`g \leftarrow g \cdot \min(1, b / (\lVert g\rVert_2 + 10^{-6}))` over every
        parameter's gradient at once (:func:`torch.nn.utils.clip_grad_norm_`), with
        :math:`b = \min(N, K m)`: ``clip_grad_norm`` :math:`N` and ``clip_grad_ratio``
        :math:`K` times :math:`m`, the running mean of the norms after clipping,
        :math:`m \leftarrow \beta m + (1-\beta) \min(\lVert g\rVert, b)` with
        :data:`GRAD_EMA_BETA` (the first positive norm starts it and is not clipped by
        it). The fixed bound is the standard remedy for exploding gradients (Pascanu et
        al., "On the difficulty of training recurrent neural networks", ICML 2013); the
        relative one clips a run's spikes whatever the scale of its gradient, as the
        adaptive clipping of Seetharaman et al. ("AutoClip", MLSP 2020; theirs a
        percentile of the history) and Kumar et al. ("ZClip", 2025; theirs a z-score of
        an EMA). During a refit the gradient is the support's (its masked entries are
        zeroed first: they are not applied). Under DDP the gradient is the all-reduced
        one, the same on every rank; under FSDP2 the norm of the sharded gradients is the
        global one, so every rank keeps the same :math:`m`. ``part`` gathers the epoch's
        norms before clipping.

        Raises:
            NonFiniteLossError: the norm is NaN or infinite (a finite loss whose gradient
                overflowed); the update is not applied.
        """
        cfg = self.config
        if self._refit.active:
            self._refit.mask_gradients()
        grads = [p for p in self.model.parameters() if p.grad is not None]
        bound = cfg.clip_grad_norm or math.inf
        if cfg.clip_grad_ratio and self._grad_ema is not None:
            bound = min(bound, cfg.clip_grad_ratio * self._grad_ema)
        total = torch.nn.utils.clip_grad_norm_(grads, bound)
        norm = float(fsdp.full_tensor(total))
        if not math.isfinite(norm):
            raise self._diverged(
                f"the gradient's norm is {norm} at epoch {epoch}, batch {step + 1}; the "
                "update was not applied",
                epoch=epoch,
                step=step,
            )
        if cfg.clip_grad_ratio and norm > 0:
            kept = min(norm, bound)
            ema = self._grad_ema
            self._grad_ema = (
                kept if ema is None else GRAD_EMA_BETA * ema + (1 - GRAD_EMA_BETA) * kept
            )
        part["grad_norm_sum"] = part.get("grad_norm_sum", 0.0) + norm
        part["grad_norm_max"] = max(part.get("grad_norm_max", 0.0), norm)
        part["clipped"] = part.get("clipped", 0.0) + float(norm > bound)

    def _hooks(self, name: str) -> list[Any]:
        return [h for cb in self.callbacks if (h := getattr(cb, name, None)) is not None]

    def fit(self) -> TrainResult:
        """Train to ``config.epochs`` (from the resumed point), then write the final outputs.

        Raises:
            TrainingInterrupted: SIGINT/SIGTERM (or ``KeyboardInterrupt`` in a callback);
                the checkpoint allows resuming.
            NonFiniteLossError: the loss became NaN/Inf.
        """
        from sparseopt.engine.report import describe

        cfg = self.config
        if self.install_signal_handlers:
            self._signals.install()
        try:
            self.log(describe(self))
            if self.run_dir is not None:
                self._tb = open_tensorboard(
                    self.run_dir / "tensorboard", cfg.tensorboard, lambda m: self.log(f"note: {m}")
                )
            if self.epoch > 0 or self._step_in_epoch > 0:
                self.log(
                    f"resuming from epoch {self.epoch}"
                    + (f", batch {self._step_in_epoch}" if self._step_in_epoch else "")
                )
            for hook in self._hooks("on_train_begin"):
                hook(self)
            if not self.history:
                t0 = time.perf_counter()
                lr, lam = lr_lam(self.optimizer)
                layer_lam = layer_lams(self.model, self.optimizer.param_groups)
                train_part: dict[str, Any] = {"train_loss": None, "train_time": 0.0}
                if self.task == "classification":
                    train_part["train_acc"] = None
                evaluation = self.evaluate(self._splits(0))
                self.elapsed += time.perf_counter() - t0
                row = epoch_row(
                    0, 0, train_part, evaluation, lr, lam, 0.0, self.elapsed, self.task,
                    layer_lam,
                )  # fmt: skip
                self.history.append(row)
                self._clock.restart()  # the start is always resumable
                self.save_checkpoint()
                self._emit(row)
            for epoch in range(self.epoch + 1, cfg.epochs + 1):
                self._run_epoch(epoch)
            return self._finish()
        finally:
            self._signals.restore()
            if self._tb is not None:
                self._tb.close()
                self._tb = None

    def _step_scheduler(self, train_part: Mapping[str, Any], evaluation: Mapping[str, Any]) -> None:
        """Step ``plateau`` on the validation loss (else the test loss, else the training)."""
        losses = (
            evaluation.get("val_loss"),
            evaluation.get("test_loss"),
            train_part.get("train_loss"),
        )
        monitored = next((v for v in losses if v is not None), None)
        if monitored is not None:
            self.scheduler.step(float(monitored))  # type: ignore[union-attr]

    def _run_epoch(self, epoch: int) -> None:
        if self._refit.due(epoch):
            self.log(self._refit.begin(self))
            self._refit_hints()
        t_start = time.perf_counter()
        resumed_time = (self._partial or {}).get("time", 0.0)
        # the row's lr and λ are the epoch's first step's, also when it resumes mid-epoch
        # (a controller or a λ warm-up moves λ within the epoch)
        lr, lam = self._epoch_lr_lam or lr_lam(self.optimizer)
        self._epoch_lr_lam = (lr, lam)
        if self._epoch_layer_lam is None:
            self._epoch_layer_lam = layer_lams(self.model, self.optimizer.param_groups)
        layer_lam = self._epoch_layer_lam
        train_part = self._train_epoch(epoch)
        plateau = isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        if self.scheduler is not None and not plateau:
            self.scheduler.step()
        evaluation = self.evaluate(self._splits(epoch))
        if self._refit.active and epoch == self.config.epochs:
            note = self._refit.guard(self, evaluation)  # reads the validation split only
            if note:  # the kept network is back: its metrics are the run's
                self.log(note, always=True)
                evaluation = self.evaluate(self._splits(epoch))
        if plateau:
            self._step_scheduler(train_part, evaluation)
        # resumed_time: the part of this epoch run before an interruption
        epoch_time = time.perf_counter() - t_start + resumed_time
        self.elapsed += epoch_time
        row = epoch_row(
            epoch, self.global_step, train_part, evaluation, lr, lam, epoch_time, self.elapsed,
            self.task, layer_lam,
        )  # fmt: skip
        self.epoch = epoch
        self._step_in_epoch = 0
        self._partial = None
        self._epoch_lr_lam = None
        self._epoch_layer_lam = None
        self.history.append(row)
        self._check_health(row)
        interrupted = False
        for hook in self._hooks("on_epoch_end"):
            try:
                hook(self, epoch, row)
            except KeyboardInterrupt:
                interrupted = True
                self._signals.request()
        _, stop = self._signals.sync(self.dist, False)
        self._check_finite_model(CHECKPOINT_FILE)
        last = epoch == self.config.epochs or self.config.keep_checkpoints
        if self._clock.due(stop or interrupted or last):
            self.save_checkpoint()
        self._emit(row)
        if stop or interrupted:
            raise self._interrupted(f"after epoch {epoch}")

    def _emit(self, row: Mapping[str, Any]) -> None:
        if not self.is_main:
            return
        self.log(format_epoch_line(row, self.config.epochs, self.task))
        if self._files is not None:
            self._files.write_metrics(self.history)
        if self._tb is not None:
            tensorboard_row(self._tb, row)

    def _finish(self) -> TrainResult:
        from sparseopt.engine.evaluate import deployed_state
        from sparseopt.metrics import density
        from sparseopt.prune.grow import GrowCallback

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
        # every rank: a sharded (FSDP2) model's state and density need collectives
        deployed_full = deployed_state(self.model, self.optimizer)
        layers = density(self.model, self.optimizer).to_dict()["layers"]
        if self._files is not None:
            sparse_state = {k: v.cpu() for k, v in deployed_full.items()}
            bad = non_finite(sparse_state)
            if bad:
                raise NonFiniteLossError(
                    f"the deployable network holds NaN/Inf in {', '.join(bad[:4])}; "
                    f"model_sparse.pt was not written. {self._smaller_lr_hint()}",
                    epoch=self.epoch,
                    step=-1,
                    checkpoint=self._files.path / CHECKPOINT_FILE,
                )
            self._files.write_model(sparse_state)
            grow = next((cb for cb in self.callbacks if isinstance(cb, GrowCallback)), None)
            grown = grow.state_dict()["history"] if grow is not None else None
            self._files.write_summary(
                summary_record(
                    final,
                    result.health,
                    self.elapsed,
                    layers,
                    self.config,
                    grown,
                    result.sizes,
                    refit=self._refit.summary(),
                )
            )
            if self.config.plots:
                config = self.config.to_dict()
                _, note = self._files.plots(self.history, layers, self.task, config)
                if note:
                    self.log(f"note: {note}")
            lines = summary_lines(final, layers, self.epoch, self.elapsed, self.task)
            if grow is not None:
                lines.append(grow.summary())
            lines += self._target_miss()
            if self.health.status != "ok":
                lines.append(failure_line(self.health.summary()))
            for line in [*lines, f"run directory: {self.run_dir}"]:
                self.log(line, always=True)
        for hook in self._hooks("on_train_end"):
            hook(self, result)
        return result

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Restore the thread count, the flushing of subnormal numbers (see
        :func:`~sparseopt.engine.build.flush_denormals`) and the caller's RNG states; tear
        down the process group if this trainer created it (first freeing the DDP wrapper,
        which holds it, on every rank at once: freed later with an interruption's
        traceback, its teardown could wait for a rank that had exited — a hang seen in 2 of
        24 interrupted 2-rank runs).
        :func:`train` calls it; with a :class:`Trainer` of your own, call it or use the
        trainer as a context manager (``with Trainer(cfg) as t: t.fit()``)."""
        # the optimizer returned is the caller's: no warm-up hook, and none of its hooks
        # leads back to this trainer (the refit's mask hook reads the refit, which read it)
        refit = getattr(self, "_refit", None)
        for warmup in (getattr(self, "_warmup", None), getattr(refit, "warmup", None)):
            if warmup is not None:
                warmup.detach()
        if refit is not None:
            refit._trainer = None  # its warm-up counts as over (Refit.steps)
        if self._flushed:  # as the caller had it (off: on was left alone)
            # in the team it was set in (and any larger one the run went on to use)
            set_flush_denormal_all(False, max(self._flush_threads, torch.get_num_threads()))
            self._flushed = False
        torch.set_num_threads(self._saved_threads)
        if self._caller_rng is not None:  # training leaves the global RNGs as it found them
            checkpoint.set_rng_state(self._caller_rng)
            self._caller_rng = None
        if self.dist.created_group and getattr(self, "train_model", None) is not None:
            self.dist.barrier()
            self.train_model = self.model
        self.dist.close()


def train(
    config: TrainConfig | Mapping[str, Any] | None = None,
    *,
    callbacks: Sequence[Any] = (),
    resume: str | os.PathLike[str] | None = None,
    **options: Any,
) -> TrainResult:
    """Run one training job end to end (see :mod:`sparseopt.engine`).

    Args:
        config: a :class:`TrainConfig` or a mapping of its fields (``None``: the default
            job); with ``resume``, the fields to change (e.g. ``{"epochs": 50}``).
        callbacks: objects with some of the :class:`Callback` hooks.
        resume: a run directory to continue from its latest checkpoint.
        options: ``install_signal_handlers`` (turn SIGINT/SIGTERM into a checkpoint and
            :class:`TrainingInterrupted`; main thread only), ``echo`` (print progress
            lines and the summary; ``log.txt`` is always written), ``overwrite`` (train
            into an existing directory that is not a run directory), as :class:`Trainer`.

    Returns:
        The :class:`TrainResult`.

    Raises:
        ConfigError, sparseopt.data.DatasetNotFoundError: as :class:`Trainer`.
        TrainingInterrupted: SIGINT/SIGTERM; resume with ``train(resume=run_dir)``.
        NonFiniteLossError: the loss (or a weight) became NaN/Inf; the last good
            checkpoint is kept and no model with NaN/Inf weights is written.
        OutputWriteError: a file could not be written (disk full); the previous
            version of every file is intact.
    """
    with Trainer(config, callbacks, resume=resume, **options) as trainer:
        return trainer.fit()
