"""What a run says: its header line, one metrics row per epoch, the closing lines."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sparseopt.groups import group_lam, is_penalised
from sparseopt.logging_utils import format_duration

__all__ = [
    "describe",
    "epoch_row",
    "failure_line",
    "smaller_lr_hint",
    "summary_lines",
    "summary_record",
]


def describe(trainer: Any) -> str:
    """The header line of a run (the first line of ``log.txt``)."""
    cfg, d = trainer.config, trainer.data
    sizes = f"{len(d.train)} train / {len(d.val)} val / {len(d.test)} test"
    opt = f"{cfg.optimizer} lr {cfg.lr:g}" if cfg.lr is not None else cfg.optimizer
    if trainer.optimizer_info.sparse:
        pens: list[str] = []  # one entry per kind: per-layer groups share their base λ
        for g in trainer.optimizer.param_groups:
            if is_penalised(g):
                grp = f"/{g['groups']}" if g.get("groups") else ""
                pen = f"{g.get('name', 'w')} {g['penalty']}{grp} λ={group_lam(g):g}"
                if pen not in pens:
                    pens.append(pen)
        if pens and cfg.lam_scale == "fan_in":  # (none inside a refit: its optimizer's groups)
            pens.append("λ per layer by fan-in")
        if pens:
            opt += " (" + ", ".join(pens) + ")"
    if cfg.target_density:  # None or 0: off
        opt += (
            f", λ steered to density {100 * cfg.target_density:g}% "
            f"every {cfg.target_density_every} steps"
        )
        if cfg.target_allocation not in (None, "global"):  # per layer (he, he_all, uniform)
            opt += f", per layer ({cfg.target_allocation})"
    if cfg.grow_every is not None:
        opt += f", grow every {cfg.grow_every} epochs (τ = {cfg.grow_tau:g})"
    refit = cfg.epochs - getattr(trainer, "sparse_epochs", cfg.epochs)
    warm = getattr(trainer, "warmup_steps", 0)
    if warm:
        opt += f", lr warm-up over the first {warm} steps"
        steps = (cfg.epochs - refit) * trainer.batches_per_epoch()
        if warm > steps:
            where = "before the refit" if refit else "of the run"
            opt += f" (more than the {steps} steps {where}: it never reaches that lr; a smaller --warmup)"
        held = any(getattr(cb, "hold_warmup", False) for cb in getattr(trainer, "callbacks", ()))
        if held and warm >= steps:  # the controller's first update would come after them
            opt += (
                ", λ held through it: the target density is never steered to (a smaller "
                "--warmup, or --no-target-density-hold)"
            )
    if refit:
        opt += f", refit of the last {refit} epochs"
    # The sparse start covers the penalisable weights; the epoch lines' "density"
    # counts every parameter (biases and norms too), so it starts higher.
    init = ""
    if cfg.coupled:  # engine.build: packed heads/neurons, no sparse initialisation
        init = f", coupled {cfg.coupled} groups, dense start"
    elif cfg.init_density < 1:
        floor = " + at least one per unit" if cfg.init_floor else ""
        init = f", sparse start: {100 * cfg.init_density:g}% of weights{floor}"
    dist_s = f" × {trainer.world_size} processes" if trainer.distributed else ""
    if trainer.distributed and cfg.fsdp:
        dist_s += " (FSDP2, sharded)"
    params = sum(p.numel() for p in trainer.model.parameters())
    return (
        f"sparseopt train: {cfg.dataset} ({sizes}), {cfg.model} "
        f"({params:,} params{init}), {opt}, {cfg.epochs} epochs × "
        f"{trainer.batches_per_epoch()} batches of {cfg.batch_size}, "
        f"{trainer.device}{dist_s} → {trainer.run_dir}"
    )


def epoch_row(
    epoch: int,
    step: int,
    train_part: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    lr: float,
    lam: float | None,
    epoch_time: float,
    elapsed: float,
    task: str,
    layer_lam: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """One history row, keys in a fixed order (the CSV columns); ``layer_lam``: each
    penalised layer's λ (:func:`sparseopt.groups.layer_lams`; none for a dense run)."""
    row: dict[str, Any] = {"epoch": epoch, "step": step}
    keys = ["train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"]
    if task != "classification":
        keys = [k for k in keys if not k.endswith("_acc")]
    merged = {**train_part, **evaluation}
    for key in keys:
        row[key] = merged.get(key)
    for key in ("density", "weight_density", "nonzero", "params"):
        row[key] = merged[key]
    row["lr"], row["lam"] = lr, lam
    row["train_time"] = train_part.get("train_time")
    for key in ("grad_norm", "grad_norm_max", "clipped"):  # with clip_grad_norm
        if key in train_part:
            row[key] = train_part[key]
    row["epoch_time"] = epoch_time
    row["elapsed"] = elapsed
    row["layer_density"] = merged["layer_density"]
    row["layer_filters_alive"] = merged["layer_filters_alive"]
    if layer_lam:
        row["layer_lam"] = dict(layer_lam)
    return row


def summary_lines(
    final: Mapping[str, Any], layers: Mapping[str, Any], epochs: int, elapsed: float, task: str
) -> list[str]:
    """The closing lines: final performance and density, then the layers' densities."""
    if task == "classification":
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
        f"{epochs} epochs in {format_duration(elapsed)}"
    ]
    if layers:
        parts = [
            f"{name} {100 * info['density']:.1f}% ({info['filters_alive']}/{info['filters']})"
            for name, info in layers.items()
        ]
        if len(parts) > 8:
            parts = [*parts[:4], "…", *parts[-3:]]
        lines.append("layers (nonzero weights, live filters/neurons): " + ", ".join(parts))
    return lines


def smaller_lr_hint(run: Path, lr: float, flag: str = "--lr") -> str:
    """A command that retrains run ``run`` with a 10× smaller lr into a new directory.

    ``--resume`` keeps the learning rate of the run (it is part of the state being
    continued), so the way out of a divergence is a new run with the same settings:
    ``config.yaml`` of the run is a valid ``--config`` file and flags override it.
    ``flag``: the learning rate to change (``--refit-lr`` inside a refit).
    """
    new_lr = float(f"{lr / 10:.3g}")
    base = run.with_name(f"{run.name}-lr{new_lr:g}")
    out, k = base, 1
    while out.exists():
        k += 1
        out = base.with_name(f"{base.name}-{k}")
    return (
        f"Try a 10x smaller lr (now {lr:g}) in a new run: sparseopt train --config "
        f"{run / 'config.yaml'} {flag} {new_lr:g} --out {out}"
    )


def failure_line(health: Mapping[str, Any]) -> str:
    """The closing line of a stalled or collapsed run."""
    return f"FAILED — {health['reason']}; {health['hint']}".rstrip("; ")


def summary_record(
    final: Mapping[str, Any],
    health: Mapping[str, Any],
    wall_time: float,
    layers: Mapping[str, Any],
    config: Any,
    grown: Any,
    sizes: Mapping[str, int],
    refit: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The content of ``summary.json`` (``refit``: :meth:`Refit.summary
    <sparseopt.engine.refit.Refit.summary>`, where a refit ran)."""
    summary = {
        "metrics": dict(final),
        **health,
        "wall_time": wall_time,
        "layers": dict(layers),
        "config": config.to_dict(),
    }
    if grown is not None:
        summary["grown"] = grown
    summary["sizes"] = dict(sizes)
    if refit is not None:
        summary["refit"] = dict(refit)
    return summary
