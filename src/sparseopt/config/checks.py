"""Validation of :class:`~sparseopt.config.TrainConfig` fields: types and ranges."""

from __future__ import annotations

import math
from typing import Any

from sparseopt.baselines import check_refit_optimizer

__all__ = ["validate"]

#: Learning-rate schedules (stepped once per epoch).
SCHEDULES = ("none", "cosine", "step", "multistep", "plateau")


def validate(cfg: Any) -> None:
    """Check types and ranges of the fields the engine interprets.

    Raises:
        ValueError: naming the field and the offending value.
    """
    _check_int("epochs", cfg.epochs, 0)
    _check_int("batch_size", cfg.batch_size, 1)
    _check_int("eval_batch_size", cfg.eval_batch_size, 1, allow_none=True)
    _check_int("test_every", cfg.test_every, 1, allow_none=True)
    _check_int("limit_batches", cfg.limit_batches, 1, allow_none=True)
    _check_int("lr_step_size", cfg.lr_step_size, 1)
    _check_int("lr_patience", cfg.lr_patience, 0)
    _check_int("seed", cfg.seed, 0)
    _check_int("threads", cfg.threads, 1, allow_none=True)
    _check_int("target_density_every", cfg.target_density_every, 1)
    if cfg.target_density_ramp is not None:
        _check_number("target_density_ramp", cfg.target_density_ramp, 0.0, 1.0)
    _check_int("grow_every", cfg.grow_every, 1, allow_none=True)
    _check_int("stall_epochs", cfg.stall_epochs, 0)
    if cfg.lam_scale is not None:
        from sparseopt.groups import check_lam_scale

        check_lam_scale(cfg.lam_scale)
    if cfg.target_allocation is not None:
        from sparseopt.control import ALLOCATIONS

        if cfg.target_allocation not in ALLOCATIONS:
            raise ValueError(
                f"Invalid target_allocation value: {cfg.target_allocation!r}; expected one "
                f"of {list(ALLOCATIONS)}"
            )
    _check_number("grow_tau", cfg.grow_tau, 0.0, 1.0, low_open=True)
    _check_number("checkpoint_seconds", cfg.checkpoint_seconds, 0.0, None)
    if cfg.target_density is not None:
        _check_number("target_density", cfg.target_density, 0.0, 1.0)  # 0: off
    _check_number("val_fraction", cfg.val_fraction, 0.0, 1.0, high_open=True)
    _check_number("lr_gamma", cfg.lr_gamma, 0.0, None, low_open=True)
    if cfg.lam_warmup is not None:
        _check_number("lam_warmup", cfg.lam_warmup, 0.0, 1.0)
        if cfg.lam_warmup and cfg.target_density:
            raise ValueError(
                f"Invalid lam_warmup value: {cfg.lam_warmup!r}; target_density "
                f"{cfg.target_density!r} steers λ from the first step (set one of them to 0)"
            )
    if cfg.warmup is not None:
        _check_number("warmup", cfg.warmup, 0.0, None)
    if cfg.refit is not None:
        _check_number("refit", cfg.refit, 0.0, 1.0, high_open=True)
    if cfg.refit_lr is not None:
        _check_number("refit_lr", cfg.refit_lr, 0.0, None, low_open=True)
    if cfg.refit_warmup is not None:
        _check_number("refit_warmup", cfg.refit_warmup, 0.0, None)
    if cfg.refit_optimizer is not None:
        check_refit_optimizer(cfg.refit_optimizer)
    if cfg.clip_grad_norm is not None:
        _check_number("clip_grad_norm", cfg.clip_grad_norm, 0.0, None)  # 0: off
    if cfg.clip_grad_ratio is not None and cfg.clip_grad_ratio != 0:  # 0: off
        try:  # at most 1 would shrink the running mean, and the gradient, towards 0
            _check_number("clip_grad_ratio", cfg.clip_grad_ratio, 1.0, None, low_open=True)
        except ValueError as e:
            raise ValueError(f"{e} (or 0: off)") from None
    if cfg.target_density_lr_coupled:  # the controller's own rule, before anything runs
        from sparseopt.control import PRESETS, check_lr_coupled

        sticky = bool(PRESETS.get(str(cfg.optimizer).lower(), {}).get("sticky"))
        check_lr_coupled(True, sticky, "target_density_lr_coupled")
    if cfg.init_density is not None:
        _check_number("init_density", cfg.init_density, 0.0, 1.0, low_open=True)
    if cfg.lr is not None:
        _check_number("lr", cfg.lr, 0.0, None)
    for name in ("dataset", "model", "optimizer"):
        value = getattr(cfg, name)
        if not isinstance(value, str) or not value:
            raise ValueError(f"Invalid {name} value: {value!r}; expected a name")
    if cfg.schedule is not None and cfg.schedule not in SCHEDULES:
        raise ValueError(
            f"Invalid schedule value: {cfg.schedule!r}; expected one of {list(SCHEDULES)}"
        )
    if not isinstance(cfg.lr_milestones, list) or not all(
        isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in cfg.lr_milestones
    ):
        raise ValueError(
            f"Invalid lr_milestones value: {cfg.lr_milestones!r}; expected a list of epochs > 0"
        )
    if cfg.schedule == "multistep" and not cfg.lr_milestones:
        raise ValueError("Invalid lr_milestones value: []; schedule 'multistep' needs milestones")
    if not (
        cfg.device in ("auto", "cpu", "cuda")
        or (isinstance(cfg.device, str) and cfg.device.startswith("cuda:"))
    ):
        raise ValueError(
            f"Invalid device value: {cfg.device!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'"
        )
    for name in ("dataset_options", "model_options", "optimizer_options"):
        if not isinstance(getattr(cfg, name), dict):
            raise ValueError(f"Invalid {name} value: {getattr(cfg, name)!r}; expected a mapping")
    if cfg.betas is not None:
        if isinstance(cfg.betas, tuple):
            cfg.betas = list(cfg.betas)
        if not isinstance(cfg.betas, list) or len(cfg.betas) != 2:
            raise ValueError(f"Invalid betas value: {cfg.betas!r}; expected two numbers")
    _check_coupled(cfg)
    per_layer = cfg.target_allocation not in (None, "global")
    if per_layer and cfg.lam_scale == "none":  # after coupled's check
        raise ValueError(
            f"Invalid target_allocation value: {cfg.target_allocation!r}; it steers each "
            "layer's λ and needs one param group per layer, but lam_scale is none (given, "
            "or the optimizer's recipe): pass lam_scale layer or fan_in"
        )
    from sparseopt.groups import GROUPINGS, check_head_groups
    from sparseopt.init import DISTRIBUTIONS, ELEMENTWISE

    if cfg.head_groups is not None:
        check_head_groups(cfg.head_groups)
    starts = [*GROUPINGS, ELEMENTWISE]
    if cfg.init_groups is not None and cfg.init_groups not in starts:
        raise ValueError(
            f"Invalid init_groups value: {cfg.init_groups!r}; expected one of {starts}"
        )

    if cfg.init_distribution not in DISTRIBUTIONS:
        raise ValueError(
            f"Invalid init_distribution value: {cfg.init_distribution!r}; expected one "
            f"of {list(DISTRIBUTIONS)}"
        )
    for name in ("augment", "quiet", "plots", "keep_checkpoints", "record_path", "init_floor"):
        if not isinstance(getattr(cfg, name), bool):
            raise ValueError(f"Invalid {name} value: {getattr(cfg, name)!r}; expected true/false")


