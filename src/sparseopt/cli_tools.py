"""Subcommands ``sparseopt path`` and ``sparseopt prune`` (structure tools).

Both work on a run directory written by ``sparseopt train`` (``config.yaml``,
``checkpoint.pt``, ``model_sparse.pt`` and, when the run recorded it with
:class:`sparseopt.path.PathRecorder`, ``path.npz``/``path.json``).

``sparseopt path RUN_DIR [--epoch N | --within EPS | --target-density D]``
    draws the solution path (per-layer weight density vs epoch, accuracy vs density,
    group-norm paths) to ``RUN_DIR/path.png`` and prints the selected point.

``sparseopt prune RUN_DIR [--epoch N | --within EPS | --target-density D]``
    *simplify*: takes the deployable network of the run (with a selection rule: the
    weights of that epoch's checkpoint if kept, else of the last one, restricted to the
    support recorded at the selected point), optionally fine-tunes it with the mask
    fixed, removes dead filters/neurons physically (:func:`sparseopt.prune.shrink`),
    checks that the small model computes the same outputs, and writes to
    ``RUN_DIR/pruned/``: ``masked_state_dict.pt``, ``shrunk_state_dict.pt``,
    ``shrunk.pt2`` (``torch.export``, dynamic batch size), ``shrink_plan.json`` and
    ``report.json``, and prints a before/after table (parameters, MACs, CPU latency at
    batch 1 and 256 — and CUDA when present — as the median and quartiles of
    interleaved rounds, and file size).

"Density" is the one of :func:`sparseopt.metrics.density` that ``sparseopt train``
reports: the *weight density* (nonzero Conv/Linear weights of the deployable network)
selects and is printed, next to the density over all parameters.

Files are never lost or silently replaced: every file is written atomically (a
temporary file in the same directory, then renamed); an output that exists already
is replaced only with ``--overwrite`` — a default output (``RUN_DIR/pruned``,
``RUN_DIR/path.png``) gets a fresh name instead (``pruned-2``, ``path-2.png``), an
explicit ``--out`` is refused (exit 2). Nothing non-finite is ever written: a network
with NaN/Inf weights (loaded or after fine-tuning) stops the command with exit 3 before
anything is written, and the output check of the shrunk network fails on NaN (exit 1).
Unreadable, truncated or unsafe files (pickles with code) are refused with one line
(exit 2), as are invalid flag values.

The command table :data:`COMMANDS` has the same shape as :data:`sparseopt.cli.COMMANDS`
(``name -> (help, add_arguments, run)``); :func:`register_path_command` and
:func:`register_prune_command` add the subcommands to any argparse ``subparsers``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "COMMANDS",
    "EXIT_DIVERGED",
    "PRUNE_OUTPUTS",
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

#: Exit status of a command that met NaN/Inf weights (as ``sparseopt train`` on divergence).
EXIT_DIVERGED = 3
EXIT_ERROR = 1

#: Every file name ``sparseopt prune`` may write into its output directory.
PRUNE_OUTPUTS = (
    "masked_state_dict.pt",
    "shrunk_state_dict.pt",
    "shrunk.pt2",
    "shrunk.torchscript.pt",
    "shrunk.frozen.torchscript.pt",
    "shrunk.onnx",
    "shrink_plan.json",
    "report.json",
)


class _Stop(Exception):
    """Ends a command with one line on stderr and an exit status other than 2."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _usage_error(message: str) -> Exception:
    try:
        from sparseopt.engine import ConfigError

        return ConfigError(message)
    except ImportError:  # pragma: no cover - engine missing
        return ValueError(message)


def _one_line(text: str, limit: int = 800) -> str:
    """``text`` on one line (lines joined by "; "), at most ``limit`` characters."""
    parts = [" ".join(line.split()) for line in str(text).splitlines()]
    line = "; ".join(p for p in parts if p)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


# --------------------------------------------------------------------------- flag types


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {low}, got {text!r}"
            ) from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        return value

    parse.__name__ = f"int>={low}"
    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    return value


