"""Hugging Face ``transformers.Trainer`` integration.

Three pieces, from the most to the least automatic:

- :class:`SparseTrainer`, a ``Trainer`` whose :meth:`~SparseTrainer.create_optimizer`
  builds a sparseopt optimizer itself (so it works where the Trainer refuses a
  pre-built optimizer: FSDP, DeepSpeed without an optimizer section) from
  :func:`sparseopt.param_groups` (layer weights penalised — Conv, Linear, attention
  projections, GPT-2's ``Conv1D``; biases, norms and
  embeddings not), evaluates the deployable network and carries a
  :class:`SparsityTrainerCallback`::

      trainer = SparseTrainer(model=model, args=args, train_dataset=ds,
                              sparse_optimizer="adabreg", sparse_kwargs={"lam": 1e-3})

- :func:`sparse_optimizer_cls_and_kwargs`, the same optimizer for a plain ``Trainer``'s
  ``optimizer_cls_and_kwargs`` argument (add :class:`SparsityTrainerCallback` yourself);
- :class:`SparsityTrainerCallback`, for any ``Trainer`` whose optimizer is a sparseopt
  optimizer: densities and λ in the logs (``density``, ``weight_density``,
  ``layer_density/<layer>``, ``lam``, ``layer_lam/<layer>``), evaluation on the deployable
  network, the solution path in ``output_dir``, the target-density controller and
  ``finalize`` at the end.

Needs ``pip install "sparseopt[hf]"`` (``transformers`` and ``accelerate``).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

try:
    from transformers import Trainer, TrainerCallback
    from transformers.trainer_callback import ExportableState

    _MISSING: ImportError | None = None
except ImportError as err:  # importable without the extra (docs, doctests); fails on use
    Trainer = object  # type: ignore[assignment,misc]

    class TrainerCallback:  # type: ignore[no-redef]
        """Stand-in base (the extra is missing)."""

    class ExportableState:  # type: ignore[no-redef]
        """Stand-in base (the extra is missing)."""

    _MISSING = err

from torch import nn

from sparseopt.control import TargetDensity
from sparseopt.integrations._common import (
    build_sparse_optimizer,
    density_metrics,
    find_sparse_optimizer,
)
from sparseopt.optim._base import SparseOptimizer
from sparseopt.path import PathRecorder, load_path

__all__ = [
    "SparseOptimizerFactory",
    "SparseTrainer",
    "SparsityTrainerCallback",
    "sparse_optimizer_cls_and_kwargs",
]


def _require() -> None:
    if _MISSING is not None:
        raise ImportError(
            'sparseopt.integrations.hf needs transformers and accelerate: pip install "sparseopt[hf]"'
        ) from _MISSING


class SparsityTrainerCallback(TrainerCallback, ExportableState):
    """Evaluate, log, record, control and finalize a sparseopt optimizer under ``Trainer``.

    Args:
        evaluate_deployed: evaluations scheduled by the Trainer during ``train()`` run on
            the deployable network (default True). The callback enters
            ``optimizer.deployed()`` when the Trainer's flow decides to evaluate and
            leaves it in ``on_evaluate``; a direct ``trainer.evaluate()`` call is not
            seen by callbacks: use :class:`SparseTrainer`, which wraps ``evaluate``.
        log_per_layer: also log ``layer_density/<layer>`` for every Conv/Linear layer and
            ``layer_lam/<layer>`` for every penalised one (the λ acting on it).
        record_path: record the solution path: the start, and one point per evaluation
            (with its metrics), or per epoch when the Trainer never evaluates.
        path_dir: where ``path.json``/``path.npz`` go (default: ``args.output_dir``).
        target_density: if set, a :class:`~sparseopt.control.TargetDensity` (the
            optimizer's presets) updates λ every ``control_every_n_steps`` steps.
        control_every_n_steps: controller period in optimizer steps (default 10).
        controller_kwargs: other :class:`~sparseopt.control.TargetDensity` settings.
        finalize: call ``optimizer.finalize()`` when training ends (default True), so
            the model's parameters are the deployable network (what ``save_model`` writes).

    The controller's state (its integral, its ramp's start, the growth anchor) is saved in
    every checkpoint's ``trainer_state.json`` (``stateful_callbacks``, through
    :meth:`state`) and restored when training resumes from that checkpoint.

    Raises:
        TypeError: at ``on_train_begin``, when the Trainer's optimizer is not a
            sparseopt optimizer.
    """

    def __init__(
        self,
        *,
        evaluate_deployed: bool = True,
        log_per_layer: bool = True,
        record_path: bool = True,
        path_dir: str | os.PathLike[str] | None = None,
        target_density: float | None = None,
        control_every_n_steps: int = 10,
        controller_kwargs: dict[str, Any] | None = None,
        finalize: bool = True,
    ) -> None:
        _require()
        if not isinstance(control_every_n_steps, int) or control_every_n_steps < 1:
            raise ValueError(
                f"Invalid control_every_n_steps value: {control_every_n_steps!r}; expected an int >= 1"
            )
        if target_density is not None:
            TargetDensity(target_density)  # validate now
        self.evaluate_deployed = evaluate_deployed
        self.log_per_layer = log_per_layer
        self.record_path = record_path
        self.path_dir = Path(path_dir) if path_dir is not None else None
        self.target_density = target_density
        self.control_every_n_steps = control_every_n_steps
        self.controller_kwargs = dict(controller_kwargs or {})
        self.finalize = finalize
        self.controller: TargetDensity | None = None
        self.recorder: PathRecorder | None = None
        self.optimizer: SparseOptimizer | None = None
        self.model: nn.Module | None = None
        self._deployed: contextlib.ExitStack | None = None
        self._controller_state: dict[str, Any] | None = None  # restored by the Trainer

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps (``ExportableState``): the constructor's arguments and
        the controller's state (JSON data)."""
        ctl = self.controller.state_dict() if self.controller is not None else None
        return {
            "args": {
                "evaluate_deployed": self.evaluate_deployed,
                "log_per_layer": self.log_per_layer,
                "record_path": self.record_path,
                "path_dir": None if self.path_dir is None else str(self.path_dir),
                "target_density": self.target_density,
                "control_every_n_steps": self.control_every_n_steps,
                "controller_kwargs": self.controller_kwargs,
                "finalize": self.finalize,
            },
            "attributes": {"_controller_state": ctl or self._controller_state},
        }

    def _saved_controller(self, state: Any) -> dict[str, Any] | None:
        """The controller state of the checkpoint a run resumes from, if any."""
        if self._controller_state is not None:  # set by restore_callback_states_from_checkpoint
            return self._controller_state
        if not state.global_step:
            return None
        saved = (getattr(state, "stateful_callbacks", None) or {}).get(type(self).__name__)
        if isinstance(saved, list):
            saved = saved[0] if saved else None
        return ((saved or {}).get("attributes") or {}).get("_controller_state")

    # ------------------------------------------------------------------ helpers

    def _dir(self, args: Any) -> Path:
        return self.path_dir if self.path_dir is not None else Path(args.output_dir)

    def _enter_deployed(self) -> None:
        if self.evaluate_deployed and self.optimizer is not None and self._deployed is None:
            stack = contextlib.ExitStack()
            stack.enter_context(self.optimizer.deployed())
            self._deployed = stack

    def _restore(self) -> None:
        if self._deployed is not None:
            stack, self._deployed = self._deployed, None
            stack.close()

    def _record(self, args: Any, state: Any, metrics: dict[str, Any] | None) -> None:
        if self.recorder is None or self.model is None:
            return
        if self.recorder.points and self.recorder.points[-1]["step"] == state.global_step:
            return  # e.g. an evaluate() after training: nothing has changed since
        self.recorder.record(
            self.model,
            self.optimizer,
            epoch=round(state.epoch or 0),
            step=state.global_step,
            metrics=metrics,
        )
        if state.is_world_process_zero:
            self.recorder.save(self._dir(args))

    # ------------------------------------------------------------------ hooks

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        self.optimizer = find_sparse_optimizer(optimizer)
        if self.optimizer is None:
            raise TypeError(
                "SparsityTrainerCallback needs a sparseopt optimizer; the Trainer has "
                f"{type(optimizer).__name__} (use SparseTrainer or sparse_optimizer_cls_and_kwargs)"
            )
        self.model = model
        if self.target_density is not None:
            self.controller = TargetDensity.for_optimizer(
                self.optimizer,
                self.target_density,
                every_steps=self.control_every_n_steps,
                **self.controller_kwargs,
            )
            self.controller.steer_over(state.max_steps or 0)  # a ramp steers over the run
            saved = self._saved_controller(state)
            if saved is not None:  # resumed: the controller goes on where it was
                self.controller.load_state_dict(saved)
        if self.record_path:
            self.recorder = PathRecorder(self._dir(args))
            view = SimpleNamespace(
                run_dir=self._dir(args),
                model=model,
                optimizer=self.optimizer,
                epoch=round(state.epoch or 0),
                global_step=state.global_step,
            )
            if state.global_step > 0 and (self._dir(args) / "path.json").exists():
                # resumed: keep the points recorded up to the checkpoint's step
                old = load_path(self._dir(args))
                keep = sum(1 for p in old.points if (p.get("step") or 0) <= state.global_step)
                self.recorder.load_state_dict({"num_points": keep})
            self.recorder.on_train_begin(view)

    def on_step_begin(self, args, state, control, **kwargs):
        self._restore()  # in case an evaluation was planned but did not run

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        if self.controller is not None and step % self.control_every_n_steps == 0:
            self.controller.update(self.model, self.optimizer, step)
        if control.should_evaluate:
            self._enter_deployed()

    def on_epoch_end(self, args, state, control, **kwargs):
        if control.should_evaluate:
            self._enter_deployed()
        elif str(getattr(args, "eval_strategy", "no")).lower().endswith("no"):
            self._record(args, state, None)  # no evaluation: one path point per epoch

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self._restore()
        if self.optimizer is not None:
            self._record(args, state, dict(metrics or {}))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.optimizer is None or self.model is None or logs is None:
            return
        extra = density_metrics(self.model, self.optimizer, per_layer=self.log_per_layer)
        logs.update(extra)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(extra)

    def on_train_end(self, args, state, control, **kwargs):
        self._restore()
        if self.recorder is not None and self.recorder.points and state.is_world_process_zero:
            self.recorder.save(self._dir(args), full=True)
        if self.finalize and self.optimizer is not None:
            self.optimizer.finalize()


