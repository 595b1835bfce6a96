"""Training configuration: the :class:`TrainConfig` dataclass and its file format.

One :class:`TrainConfig` describes one training run completely: data, model, optimizer
and its hyperparameters, sparse initialisation, schedule, budget, seed, device and
output. It holds only plain data (strings, numbers, booleans, lists and dicts of those),
so it round-trips through ``dict``, YAML, TOML and JSON:

    >>> cfg = TrainConfig(optimizer="adabreg", epochs=3)
    >>> TrainConfig.from_dict(cfg.to_dict()) == cfg
    True

Every field is also a ``sparseopt train`` flag (``lam`` is ``--lam``, ``batch_size``
is ``--batch-size``...), and a config file (``--config FILE``) uses the field names as
keys (``-`` and ``_`` are interchangeable); flags given on the command line override
the file.

Fields left at ``None`` are filled by :meth:`TrainConfig.resolve` from the optimizer's
recipe in the registry (:mod:`sparseopt.optim.registry`, the one source of every
default: hyperparameters, λ per penalty, sparse-start density, schedule); the resolved
values are what a run directory's ``config.yaml`` records.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from sparseopt.baselines import REFIT_OPTIMIZERS
from sparseopt.config._fields import _key, _meta, _opt
from sparseopt.config.checks import SCHEDULES, validate
from sparseopt.config.files import load_config_file, load_run_config, save_config_file

__all__ = [
    "GROW_REFUSED",
    "HYPERPARAMETER_FIELDS",
    "PENALTY_FIELDS",
    "RESUME_OVERRIDABLE",
    "REFIT_OPTIMIZERS",
    "SCHEDULES",
    "SPARSE_ONLY_FIELDS",
    "TrainConfig",
    "load_config_file",
    "load_run_config",
    "refit_epochs",
    "save_config_file",
]


def _canonical(grouping: Any) -> str | None:
    """:func:`sparseopt.groups.canonical_grouping` of ``grouping``, ``None`` where it is
    not one (a coupled kind, a typo: not judged here; the build names it)."""
    from sparseopt.groups import canonical_grouping

    try:
        return canonical_grouping(grouping)
    except ValueError:
        return None


def _kind_penalties(settings: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """Each layer kind's ``(penalty, grouping)`` in a config's settings (a mapping of
    field names): ``conv_*``/``linear_*`` over ``penalty``/``groups``, a group penalty's
    grouping ``filter`` when none is given; the grouping canonical
    (:func:`_canonical`)."""
    return [
        (
            str(settings.get(f"{kind}_penalty") or settings.get("penalty")),
            _canonical(settings.get(f"{kind}_groups") or settings.get("groups") or "filter"),
        )
        for kind in ("conv", "linear")
    ]


def rows_grouped(settings: Mapping[str, Any]) -> bool:
    """Whether a config's settings (a mapping of field names) group some layer kind's
    rows: a group penalty over ``filter`` groups (the grouping a group penalty takes by
    default), no coupled groups — where ``head_groups`` decides the output layer's
    grouping (:func:`sparseopt.groups.param_groups`). The one test for it: the resolved
    config sets ``head_groups`` then, and a run directory saved before the field gets the
    rows it had (:func:`load_run_config`)."""
    if settings.get("coupled"):
        return False
    return any(p.startswith("group_") and g == "filter" for p, g in _kind_penalties(settings))


def structure(settings: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(penalty, grouping)`` of a structured run's settings (a mapping of field names),
    else ``None``: :meth:`TrainConfig.structured`, for a saved ``config.yaml`` too
    (:func:`load_run_config`)."""
    if settings.get("coupled"):
        return None
    found = {(p, g) for p, g in _kind_penalties(settings) if p != "none"}
    if len(found) != 1:
        return None
    penalty, grouping = found.pop()
    structured = penalty.startswith("group_") and grouping in ("filter", "channel")
    return (penalty, grouping) if structured else None


def _penalty_fields() -> tuple[str, ...]:
    """Fields routed to :func:`sparseopt.groups.param_groups` (per-layer penalties): the
    registry's param-group keywords, less ``exclude`` (not a config field). Read from the
    registry when first needed, so importing this module does not import the optimizers."""
    from sparseopt.optim.registry import PARAM_GROUP_KEYS

    return tuple(k for k in PARAM_GROUP_KEYS if k != "exclude")


def __getattr__(name: str) -> Any:
    """``PENALTY_FIELDS`` (:func:`_penalty_fields`), computed on first access."""
    if name == "PENALTY_FIELDS":
        return _penalty_fields()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Optimizer hyperparameters passed to the optimizer when set (``None``: its default).
HYPERPARAMETER_FIELDS = (
    "lr",
    "delta",
    "momentum",
    "betas",
    "eps",
    "kappa",
    "nu",
    "beta",
    "gamma",
    "weight_decay",
    "nesterov",
)

#: Structure settings that need a sparse optimizer (``None``: off). A dense optimizer
#: (``sgd``, ``adam``) has no λ to control and no support whose saturation means anything.
SPARSE_ONLY_FIELDS = (
    "target_density",
    "target_allocation",
    "grow_every",
    "coupled",
    "refit",
    "refit_lr",
    "refit_optimizer",
    "refit_warmup",
    "refit_guard",
)

#: Fields a resumed run may change (everything else must match the saved config).
RESUME_OVERRIDABLE = frozenset(
    {
        "epochs",
        "quiet",
        "plots",
        "device",
        "threads",
        "tensorboard",
        "eval_batch_size",
        "test_every",
        "keep_checkpoints",
        "checkpoint_seconds",
        "stall_epochs",
    }
)


