"""Subcommands ``sparseopt path`` and ``sparseopt prune`` (structure tools).

Both work on a run directory written by ``sparseopt train`` (``config.yaml``,
``checkpoint.pt``, ``model_sparse.pt`` and, when the run recorded it with
:class:`sparseopt.path.PathRecorder`, ``path.npz``/``path.json``).

``sparseopt path RUN_DIR [--epoch N | --within EPS | --target-density D]``
    draws the solution path (per-layer density vs epoch, accuracy vs density, group-norm
    paths) to ``RUN_DIR/path.png`` and prints the selected point.

``sparseopt prune RUN_DIR [--epoch N | --within EPS | --target-density D]``
    *simplify*: takes the deployable network of the run (with a selection rule: the
    weights of that epoch's checkpoint if kept, else of the last one, restricted to the
    support recorded at the selected point), optionally fine-tunes it with the mask
    fixed, removes dead filters/neurons physically (:func:`sparseopt.prune.shrink`),
    checks that the small model computes the same outputs, and writes to
    ``RUN_DIR/pruned/``: ``masked_state_dict.pt``, ``shrunk_state_dict.pt``,
    ``shrunk.pt2`` (``torch.export``), ``shrink_plan.json`` and ``report.json``, and
    prints a before/after table (parameters, MACs, CPU latency at batch 1 and 256 — and
    CUDA when present — and file size).

The command table :data:`COMMANDS` has the same shape as :data:`sparseopt.cli.COMMANDS`
(``name -> (help, add_arguments, run)``); :func:`register_path_command` and
:func:`register_prune_command` add the subcommands to any argparse ``subparsers``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "COMMANDS",
    "add_path_arguments",
    "add_prune_arguments",
    "register_path_command",
    "register_prune_command",
    "run_path",
    "run_prune",
]

PATH_HELP = (
    "draw a run's solution path to PNG and select a point (--epoch, --within, --target-density)"
)
PRUNE_HELP = "shrink a trained sparse network: remove dead filters/neurons, report the speed-up"


def _usage_error(message: str) -> Exception:
    try:
        from sparseopt.engine import ConfigError

        return ConfigError(message)
    except ImportError:  # pragma: no cover - engine missing
        return ValueError(message)


def _add_selection(parser: argparse.ArgumentParser) -> None:
    sel = parser.add_mutually_exclusive_group()
    sel.add_argument("--epoch", type=int, help="select the point recorded at this epoch")
    sel.add_argument(
        "--within",
        type=float,
        metavar="EPS",
        help="select the sparsest point whose validation accuracy is within EPS (a fraction, "
        "0.01 = 1 point) of the best",
    )
    sel.add_argument(
        "--target-density",
        type=float,
        metavar="D",
        help="select the best point (validation metric) among those with density <= D",
    )
    parser.add_argument(
        "--metric",
        default=None,
        help="validation metric for the rules (default: val_acc, else val_loss, else test_*)",
    )


def _has_rule(args: argparse.Namespace) -> bool:
    return any(getattr(args, k) is not None for k in ("epoch", "within", "target_density"))


def _select(path: Any, args: argparse.Namespace) -> Any:
    try:
        return path.select(
            epoch=args.epoch,
            within=args.within,
            target_density=args.target_density,
            metric=args.metric,
        )
    except ValueError as err:
        raise _usage_error(str(err)) from None


def _load_path(run_dir: Path) -> Any:
    from sparseopt.path import load_path

    try:
        return load_path(run_dir)
    except (FileNotFoundError, ValueError) as err:
        raise _usage_error(str(err)) from None


# --------------------------------------------------------------------------- path


def add_path_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sparseopt path``."""
    parser.add_argument(
        "run_dir", metavar="RUN_DIR", help="a run directory with path.npz/path.json"
    )
    _add_selection(parser)
    parser.add_argument("--out", default=None, help="PNG file (default RUN_DIR/path.png)")
    parser.add_argument(
        "--max-layers", type=int, default=8, help="group-norm panels to draw (default 8)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run_path(args: argparse.Namespace) -> int:
    """Run ``sparseopt path``; returns the exit status."""
    run_dir = Path(args.run_dir)
    path = _load_path(run_dir)
    if len(path) == 0:
        raise _usage_error(f"the solution path in {run_dir} has no points")
    sel = _select(path, args) if _has_rule(args) else None
    out = Path(args.out) if args.out else run_dir / "path.png"
    path.plot(out, selection=sel, max_layers=args.max_layers, title=run_dir.name)
    if args.json:
        print(
            json.dumps(
                {
                    "points": len(path),
                    "epochs": [int(path.epochs[0]), int(path.epochs[-1])],
                    "layers": path.layers,
                    "density": path.density.tolist(),
                    "selection": sel.to_dict() if sel is not None else None,
                    "plot": str(out),
                },
                indent=2,
            )
        )
        return 0
    print(
        f"path: {len(path)} points, epochs {int(path.epochs[0])}..{int(path.epochs[-1])}, "
        f"{len(path.layers)} layers, density {path.density[0]:.2%} -> {path.density[-1]:.2%}"
    )
    if sel is not None:
        print(sel)
    print(f"plot: {out}")
    return 0


# --------------------------------------------------------------------------- prune


def add_prune_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sparseopt prune``."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of sparseopt train")
    _add_selection(parser)
    parser.add_argument(
        "--finetune-epochs",
        type=int,
        default=0,
        help="fine-tune the masked network this many epochs before shrinking (default 0)",
    )
    parser.add_argument("--lr", type=float, default=0.01, help="fine-tuning SGD learning rate")
    parser.add_argument("--out", default=None, help="output directory (default RUN_DIR/pruned)")
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs="+",
        default=[1, 256],
        help="batch sizes of the latency measurement (default 1 256)",
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per latency (median)")
    parser.add_argument("--no-latency", action="store_true", help="skip latency measurements")
    parser.add_argument("--no-export", action="store_true", help="skip the torch.export artifact")
    parser.add_argument(
        "--frozen",
        action="store_true",
        help="also time both networks frozen for inference (traced TorchScript, oneDNN) and "
        "save the shrunk one as OUT/shrunk.frozen.torchscript.pt",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def _run_config(run_dir: Path) -> Any:
    from sparseopt.config import TrainConfig, load_config_file

    cfg_path = run_dir / "config.yaml"
    if not cfg_path.exists():
        raise _usage_error(f"{run_dir} is not a run directory (no config.yaml)")
    try:
        return TrainConfig.from_dict(load_config_file(cfg_path))
    except ValueError as err:
        raise _usage_error(f"{cfg_path}: {err}") from None


@torch.no_grad()
def _evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, task: str) -> float | None:
    if len(x) == 0:
        return None
    was_training = model.training
    model.eval()
    try:
        outs = torch.cat([model(x[i : i + 1024]) for i in range(0, len(x), 1024)])
    finally:
        model.train(was_training)
    if task == "classification":
        return float((outs.argmax(1) == y).float().mean())
    return float(torch.nn.functional.mse_loss(outs.reshape(y.shape), y))