class SparseOptimizerFactory:
    """An optimizer factory for ``Trainer(optimizer_cls_and_kwargs=...)``.

    The Trainer calls ``SparseOptimizerFactory()(model, **kwargs)`` for anything that is
    not an optimizer class; this builds the optimizer with
    :func:`sparseopt.integrations._common.build_sparse_optimizer`.
    """

    def __call__(self, model: nn.Module, *, name: str, lr: float, **kwargs: Any) -> SparseOptimizer:
        return build_sparse_optimizer(model, name, lr=lr, **kwargs)


def sparse_optimizer_cls_and_kwargs(
    name: str, *, lr: float, weight_decay: float = 0.0, **kwargs: Any
) -> tuple[type[SparseOptimizerFactory], dict[str, Any]]:
    """``(factory, kwargs)`` for a plain ``Trainer``'s ``optimizer_cls_and_kwargs``.

    The Trainer then creates the sparseopt optimizer ``name`` itself, with param groups
    from :func:`sparseopt.param_groups` (``penalty``, ``lam``, ``conv_*``, ``linear_*``,
    ``exclude`` in ``kwargs``) and decay on the penalised weights only. The Trainer does
    not pass its ``learning_rate`` to factories: give ``lr`` here.

    Example:
        >>> cls, kw = sparse_optimizer_cls_and_kwargs("adabreg", lr=1e-3, lam=1e-4)
        >>> kw["name"], kw["lam"]
        ('adabreg', 0.0001)
    """
    return SparseOptimizerFactory, {"name": name, "lr": lr, "weight_decay": weight_decay, **kwargs}


