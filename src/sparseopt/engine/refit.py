r"""The refit: the last epochs of a run fine-tune the support the sparse optimizer found.

Sparsity-promoting steps shrink the weights they keep: ℓ1 soft thresholding takes
:math:`t\lambda` off every nonzero weight at every step, RDA keeps its iterate at the
prox of a running average, the deployable network of SplitLBI is :math:`W` masked by
:math:`\operatorname{supp}\Gamma` — trained as a whole, not as that masked network. With
``refit = f`` the last :math:`F = \lfloor fE\rfloor` of the :math:`E` epochs drop the
penalty: the deployable network's penalised weights that are zero stay zero, and every
parameter trains with ``refit_optimizer`` — SGD with the ``sgd`` recipe's momentum, or
Adam — at ``refit_lr`` (the recipe's, else a tenth of that optimizer's recipe learning
rate; a recipe's refit lr goes with its refit optimizer), cosine to 0 over the :math:`F`
epochs. The schedule of the sparse epochs ends where the refit starts (cosine over
:math:`E - F` epochs).

This is the debiasing of the Lasso by refitting on its support (the relaxed Lasso,
Meinshausen, Comput. Stat. Data Anal. 52 (2007); Belloni & Chernozhukov, Bernoulli 19
(2013)) and the retraining of prune-then-retrain (Han et al., NeurIPS 2015): with the
default ``refit_lr`` it is the fine-tuning that ``sparseopt compare --prune-baseline``
gives the magnitude-pruned dense network of that optimizer in its last epochs (SGD's with
SGD, Adam's with Adam).

The support is fixed with a step post-hook of the refit optimizer
(:meth:`torch.optim.Optimizer.register_step_post_hook`): after every step the masked
entries are set back to zero, as :class:`sparseopt.baselines.FixedMask` does.

``refit_warmup = w`` (epochs) raises the refit's learning rate linearly over its first
:math:`K = \max(1, \operatorname{round}(w B))` steps (:math:`B` steps per epoch): step
:math:`k < K` (0-based) runs at :math:`\eta_e (k + 1)/K`, with :math:`\eta_e` the cosine's
lr of its epoch and :math:`k` counted from the trainer's global step at the switch; the
cosine itself is untouched (:class:`sparseopt.engine.warmup.LinearWarmup`, the mechanism
of the run's own ``warmup`` too). The
switch from the sparse optimizer to SGD at the full refit lr can undo in one epoch what the
sparse phase learned: at refit lr 0.02 RDA's words CNN (validation, seed 0) fell to chance
in the refit's first epoch, and with a warm-up of one epoch it reached 91.5 %
(docs/recipes.md, rounds 45 and 47). It does not remove every drop: round 47's recipe on
the words task of the matrix's seed 4 still fell from 82.8 % to 73.5 % training accuracy
in that epoch (and ended at 90.1 % test), round 49's from 83.2 % to 69.3 % and 57.7 % in
the refit's first two epochs (63.15 % test; docs/robustness.md): the refit guard's case.

``refit_guard`` (on wherever a refit runs) keeps the network the sparse phase ended with
when the refit ends clearly below it: at the switch the deployable network's state is
kept aside (a copy of its parameters and buffers — BatchNorm's running statistics —, in
host memory, and in the checkpoint too while the refit runs), with
the validation accuracy :math:`a_0` of the last sparse epoch; after the last epoch, if the
refit's :math:`a_1` is more than two standard errors below,
:math:`a_0 - a_1 > 2\sqrt{(a_0(1-a_0) + a_1(1-a_1))/n}` on the :math:`n` validation
samples (:func:`sparseopt.baselines.verdict`, the rule of ``compare``'s "beats pruning?"),
those weights come back, on the same support, and the last epoch's validation and test
metrics are the ones of that network. The choice reads the validation split only, never
the test split; a run without one, a regression, a sharded run resumed within its refit
(its kept weights are not in the checkpoint) or a refit checkpoint from before the guard
existed has no guard. With RDA's recipe after round 49 the refit took the words task's
seed 4 from 83.0 % validation accuracy at the switch to 65.5 % (docs/robustness.md).
The history's last row then holds the kept network's validation and test metrics and
the refit's training loss and accuracy (measured while it trained).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sparseopt.baselines import refit_optimizer_settings, verdict
from sparseopt.config import refit_epochs
from sparseopt.control import target_miss
from sparseopt.engine.evaluate import deployed
from sparseopt.fsdp import global_int
from sparseopt.groups import is_penalised

__all__ = ["Refit"]


def _state(model: torch.nn.Module, *, copy: bool = False) -> list[Tensor]:
    """The model's parameters and buffers (``state_dict`` order); ``copy``: detached
    copies, on the CPU unless sharded (the guard's kept state waits there, off the
    accelerator, until the last epoch)."""
    tensors = [  # (a module's extra state, not a tensor, is not the network's values)
        t.data if isinstance(t, torch.nn.Parameter) else t
        for t in model.state_dict(keep_vars=True).values()
        if isinstance(t, Tensor)
    ]
    if not copy:
        return tensors
    return [t.detach().to("cpu", copy=True) if type(t) is Tensor else t.clone() for t in tensors]


def _val_size(trainer: Any) -> int:
    """The validation split's size (0: none; a regression has no accuracy to guard)."""
    if trainer.task != "classification":
        return 0
    return len(trainer._tensors["val"][0])