#: Optimizers with which ``grow_every`` is refused, and why (prune/grow.py: a widened
#: layer's new entries get zero-padded state; RDA's prox centre w₀ = 0 and zero gradient
#: average then cut the new incoming weights to zero at the next step).
GROW_REFUSED = {
    "rda": "RDA sets the new weights back to zero at the next step (its prox centre and "
    "gradient average start at zero for them), so widening is of no use"
}


def refit_epochs(epochs: int, fraction: float | None) -> int:
    r"""Epochs of the refit: :math:`\lfloor fE\rfloor`, at least 1 when ``f > 0`` and at
    least one sparse epoch before it (0 for runs of fewer than 2 epochs).

    Example:
        >>> refit_epochs(20, 0.2), refit_epochs(15, 0.2), refit_epochs(3, 0.2), refit_epochs(1, 0.5)
        (4, 3, 1, 0)
    """
    if not fraction or epochs < 2:
        return 0
    return min(epochs - 1, max(1, int(fraction * epochs + 1e-9)))


@dataclass
class TrainConfig:
    """Everything one training run needs; plain data, round-trips to dict / YAML.

    The defaults are the main job: an AdaBreg-trained MLP on the scikit-learn digits,
    started from a 1 %-dense network (about 3 s on a 2-core CPU with start-up, ≥ 95 % test
    accuracy, well under 25 % of the weights nonzero).

    Every field documents itself in its ``metadata`` (``help``, the ``group`` of the
    ``sparseopt train`` flag, ``metavar``, ``flags``, ``choices``, ``shown`` default): the
    command line, ``--help`` and docs/cli.md's flag table are generated from it
    (:mod:`sparseopt.cli.flags`). Fields left at ``None`` are filled by :meth:`resolve`.
    """

    # -- data
    dataset: str = _opt(
        "digits", "data", "dataset: {datasets}", flags=("--dataset", "-d"), metavar="NAME"
    )
    data_dir: str | None = _opt(
        None,
        "data",
        "where MNIST / Fashion-MNIST / CIFAR-10 files are",
        metavar="DIR",
        shown="$SPARSEOPT_DATA, ~/.cache/sparseopt",
    )
    val_fraction: float = _opt(
        0.1, "data", "fraction of the training data held out for validation", metavar="F"
    )
    dataset_options: dict[str, Any] = field(
        default_factory=dict,
        metadata=_meta(
            "data",
            "dataset loader option, repeatable: limit_train=5000, n_train=… (curves, teacher, "
            "words), r=…/k=… (teacher), test_fonts=STIX (words)",
            flags=("--data-option",),
            metavar="KEY=VALUE",
        ),
    )
    augment: bool = _opt(
        False, "data", "random crop (padding 4) + horizontal flip of training images (CIFAR)"
    )
    # -- model
    model: str = _opt(
        "mlp", "model", "architecture: {models}", flags=("--model", "-m"), metavar="NAME"
    )
    model_options: dict[str, Any] = field(
        default_factory=dict,
        metadata=_meta(
            "model",
            "architecture option, repeatable (hidden=[128,64], widths=[32,64,128,256]); "
            "nooverlap takes k/r from the teacher data",
            flags=("--model-option",),
            metavar="KEY=VALUE",
        ),
    )
    init_density: float | None = _opt(
        None,
        "model",
        "density of the sparse initialisation (Bungert et al. §4.1) in (0, 1]; 1 keeps the "
        "architecture's dense initialisation",
        metavar="R",
        shown="per optimizer: {recipe[init_density]}; in a structured run "
        "{group_recipe[init_density]}",
    )
    init_groups: str | None = _opt(
        None,
        "model",
        "draw the sparse-init mask per group (filter, channel, kernel) or elementwise",
        metavar="G",
        shown="elementwise; per group (the penalty's grouping) in a structured run "
        "(TrainConfig.structured) with {group_recipe[init_groups]}, and in a structured "
        "run of a method whose recipe starts dense (a start you ask for)",
    )
    init_distribution: str = _opt(
        "uniform",
        "model",
        "layer densities of the sparse start: uniform, or erk (Erdős–Rényi-kernel, overall "
        "density R; small layers denser)",
        choices=("uniform", "erk"),
        metavar="D",
    )
    init_floor: bool = _opt(
        True,
        "model",
        "every output unit and input channel of every layer keeps a nonzero weight at the "
        "sparse start (a Linear layer on a flattened convolution map: every channel of it)",
    )
    # -- optimizer
    optimizer: str = _opt(
        "adabreg",
        "optimizer",
        "optimizer: {optimizers}",
        flags=("--optimizer", "-o"),
        metavar="NAME",
    )
    lr: float | None = _opt(None, "optimizer", "learning rate", metavar="LR", shown="per optimizer")
    penalty: str | None = _opt(
        None,
        "optimizer",
        "penalty of every layer weight (Conv, Linear, attention projections; biases and norms "
        "are never penalised): l1, l0, tl1, group_l1, group_l0, none",
        metavar="P",
        shown="l1 (sparse methods); per optimizer: {recipe[penalty]}",
    )
    lam: float | None = _opt(
        None,
        "optimizer",
        "penalty weight λ of every weight (docs/recipes.md)",
        metavar="λ",
        shown="per optimizer and penalty; in a structured run {group_recipe[lam]}",
    )
    lam_warmup: float | None = _opt(
        None,
        "optimizer",
        "raise λ linearly from 0 over this fraction of the steps before the refit (of all "
        "the steps without one; 0: off; refused with --target-density, which steers λ "
        "itself)",
        metavar="F",
        shown="per optimizer: {recipe[lam_warmup]}; else 0 (off)",
    )
    groups: str | None = _opt(
        None,
        "optimizer",
        "grouping of group penalties: filter (output channel / neuron), channel (input), "
        "kernel; row/column for Linear",
        metavar="G",
        shown="filter for group penalties",
    )
    conv_penalty: str | None = _opt(None, "optimizer", "penalty of Conv weights only", metavar="P")
    conv_groups: str | None = _opt(None, "optimizer", "grouping of Conv weights", metavar="G")
    conv_lam: float | None = _opt(None, "optimizer", "λ of Conv weights", metavar="λ")
    linear_penalty: str | None = _opt(
        None, "optimizer", "penalty of Linear weights only", metavar="P"
    )
    linear_groups: str | None = _opt(None, "optimizer", "grouping of Linear weights", metavar="G")
    linear_lam: float | None = _opt(None, "optimizer", "λ of Linear weights", metavar="λ")
    head_groups: str | None = _opt(
        None,
        "optimizer",
        "grouping of the output layer where a group penalty groups by filter: its rows are "
        "the classes, so it groups its inputs (channel) unless filter is given (the "
        "behaviour before 2026-11-28)",
        metavar="G",
        shown="channel under a group penalty over filters",
    )
    a: float | None = _opt(
        None,
        "optimizer",
        "shape parameter a of the transformed-ℓ1 penalty tl1",
        flags=("--tl1-a", "--a"),
        metavar="A",
        shown="1",
    )
    group_weight: str | None = _opt(
        None,
        "optimizer",
        "weight w_g of a group in group penalties: for group_l1 sqrt (√ of the group size, "
        "the default) or one; for group_l0 one (counts the nonzero groups, the default; "
        "sqrt leaves it so) or size (counts their weights: a threshold on each group's RMS "
        "entry)",
        metavar="W",
        shown="sqrt (group_l1) / one (group_l0); in a structured run {group_recipe[group_weight]}",
    )
    lam_scale: str | None = _opt(
        None,
        "optimizer",
        "λ per layer: none (one λ for every layer), layer (one param group per layer, each "
        "starting from the same λ: what --target-allocation he, he_all or uniform steers "
        "layer by layer) or "
        "fan_in (each layer's λ in proportion to its weights' He scale √(2/fan-in), squared "
        "for l0/group_l0, with mean λ over the weights: sparseopt.groups.layer_lam_factors)",
        metavar="S",
        shown="per optimizer: {recipe[lam_scale]} (with its target density); else none",
    )
    coupled: str | None = _opt(
        None,
        "optimizer",
        "penalise a transformer's coupled groups instead of its weights: head, neuron or "
        "head,neuron — one group per attention head (its q/k/v rows and output columns) or "
        "MLP neuron (its up row and down column), penalty group_l1 or group_l0, every other "
        "parameter unpenalised, dense start (init_density is not applied); sparseopt prune "
        "removes the dead ones (docs/transformers.md)",
        metavar="KINDS",
        shown="off",
    )
    coupled_lam: dict[str, Any] = field(
        default_factory=dict,
        metadata=_meta(
            "optimizer",
            "λ of one kind of coupled group, repeatable: head=0.05, neuron=0.01 (others: --lam)",
            flags=("--coupled-lam",),
            metavar="KIND=λ",
        ),
    )
    delta: float | None = _opt(None, "optimizer", "elastic-net δ of linbreg, adabreg")
    momentum: float | None = _opt(
        None, "optimizer", "momentum (linbreg, splitlbi, rvsm, proxsgd, sgd)"
    )
    betas: list[float] | None = field(
        default=None,
        metadata=_meta("optimizer", "Adam betas (adabreg, adam)", nargs=2, metavar=("B1", "B2")),
    )
    eps: float | None = _opt(None, "optimizer", "ε of adabreg, adam, rda (adaptive)")
    kappa: float | None = _opt(None, "optimizer", "κ of splitlbi")
    nu: float | None = _opt(None, "optimizer", "ν of splitlbi")
    beta: float | None = _opt(None, "optimizer", "coupling β of rvsm")
    gamma: float | None = _opt(None, "optimizer", "γ of rda")
    weight_decay: float | None = _opt(
        None,
        "optimizer",
        "weight decay (every optimizer; decoupled, as AdamW's, in linbreg, adabreg and rda)",
    )
    nesterov: bool | None = _opt(
        None, "optimizer", "Nesterov momentum (splitlbi, rvsm, proxsgd, sgd)"
    )
    optimizer_options: dict[str, Any] = field(
        default_factory=dict,
        metadata=_meta(
            "optimizer",
            "any other keyword of the optimizer, repeatable: adaptive=false (rda's plain "
            "variant; give --gamma too), deploy=gamma "
            "(splitlbi), dampening=0.5",
            flags=("--optimizer-option",),
            metavar="KEY=VALUE",
        ),
    )
    # -- training
    epochs: int = _opt(30, "training", "epochs", flags=("--epochs", "-e"), metavar="N")
    batch_size: int = _opt(
        64,
        "training",
        "global batch size (split across processes under torchrun)",
        flags=("--batch-size", "-b"),
        metavar="N",
    )
    eval_batch_size: int | None = _opt(
        None,
        "training",
        "evaluation batch size",
        metavar="N",
        shown="256 on CPU, 1024 on GPU (measured: faster per sample there)",
    )
    test_every: int | None = _opt(
        None,
        "training",
        "evaluate the test split every N epochs too (the last epoch always is; the "
        "validation split, every epoch, drives selection and schedules)",
        metavar="N",
        shown="the last epoch only; every epoch when there is no validation split",
    )
    limit_batches: int | None = _opt(
        None, "training", "at most N batches per epoch (quick trials, tests)", metavar="N"
    )
    schedule: str | None = _opt(
        None,
        "training",
        "learning-rate schedule stepped per epoch: none, cosine (to 0 at the last epoch, or "
        "where a refit begins), "
        "step, multistep, plateau (ReduceLROnPlateau on the validation loss; the test loss "
        "without a validation split, the training loss without either)",
        choices=SCHEDULES,
        metavar="S",
        shown="per optimizer: {recipe[schedule]}",
    )
    warmup: float | None = _opt(
        None,
        "training",
        "epochs at the start over which the lr rises linearly, step by step, up to the "
        "schedule's (then the schedule as before; 0: off, and a recipe that warms up to an "
        "lr of its own, AdaBreg's or SplitLBI's, runs at its lr without one)",
        metavar="E",
        shown="per optimizer: {recipe[warmup]}; else 0 (off); with one penalty on every "
        "layer {penalty_recipe[warmup]}; in a structured run {group_recipe[warmup]}",
    )
    refit: float | None = _opt(
        None,
        "training",
        "fraction of the epochs, at the end, that fine-tune the support the sparse optimizer "
        "found: its zero weights stay zero, the others train with --refit-optimizer at "
        "--refit-lr, cosine; the schedule before ends where the refit starts, and so does "
        "--target-density's control of λ (0: off; not with --grow-every)",
        metavar="F",
        shown="per optimizer: {recipe[refit]}; with one penalty on every layer "
        "{penalty_recipe[refit]}; in a structured run {group_recipe[refit]}",
    )
    refit_lr: float | None = _opt(
        None,
        "training",
        "learning rate of the refit's optimizer (cosine from it to 0)",
        metavar="LR",
        shown="per optimizer, with its refit optimizer: {recipe[refit_lr]}; with one penalty "
        "on every layer {penalty_recipe[refit_lr]}; else a tenth of the refit optimizer's "
        "recipe lr ({refit_lrs})",
    )
    refit_optimizer: str | None = _opt(
        None,
        "training",
        "the refit's optimizer: sgd (torch's SGD with the sgd recipe's momentum) or adam "
        "(torch's Adam, with the adam recipe's betas: torch's defaults); no weight decay, "
        "and the masked weights stay zero either way; a recipe's --refit-warmup stays",
        choices=REFIT_OPTIMIZERS,
        metavar="NAME",
        shown="per optimizer: {recipe[refit_optimizer]}; else sgd",
    )
    refit_warmup: float | None = _opt(
        None,
        "training",
        "epochs at the start of the refit over which its lr rises linearly, step by step, "
        "up to --refit-lr (then the cosine as before; 0: off): the switch to the refit's "
        "optimizer at a large lr can undo in one epoch what the sparse phase learned",
        metavar="E",
        shown="per optimizer: {recipe[refit_warmup]}; else 0 (off)",
    )
    refit_guard: bool | None = _opt(
        None,
        "training",
        "keep the network of the sparse phase (same support) when the refit ends more than "
        "two standard errors below it in validation accuracy (classification with a "
        "validation split)",
        shown="yes with a refit",
    )
    clip_grad_norm: float | None = _opt(
        None,
        "training",
        "clip the gradient of the loss to global ℓ2 norm N before every step "
        "(torch.nn.utils.clip_grad_norm_ over every parameter, the refit's steps too; the "
        "penalty is the optimizer's and is not clipped); the epoch rows then record the "
        "norm before clipping, mean and max (grad_norm, grad_norm_max), and the fraction "
        "of steps clipped (clipped); 0: off",
        metavar="N",
        shown="0 (off)",
    )
    clip_grad_ratio: float | None = _opt(
        None,
        "training",
        "clip the gradient of the loss to K times the running mean of its norm (an "
        "exponential moving average over about 50 steps of the norms after clipping; the "
        "first positive norm starts it, unclipped): clips a run's spikes whatever the "
        "scale of its gradient; with --clip-grad-norm the smaller bound; rows as "
        "--clip-grad-norm's; 0: off",
        metavar="K",
        shown="0 (off)",
    )
    lr_step_size: int = _opt(30, "training", "step schedule: decay every N epochs", metavar="N")
    lr_gamma: float = _opt(0.1, "training", "step/multistep/plateau decay factor", metavar="F")
    lr_milestones: list[int] = field(
        default_factory=list,
        metadata=_meta(
            "training", "multistep schedule: epochs at which to decay", nargs="+", metavar="E"
        ),
    )
    lr_patience: int = _opt(
        10,
        "training",
        "plateau schedule: epochs without improvement before decaying",
        metavar="N",
    )
    seed: int = _opt(
        0,
        "training",
        "seeds the validation split, initialisation, batch order and augmentation",
        flags=("--seed", "-s"),
    )
    device: str = _opt(
        "auto", "training", "auto (CUDA if available), cpu, cuda or cuda:N", metavar="DEV"
    )
    threads: int | None = _opt(
        None,
        "training",
        "CPU threads for torch",
        metavar="N",
        shown="1 for networks under a million parameters on CPU unless OMP_NUM_THREADS is "
        "set, else torch's",
    )
    fsdp: bool = _opt(
        False,
        "training",
        "under torchrun, shard parameters, gradients and optimizer state over the ranks "
        "(FSDP2, fully_shard) instead of replicating them (DDP); see docs/distributed.md",
        action="store_true",
    )
    # -- structure
    target_density: float | None = _opt(
        None,
        "structure",
        "steer λ during training so that the penalised weights of the deployable network end "
        "at density D in (0, 1] (TargetDensity with the optimizer's presets; sparse "
        "optimizers only; 0: off, λ fixed; a recipe's target is off when a λ is given)",
        metavar="D",
        shown="per optimizer: {recipe[target_density]}; else off (λ fixed); with one "
        "penalty on every layer {penalty_recipe[target_density]}; in a structured run "
        "{group_recipe[target_density]} (0: off, λ fixed)",
    )
    target_density_every: int = _opt(
        2, "structure", "with --target-density: update λ every N optimizer steps", metavar="N"
    )
    target_density_ramp: float | None = _opt(
        None,
        "structure",
        "with --target-density: steer to a reference density that moves log-linearly from "
        "the first measured density to D over the first F of the sparse steps, then stays "
        "at D (TargetDensity's ramp; 0: D from the first step)",
        metavar="F",
        shown="per optimizer: {recipe[target_density_ramp]} (the recipe's, before its refit); "
        "with one penalty on every layer {penalty_recipe[target_density_ramp]}; in a "
        "structured run {group_recipe[target_density_ramp]}; else the controller presets' "
        "{control[ramp]}; else 0; none where no target steers (a λ given, or a recipe that "
        "keeps λ fixed)",
    )
    target_density_hold: bool | None = _opt(
        None,
        "structure",
        "with --target-density and an lr warm-up (--warmup): no λ update while the lr warms "
        "up, λ held where it starts (TargetDensity's hold_warmup: a loop that lowers λ "
        "while the support cannot grow floods the network once the lr is up)",
        shown="per optimizer (the controller presets): {control[hold_warmup]}; else off; none "
        "where no target steers",
    )
    target_density_lr_coupled: bool | None = _opt(
        None,
        "structure",
        "with --target-density: steer the prox threshold instead of λ (TargetDensity's "
        "lr_coupled: λ follows the lr's fall, so a schedule that takes the lr to 0 does not "
        "take the threshold with it; for a threshold of lr·λ or √(2·lr·λ), ProxSGD's)",
        shown="per optimizer and penalty: {penalty_recipe[target_density_lr_coupled]}; "
        "else off; none where no target steers",
    )
    target_allocation: str | None = _opt(
        None,
        "structure",
        "with --target-density: global (one density over all penalised weights, one λ "
        "factor for every layer) or he (each layer's λ steered to its own share: the last "
        "layer at D, the others at what a global magnitude threshold keeps of a He-normal "
        "draw; sparseopt.control.he_shares) or he_all (as he, the last layer under the "
        "same threshold, at D or more) or uniform (each layer's λ steered to D itself: "
        "the same fraction of every layer, of its filters under a filter grouping); he, "
        "he_all and uniform need one param group per layer, --lam-scale layer or fan_in",
        metavar="A",
        shown=(
            "per optimizer: {control[allocation]} (global with --lam-scale none, --coupled, "
            "no target density, or {one_density}: sparseopt.control.GLOBAL_PENALTIES); "
            "else global"
        ),
    )
    record_path: bool = _opt(
        True,
        "structure",
        "record the solution path into path.npz/path.json (for sparseopt path and prune)",
    )
    grow_every: int | None = _opt(
        None,
        "structure",
        "every K epochs (not after the last) widen by 50% every layer with more than "
        "--grow-tau of its filters selected (GrowCallback, DessiLBI's enlargement; "
        "function-preserving); sparse optimizers except rda, sequential models, one process",
        metavar="K",
        shown="off",
    )
    grow_tau: float = _opt(
        0.8, "structure", "saturation threshold τ of --grow-every, in (0, 1]", metavar="T"
    )
    # -- output
    out: str | None = _opt(
        None,
        "output",
        "run directory",
        metavar="DIR",
        shown="runs/<timestamp>-<dataset>-<optimizer>",
    )
    name: str | None = _opt(None, "output", "run name: --out defaults to runs/NAME")
    tensorboard: bool | None = _opt(None, "output", "TensorBoard logging", shown="if installed")
    quiet: bool = _opt(
        False,
        "output",
        "no progress bar and no per-epoch lines (the final summary is still printed)",
        flags=("--quiet", "-q"),
        action="store_true",
    )
    plots: bool = _opt(False, "output", "PNG plots at the end (later: sparseopt plot RUN_DIR)")
    keep_checkpoints: bool = _opt(
        False, "output", "keep one checkpoint per epoch in checkpoints/", action="store_true"
    )
    checkpoint_seconds: float = _opt(
        30.0,
        "output",
        "write checkpoint.pt after an epoch once S seconds passed since the last one (and "
        "after the last epoch, on Ctrl-C/SIGTERM, with --keep-checkpoints); 0: every epoch",
        metavar="S",
    )
    stall_epochs: int = _opt(
        3,
        "output",
        "report a run stuck at chance level (training loss, or validation accuracy), or "
        "whose deployable network gives one output for every input (or one score for two "
        "classes or more), for N epochs in a row: status stalled/collapsed, exit 4 (0: off)",
        metavar="N",
    )

    # ------------------------------------------------------------------ conversion

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of every field, in declaration order."""
        return [f.name for f in fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        """Plain-data dict of every field (lists, not tuples)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build a config from a mapping of field names (``-`` or ``_``) to values.

        Raises:
            ValueError: for an unknown key (the message lists the valid ones) or an
                invalid value.
        """
        if not isinstance(data, Mapping):
            raise ValueError(
                f"Invalid config: expected a mapping of settings, got {type(data).__name__}"
            )
        valid = cls.field_names()
        kwargs: dict[str, Any] = {}
        for raw_key, value in data.items():
            key = _key(raw_key)
            if key not in valid:
                raise ValueError(
                    f"Invalid config key: {raw_key!r}; valid keys are {', '.join(valid)}"
                )
            kwargs[key] = value
        cfg = cls(**kwargs)
        cfg.validate()
        return cfg

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated)."""
        cfg = dataclasses.replace(self, **{_key(k): v for k, v in changes.items()})
        cfg.validate()
        return cfg

    # ------------------------------------------------------------------ validation

    def validate(self) -> TrainConfig:
        """Check types and ranges of the fields the engine interprets; return ``self``.

        Names of datasets, models, optimizers and penalties and the optimizer
        hyperparameters are checked where they are used (the messages then list the
        valid names).

        Raises:
            ValueError: naming the field and the offending value.
        """
        validate(self)
        return self

    # ------------------------------------------------------------------ resolution

    def resolve(self, *, controller: bool = False) -> TrainConfig:
        """A copy with ``None`` fields filled from the optimizer's registry recipe.

        ``controller``: a :class:`~sparseopt.control.TargetDensity` of the caller's steers
        λ (``train(callbacks=[...])``): an unset λ takes the controller's start, as
        under a target density (:attr:`~sparseopt.optim.registry.OptimizerInfo.target_lam`).

        Fills the recipe's hyperparameters the optimizer takes (``lr``, ``momentum``...),
        its training settings (``init_density``, ``schedule``, ``lam_warmup`` — 0 where a
        target density steers λ —, ``refit``: 0 with ``grow_every``, ``None`` for dense
        methods; with ``target_density`` the controller steers λ over the epochs before
        the refit) and, for sparse methods,
        ``penalty`` (the recipe's: ``l1``, RDA's and ProxSGD's ``l0``; ``group_l1`` in a
        coupled run), ``lam_scale`` (the recipe's training setting — AdaBreg's
        ``layer`` — while a target density steers λ, else ``none``; ``None`` for dense
        methods), ``target_allocation`` (the controller preset's where the groups are
        layers and a target is set, else ``global``) and the recipe's λ for the penalties in use
        (:func:`sparseopt.optim.registry.recipe_lams`). The optimizer name is
        canonicalised.

        Raises:
            ValueError: unknown optimizer name (the message lists the valid ones), or a
                :data:`SPARSE_ONLY_FIELDS` setting with a dense optimizer, or
                ``grow_every`` with an optimizer of :data:`GROW_REFUSED`.
        """
        from sparseopt.groups import HEAD_GROUPS
        from sparseopt.init import ELEMENTWISE
        from sparseopt.optim.registry import get_optimizer_info, list_optimizers, recipe_lams

        info = get_optimizer_info(self.optimizer)
        if self.grow_every is not None and info.name in GROW_REFUSED:
            raise ValueError(
                f"Invalid grow_every value: {self.grow_every!r}; optimizer {info.name!r} "
                f"cannot grow layers: {GROW_REFUSED[info.name]}"
            )
        if not info.sparse:
            for key in SPARSE_ONLY_FIELDS:
                off = (
                    key in ("refit", "refit_warmup", "refit_guard", "target_density")
                    and not getattr(self, key)
                ) or (key == "target_allocation" and getattr(self, key) == "global")
                if getattr(self, key) is not None and not off:
                    sparse = [n for n in list_optimizers() if get_optimizer_info(n).sparse]
                    raise ValueError(
                        f"Invalid {key} value: {getattr(self, key)!r}; optimizer "
                        f"{info.name!r} is dense (no λ, no sparse support); use one of "
                        f"{', '.join(sparse)}"
                    )
        changes: dict[str, Any] = {"optimizer": info.name}
        accepted = info.accepted_keywords()
        for key, value in info.defaults.items():
            if key in HYPERPARAMETER_FIELDS and key in accepted and getattr(self, key) is None:
                changes[key] = list(value) if isinstance(value, tuple) else value
        # the recipe's target density (SplitLBI's) is off where λ is the user's: a λ given
        # (also through optimizer_options), a λ warm-up, or no penalised weight at all
        fixed_lam = (
            bool(self.coupled_lam)
            or bool(self.lam_warmup)
            or any(getattr(self, k) is not None for k in _penalty_fields() if k.endswith("lam"))
            or any(str(k).endswith("lam") for k in self.optimizer_options or {})
            or not self._penalised(self.penalty)
        )
        structured = self.structured()
        # a structured run's group recipe, or the recipe of the one elementwise penalty of
        # every penalised layer kind
        group_recipe = (
            info.group_training.get(structured[0], {})
            if structured
            else info.penalty_training.get(self.sole_penalty(self._default_penalty(info)), {})
        )
        recipe = {**info.training, **group_recipe}
        target = recipe.get("target_density") if self.target_density is None else None
        for key, value in recipe.items():
            if key in ("target_density_ramp", "target_density_lr_coupled") and (
                fixed_lam or target == 0
            ):
                continue  # no target: no ramp nor coupling (the recipe's go with its target)
            if key == "lam" and self.group_weight not in (None, recipe.get("group_weight")):
                continue  # a group recipe's λ goes with its group weight (RDA's group ℓ0)
            if key == "lr" and self.warmup == 0 and recipe.get("warmup"):
                continue  # a recipe's peak lr goes with its warm-up (SplitLBI's, round 71)
            if key == "refit_lr" and self.refit_optimizer not in (
                None,
                recipe.get("refit_optimizer", "sgd"),
            ):
                continue  # a recipe's refit lr goes with its refit optimizer
            if getattr(self, key) is None:
                changes[key] = 0.0 if key == "target_density" and fixed_lam else value
        if changes.get("target_density", self.target_density):  # the controller's presets,
            from sparseopt.control import PRESETS  # written into the run

            preset = PRESETS.get(info.name, {})
            if self.target_density_ramp is None and "target_density_ramp" not in changes:
                # (not over the recipe's own: ProxSGD's)
                changes["target_density_ramp"] = float(preset.get("ramp", 0.0))
            if self.target_density_hold is None:
                changes["target_density_hold"] = bool(preset.get("hold_warmup", False))
            if (
                self.target_density_lr_coupled is None
                and "target_density_lr_coupled" not in changes
            ):
                changes["target_density_lr_coupled"] = bool(preset.get("lr_coupled", False))
        steered = bool(changes.get("target_density", self.target_density))
        if not steered:  # no controller: no coupling of one (a recipe's; the user's stays)
            changes.pop("target_density_lr_coupled", None)
        if steered and "lam_warmup" in changes:  # the recipe's (RDA's): the controller
            changes["lam_warmup"] = 0.0  # steers λ from its first step instead
        if info.sparse:
            if self.penalty is None:
                changes["penalty"] = self._default_penalty(info) or "l1"
            if self.lam_scale is None:  # coupled groups are not layers
                # the recipe's groups per layer serve its per-layer controller: with a λ
                # of the user's (no target) the run keeps one group per layer kind
                recipe = changes.get("lam_scale", info.defaults.get("lam_scale", "none"))
                if not steered:
                    recipe = info.defaults.get("lam_scale", "none")
                changes["lam_scale"] = "none" if self.coupled else recipe
            penalty = changes.get("penalty", self.penalty)
            if self.head_groups is None and rows_grouped({**vars(self), "penalty": penalty}):
                changes["head_groups"] = HEAD_GROUPS  # the classes are never a group
            # (a λ of the group recipe, set above, is the recipe's λ of that run; like a
            # λ given it also keeps target_lam's start out: it was measured with its weight)
            settings = {k: changes.get(k, getattr(self, k)) for k in _penalty_fields()}
            settings["penalty"] = changes.get("penalty", self.penalty)
            changes.update(recipe_lams(info, settings, steered=steered or controller))
        elif self.lam_scale in (None, "none"):  # no λ, no groups to scale (a run saved
            changes["lam_scale"] = None  # before the field says "none"); others are refused
        if self.target_allocation is None:  # the recipe's, where its groups are layers
            from sparseopt.control import preset_allocation

            lam_scale = changes.get("lam_scale", self.lam_scale)
            per_layer = info.sparse and not self.coupled and lam_scale != "none"
            base = changes.get("penalty", self.penalty)
            pens = [kind or base for kind in (self.conv_penalty, self.linear_penalty)]
            preset = preset_allocation(info.name, pens)
            changes["target_allocation"] = preset if per_layer and steered else "global"
        elif self.target_allocation != "global" and not steered:
            raise ValueError(
                f"Invalid target_allocation value: {self.target_allocation!r}; it shares a "
                "target density among the layers and no target density is set "
                "(target_density, or the optimizer's recipe)"
            )
        if self.init_density is None and "init_density" not in changes:
            changes["init_density"] = 1.0
        sparse_start = changes.get("init_density", self.init_density) < 1.0
        if structured and sparse_start and self.init_groups is None:  # written out: a
            # saved null is older (load_run_config)
            # a structured run's sparse start is drawn per group (an elementwise start puts
            # a weight in every unit, which switches every group on): a group recipe's own
            # start (round 56: LinBreg's and AdaBreg's group ℓ1 at 13 %), and any start of a
            # method whose recipe starts dense (the user's: SplitLBI, RDA, RVSM, ProxSGD).
            # The one exception is LinBreg's and AdaBreg's group ℓ0, measured with their
            # elementwise 1 % start (round 53; AdaBreg's rounds 64p, 72p): any sparse start
            # of theirs, a user's too, stays elementwise there.
            # What else a group recipe sets (λ, weights, lr, a target or refit of 0) does
            # not decide the start
            per_group = "init_density" in group_recipe or info.training["init_density"] >= 1.0
            changes["init_groups"] = structured[1] if per_group else ELEMENTWISE
        elif self.init_groups == ELEMENTWISE and not (structured and sparse_start):
            changes["init_groups"] = None  # the same start; None where it decides nothing
        if self.schedule is None and "schedule" not in changes:
            changes["schedule"] = "none"
        if self.lam_warmup is None and "lam_warmup" not in changes:
            changes["lam_warmup"] = 0.0
        if self.warmup is None and "warmup" not in changes:
            changes["warmup"] = 0.0
        for key in ("clip_grad_norm", "clip_grad_ratio"):
            if getattr(self, key) is None and key not in changes:
                changes[key] = 0.0
        if self.grow_every is not None and self.refit:
            raise ValueError(
                f"Invalid refit value: {self.refit!r}; a refit fixes the support, which "
                "grow_every widens: use one of them"
            )
        if self.refit is None and info.sparse:  # not where the shape moves
            grown = self.grow_every is not None
            changes["refit"] = 0.0 if grown else changes.get("refit", 0.0)
        elif not info.sparse:
            changes["refit"] = None
        if not info.sparse:
            changes["refit_warmup"] = None
            changes["refit_guard"] = None
            changes["refit_optimizer"] = None
        else:
            if self.refit_warmup is None and "refit_warmup" not in changes:
                changes["refit_warmup"] = 0.0
            if self.refit_optimizer is None and "refit_optimizer" not in changes:
                changes["refit_optimizer"] = "sgd"
            # on wherever a refit runs, unless the user turned it off; no refit, no guard
            refit = changes.get("refit", self.refit)
            changes["refit_guard"] = bool(refit) and self.refit_guard is not False
        return self.replace(**changes)

    def clips(self) -> bool:
        """Whether the run clips its gradient (``clip_grad_norm`` or ``clip_grad_ratio``).

        Example:
            >>> TrainConfig().clips(), TrainConfig(clip_grad_ratio=2.0).clips()
            (False, True)
        """
        return bool(self.clip_grad_norm or self.clip_grad_ratio)

    def structured(self) -> tuple[str, str] | None:
        """``(penalty, grouping)`` of a structured run — every penalised layer kind with
        the same group penalty over the same grouping, ``filter`` or ``channel``, no
        coupled groups — else ``None``. Where the optimizer has a recipe for that penalty
        (``group_training``, :class:`~sparseopt.optim.registry.OptimizerInfo`), it
        replaces the recipe's training settings. A sparse start is drawn per group — an
        elementwise start (with its floor: a weight in every unit) switches every group
        on, and the group prox then fills each (rounds 53 and 56 of docs/recipes.md) —
        except under LinBreg's and AdaBreg's group ℓ0, whose recipes were measured with
        the elementwise start (:meth:`resolve`).

        Example:
            >>> TrainConfig(optimizer="linbreg", penalty="group_l1").structured()
            ('group_l1', 'filter')
            >>> TrainConfig(optimizer="linbreg", penalty="group_l1", linear_penalty="l1").structured() is None
            True
        """
        return structure(vars(self))

    def sole_penalty(self, default: str | None = None) -> str | None:
        """The one penalty of every penalised layer kind (``conv_penalty`` and
        ``linear_penalty`` override ``penalty``, which is ``default`` — the recipe's,
        ``l1`` without one — when not given), else ``None`` (two penalties, or none).
        Where the optimizer has a recipe for it (``penalty_training``,
        :class:`~sparseopt.optim.registry.OptimizerInfo`), it replaces the recipe's
        settings (round 72p of docs/recipes.md).

        Example:
            >>> TrainConfig(optimizer="adabreg", penalty="l0").sole_penalty()
            'l0'
            >>> TrainConfig(optimizer="adabreg", penalty="l0", linear_penalty="l1").sole_penalty() is None
            True
        """
        base = self.penalty or default or "l1"
        kinds = {kind or base for kind in (self.conv_penalty, self.linear_penalty)} - {"none"}
        return next(iter(kinds)) if len(kinds) == 1 else None

    def _default_penalty(self, info: Any) -> str | None:
        """The penalty a run that names none takes: ``group_l1`` in a coupled run, else the
        optimizer's recipe's (``info``: its :class:`~sparseopt.optim.registry.OptimizerInfo`)."""
        return "group_l1" if self.coupled else info.defaults.get("penalty")

    def _penalised(self, penalty: str | None) -> bool:
        """Whether some layer kind has a penalty (``conv_penalty``/``linear_penalty``
        override ``penalty`` for their layers; a ``None`` penalty is the recipe's, never
        ``none``, so it counts as ``l1``)."""
        base = penalty or "l1"
        return any((kind or base) != "none" for kind in (self.conv_penalty, self.linear_penalty))

    def groups_start_alive(self) -> str | None:
        """The grouping (``filter`` or ``channel``) of a group penalty whose every group
        starts active, else ``None``: a sparse start drawn elementwise (or per kernel)
        with its floor — every unit and input channel keeps a weight — gives every such
        group a nonzero entry, so an inverse scale space method makes each of them dense
        in its first steps (LinBreg's ``group_l1`` on the digits MLP: 83 % of the weights
        after one epoch, whatever the λ; docs/recipes.md, round 53; its recipe since
        round 56 starts per group). Kernel groups are not all covered by the floor;
        coupled groups start dense on purpose; a grouping that is not one of
        :data:`sparseopt.groups.GROUPINGS` is not judged.

        Example:
            >>> TrainConfig(optimizer="linbreg", penalty="group_l0").resolve().groups_start_alive()
            'filter'
            >>> TrainConfig(optimizer="linbreg", penalty="group_l1").resolve().groups_start_alive() is None
            True
            >>> TrainConfig(optimizer="linbreg").resolve().groups_start_alive() is None
            True
        """
        from sparseopt.init import ELEMENTWISE

        if self.init_density is None or self.init_density >= 1 or self.coupled:
            return None
        if not self.init_floor:
            return None
        drawn = None if self.init_groups == ELEMENTWISE else self.init_groups
        if drawn is not None and _canonical(drawn) != "kernel":
            return None
        for pen, grouping in _kind_penalties(vars(self)):
            if pen.startswith("group_") and grouping in ("filter", "channel"):
                return grouping
        return None

    def optimizer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`sparseopt.create_optimizer` (set fields only)."""
        out: dict[str, Any] = {}
        for key in (*HYPERPARAMETER_FIELDS, *_penalty_fields()):
            value = getattr(self, key)
            if value is None:
                continue
            out[key] = tuple(value) if key == "betas" else value
        for key, value in self.optimizer_options.items():
            if key in out:
                raise ValueError(
                    f"Invalid optimizer_options key: {key!r} is a setting of its own (use it directly)"
                )
            out[key] = value
        return out
