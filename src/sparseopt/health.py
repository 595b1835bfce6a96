r"""Failure detection: a run that does not learn says so.

Two failures that a finite loss does not reveal, checked after every epoch on the
**deployable** network (the one ``model_sparse.pt`` holds):

- **stalled** (classification): the training loss stays near chance level,
  :math:`\ell_{\text{train}} \ge 0.9\,\ln C` for :math:`C` classes, *and* the
  validation accuracy (the training accuracy without a validation split) is at most
  :math:`b + 0.1\,(1-b)`, with :math:`b` what a constant prediction scores there
  (:math:`1/C`, or the most common class's frequency where larger), for ``patience``
  epochs in a row. Cross-entropy of a
  network that predicts the class frequencies is :math:`\ln C`; a run that is still
  there after a few epochs has an lr or λ that keeps it from learning. A run whose
  **validation** accuracy stays at that level while the training loss falls is stalled
  too: the deployable network does not generalise, e.g. SplitLBI's sparse Γ lagging the
  dense W that the training loss measures, or a network that memorises.
- **collapsed**: the deployable network gives the same output for every input of a
  fixed probe batch (up to :math:`10^{-6}` relative), typically because a layer of
  a sequential network has no nonzero weight left (its output is its bias), for
  ``patience`` epochs in a row. A residual network can keep its skip paths alive
  with an empty layer, which is why the test is on the outputs; the layers that are
  entirely zero are named in the message. A classifier collapses **partially** when two
  or more of its class scores are the same for every probe input (a class whose row
  of the last layer has no nonzero weight scores its bias): it cannot tell those
  classes apart, so all but one of them are never predicted. One constant score is
  not a failure — a softmax sees only the differences of the scores.

The final :attr:`HealthMonitor.status` is ``"collapsed"`` when the last epoch's
network is collapsed (whatever the streak: that network is what a user gets) in a run
of at least ``patience`` epochs (shorter runs are not judged),
``"stalled"`` when the last ``patience`` epochs stalled, ``"ok"`` otherwise. Each
failure is reported once per streak while training, with a concrete hint (a 10×
smaller λ, a 3× smaller lr); :mod:`sparseopt.engine` records the status in
``summary.json`` and the command line exits with :data:`EXIT_FAILED`.

Example:
    >>> mon = HealthMonitor(num_classes=10, patience=2)
    >>> row = {"epoch": 1, "train_loss": 2.30, "val_acc": 0.10}
    >>> mon.observe(row, constant_output=False, empty_layers=[])
    []
    >>> mon.observe({**row, "epoch": 2}, constant_output=False, empty_layers=[])[0][:32]
    'stalled: training loss 2.3 ≈ ln '
    >>> mon.status
    'stalled'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sparseopt.fsdp import is_sharded_model

__all__ = [
    "EXIT_FAILED",
    "STATUSES",
    "HealthMonitor",
    "chance_accuracy",
    "classes_present",
    "constant_output",
    "probe_constant",
    "majority_share",
    "empty_layers",
]

#: Exit code of the command line for a run that finished but stalled or collapsed.
EXIT_FAILED = 4
#: Final statuses of a run (``diverged`` and ``interrupted`` are set by the engine).
STATUSES = ("ok", "stalled", "collapsed", "diverged", "interrupted")
#: Fraction of ln C above which the training loss counts as chance level.
STALL_LOSS_FRACTION = 0.9
#: Share of the way from chance to perfect accuracy below which accuracy is "chance".
STALL_ACC_MARGIN = 0.1


@torch.no_grad()
def probe_constant(
    model: nn.Module, x: torch.Tensor, num_classes: int | None = None, *, rtol: float = 1e-6
) -> tuple[bool, list[int]]:
    """In one forward pass over the probe batch ``x``: whether ``model`` gives the same
    output for every row (within ``rtol`` of the output's largest magnitude; never for a
    single row or an output that is not finite), and, for a classifier's output of shape
    ``(N, num_classes)``, the classes whose score is the same for every row.

    One constant score costs a softmax classifier nothing (only the differences of the
    scores matter); two or more make it unable to tell those classes apart: all but one
    of them are never predicted (:class:`HealthMonitor`'s partial collapse). A class
    whose row of the last layer has no nonzero weight is one (AdaBreg with the Tℓ1
    penalty steered per layer kept 2 of the 10 rows of an MLP's last layer and scored
    16.5 %, docs/recipes.md, round 53). Runs in eval mode and restores the mode. For a
    sharded model (FSDP2) every rank must call it (one all-reduce, of one flag per class
    score or of one flag); the answer is agreed over the ranks (constant only if
    constant on every rank's ``x``).

    Example:
        >>> net = nn.Linear(3, 4)
        >>> _ = net.weight.data[1:3].zero_()
        >>> probe_constant(net, torch.randn(8, 3), 4)
        (False, [1, 2])
        >>> _ = net.weight.data.zero_()
        >>> probe_constant(net, torch.randn(8, 3))
        (True, [])
    """
    if len(x) < 2:
        return False, []
    was = model.training
    model.eval()
    try:
        raw = model(x)
    finally:
        model.train(was)
    out = raw.float().reshape(len(x), -1)
    spread = (out - out[:1]).abs().amax(0)
    finite = bool(torch.isfinite(out).all())
    cols = (spread <= rtol * (1.0 + out.abs().max())) & finite
    classes = num_classes is not None and tuple(raw.shape) == (len(x), num_classes)
    flags = cols.float() if classes else cols.all().float().reshape(1)
    # no early return above: under FSDP2 every rank must reach this all-reduce
    if is_sharded_model(model):
        import torch.distributed as dist

        dist.all_reduce(flags, op=dist.ReduceOp.MIN)
    if not classes:
        return bool(flags.item() > 0), []
    constant = flags > 0
    return bool(constant.all()), [int(i) for i in torch.nonzero(constant).flatten().tolist()]


def constant_output(model: nn.Module, x: torch.Tensor, *, rtol: float = 1e-6) -> bool:
    """Whether ``model`` gives (numerically) the same output for every row of ``x``
    (:func:`probe_constant`'s first answer).

    Example:
        >>> net = nn.Linear(3, 2)
        >>> _ = net.weight.data.zero_()
        >>> constant_output(net, torch.randn(8, 3))
        True
    """
    return probe_constant(model, x, rtol=rtol)[0]


def empty_layers(filters_alive: Mapping[str, int]) -> list[str]:
    """Names of the layers with no live filter/neuron (no nonzero weight)."""
    return [name for name, alive in filters_alive.items() if int(alive) == 0]


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def chance_accuracy(num_classes: int, majority: float | None = None) -> float:
    """Accuracy at or below which a ``num_classes``-way classifier counts as at chance.

    The base is what a constant prediction scores: :math:`1/C` on balanced data, the
    frequency of the most common class (``majority``) where it is larger; at chance is
    within a tenth of the way from there to perfect accuracy.

    Example:
        >>> round(chance_accuracy(10), 2), chance_accuracy(2), chance_accuracy(2, 0.6)
        (0.19, 0.55, 0.64)
    """
    base = max(1.0 / num_classes, majority if majority is not None and majority < 1 else 0.0)
    return base + STALL_ACC_MARGIN * (1.0 - base)


def majority_share(labels: torch.Tensor, num_classes: int) -> float | None:
    """Frequency of the most common class among ``labels`` (class indices), or ``None``
    where it cannot judge a chance level: labels that are not one non-negative integer
    per sample, or a single class (every prediction of it would count as chance).

    Example:
        >>> majority_share(torch.tensor([0, 1, 1, 1]), 2), majority_share(torch.tensor([2, 2]), 3)
        (0.75, None)
    """
    y = labels.detach()
    if y.ndim != 1 or len(y) == 0 or y.is_floating_point() or y.dtype == torch.bool:
        return None
    y = y.cpu()
    if int(y.min()) < 0:  # e.g. an ignore_index
        return None
    counts = torch.bincount(y, minlength=num_classes)
    if int((counts > 0).sum()) < 2:
        return None
    return float(counts.max()) / len(y)


def classes_present(labels: torch.Tensor, num_classes: int) -> list[int] | None:
    """The classes among ``labels`` (class indices), or ``None`` where they are not one
    non-negative integer per sample (all classes then count).

    Example:
        >>> classes_present(torch.tensor([0, 2, 2]), 4), classes_present(torch.tensor([0.5]), 2)
        ([0, 2], None)
    """
    y = labels.detach()
    if y.ndim != 1 or len(y) == 0 or y.is_floating_point() or y.dtype == torch.bool:
        return None
    seen = [int(i) for i in torch.unique(y).tolist()]  # sorted; one copy to the host
    if seen[0] < 0 or seen[-1] >= num_classes:  # e.g. an ignore_index: all classes count
        return None
    return seen


#: What a checkpoint keeps of a :class:`HealthMonitor`: field name -> the type it is read
#: back as (a missing entry reads as that type's empty value: 0, False, "" or []).
_STATE: dict[str, type] = {
    "stall_streak": int,
    "collapse_streak": int,
    "last_collapsed": bool,
    "last_scores": list,
    "last_empty": list,
    "failing_since": int,
    "emptied": bool,
    "epochs_seen": int,
    "reason": str,
    "reported": list,
}


@dataclass
class HealthMonitor:
    """Watch a run's epochs for a stall or a collapse (see the module docstring).

    Args:
        num_classes: ``C`` for classification, ``None`` for regression (no stall test).
        patience: epochs in a row before a stall or collapse is reported.
        lr, lam: the run's learning rate and λ, for the hints (``None``: not set).
        sparse: whether λ is a knob of this run (a sparse optimizer).
        support_grows: an inverse scale space method (the optimizer's
            ``support_grows_with_steps``): when its deployable network collapses or a
            layer is empty, the hint is more epochs, not a smaller lr (which slows the
            support's growth).
        epochs: the run's epochs, for that hint (``None``: not set).
        target_density: the run's ``--target-density`` (``None``: λ is fixed). The
            controller sets λ, so the hint asks for a denser target instead of a λ.
        refit_lr, refit_from: set by the trainer once a refit has begun (``--refit``): its
            lr and first epoch. A failure that began in the refit, whose support is fixed,
            gets a smaller ``--refit-lr`` as its hint (or λ, for a larger support).
        refit_warmup: the refit's ``--refit-warmup`` (set with them; 0: none). A failure
            that began in a refit without one also gets ``--refit-warmup 1``: the switch
            to the refit's optimizer (SGD) at its full lr took RDA's words CNN to chance in one epoch,
            and a warm-up of one epoch trained it (docs/recipes.md, rounds 45 and 47).
        majority: frequency of the most common class in the split whose accuracy is
            judged (validation, else training): a constant prediction scores that much,
            so the chance level starts there (``None``: balanced, :math:`1/C`).
        per_layer: the controller steers each layer to its own share
            (``--target-allocation`` ``he``, ``he_all`` or ``uniform``): a collapse's hint
            is then first one density (AdaBreg's Tℓ1 per layer lost 8 of an MLP's 10
            output rows in its last epoch, and collapsed LeNet-5 on another seed; one
            density learned: docs/recipes.md, rounds 53-54).
        classes_seen: the classes the training data holds (:func:`classes_present`;
            ``None``: all). Only their constant scores make a partial collapse: a class
            the data never shows may lose its row of the last layer to the penalty (a
            seen class whose score is constant below an unseen one's is then not judged).
    """

    num_classes: int | None
    patience: int = 3
    lr: float | None = None
    lam: float | None = None
    sparse: bool = True
    majority: float | None = None
    support_grows: bool = False
    epochs: int | None = None
    target_density: float | None = None
    refit_lr: float | None = None
    refit_from: int | None = None
    refit_warmup: float = 0.0
    classes_seen: list[int] | None = None
    per_layer: bool = False
    stall_streak: int = 0
    collapse_streak: int = 0
    last_collapsed: bool = False
    last_scores: list[int] = field(default_factory=list)  # a partial collapse's classes
    last_empty: list[str] = field(default_factory=list)
    failing_since: int = 0  # the epoch the current stall or collapse began (0: none)
    emptied: bool = False  # a layer was empty (or the output constant) in this failure
    epochs_seen: int = 0
    reason: str = ""
    reported: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        """``ok``, ``stalled`` or ``collapsed`` after the epochs observed so far."""
        if self.patience <= 0:
            return "ok"
        if self.last_collapsed and self.epochs_seen >= self.patience:
            return "collapsed"
        if self.stall_streak >= self.patience:
            return "stalled"
        return "ok"

    def _stalled(self, row: Mapping[str, Any]) -> bool:
        c = self.num_classes
        loss = row.get("train_loss")
        if c is None or c < 2 or loss is None or not math.isfinite(loss):
            return False
        chance = chance_accuracy(c, self.majority)
        val = row.get("val_acc")
        if val is not None and val <= chance:  # held-out data at chance
            return True
        acc = val if val is not None else row.get("train_acc")
        return loss >= STALL_LOSS_FRACTION * math.log(c) and (acc is None or acc <= chance)

    def stall_message(self, row: Mapping[str, Any], epochs: int | None) -> str:
        """The reason of a stall seen in ``row`` for ``epochs`` epochs in a row (``None``:
        the last epoch of a finished run, judged once: :mod:`sparseopt.engine.judge`)."""
        c = self.num_classes or 2
        loss = float(row["train_loss"])
        span = " in the last epoch" if epochs is None else f" for {_epochs(epochs)}"
        if loss >= STALL_LOSS_FRACTION * math.log(c):
            return (
                f"stalled: training loss {_fmt(loss)} ≈ ln {c} = {_fmt(math.log(c))} "
                f"(chance level){span}"
            )
        chance = chance_accuracy(c, self.majority)
        return (
            f"stalled: validation accuracy {100 * float(row['val_acc']):.1f}% at chance level "
            f"(≤ {100 * chance:.1f}% for {c} classes){span}, although the training loss fell "
            f"to {_fmt(loss)}: the deployable network does not generalise"
        )

    def collapse_message(self, empty_layers: Sequence[str], epochs: int | None) -> str:
        """The reason of a collapse of the last observed network, seen for ``epochs``
        epochs in a row (``None``: the final network, judged once); ``empty_layers`` are
        named."""
        zero = f" ({', '.join(empty_layers)} entirely zero)" if empty_layers else ""
        net = "the final network" if epochs is None else "the deployable network"
        span = "" if epochs is None else f" for {_epochs(epochs)}"
        scores = self.last_scores
        if scores:  # partial: some class scores constant, not the whole output
            shown = ", ".join(str(i) for i in scores[:8]) + (", …" if len(scores) > 8 else "")
            of = f" of {self.num_classes}" if self.num_classes else ""
            return (
                f"collapsed: {net} gives the classes {shown} ({len(scores)}{of}) the same "
                f"score for every input{span}{zero}: it cannot tell them apart"
            )
        return f"collapsed: {net} gives the same output for every input{span}{zero}"

    def hint(self, layers: Sequence[str] = ()) -> str:
        """What to change, with values.

        A smaller λ (a twice denser ``--target-density`` where the controller sets λ), and
        a smaller lr — except for an inverse scale space method whose
        deployable network collapsed or lost a layer (``layers``, or the last epoch's):
        its support grows with the steps taken, so a smaller lr would slow it further and
        the hint is twice the epochs (SplitLBI at a fixed λ 0.03 on the held-out curve CNN
        collapses at 15 epochs and learns at 30; at a third of the lr it collapses in
        every layer: docs/cli.md, "Failure detection"); and for a failure that began in
        a refit, whose support is fixed, a smaller refit lr. A stall with every layer alive keeps the lr hint
        (a training loss stuck at chance is the learning rate's as often as λ's). A
        checkpoint from before ``last_empty`` existed resumes with it empty. A failure
        during which a layer was empty (``emptied``) keeps the epochs hint to its end,
        also once the layer refilled.
        """
        parts = []
        # steered per layer, a layer's share can be taken from the head's (or a layer's
        # emptied): a collapse, partial or whole, is first asked for one density
        if self.per_layer and (self.last_scores or self.last_collapsed):
            parts.append("--target-allocation global (one density for the whole network)")
        if self.sparse and self.target_density is not None:  # λ is the controller's
            if self.target_density < 1:
                denser = min(1.0, 2 * self.target_density)
                parts.append(f"--target-density {_fmt(denser)} (2× denser target)")
        elif self.sparse and self.lam is not None and self.lam > 0:
            parts.append(f"--lam {_fmt(self.lam / 10)} (10× smaller λ)")
        empty = bool(layers or self.last_empty or self.last_collapsed or self.emptied)
        in_refit = self.refit_from is not None and self.failing_since >= self.refit_from
        if self.refit_lr is not None and in_refit:
            parts.append(f"--refit-lr {_fmt(self.refit_lr / 3)} (3× smaller refit lr)")
            if not self.refit_warmup:
                parts.append("--refit-warmup 1 (the refit's lr raised over its first epoch)")
        elif self.support_grows and self.epochs and empty:
            parts.append(f"--epochs {2 * self.epochs} (the support grows with the steps taken)")
        elif self.lr is not None and self.lr > 0:
            parts.append(f"--lr {_fmt(self.lr / 3)} (3× smaller lr)")
        if not parts:
            return ""
        where = f"; {', '.join(layers)} entirely zero" if layers else ""
        return f"try {' or '.join(parts)}{where}"

    def observe(
        self,
        row: Mapping[str, Any],
        *,
        constant_output: bool,
        empty_layers: Sequence[str],
        constant_scores: Sequence[int] = (),
    ) -> list[str]:
        """Record one epoch (``row`` as in the metrics); return the warnings to print.

        ``constant_scores``: the classes whose score was the same for every probe input
        (:func:`probe_constant`, for an output of one score per class); two or more
        make the epoch a (partial) collapse."""
        warnings: list[str] = []
        self.epochs_seen += 1
        if self._stalled(row):
            self.stall_streak += 1
        else:
            self.stall_streak = 0
        # two constant class scores or more: those classes are never told apart (one
        # constant score is free: a softmax sees only the differences of the scores)
        seen = None if self.classes_seen is None else set(self.classes_seen)
        scores = [int(i) for i in constant_scores if seen is None or int(i) in seen]
        partial = not constant_output and self.num_classes is not None and len(scores) >= 2
        self.last_scores = scores if partial else []
        self.last_collapsed = bool(constant_output or partial) and int(row.get("epoch", 1)) > 0
        self.last_empty = list(empty_layers)
        self.collapse_streak = self.collapse_streak + 1 if self.last_collapsed else 0
        if not (self.stall_streak or self.collapse_streak):
            self.failing_since = 0
            self.emptied = False
        else:
            if not self.failing_since:
                self.failing_since = int(row.get("epoch", self.epochs_seen))
            # one failure, one hint: a layer emptied during it decides the hint to its end
            self.emptied = self.emptied or bool(empty_layers) or self.last_collapsed
        if self.collapse_streak == self.patience:  # (the message names the empty layers)
            msg = self.collapse_message(empty_layers, self.patience)
            warnings.append(f"{msg}; {self.hint()}".rstrip("; "))
        if self.stall_streak == self.patience:
            msg = self.stall_message(row, self.patience)
            warnings.append(f"{msg}; {self.hint(empty_layers)}".rstrip("; "))
        # the reason names the final status: a stall's, once set for a streak, stays as
        # first said; a collapse's describes the last epoch's network (the one a user
        # gets: a partial collapse may turn whole, or lose other classes)
        status = self.status
        if status == "ok":
            self.reason = ""
        elif status == "stalled" and not self.reason.startswith(status):
            self.reason = self.stall_message(row, self.stall_streak)
        elif status == "collapsed" and self.last_collapsed:
            streak = self.patience if self.collapse_streak >= self.patience else None
            self.reason = self.collapse_message(empty_layers, streak)
        self.reported.extend(warnings)
        return warnings

    def summary(self) -> dict[str, Any]:
        """``{"status", "reason", "hint"}`` for ``summary.json``."""
        return {
            "status": self.status,
            "reason": self.reason,
            "hint": self.hint() if self.status != "ok" else "",
        }

    def state_dict(self) -> dict[str, Any]:
        """Plain-data state, for checkpoints: the fields of :data:`_STATE`."""
        return {name: kind(getattr(self, name)) for name, kind in _STATE.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; an entry it lacks takes its type's empty value."""
        for name, kind in _STATE.items():
            setattr(self, name, kind(state.get(name, kind())))