def _penalised(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    """The parameters of the groups with a penalty (their zeros are the support's)."""
    out = []
    for group in optimizer.param_groups:
        if is_penalised(group):
            out.extend(group["params"])
    return out


class Refit:
    """The refit phase of one run (see the module docstring).

    Args:
        epochs: the run's epochs :math:`E`.
        fraction: ``refit`` of the config.
        optimizer: the run's sparse optimizer (its penalised parameters are masked).

    Attributes:
        epochs: :math:`F`, the refit's epochs (0: no refit).
        first_epoch: the first refit epoch (1-based), :math:`E - F + 1`.
        masks: the kept entries of each penalised parameter once the refit began.
        lr: the refit's starting lr once it began (``None`` before).
        warmup_steps: :math:`K`, the steps of the lr warm-up (``refit_warmup``; 0: none).
        start_step: the trainer's global step at the switch (``None`` before, and for a
            checkpoint written before the warm-up existed).
        kept: the deployable network's parameters and buffers at the switch (in
            ``model.state_dict()`` order, on the CPU unless sharded), for the guard
            (``None``: no guard, or after the run's last epoch decided).
        kept_val_acc: :math:`a_0`, the validation accuracy of the last sparse epoch.
        reverted: whether the guard brought the kept network back (``None``: not decided).
    """

    def __init__(self, epochs: int, fraction: float | None, optimizer: torch.optim.Optimizer):
        self.epochs = refit_epochs(epochs, fraction)
        self.first_epoch = epochs - self.epochs + 1
        self.params = _penalised(optimizer)
        self.masks: list[Tensor] | None = None
        self.optimizer: torch.optim.Optimizer | None = None  # the refit's, once begun
        self._impl: dict[str, Any] = {}  # fused/foreach chosen for this process
        self.lr: float | None = None
        self.warmup_steps = 0  # K of the warm-up (0: none), once begun
        self.warmup: Any = None  # its LinearWarmup, once begun
        self.start_step: int | None = None  # the trainer's global step at the switch
        self._trainer: Any = None
        self.kept: list[Tensor] | None = None
        self.kept_val_acc: float | None = None
        self.refit_val_acc: float | None = None  # a_1, once decided
        self.reverted: bool | None = None

    @property
    def active(self) -> bool:
        """Whether the refit has begun."""
        return self.masks is not None

    def due(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (1-based) is the first of the refit."""
        return self.epochs > 0 and not self.active and epoch >= self.first_epoch

    @torch.no_grad()
    def begin(self, trainer: Any, *, resumed: bool = False) -> str:
        """Switch ``trainer`` to the refit: the deployable network becomes the model, the
        zeros of its penalised weights are fixed, and ``trainer.optimizer`` /
        ``trainer.scheduler`` become the refit's optimizer (``refit_optimizer``) and cosine
        schedule.

        ``resumed``: the model's weights come from a refit checkpoint next
        (:meth:`load_state_dict` then sets the masks). Returns a line for the log.
        """
        from sparseopt.engine.build import build_scheduler, fastest_implementation
        from sparseopt.engine.warmup import LinearWarmup, warmup_steps
        from sparseopt.optim.registry import get_optimizer_info

        model = trainer.model
        if not resumed:
            with deployed(trainer.optimizer):  # W masked by supp Γ (SplitLBI), u (RVSM)
                weights = [p.detach().clone() for p in model.parameters()]
            for p, w in zip(model.parameters(), weights, strict=True):
                p.copy_(w)
            self.masks = [p != 0 for p in self.params]
            a0 = trainer.history[-1].get("val_acc") if trainer.history else None
            if trainer.config.refit_guard and a0 is not None and _val_size(trainer):
                self.kept, self.kept_val_acc = _state(model, copy=True), float(a0)
        name = trainer.config.refit_optimizer or "sgd"  # (a config from before: sgd)
        info = get_optimizer_info(name)
        self._impl = fastest_implementation(info, model)
        kw = {**refit_optimizer_settings(trainer.config.refit_lr, name), **self._impl}
        self.lr = float(kw["lr"])  # the starting lr, for the failure and divergence hints
        optimizer = info.cls(model.parameters(), **kw)
        optimizer.register_step_post_hook(lambda *_: self.apply())
        self.warmup_steps = warmup_steps(trainer.config.refit_warmup, trainer.batches_per_epoch())
        self._trainer = trainer
        if not resumed:  # a resumed refit reads it from its checkpoint
            self.start_step = int(trainer.global_step)
        self.warmup = LinearWarmup(self.warmup_steps, lambda: self.steps)
        self.warmup.attach(optimizer)
        trainer.optimizer = self.optimizer = optimizer
        trainer.scheduler = build_scheduler(
            trainer.config.replace(epochs=self.epochs, schedule="cosine", refit=0.0), optimizer
        )
        kept = sum(global_int(m.sum()) for m in self.masks or ())  # every rank: collectives
        total = sum(p.numel() for p in self.params)
        share = f"{100 * kept / total:.2f} % of the penalised weights" if total else "no weight"
        warm = f" after a linear warm-up of {self.warmup_steps} steps" if self.warmup_steps else ""
        if self.warmup_steps > self.epochs * trainer.batches_per_epoch():
            warm += " (the whole refit: it never reaches that lr; a smaller --refit-warmup)"
        settings = ", ".join(
            f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in kw.items()
            if k not in ("fused", "foreach")
        )
        line = (
            f"refit: epochs {self.first_epoch}-{self.first_epoch + self.epochs - 1} fine-tune "
            f"the support found ({share} kept, the rest fixed at 0) with "
            f"{info.cls.__name__} {settings}, cosine{warm}"
        )
        target = trainer.config.target_density
        if target and total and not resumed:
            cfg = trainer.config
            miss = target_miss(
                target,
                kept / total,
                cfg.optimizer,
                refit=True,
                init_density=cfg.init_density,
                ramp=cfg.target_density_ramp,
                groups_start_alive=cfg.groups_start_alive(),
            )
            line += f"; {miss}" if miss else ""
        return line

    @torch.no_grad()
    def guard(self, trainer: Any, evaluation: dict[str, Any]) -> str:
        """After the run's last epoch (``evaluation`` its metrics): bring the kept network
        back if the refit ended more than two standard errors below it in validation
        accuracy. Returns a line for the log ("" when nothing changed); the caller
        evaluates again after a revert. Every rank decides alike (the metrics are global).
        """
        if self.kept is None or evaluation.get("val_acc") is None:
            return ""
        a0, a1 = float(self.kept_val_acc or 0.0), float(evaluation["val_acc"])
        self.refit_val_acc = a1
        self.reverted = verdict(a1, a0, _val_size(trainer)) == "no"
        if self.reverted:
            for t, w in zip(_state(trainer.model), self.kept, strict=True):
                t.copy_(w)
        self.kept = None  # decided: the copy is no longer needed
        if not self.reverted:
            return ""
        return (
            f"refit guard: the refit ended at {100 * a1:.2f} % validation accuracy, more "
            f"than two standard errors below the {100 * a0:.2f} % it began from; the "
            "network of the sparse phase is kept (the same support; --no-refit-guard keeps "
            "the refit's)"
        )

    def summary(self) -> dict[str, Any] | None:
        """The refit's record for ``summary.json`` (``None`` without a refit)."""
        if self.masks is None:
            return None
        return {
            "epochs": self.epochs,
            "guarded": self.kept_val_acc is not None,  # kept aside at the switch
            "val_acc_at_switch": self.kept_val_acc,
            "val_acc_at_end": self.refit_val_acc,
            "reverted": self.reverted,  # None: not decided (no guard)
        }

    def resume(self, trainer: Any, saved_epochs: int) -> None:
        """Continue the refit of a checkpoint saved with ``saved_epochs`` epochs.

        Raises:
            ConfigError: the run's epochs changed (the refit's schedule is fixed).
        """
        from sparseopt.engine.errors import ConfigError

        if saved_epochs != trainer.config.epochs:
            n = refit_epochs(saved_epochs, trainer.config.refit)
            raise ConfigError(
                f"Invalid epochs value: {trainer.config.epochs}; the checkpoint is in its "
                f"refit (the last {n} of {saved_epochs} epochs fine-tune a fixed support), "
                "so the run cannot change its length"
            )
        self.begin(trainer, resumed=True)

    @property
    def steps(self) -> int:
        """The refit's optimizer steps so far: the trainer's global step since the switch
        (a checkpoint from before the warm-up existed has no switch step: its warm-up is
        over). Counted off the trainer, not off the hooks, so that a step torch runs by
        itself (the zero-lr step with which a sharded state dict initialises an empty
        optimizer state) is not a step of the warm-up."""
        if self.start_step is None or self._trainer is None:
            return self.warmup_steps
        return int(self._trainer.global_step) - self.start_step

    @torch.no_grad()
    def apply(self) -> None:
        """Set the masked entries back to zero."""
        for p, m in zip(self.params, self.masks or (), strict=False):
            p.mul_(m)

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Zero the masked entries' gradients (what the step applies is the support's;
        :meth:`apply` zeroes their weights after it): the gradient a clipping bound
        measures (``clip_grad_norm``, ``clip_grad_ratio``)."""
        for p, m in zip(self.params, self.masks or (), strict=False):
            if p.grad is not None:
                p.grad.mul_(m)

    def state_dict(self) -> dict[str, Any] | None:
        """``None`` before the refit, else ``{"masks": [...], "start_step": S, "kept":
        [...], "kept_val_acc": a0, "refit_val_acc": a1, "reverted": r}`` (bool masks on
        the CPU; a sharded parameter's mask is ``None`` and is read off its zeros on
        resume; ``S`` the trainer's global step at the switch, which the warm-up counts
        from; the guard's kept state, ``None`` where there is none, it was decided, or it
        is sharded; ``a1`` and ``r`` ``None`` until the last epoch decided)."""
        if self.masks is None:
            return None
        masks = [m.cpu() if type(m) is Tensor else None for m in self.masks]
        kept = None
        if self.kept is not None and all(type(w) is Tensor for w in self.kept):
            kept = [w.cpu() for w in self.kept]  # a sharded copy stays out: no guard on resume
        return {
            "masks": masks,
            "start_step": self.start_step,
            "kept": kept,
            "kept_val_acc": self.kept_val_acc,
            "refit_val_acc": self.refit_val_acc,
            "reverted": self.reverted,
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The masks of a refit checkpoint (after the model's weights and the refit
        optimizer's state were restored). A sharded (DTensor) parameter's mask is read
        off its zeros; the optimizer keeps the implementation chosen for this process
        (a checkpoint's ``fused`` does not apply to sharded parameters)."""
        saved = list(state.get("masks") or [None] * len(self.params))
        if len(saved) != len(self.params):
            raise ValueError(
                f"the checkpoint's refit has {len(saved)} masks for {len(self.params)} "
                "penalised parameters"
            )
        self.masks = [
            (p != 0) if m is None or type(p.data) is not Tensor else m.to(p.device, torch.bool)
            for p, m in zip(self.params, saved, strict=True)
        ]
        # a refit checkpoint saved before the warm-up existed: its refit had none (None:
        # the warm-up counts as over)
        start = state.get("start_step")
        self.start_step = None if start is None else int(start)
        # the guard's kept network (none in a checkpoint from before the guard, or of a
        # sharded run); a decided guard keeps its record
        kept = state.get("kept")
        self.reverted = state.get("reverted")
        self.refit_val_acc = state.get("refit_val_acc")
        self.kept_val_acc = state.get("kept_val_acc")
        if kept is not None:
            now = _state(self._trainer.model) if self._trainer is not None else []
            if len(kept) != len(now):
                raise ValueError(
                    f"the checkpoint's refit guard kept {len(kept)} tensors for a model "
                    f"with {len(now)} parameters and buffers"
                )
            self.kept = list(kept)  # on the CPU until the last epoch, as when it was kept
        else:
            self.kept = None
            if self.reverted is None:  # never decided and nothing to bring back: no guard
                self.kept_val_acc = None
        for group in self.optimizer.param_groups if self.optimizer is not None else ():
            group["fused"] = self._impl.get("fused")
            group["foreach"] = self._impl.get("foreach")
