"""PyTorch Lightning integration: :class:`SparsityCallback`.

Return any sparseopt optimizer from ``configure_optimizers`` (alone, in a list, or in
Lightning's ``{"optimizer": ..., "lr_scheduler": ...}`` dict; with as many param groups
as you like) and add the callback::

    trainer = lightning.Trainer(callbacks=[SparsityCallback(target_density=0.1)])

Then validation runs on the **deployable** network (inside ``optimizer.deployed()``:
``W ⊙ 1[Γ ≠ 0]`` for SplitLBI, ``u`` for RVSM, the parameters for the others), the
densities and λ are logged through the Lightning logger (``density``,
``weight_density``, ``layer_density/<layer>``, ``lam``, ``layer_lam/<layer>``), the
solution path is recorded (``path.json``/``path.npz`` in the log directory, readable with
:func:`sparseopt.path.load_path` and ``sparseopt path``), the target-density controller
adjusts λ if asked, and ``optimizer.finalize()`` makes the deployable network permanent
when fitting ends. Needs ``pip install "sparseopt[lightning]"``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

try:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Callback

    _MISSING: ImportError | None = None
except ImportError as err:  # importable without the extra (docs, doctests); fails on use
    Callback = object  # type: ignore[assignment,misc]
    _MISSING = err

from sparseopt.control import TargetDensity
from sparseopt.integrations._common import density_metrics, find_sparse_optimizer
from sparseopt.optim._base import SparseOptimizer
from sparseopt.path import PathRecorder

__all__ = ["SparsityCallback"]


class SparsityCallback(Callback):
    """Evaluate, log, record, control and finalize a sparseopt optimizer under Lightning.

    Args:
        evaluate_deployed: run validation (and sanity checks) inside
            ``optimizer.deployed()`` (default True).
        log_per_layer: also log ``layer_density/<layer>`` for every layer weight and
            ``layer_lam/<layer>`` for every penalised one (the λ acting on it).
        log_every_n_steps: also log the densities every this many optimizer steps
            (``None``: once per training epoch).
        record_path: record the solution path, one point per epoch (with the epoch's
            logged metrics) plus the start (default True).
        path_dir: where ``path.json``/``path.npz`` go (default: ``trainer.log_dir``).
        path_every_n_steps: also record a point every this many optimizer steps.
        target_density: if set, a :class:`~sparseopt.control.TargetDensity` controller
            (the optimizer's presets, :meth:`TargetDensity.for_optimizer`) updates λ every
            ``control_every_n_steps`` optimizer steps towards this weight density. Build
            the optimizer with ``sparseopt.create_optimizer(..., steered=True)`` then, so
            that a λ left unset starts where the recipe's controller starts (ProxSGD's
            ℓ0: 2.5e-7, where its fixed λ 0.025 zeroes a small head at once).
        control_every_n_steps: controller period in optimizer steps (default 10).
        controller_kwargs: other :class:`~sparseopt.control.TargetDensity` settings.
        finalize: call ``optimizer.finalize()`` at the end of fitting (default True), so
            the module's parameters *are* the deployable network afterwards (what a
            checkpoint written then, ``sparseopt.prune`` or an export sees).
        optimizer_index: which of the trainer's optimizers to manage when there are
            several (default: the first sparseopt optimizer).

    Raises:
        TypeError: at ``fit`` start, when no optimizer is a sparseopt optimizer.

    The callback's state (controller, number of path points) is saved in Lightning
    checkpoints; on resume the path is reloaded from ``path_dir`` and cut at the
    checkpoint. The optimizer's own state (duals, Γ, u, λ) travels in the checkpoint's
    ``optimizer_states`` as for any ``torch.optim`` optimizer.
    """

    def __init__(
        self,
        *,
        evaluate_deployed: bool = True,
        log_per_layer: bool = True,
        log_every_n_steps: int | None = None,
        record_path: bool = True,
        path_dir: str | os.PathLike[str] | None = None,
        path_every_n_steps: int | None = None,
        target_density: float | None = None,
        control_every_n_steps: int = 10,
        controller_kwargs: dict[str, Any] | None = None,
        finalize: bool = True,
        optimizer_index: int | None = None,
    ) -> None:
        if _MISSING is not None:
            raise ImportError(
                'SparsityCallback needs PyTorch Lightning: pip install "sparseopt[lightning]"'
            ) from _MISSING
        for name, value in (
            ("log_every_n_steps", log_every_n_steps),
            ("path_every_n_steps", path_every_n_steps),
            ("control_every_n_steps", control_every_n_steps),
        ):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"Invalid {name} value: {value!r}; expected an int >= 1")
        self.evaluate_deployed = evaluate_deployed
        self.log_per_layer = log_per_layer
        self.log_every_n_steps = log_every_n_steps
        self.path_dir = Path(path_dir) if path_dir is not None else None
        self.path_every_n_steps = path_every_n_steps
        self.recorder: PathRecorder | None = PathRecorder(path_dir) if record_path else None
        self.target_density = target_density
        self.control_every_n_steps = control_every_n_steps
        self.controller_kwargs = dict(controller_kwargs or {})
        self.controller: TargetDensity | None = None
        self.finalize = finalize
        self.optimizer_index = optimizer_index
        self._optimizer: SparseOptimizer | None = None
        self._deployed: contextlib.ExitStack | None = None
        self._last_step = -1
        self._controller_state: dict[str, Any] | None = None
        if target_density is not None:  # validate the target now, not at fit start
            TargetDensity(target_density)

    # ------------------------------------------------------------------ helpers

    @property
    def optimizer(self) -> SparseOptimizer:
        """The managed sparseopt optimizer (set at fit start)."""
        if self._optimizer is None:
            raise RuntimeError("SparsityCallback: no optimizer yet (fit has not started)")
        return self._optimizer

    def _find_optimizer(self, trainer: pl.Trainer) -> SparseOptimizer:
        found = [find_sparse_optimizer(opt) for opt in trainer.optimizers]
        if self.optimizer_index is not None:
            opt = found[self.optimizer_index]
            if opt is None:
                raise TypeError(
                    f"SparsityCallback: optimizer {self.optimizer_index} is "
                    f"{type(trainer.optimizers[self.optimizer_index]).__name__}, not a "
                    "sparseopt optimizer"
                )
            return opt
        for opt in found:
            if opt is not None:
                return opt
        names = [type(o).__name__ for o in trainer.optimizers] or ["none"]
        raise TypeError(
            f"SparsityCallback needs a sparseopt optimizer from configure_optimizers; got {names}"
        )

    def _path_dir(self, trainer: pl.Trainer) -> Path:
        if self.path_dir is not None:
            return self.path_dir
        return Path(trainer.log_dir or trainer.default_root_dir)

    def _trainer_view(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Any:
        """What :class:`PathRecorder`'s callback hooks read from an engine trainer."""
        return SimpleNamespace(
            run_dir=self._path_dir(trainer),
            model=pl_module,
            optimizer=self._optimizer,
            epoch=trainer.current_epoch,
            global_step=trainer.global_step,
            is_main=trainer.is_global_zero,
        )

    def _log(self, pl_module: pl.LightningModule, *, on_step: bool) -> dict[str, float]:
        metrics = density_metrics(pl_module, self.optimizer, per_layer=self.log_per_layer)
        pl_module.log_dict(metrics, on_step=on_step, on_epoch=not on_step, sync_dist=False)
        return metrics

    # ------------------------------------------------------------------ hooks

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._optimizer = self._find_optimizer(trainer)
        if self.target_density is not None:
            self.controller = TargetDensity.for_optimizer(
                self._optimizer,
                self.target_density,
                every_steps=self.control_every_n_steps,
                **self.controller_kwargs,
            )
            if self._controller_state is not None:
                self.controller.load_state_dict(self._controller_state)
            if self.controller.needs_total_steps:  # a ramp steers over the run
                self.controller.steer_over(trainer.estimated_stepping_batches)
        self._last_step = trainer.global_step

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.recorder is not None:
            # a fresh run records the start; a resumed one reloads the path and cuts it
            self.recorder.on_train_begin(self._trainer_view(trainer, pl_module))

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        step = trainer.global_step
        if step == self._last_step:  # gradient accumulation: no optimizer step yet
            return
        self._last_step = step
        if self.controller is not None and step % self.control_every_n_steps == 0:
            self.controller.update(pl_module, self.optimizer, step)
        if self.log_every_n_steps is not None and step % self.log_every_n_steps == 0:
            self._log(pl_module, on_step=True)
        if (
            self.recorder is not None
            and self.path_every_n_steps is not None
            and step % self.path_every_n_steps == 0
        ):
            self.recorder.record(
                pl_module, self.optimizer, epoch=trainer.current_epoch + 1, step=step
            )

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.evaluate_deployed and self._optimizer is not None and self._deployed is None:
            stack = contextlib.ExitStack()
            stack.enter_context(self._optimizer.deployed())
            self._deployed = stack

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._restore()  # never leave the deployable values in the training parameters

    def _restore(self) -> None:
        if self._deployed is not None:
            stack, self._deployed = self._deployed, None
            stack.close()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = self._log(pl_module, on_step=False)
        if self.recorder is None:
            return
        logged = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if getattr(v, "numel", lambda: 1)() == 1
        }
        self.recorder.record(
            pl_module,
            self.optimizer,
            epoch=trainer.current_epoch + 1,
            step=trainer.global_step,
            metrics={**logged, **{k: v for k, v in metrics.items() if "/" not in k}},
        )
        if trainer.is_global_zero:
            self.recorder.save(self._path_dir(trainer))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.recorder is not None and trainer.is_global_zero and self.recorder.points:
            self.recorder.save(self._path_dir(trainer), full=True)
        if self.finalize and self._optimizer is not None:
            self._optimizer.finalize()

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        if self.controller is not None:
            state["controller"] = self.controller.state_dict()
        if self.recorder is not None:
            state["path"] = self.recorder.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._controller_state = state_dict.get("controller")
        if self.controller is not None and self._controller_state is not None:
            self.controller.load_state_dict(self._controller_state)
        if self.recorder is not None and "path" in state_dict:
            self.recorder.load_state_dict(state_dict["path"])
