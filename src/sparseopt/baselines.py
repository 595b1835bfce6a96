r"""The magnitude-pruning baseline at a given density, and a verdict against it.

Training sparse is only worth it if it beats the obvious alternative: train the
dense network, keep the largest weights, fine-tune with the mask fixed. This module
is that alternative, used by ``sparseopt compare --prune-baseline`` and the
benchmarks:

- :func:`magnitude_masks`: global magnitude pruning of the layer weights
  (one threshold over all layers, as ``torch.nn.utils.prune.global_unstructured``
  with ``L1Unstructured``), keeping a fraction ``keep`` of them;
- :class:`FixedMask`: a training callback that starts from given weights and
  re-applies the masks after every step (fine-tuning with the support fixed);
- :func:`verdict`: ``yes`` / ``no`` / ``tie`` for two accuracies on the same test
  set, a tie when the gap is within two standard errors.

Reference: Han, Pool, Tran & Dally, "Learning both Weights and Connections for
Efficient Neural Networks", NeurIPS 2015 (prune, then retrain with the mask fixed).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from sparseopt.groups import layer_weights

__all__ = [
    "FINETUNE_LR_FACTOR",
    "REFIT_OPTIMIZERS",
    "FixedMask",
    "GradualMagnitude",
    "check_refit_optimizer",
    "gradual_keep",
    "magnitude_masks",
    "prunable_weights",
    "refit_optimizer_settings",
    "verdict",
]

#: Fine-tuning with the support fixed runs at this fraction of the dense learning rate
#: (the pruning baseline of ``sparseopt compare``, and the refit of a sparse run:
#: :mod:`sparseopt.engine.refit`).
FINETUNE_LR_FACTOR = 0.1

#: The refit's optimizers (torch's, each with its registry recipe's update settings:
#: :func:`refit_optimizer_settings`; ``TrainConfig.refit_optimizer``).
REFIT_OPTIMIZERS = ("sgd", "adam")


def check_refit_optimizer(name: Any) -> None:
    """Refuse a refit optimizer that is not one of :data:`REFIT_OPTIMIZERS`.

    Raises:
        ValueError: naming the value and the valid ones.
    """
    if name not in REFIT_OPTIMIZERS:
        raise ValueError(
            f"Invalid refit_optimizer value: {name!r}; expected one of {list(REFIT_OPTIMIZERS)}"
        )


def refit_optimizer_settings(lr: float | None = None, optimizer: str = "sgd") -> dict[str, Any]:
    """The keyword arguments of the refit's torch optimizer ``optimizer`` (``sgd`` or
    ``adam``, :data:`REFIT_OPTIMIZERS`): its registry recipe's update
    settings (SGD's momentum; Adam's betas and eps where the recipe sets them, else
    torch's; never a weight decay) at ``lr``
    (``None``: a tenth of that recipe's learning rate,
    :data:`~sparseopt.baselines.FINETUNE_LR_FACTOR`, the lr ``compare --prune-baseline``
    fine-tunes that optimizer's pruned network at)."""
    from sparseopt.optim.registry import get_optimizer_info

    check_refit_optimizer(optimizer)
    recipe = get_optimizer_info(optimizer).defaults
    if lr is None:
        lr = float(recipe["lr"]) * FINETUNE_LR_FACTOR
    # the update's own settings only: no weight decay, whatever the dense recipe has
    kept = {k: recipe[k] for k in ("momentum", "betas", "eps") if k in recipe}
    return {"lr": float(lr), **kept}


def prunable_weights(
    model: nn.Module, kinds: Iterable[type] | None = None
) -> dict[str, torch.Tensor]:
    """The weights that pruning acts on, by parameter name: the layer weights
    (:func:`sparseopt.groups.layer_weights`, those the sparse optimizers penalise and the
    weight density counts: Conv and Linear weights, attention projections, Hugging Face
    ``Conv1D`` weights); with ``kinds``, those of modules of these types only."""
    chosen = tuple(kinds) if kinds is not None else None
    return {
        w.param_name: w.param
        for w in layer_weights(model)
        if chosen is None or isinstance(w.module, chosen)
    }


@torch.no_grad()
def magnitude_masks(
    model: nn.Module, keep: float, kinds: Iterable[type] | None = None
) -> dict[str, torch.Tensor]:
    """Keep-masks of global magnitude pruning keeping a fraction ``keep`` of the weights.

    The ``round(keep · n)`` entries of largest magnitude over all layer weights
    (:func:`prunable_weights`; ``kinds`` as there) are kept (ties broken by position,
    so exactly that many): the set the sparse methods' weight density counts, so the
    baseline is pruned to the same density of the same weights.

    Example:
        >>> net = nn.Linear(4, 2)
        >>> _ = net.weight.data.copy_(torch.tensor([[4.0, -1, 0, 2], [3, 0.5, -6, 1]]))
        >>> magnitude_masks(net, 0.25)["weight"].int().tolist()
        [[1, 0, 0, 0], [0, 0, 1, 0]]
    """
    if not 0.0 <= keep <= 1.0 or math.isnan(keep):
        raise ValueError(f"Invalid keep value: {keep!r}; expected a fraction in [0, 1]")
    weights = prunable_weights(model, kinds)
    if not weights:
        raise ValueError("the model has no layer weight to prune (Conv, Linear, attention)")
    flat = torch.cat([w.detach().abs().flatten().float().cpu() for w in weights.values()])
    k = round(keep * flat.numel())
    keep_flat = torch.zeros(flat.numel(), dtype=torch.bool)
    if k > 0:
        keep_flat[torch.topk(flat, k, sorted=False).indices] = True
    masks, start = {}, 0
    for name, w in weights.items():
        masks[name] = keep_flat[start : start + w.numel()].view(w.shape).clone()
        start += w.numel()
    return masks


class _KeptMasks:
    """What a callback that keeps masked weights at zero does at every step: the masks
    (``self.masks``, keep-masks by parameter name) applied to the weights after each
    optimizer step, and where the run clips, to their gradients before it. The one
    mechanism of :class:`FixedMask` and :class:`GradualMagnitude`."""

    masks: dict[str, torch.Tensor]

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        """Zero the masked entries of ``model``'s weights."""
        params = dict(model.named_parameters())
        for name, mask in self.masks.items():
            params[name].mul_(mask.to(params[name].device, params[name].dtype))

    @torch.no_grad()
    def on_before_optimizer_step(self, trainer: Any, optimizer: Any) -> None:
        """Where the run clips its gradient, zero the masked entries' gradients first: the
        bound then measures what the step applies (their weights are zeroed again after
        it, so nothing else changes; a run that does not clip skips the work)."""
        if not trainer.config.clips():
            return
        params = dict(trainer.model.named_parameters())
        for name, mask in self.masks.items():
            grad = params[name].grad
            if grad is not None:
                grad.mul_(mask.to(grad.device, grad.dtype))


class FixedMask(_KeptMasks):
    """Training callback: start from ``state`` and keep masked weights at zero.

    ``on_train_begin`` loads ``state`` into the trainer's model (a fresh run only) and
    applies the masks, so epoch 0 evaluates the pruned network;
    ``on_before_optimizer_step`` zeroes the masked gradients (a clipped run's) and
    ``on_step_end`` re-applies the masks after every optimizer step.
    """

    def __init__(
        self, state: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]
    ) -> None:
        self.state = {k: v.detach().clone() for k, v in state.items()}
        self.masks = dict(masks)

    def on_train_begin(self, trainer: Any) -> None:
        if not trainer.history:  # a fresh run (a resumed one keeps its own weights)
            trainer.model.load_state_dict(self.state)
        self.apply(trainer.model)

    def on_step_end(self, trainer: Any, step: int) -> None:
        self.apply(trainer.model)


def _gradual_span(total: int, start: float, end: float) -> tuple[int, int]:
    """The steps ``(t0, t1)`` between which gradual pruning prunes: ``start`` and ``end``
    of ``total``, with ``t1 ≥ 1`` and ``t0 < t1`` (a run of one step prunes at it)."""
    t1 = max(1, int(end * total))
    return min(int(start * total), t1 - 1), t1


def gradual_keep(step: int, total: int, density: float, start: float, end: float) -> float:
    r"""The fraction of the layer weights that gradual magnitude pruning keeps after
    optimizer step ``step`` of ``total`` (Zhu & Gupta 2017):

    .. math::
        s_t = d + (1 - d)\left(1 - \frac{t - t_0}{t_1 - t_0}\right)^3,
        \qquad t_0 = \lfloor \text{start}\cdot T \rfloor,\ t_1 = \lfloor \text{end}\cdot
        T \rfloor,

    1 before :math:`t_0`, :math:`d` from :math:`t_1` on: it prunes fast while most weights
    are small and slowly near the end.

    Example:
        >>> [round(gradual_keep(t, 100, 0.1, 0.1, 0.6), 3) for t in (0, 10, 35, 60, 99)]
        [1.0, 1.0, 0.213, 0.1, 0.1]
    """
    t0, t1 = _gradual_span(total, start, end)
    if step <= t0:
        return 1.0
    if step >= t1:
        return density
    frac = (step - t0) / max(t1 - t0, 1)
    return density + (1.0 - density) * (1.0 - frac) ** 3


class GradualMagnitude(_KeptMasks):
    """Training callback: gradual magnitude pruning of the layer weights while the
    network trains (Zhu & Gupta, "To prune, or not to prune", 2017).

    From ``start`` to ``end`` of the run's optimizer steps the layer weights are pruned
    ``updates`` times by one global magnitude threshold (:func:`magnitude_masks`) to the
    fraction :func:`gradual_keep`; between updates and after ``end`` the mask is kept
    fixed (pruned weights are zeroed after every step; where the run clips, their
    gradients before it, as :class:`FixedMask`); a pruned weight never comes back. The run
    ends at ``density`` of the layer weights exactly. Its state (the mask, the schedule's
    length and the density) goes into the run's checkpoints, so an interrupted run
    resumes where it stopped, and one resumed with more epochs keeps its mask. Not for a
    sharded (FSDP2) network.

    A baseline that prunes as it trains, in the same epochs as a sparse method: on the
    robustness matrix's five seeds (docs/robustness.md, "The matrix against gradual
    magnitude pruning") its test accuracy is above the one-shot pruning of
    :func:`magnitude_masks` plus fine-tuning at the same density in 124 of 150 cells (by
    more than two standard errors in 41, below by that much in 2), and in a probe up to
    13 points above it on a transformer.

    Example:
        >>> cb = GradualMagnitude(0.25, start=0.0, end=0.5, updates=2)
        >>> cb.total = 8
        >>> [t for t in range(1, 9) if cb._due(t)]  # steps 2 and 4 (t1): then fixed
        [2, 4]
    """

    def __init__(
        self, density: float, *, start: float = 0.1, end: float = 0.6, updates: int = 50
    ) -> None:
        if not 0.0 < density <= 1.0 or math.isnan(density):
            raise ValueError(f"Invalid density value: {density!r}; expected a fraction in (0, 1]")
        if not 0.0 <= start < end <= 1.0:
            raise ValueError(
                f"Invalid start/end values: {start!r}, {end!r}; expected 0 <= start < end <= 1"
            )
        if updates < 1:
            raise ValueError(f"Invalid updates value: {updates!r}; expected at least 1")
        self.density, self.start, self.end, self.updates = density, start, end, updates
        self.masks: dict[str, torch.Tensor] = {}
        self.total = 0  # the run's optimizer steps (set when it begins)

    def _due(self, step: int) -> bool:
        t0, t1 = _gradual_span(self.total, self.start, self.end)
        every = max(1, math.ceil((t1 - t0) / self.updates))  # at most `updates` of them
        return step == t1 or (t0 < step < t1 and (step - t0) % every == 0)

    def on_train_begin(self, trainer: Any) -> None:
        if trainer.config.fsdp:
            raise ValueError(
                "GradualMagnitude does not prune a sharded (FSDP2) network: its global "
                "threshold needs every weight on every rank; prune it unsharded (DDP works)"
            )
        if not self.total:  # a resumed run keeps the schedule it started with
            self.total = trainer.config.epochs * trainer.batches_per_epoch()
        self.apply(trainer.model)  # a resumed run: its mask (a fresh one has none)

    def on_step_end(self, trainer: Any, step: int) -> None:
        self.apply(trainer.model)  # the step moved pruned weights (momentum): zero first
        if self._due(step):
            keep = gradual_keep(step, self.total, self.density, self.start, self.end)
            found = magnitude_masks(trainer.model, keep)
            # a pruned weight never comes back (a larger keep, after a resume with more
            # epochs, would otherwise let zeros regrow)
            self.masks = {k: m & self.masks[k] if k in self.masks else m for k, m in found.items()}
            self.apply(trainer.model)

    def state_dict(self) -> dict[str, Any]:
        return {
            "masks": {k: v.clone() for k, v in self.masks.items()},
            "total": self.total,
            "density": self.density,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The mask and the schedule of the run that wrote ``state``: a run resumed with
        more epochs keeps its first schedule (pruned to ``density`` by its ``t1``, then
        fixed); one whose density differs is refused."""
        if state.get("density", self.density) != self.density:
            raise ValueError(
                f"Invalid density value: {self.density!r}; the run was pruned towards "
                f"{state['density']!r} (start it again to prune to another density)"
            )
        self.masks = {k: v.to(torch.bool) for k, v in state["masks"].items()}
        self.total = int(state.get("total", 0))


def verdict(acc: float, ref: float, n: int, z: float = 2.0) -> str:
    r"""Does accuracy ``acc`` beat ``ref``, both measured on the same ``n`` test samples?

    ``"yes"`` when :math:`acc - ref > z\,s`, ``"no"`` when :math:`ref - acc > z\,s`,
    ``"tie"`` otherwise, with :math:`s = \sqrt{(acc(1-acc) + ref(1-ref))/n}` the standard
    error of the difference of two accuracies (binomial, independent errors: a
    conservative stand-in for a paired test, whose per-sample predictions are not kept).

    Example:
        >>> verdict(0.8658, 0.5077, 10_000), verdict(0.891, 0.9057, 10_000)
        ('yes', 'no')
        >>> verdict(0.1045, 0.0995, 2_000)
        'tie'
    """
    if n <= 0:
        raise ValueError(f"Invalid n value: {n!r}; expected a positive number of test samples")
    margin = z * math.sqrt((acc * (1 - acc) + ref * (1 - ref)) / n)
    if acc - ref > margin:
        return "yes"
    if ref - acc > margin:
        return "no"
    return "tie"