#: The kinds of coupled groups ``coupled`` may name (:mod:`sparseopt.coupled`).
COUPLED_KINDS = ("head", "neuron")


def coupled_kinds(value: Any) -> tuple[str, ...]:
    """The kinds of a ``coupled`` value (``"head,neuron"`` → ``("head", "neuron")``).

    Raises:
        ValueError: not a comma-separated list of distinct :data:`COUPLED_KINDS`.
    """
    if value is None:
        return ()
    kinds = tuple(k.strip() for k in value.split(",")) if isinstance(value, str) else ()
    if not kinds or not set(kinds) <= set(COUPLED_KINDS) or len(set(kinds)) != len(kinds):
        raise ValueError(f"Invalid coupled value: {value!r}; expected head, neuron or head,neuron")
    return kinds


def _check_coupled(cfg: Any) -> None:
    kinds = coupled_kinds(cfg.coupled)
    if not isinstance(cfg.coupled_lam, dict):
        raise ValueError(f"Invalid coupled_lam value: {cfg.coupled_lam!r}; expected a mapping")
    for kind, lam in cfg.coupled_lam.items():
        if kind not in kinds:
            raise ValueError(
                f"Invalid coupled_lam key: {kind!r}; coupled is {cfg.coupled!r} "
                f"(a λ is given per kind of {list(COUPLED_KINDS)} that coupled names)"
            )
        _check_number(f"coupled_lam[{kind}]", lam, 0.0, None)
    if not kinds:
        return
    if cfg.penalty not in (None, "group_l1", "group_l0"):
        raise ValueError(
            f"Invalid penalty value: {cfg.penalty!r}; coupled groups take group_l1 or group_l0"
        )
    if cfg.target_allocation not in (None, "global"):
        raise ValueError(
            f"Invalid target_allocation value: {cfg.target_allocation!r}; coupled groups "
            "are not layers: global"
        )
    per_layer = ("groups", "conv_penalty", "conv_groups", "conv_lam", "linear_penalty")
    for name in (*per_layer, "linear_groups", "linear_lam", "head_groups", "lam_scale"):
        if getattr(cfg, name) not in (None, "none" if name == "lam_scale" else None):
            raise ValueError(
                f"Invalid {name} value: {getattr(cfg, name)!r}; with coupled groups only the "
                "heads/neurons are penalised (leave per-layer settings unset; lam_scale none)"
            )
    if cfg.grow_every is not None or getattr(cfg, "fsdp", False):
        name = "grow_every" if cfg.grow_every is not None else "fsdp"
        raise ValueError(
            f"Invalid {name} value: {getattr(cfg, name)!r}; not supported with coupled groups "
            "(the packed head/neuron parameters are neither widened nor sharded)"
        )


def _check_int(name: str, value: Any, minimum: int, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"Invalid {name} value: {value!r}; expected an integer >= {minimum}")


def _check_number(
    name: str,
    value: Any,
    low: float | None,
    high: float | None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "(" if low_open or low is None else "["
        hi = ")" if high_open or high is None else "]"  # ±inf are never accepted
        interval = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
        raise ValueError(f"Invalid {name} value: {value!r}; expected a number in {interval}")