# --------------------------------------------------------------------------- outputs


def _creatable(path: Path, flag: str) -> None:
    """Refuse (usage error) a ``path`` that cannot be created: its nearest existing
    ancestor must be a writable directory."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise _usage_error(f"cannot create {flag} {path}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise _usage_error(f"cannot create {flag} {path}: {parent} is not writable")


def _fresh(path: Path) -> Path:
    """``path`` if it does not exist, else the first free ``<stem>-2<suffix>``, ``-3``…"""
    if not path.exists():
        return path
    n = 2
    while True:
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        if not candidate.exists():
            return candidate
        n += 1


def _prune_out_dir(args: argparse.Namespace, run_dir: Path) -> Path:
    """Where ``prune`` writes; refuses (usage error) to replace an earlier output."""
    if args.out is not None:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise _usage_error(f"--out {out} is a file, not a directory")
        if out.is_dir():
            taken = sorted(n for n in PRUNE_OUTPUTS if (out / n).exists())
            if taken and not args.overwrite:
                raise _usage_error(
                    f"--out {out} already holds the output of an earlier prune "
                    f"({', '.join(taken)}); pass --overwrite to replace it, or another --out"
                )
            if not os.access(out, os.W_OK | os.X_OK):
                raise _usage_error(f"--out {out} is not writable")
        else:
            _creatable(out, "--out")
        return out
    default = run_dir / "pruned"
    if args.overwrite and (default.is_dir() or not default.exists()):
        return default
    out = _fresh(default)
    _creatable(out, "the output directory")
    if out != default:
        _note(
            f"{default} exists (an earlier prune): writing to {out} instead "
            "(--overwrite replaces it, --out DIR chooses the directory)"
        )
    return out


def _path_out_file(args: argparse.Namespace, run_dir: Path) -> Path:
    """Where ``path`` draws; refuses (usage error) to replace an existing file."""
    if args.out is not None:
        out = Path(args.out)
        if out.is_dir():
            raise _usage_error(f"--out {out} is a directory; give a PNG file name")
        if out.exists() and not args.overwrite:
            raise _usage_error(f"--out {out} exists; pass --overwrite to replace it")
        _creatable(out, "--out")
        return out
    default = run_dir / "path.png"
    if args.overwrite and not default.is_dir():
        return default
    out = _fresh(default)
    _creatable(out, "the plot")
    if out != default:
        _note(f"{default} exists: drawing to {out} instead (--overwrite replaces it)")
    return out


# --------------------------------------------------------------------------- selection


def _add_selection(parser: argparse.ArgumentParser) -> None:
    sel = parser.add_mutually_exclusive_group()
    sel.add_argument("--epoch", type=int, help="select the point recorded at this epoch")
    sel.add_argument(
        "--within",
        type=_finite_float,
        metavar="EPS",
        help="select the sparsest point whose validation accuracy is within EPS (a fraction, "
        "0.01 = 1 point) of the best",
    )
    sel.add_argument(
        "--target-density",
        type=_finite_float,
        metavar="D",
        help="select the best point (validation metric) among those with weight density "
        "(nonzero Conv/Linear weights, as train reports it) <= D; if none is that sparse, "
        "the sparsest, with a note",
    )
    parser.add_argument(
        "--metric",
        default=None,
        help="validation metric for the rules (default: val_acc, else val_loss, else test_*)",
    )


def _add_overwrite(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace {what} of an earlier call (default: a fresh name for the default "
        "output, a refusal for an existing --out)",
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

    if not run_dir.is_dir():
        raise _usage_error(f"{run_dir} is not a directory")
    try:
        return load_path(run_dir)
    except json.JSONDecodeError as err:
        raise _usage_error(
            f"cannot read the solution path in {run_dir}: path.json is not valid JSON ({err})"
        ) from None
    except (FileNotFoundError, ValueError) as err:
        raise _usage_error(_one_line(str(err))) from None
    except KeyError as err:
        raise _usage_error(
            f"cannot read the solution path in {run_dir}: path.json has no entry {err}"
        ) from None
    except Exception as err:  # a truncated npz...
        detail = _one_line(str(err), 200) or type(err).__name__
        raise _usage_error(f"cannot read the solution path in {run_dir}: {detail}") from None


# --------------------------------------------------------------------------- path


def add_path_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sparseopt path``."""
    parser.add_argument(
        "run_dir", metavar="RUN_DIR", help="a run directory with path.npz/path.json"
    )
    _add_selection(parser)
    parser.add_argument(
        "--out", default=None, help="PNG file (default RUN_DIR/path.png, or path-2.png... if taken)"
    )
    _add_overwrite(parser, "the PNG")
    parser.add_argument(
        "--max-layers",
        type=_int_at_least(0),
        default=8,
        help="group-norm panels to draw (default 8)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run_path(args: argparse.Namespace) -> int:
    """Run ``sparseopt path``; returns the exit status."""
    run_dir = Path(args.run_dir)
    path = _load_path(run_dir)
    if len(path) == 0:
        raise _usage_error(f"the solution path in {run_dir} has no points")
    sel = _select(path, args) if _has_rule(args) else None
    out = _path_out_file(args, run_dir)
    try:
        path.plot(out, selection=sel, max_layers=args.max_layers, title=run_dir.name)
    except OSError as err:
        raise _usage_error(f"cannot write {out}: {err.strerror or err}") from None
    density = path.density
    if args.json:
        print(
            json.dumps(
                {
                    "points": len(path),
                    "epochs": [int(path.epochs[0]), int(path.epochs[-1])],
                    "layers": path.layers,
                    "weight_density": density.tolist(),
                    "density": [None if math.isnan(d) else d for d in path.param_density],
                    "selection": sel.to_dict() if sel is not None else None,
                    "plot": str(out),
                },
                indent=2,
            )
        )
        return 0
    print(
        f"path: {len(path)} points, epochs {int(path.epochs[0])}..{int(path.epochs[-1])}, "
        f"{len(path.layers)} layers, weight density {density[0]:.2%} -> {density[-1]:.2%}"
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
        type=_int_at_least(0),
        default=0,
        help="fine-tune the masked network this many epochs before shrinking (default 0)",
    )
    parser.add_argument(
        "--lr", type=_positive_float, default=0.01, help="fine-tuning SGD learning rate (> 0)"
    )
    parser.add_argument(
        "--out",
        default=None,
        help="output directory (default RUN_DIR/pruned, or pruned-2... if taken)",
    )
    _add_overwrite(parser, "the files")
    parser.add_argument(
        "--batch-sizes",
        type=_int_at_least(1),
        nargs="+",
        default=[1, 256],
        help="batch sizes of the latency measurement (default 1 256)",
    )
    parser.add_argument(
        "--repeats",
        type=_int_at_least(1),
        default=7,
        help="timed interleaved rounds per latency (median and quartiles; default 7)",
    )
    parser.add_argument("--no-latency", action="store_true", help="skip latency measurements")
    parser.add_argument("--no-export", action="store_true", help="skip the torch.export artifact")
    parser.add_argument(
        "--frozen",
        action="store_true",
        help="also time both networks frozen for inference (traced TorchScript, oneDNN) and "
        "save the shrunk one as OUT/shrunk.frozen.torchscript.pt",
    )
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="also export the shrunk network to OUT/shrunk.onnx (dynamic batch axis), checked "
        'against the eager network with onnxruntime at batch 1, 7 and 256 (pip install "sparseopt[onnx]")',
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def _run_config(run_dir: Path) -> Any:
    from sparseopt.config import TrainConfig, load_config_file

    if not run_dir.is_dir():
        raise _usage_error(f"{run_dir} is not a run directory (not a directory)")
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise _usage_error(f"{run_dir} is not a run directory (no config.yaml)")
    try:
        return TrainConfig.from_dict(load_config_file(cfg_path))
    except (ValueError, TypeError) as err:
        raise _usage_error(f"{cfg_path}: {_one_line(str(err))}") from None


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


def _check_finite(state: Mapping[str, Any] | torch.nn.Module, what: str) -> None:
    """Stop with exit 3 if ``state`` holds NaN/Inf (nothing has been written yet)."""
    from sparseopt.prune._files import non_finite

    bad = non_finite(state)
    if bad:
        names = ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
        raise _Stop(f"{what} holds NaN/Inf values ({names}); nothing was written", EXIT_DIVERGED)


def _state_dict_of(obj: Any, path: Path, what: str) -> Mapping[str, torch.Tensor]:
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise _usage_error(
            f"{what} {path} is not a state dict (expected parameter names mapped to tensors, "
            f"got {type(obj).__name__})"
        )
    if not obj:
        raise _usage_error(f"{what} {path} holds an empty state dict")
    return obj


def _load_state(model: torch.nn.Module, state: Mapping[str, Any], path: Path, what: str) -> None:
    """``load_state_dict`` (after matching grown widths); a mismatch keeps its details."""
    from sparseopt.prune import match_widths

    try:
        match_widths(model, state)  # a run that grew (--grow-every) has wider layers
        model.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        detail = _one_line(str(err)) or type(err).__name__
        raise _usage_error(
            f"{what} {path} does not fit the model built from config.yaml: {detail}"
        ) from None


def _read(path: Path, what: str) -> Any:
    from sparseopt.prune._files import load_tensor_file

    try:
        return load_tensor_file(path, what)
    except ValueError as err:
        raise _usage_error(str(err)) from None


def _load_weights(
    model: torch.nn.Module, cfg: Any, ckpt_path: Path
) -> torch.optim.Optimizer | None:
    """Load a checkpoint's weights and turn them into the deployable network."""
    from sparseopt.optim.registry import create_optimizer

    ckpt = _read(ckpt_path, "checkpoint")
    if not isinstance(ckpt, Mapping) or "model" not in ckpt:
        found = sorted(map(str, ckpt)) if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise _usage_error(
            f"checkpoint {ckpt_path} is not a sparseopt checkpoint (no 'model' entry; found "
            f"{found})"
        )
    state = _state_dict_of(ckpt["model"], ckpt_path, "checkpoint")
    _check_finite(state, f"checkpoint {ckpt_path}")
    _load_state(model, state, ckpt_path, "checkpoint")
    try:
        opt = create_optimizer(model, cfg.optimizer, **cfg.optimizer_kwargs())
        opt.load_state_dict(ckpt["optimizer"])
    except (ValueError, TypeError, KeyError, RuntimeError):  # dense baseline or unusual
        return None
    finalize = getattr(opt, "finalize", None)
    if finalize is not None:
        finalize()
    return opt


def _load_data(cfg: Any) -> Any:
    from sparseopt.data import load_dataset

    try:
        return load_dataset(
            cfg.dataset,
            data_dir=cfg.data_dir,
            seed=cfg.seed,
            val_fraction=cfg.val_fraction,
            **cfg.dataset_options,
        )
    except FileNotFoundError:  # DatasetNotFoundError: the CLI prints its directory list
        raise
    except (ValueError, TypeError) as err:
        raise _usage_error(_one_line(str(err))) from None


def run_prune(args: argparse.Namespace) -> int:
    """Run ``sparseopt prune``; returns the exit status (3: NaN/Inf weights, 1: the
    shrunk network does not compute the same outputs)."""
    try:
        return _prune(args)
    except _Stop as stop:
        print(f"sparseopt prune: error: {_one_line(str(stop))}", file=sys.stderr)
        return stop.code


def _prune(args: argparse.Namespace) -> int:
    from sparseopt.models import build_model
    from sparseopt.prune import (
        apply_masks_,
        compare_models,
        finetune_masked,
        masked_state_dict,
        masks_from_weights,
        save_artifacts,
        shrink,
    )
    from sparseopt.prune._files import atomic_write

    run_dir = Path(args.run_dir)
    cfg = _run_config(run_dir)
    out_dir = _prune_out_dir(args, run_dir)  # refuse before any work
    if getattr(args, "onnx", False):
        from sparseopt.prune.onnx import onnx_missing

        missing = onnx_missing()
        if missing is not None:
            raise _usage_error(f"--onnx: {missing}")
    data = _load_data(cfg)
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
        state = _state_dict_of(_read(sparse, "sparse model"), sparse, "sparse model")
        _check_finite(state, f"sparse model {sparse}")
        _load_state(model, state, sparse, "sparse model")
        masks = masks_from_weights(model)
        source = sparse.name
    from sparseopt.metrics import density

    dens = density(model)  # of the network that is pruned: train's definition
    if selection is not None and dens.weight_density > selection.density + 1e-9:
        why = (
            f"epoch {selection.epoch}'s weights were not kept (train with --keep-checkpoints)"
            if source.startswith("checkpoint.pt")
            else "the support holds whole groups"
        )
        _note(
            f"the pruned network has weight density {dens.weight_density:.2%}, above the "
            f"selected point's {selection.density:.2%}: {why}"
        )
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
        losses = ", ".join(f"{v:.4g}" for v in finetune_losses)
        _check_finite(
            model,
            f"the network fine-tuned with --lr {args.lr:g} diverged (epoch losses {losses}); it",
        )
    masked_acc = _evaluate(model, x_test, y_test, data.task)
    model.eval()
    example = x_test[:2] if len(x_test) >= 2 else x_train[:2]
    result = shrink(model, example)
    shrunk = result.model.eval()
    with torch.no_grad():
        scale = max(1.0, float(model(example).abs().max()))
    tol = 1e-4 * scale
    if not result.max_abs_diff <= tol:  # NaN fails too
        raise _Stop(
            f"the shrunk network does not compute the masked network's outputs "
            f"(max |Δ output| {result.max_abs_diff:.3g} > {tol:.3g}); nothing was written",
            EXIT_ERROR,
        )
    _check_finite(shrunk, "the shrunk network")
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
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _usage_error(f"cannot create --out {out_dir}: {err.strerror or err}") from None
    onnx_diffs: dict[int, float] = {}
    if getattr(args, "onnx", False):  # first: a failed check leaves no file behind
        from sparseopt.prune.onnx import export_onnx

        try:
            onnx_diffs = export_onnx(shrunk, example, out_dir / "shrunk.onnx")
        except ValueError as err:
            raise _Stop(str(err), EXIT_ERROR) from None
    masked = masked_state_dict(model, masks_from_weights(model))
    atomic_write(out_dir / "masked_state_dict.pt", lambda p: torch.save(masked, p))
    artifacts = save_artifacts(
        shrunk, example, out_dir, export=not args.no_export, frozen=args.frozen
    )
    if onnx_diffs:
        artifacts["onnx"] = out_dir / "shrunk.onnx"
    result.plan.save(out_dir / "shrink_plan.json")
    metric = "acc" if data.task == "classification" else "mse"
    summary = {
        "run_dir": str(run_dir),
        "source": source,
        "selection": selection.to_dict() if selection is not None else None,
        "weight_density": dens.weight_density,
        "density": dens.overall,
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
    if "onnx" in artifacts:
        summary["onnx_max_abs_diff"] = {str(n): d for n, d in onnx_diffs.items()}
    text = json.dumps(summary, indent=2) + "\n"
    atomic_write(out_dir / "report.json", lambda p: p.write_text(text, encoding="utf-8"))
    written = {"masked_state_dict.pt", "shrink_plan.json", "report.json"}
    written |= {p.name for p in artifacts.values()}
    for stale in sorted(set(PRUNE_OUTPUTS) - written):  # --overwrite: no mix of two calls
        (out_dir / stale).unlink(missing_ok=True)
    if args.json:
        print(text, end="")
        return 0
    if selection is not None:
        print(selection)
    print(
        f"network: {source}; weight density {dens.weight_density:.2%} "
        f"(all parameters {dens.overall:.2%})"
    )
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
    print(f"written to {out_dir}: {', '.join(sorted(written))}")
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