class SparseTrainer(Trainer):
    """A ``transformers.Trainer`` that creates a sparseopt optimizer and watches it.

    Args:
        *args, **kwargs: what ``Trainer`` takes (not ``optimizers`` with an optimizer,
            nor ``optimizer_cls_and_kwargs``).
        sparse_optimizer: registry name (default ``"adabreg"``); see
            :func:`sparseopt.list_optimizers`.
        sparse_kwargs: keywords for the optimizer and its param groups (``penalty``,
            ``lam``, ``conv_*``/``linear_*``, ``exclude``, ``delta``, ...). The learning
            rate is ``args.learning_rate`` and the decay ``args.weight_decay`` (penalised
            weights only), unless given here.
        sparsity_callback: the :class:`SparsityTrainerCallback` to use (default: one with
            default settings). It runs before the reporting integrations, so TensorBoard
            & co. receive the densities.

    ``evaluate`` (also a direct call) runs on the deployable network.
    """

    def __init__(
        self,
        *args: Any,
        sparse_optimizer: str = "adabreg",
        sparse_kwargs: dict[str, Any] | None = None,
        sparsity_callback: SparsityTrainerCallback | None = None,
        **kwargs: Any,
    ) -> None:
        _require()
        super().__init__(*args, **kwargs)
        self.sparse_optimizer = sparse_optimizer
        self.sparse_kwargs = dict(sparse_kwargs or {})
        self.sparsity_callback = sparsity_callback or SparsityTrainerCallback()
        self.sparsity_callback.evaluate_deployed = False  # evaluate() below does it
        # right after DefaultFlowCallback, before the reporting integrations
        self.callback_handler.callbacks.insert(1, self.sparsity_callback)

    def create_optimizer(self, model: nn.Module | None = None) -> Any:
        """Build the sparseopt optimizer (once); see the class docstring."""
        if self.optimizer is None:
            kw = {"lr": self.args.learning_rate, "weight_decay": self.args.weight_decay}
            # a target density steers λ: an unset λ takes the controller's start
            kw["steered"] = self.sparsity_callback.target_density is not None
            kw.update(self.sparse_kwargs)
            self.optimizer = build_sparse_optimizer(
                self.model if model is None else model, self.sparse_optimizer, **kw
            )
        return self.optimizer

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        """``Trainer.evaluate`` on the deployable network (inside ``optimizer.deployed()``)."""
        opt = find_sparse_optimizer(self.optimizer)
        with opt.deployed() if opt is not None else contextlib.nullcontext():
            return super().evaluate(*args, **kwargs)