def _load_weights(
    model: torch.nn.Module, cfg: Any, ckpt_path: Path
) -> torch.optim.Optimizer | None:
    """Load a checkpoint's weights and turn them into the deployable network."""
    from sparseopt.optim.registry import create_optimizer
    from sparseopt.prune import match_widths

    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    match_widths(model, ckpt["model"])  # a run that grew (--grow-every) has wider layers
    model.load_state_dict(ckpt["model"])
    try:
        opt = create_optimizer(model, cfg.optimizer, **cfg.optimizer_kwargs())
        opt.load_state_dict(ckpt["optimizer"])
    except (ValueError, TypeError, KeyError):  # dense baseline or an unusual checkpoint
        return None
    finalize = getattr(opt, "finalize", None)
    if finalize is not None:
        finalize()
    return opt


def run_prune(args: argparse.Namespace) -> int:
    """Run ``sparseopt prune``; returns the exit status."""
    from sparseopt.data import load_dataset
    from sparseopt.models import build_model
    from sparseopt.prune import (
        apply_masks_,
        compare_models,
        finetune_masked,
        masked_state_dict,
        masks_from_weights,
        match_widths,
        save_artifacts,
        shrink,
    )

    run_dir = Path(args.run_dir)
    cfg = _run_config(run_dir)
    data = load_dataset(
        cfg.dataset,
        data_dir=cfg.data_dir,
        seed=cfg.seed,
        val_fraction=cfg.val_fraction,
        **cfg.dataset_options,
    )
    model = build_model(cfg.model, data.input_shape, data.num_classes, **cfg.model_options)
    selection = None
    if _has_rule(args):
        path = _load_path(run_dir)
        selection = _select(path, args)
        epoch_ckpt = run_dir / "checkpoints" / f"epoch_{selection.epoch:04d}.pt"
        ckpt = epoch_ckpt if epoch_ckpt.exists() else run_dir / "checkpoint.pt"
        if not ckpt.exists():
            raise _usage_error(f"no checkpoint in {run_dir}")
        _load_weights(model, cfg, ckpt)
        masks = path.masks(selection.index)
        try:
            apply_masks_(model, masks)
        except ValueError as err:
            raise _usage_error(f"the recorded path does not fit the model: {err}") from None
        source = f"{ckpt.name} masked by the support at epoch {selection.epoch}"
    else:
        sparse = run_dir / "model_sparse.pt"
        if not sparse.exists():
            raise _usage_error(f"{run_dir} has no model_sparse.pt (did the training finish?)")
        state = torch.load(sparse, map_location="cpu", weights_only=True)
        match_widths(model, state)  # a run that grew (--grow-every) has wider layers
        model.load_state_dict(state)
        masks = masks_from_weights(model)
        source = sparse.name
    x_test, y_test = data.test.tensors
    x_train, y_train = data.train.tensors
    before_acc = _evaluate(model, x_test, y_test, data.task)
    finetune_losses: list[float] = []
    if args.finetune_epochs > 0:
        gen = torch.Generator().manual_seed(cfg.seed)

        def batches() -> Any:
            perm = torch.randperm(len(x_train), generator=gen)
            for i in range(0, len(perm), cfg.batch_size):
                idx = perm[i : i + cfg.batch_size]
                yield x_train[idx], y_train[idx]

        loss_fn: Callable[..., torch.Tensor] | None = None
        if data.task != "classification":

            def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                return torch.nn.functional.mse_loss(out.reshape(y.shape), y)

        finetune_losses = finetune_masked(
            model, masks, batches, epochs=args.finetune_epochs, lr=args.lr, loss_fn=loss_fn
        )
    masked_acc = _evaluate(model, x_test, y_test, data.task)
    model.eval()
    example = x_test[:2] if len(x_test) >= 2 else x_train[:2]
    result = shrink(model, example)
    shrunk = result.model.eval()
    shrunk_acc = _evaluate(shrunk, x_test, y_test, data.task)
    batch_sizes = [] if args.no_latency else args.batch_sizes
    report = compare_models(
        model,
        shrunk,
        data.input_shape,
        batch_sizes=batch_sizes,
        repeats=args.repeats,
        frozen=args.frozen,
    )
    out_dir = Path(args.out) if args.out else run_dir / "pruned"
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(
        masked_state_dict(model, masks_from_weights(model)), out_dir / "masked_state_dict.pt"
    )
    artifacts = save_artifacts(
        shrunk, example, out_dir, export=not args.no_export, frozen=args.frozen
    )
    result.plan.save(out_dir / "shrink_plan.json")
    metric = "acc" if data.task == "classification" else "mse"
    summary = {
        "run_dir": str(run_dir),
        "source": source,
        "selection": selection.to_dict() if selection is not None else None,
        f"test_{metric}_selected": before_acc,
        f"test_{metric}_masked": masked_acc,
        f"test_{metric}_shrunk": shrunk_acc,
        "finetune_losses": finetune_losses,
        "max_abs_diff": result.max_abs_diff,
        "widths": result.plan.widths,
        "kept_constant": result.plan.kept_constant,
        **report.to_dict(),
        "artifacts": {k: str(v) for k, v in artifacts.items()},
    }
    (out_dir / "report.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    if selection is not None:
        print(selection)
    print(f"network: {source}")
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    line = f"test {metric}: selected {fmt(before_acc)}"
    if finetune_losses:
        line += f", fine-tuned {fmt(masked_acc)}"
    print(f"{line}, shrunk {fmt(shrunk_acc)} (max |Δ output| {result.max_abs_diff:.2e})")
    for name, (w0, w1) in result.plan.widths.items():
        kept = result.plan.kept_constant.get(name, 0)
        extra = f" ({kept} constant kept)" if kept else ""
        print(f"  {name:<24} {w0:>6} -> {w1:<6}{extra}")
    print(report.table())
    print(
        f"written to {out_dir}: {', '.join(sorted(p.name for p in artifacts.values()))}, "
        "masked_state_dict.pt, shrink_plan.json, report.json"
    )
    return 0


#: Subcommands, in the shape of :data:`sparseopt.cli.COMMANDS`.
COMMANDS: dict[
    str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
] = {
    "path": (PATH_HELP, add_path_arguments, run_path),
    "prune": (PRUNE_HELP, add_prune_arguments, run_prune),
}


def register_path_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``path`` to an argparse ``subparsers`` (its handler is in ``func``)."""
    p = subparsers.add_parser("path", help=PATH_HELP, description=PATH_HELP)
    add_path_arguments(p)
    p.set_defaults(func=run_path)
    return p


def register_prune_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``prune`` to an argparse ``subparsers`` (its handler is in ``func``)."""
    p = subparsers.add_parser("prune", help=PRUNE_HELP, description=PRUNE_HELP)
    add_prune_arguments(p)
    p.set_defaults(func=run_prune)
    return p
