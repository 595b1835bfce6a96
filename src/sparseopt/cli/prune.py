"""``sparseopt prune RUN_DIR``: simplify a trained sparse network (see :mod:`sparseopt.cli.tools`).

The run's objects come from :mod:`sparseopt.engine.build` (dataset, model with the
options the dataset describes, optimizer), so a ``teacher``/``nooverlap`` run is
rebuilt exactly as it was trained.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from sparseopt.cli._common import (
    EXIT_DIVERGED,
    EXIT_ERROR,
    Stop,
    creatable,
    fresh,
    int_at_least,
    note,
    one_line,
    positive_float,
    read_summary,
)
from sparseopt.cli._selection import add_overwrite, add_selection, has_rule, load_path, select
from sparseopt.engine.errors import ConfigError
from sparseopt.prune.report import LATENCY_BATCH_SIZES, LATENCY_REPEATS

__all__ = ["PRUNE_OUTPUTS", "add_prune_arguments", "run_prune"]

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


def _prune_out_dir(args: argparse.Namespace, run_dir: Path) -> Path:
    """Where ``prune`` writes; refuses (usage error) to replace an earlier output."""
    if args.out is not None:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} is a file, not a directory")
        if out.is_dir():
            taken = sorted(n for n in PRUNE_OUTPUTS if (out / n).exists())
            if taken and not args.overwrite:
                raise ConfigError(
                    f"--out {out} already holds the output of an earlier prune "
                    f"({', '.join(taken)}); pass --overwrite to replace it, or another --out"
                )
            if not os.access(out, os.W_OK | os.X_OK):
                raise ConfigError(f"--out {out} is not writable")
        else:
            creatable(out, "--out")
        return out
    default = run_dir / "pruned"
    if args.overwrite and (default.is_dir() or not default.exists()):
        return default
    out = fresh(default)
    creatable(out, "the output directory")
    if out != default:
        note(
            f"{default} exists (an earlier prune): writing to {out} instead "
            "(--overwrite replaces it, --out DIR chooses the directory)"
        )
    return out


# --------------------------------------------------------------------------- prune


def add_prune_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sparseopt prune``."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of sparseopt train")
    add_selection(parser)
    parser.add_argument(
        "--finetune-epochs",
        type=int_at_least(0),
        default=0,
        help="fine-tune the masked network this many epochs before shrinking (default 0)",
    )
    parser.add_argument(
        "--lr", type=positive_float, default=0.01, help="fine-tuning SGD learning rate (> 0)"
    )
    parser.add_argument(
        "--out",
        default=None,
        help="output directory (default RUN_DIR/pruned, or pruned-2... if taken)",
    )
    add_overwrite(parser, "the files")
    parser.add_argument(
        "--batch-sizes",
        type=int_at_least(1),
        nargs="+",
        default=list(LATENCY_BATCH_SIZES),
        help="batch sizes of the latency measurement (default "
        f"{' '.join(map(str, LATENCY_BATCH_SIZES))})",
    )
    parser.add_argument(
        "--repeats",
        type=int_at_least(1),
        default=LATENCY_REPEATS,
        help="timed interleaved rounds per latency (median and quartiles; default %(default)s)",
    )
    parser.add_argument(
        "--threads",
        type=int_at_least(1),
        default=None,
        help="torch CPU threads for the fine-tuning and the latency measurements (default: "
        "torch's; the latencies depend on it)",
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
    from sparseopt.config import TrainConfig, load_run_config

    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is not a run directory (not a directory)")
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no config.yaml)")
    try:
        return TrainConfig.from_dict(load_run_config(cfg_path))
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{cfg_path}: {one_line(str(err))}") from None


def _evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, task: str) -> float | None:
    """Test accuracy (classification) or mean squared error (regression) of ``model``."""
    from sparseopt.engine.evaluate import evaluate_split

    if len(x) == 0:
        return None
    was_training = model.training
    model.eval()
    try:
        loss, acc = evaluate_split(model, x, y, task)
    finally:
        model.train(was_training)
    return acc if task == "classification" else loss


def _check_finite(state: Mapping[str, Any] | torch.nn.Module, what: str) -> None:
    """Stop with exit 3 if ``state`` holds NaN/Inf (nothing has been written yet)."""
    from sparseopt.prune._files import non_finite

    bad = non_finite(state)
    if bad:
        names = ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
        raise Stop(f"{what} holds NaN/Inf values ({names}); nothing was written", EXIT_DIVERGED)


def _state_dict_of(obj: Any, path: Path, what: str) -> Mapping[str, torch.Tensor]:
    from sparseopt.prune._files import state_dict_of

    try:
        return state_dict_of(obj, path, what)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _load_state(model: torch.nn.Module, state: Mapping[str, Any], path: Path, what: str) -> None:
    """``load_state_dict`` (after matching grown widths); a mismatch keeps its details."""
    from sparseopt.prune._files import load_state

    try:
        load_state(model, state, path, what)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _read(path: Path, what: str) -> Any:
    from sparseopt.prune._files import load_tensor_file

    try:
        return load_tensor_file(path, what)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _refit_skeleton(cfg: Any, model: torch.nn.Module) -> torch.optim.Optimizer:
    """An optimizer of the refit's kind (``refit_optimizer``: SGD, or Adam) over every
    parameter, for a sharded checkpoint of a run in its refit to load into."""
    from sparseopt.baselines import refit_optimizer_settings
    from sparseopt.optim.registry import get_optimizer_info

    name = cfg.refit_optimizer or "sgd"
    kw = refit_optimizer_settings(1.0, name)
    return get_optimizer_info(name).cls(model.parameters(), **kw)


def _load_weights(
    model: torch.nn.Module, cfg: Any, ckpt_path: Path
) -> torch.optim.Optimizer | None:
    """Load a checkpoint's weights and turn them into the deployable network."""
    from sparseopt.engine.build import build_optimizer

    ckpt = _read(ckpt_path, "checkpoint")
    if not isinstance(ckpt, Mapping) or "model" not in ckpt:
        found = sorted(map(str, ckpt)) if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ConfigError(
            f"checkpoint {ckpt_path} is not a sparseopt checkpoint (no 'model' entry; found "
            f"{found})"
        )
    refit = ckpt.get("refit") is not None  # its weights are the deployable network
    if ckpt.get("sharded"):  # a sharded (FSDP2) run: its shards into this whole model
        from sparseopt.engine.checkpoint import restore_weights

        # the refit's optimizer state (one group of every parameter): SGD's or Adam's
        opt = _refit_skeleton(cfg, model) if refit else None
        if opt is None:
            opt, _ = build_optimizer(cfg, model)
        restore_weights(ckpt, ckpt_path, model, opt)
        _check_finite(model, f"checkpoint {ckpt_path}")
        if refit:
            return None
    else:
        state = _state_dict_of(ckpt["model"], ckpt_path, "checkpoint")
        _check_finite(state, f"checkpoint {ckpt_path}")
        _load_state(model, state, ckpt_path, "checkpoint")
        if refit:
            return None
        try:
            opt, _ = build_optimizer(cfg, model)
            opt.load_state_dict(ckpt["optimizer"])
        except (ValueError, TypeError, KeyError, RuntimeError):  # dense baseline or unusual
            return None
    finalize = getattr(opt, "finalize", None)
    if finalize is not None:
        finalize()
    return opt


class _CoupledPlan:
    """The plan of a coupled shrink, shaped like :class:`~sparseopt.prune.ShrinkPlan`
    for the report: ``widths`` per set ``[groups before, after]``."""

    def __init__(self, sets: Any, kept: Mapping[str, list[int]]) -> None:
        self.sets = list(sets)
        self.kept = dict(kept)
        self.widths = {cg.name: [cg.num_groups, len(kept[cg.name])] for cg in self.sets}
        self.kept_constant: dict[str, int] = {}

    def save(self, path: Path) -> None:
        from sparseopt.prune._files import atomic_write

        plan = {
            "coupled": {
                cg.name: {"kind": cg.kind, "groups": cg.num_groups, "kept": self.kept[cg.name]}
                for cg in self.sets
            }
        }
        text = json.dumps(plan, indent=2) + "\n"
        atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def _coupled_masks(params: Mapping[str, torch.Tensor], sets: Any) -> dict[str, torch.Tensor]:
    """Keep-masks (nonzero patterns) of every parameter a coupled set slices (q/k/v,
    biases, up/down projections): a masked fine-tune keeps dead heads/neurons dead."""
    names = {s.param for cg in sets for s in cg.slices}
    return {n: params[n].detach() != 0 for n in names}


def _shrink_coupled(model: torch.nn.Module, sets: Any, example: torch.Tensor) -> Any:
    """:func:`~sparseopt.prune.heads.shrink_coupled` (on a copy), as ``(model,
    max_abs_diff, plan)`` like :func:`~sparseopt.prune.shrink`'s result."""
    from types import SimpleNamespace

    from sparseopt.prune.heads import shrink_coupled

    res = shrink_coupled(model, sets, example)
    plan = _CoupledPlan(sets, res.kept)
    return SimpleNamespace(model=res.model, max_abs_diff=res.max_abs_diff, plan=plan)


def run_prune(args: argparse.Namespace) -> int:
    """Run ``sparseopt prune``; returns the exit status (3: NaN/Inf weights, 1: the
    shrunk network does not compute the same outputs)."""
    try:
        return _prune(args)
    except Stop as stop:
        print(f"sparseopt prune: error: {one_line(str(stop))}", file=sys.stderr)
        return stop.code


def _failed_run(run_dir: Path) -> str:
    """What the run's ``summary.json`` says of a stalled or collapsed run (``""`` for a
    healthy one, or without a readable summary)."""
    summary = read_summary(run_dir) or {}
    status = summary.get("status", "ok")
    if status == "ok":
        return ""
    reason = str(summary.get("reason") or status)
    return f"the run {status} (summary.json: {one_line(reason)}); its network is shrunk as it is"


def _prune(args: argparse.Namespace) -> int:
    from sparseopt.coupled import dead_groups, packed_groups, unpack_coupled, zero_groups_
    from sparseopt.engine.build import build_model, load_data
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
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    cfg = _run_config(run_dir)
    out_dir = _prune_out_dir(args, run_dir)  # refuse before any work
    failed = _failed_run(run_dir)
    if failed:  # it can be shrunk, but the user should know what it is
        print(f"sparseopt prune: note: {failed}", file=sys.stderr)
    if getattr(args, "onnx", False):
        from sparseopt.prune.onnx import onnx_missing

        missing = onnx_missing()
        if missing is not None:
            raise ConfigError(f"--onnx: {missing}")
    data = load_data(cfg)  # as the run was trained: the one build path of every command
    model = build_model(cfg, data, sparse_init=False)  # its weights are loaded next
    selection = None
    if has_rule(args):
        path = load_path(run_dir)
        selection = select(path, args)
        epoch_ckpt = run_dir / "checkpoints" / f"epoch_{selection.epoch:04d}.pt"
        ckpt = epoch_ckpt if epoch_ckpt.exists() else run_dir / "checkpoint.pt"
        if not ckpt.exists():
            raise ConfigError(f"no checkpoint in {run_dir}")
        _load_weights(model, cfg, ckpt)
        masks = path.masks(selection.index)
        try:
            apply_masks_(model, masks)
        except ValueError as err:
            raise ConfigError(f"the recorded path does not fit the model: {err}") from None
        source = f"{ckpt.name} masked by the support at epoch {selection.epoch}"
    else:
        sparse = run_dir / "model_sparse.pt"
        if not sparse.exists():
            raise ConfigError(f"{run_dir} has no model_sparse.pt (did the training finish?)")
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
        note(
            f"the pruned network has weight density {dens.weight_density:.2%}, above the "
            f"selected point's {selection.density:.2%}: {why}"
        )
    sets = packed_groups(model)  # a --coupled run: heads/neurons packed (engine.build)
    if sets:  # from here on ordinary parameters; fine-tuning keeps zero entries zero
        model = unpack_coupled(model)
        params = dict(model.named_parameters())
        masks = {**masks_from_weights(model), **_coupled_masks(params, sets)}
        dead = dead_groups(model, sets)
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
        for cg in sets:  # exact: a dead head's values are zero whatever its out columns
            zero_groups_(model, cg, dead[cg.name])
        losses = ", ".join(f"{v:.4g}" for v in finetune_losses)
        _check_finite(
            model,
            f"the network fine-tuned with --lr {args.lr:g} diverged (epoch losses {losses}); it",
        )
    masked_acc = _evaluate(model, x_test, y_test, data.task)
    model.eval()
    example = x_test[:2] if len(x_test) >= 2 else x_train[:2]
    result = _shrink_coupled(model, sets, example) if sets else shrink(model, example)
    shrunk = result.model.eval()
    with torch.no_grad():
        scale = max(1.0, float(model(example).abs().max()))
    tol = 1e-4 * scale
    if not result.max_abs_diff <= tol:  # NaN fails too
        raise Stop(
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
        raise ConfigError(f"cannot create --out {out_dir}: {err.strerror or err}") from None
    onnx_diffs: dict[int, float] = {}
    if getattr(args, "onnx", False):  # first: a failed check leaves no file behind
        from sparseopt.prune.onnx import export_onnx

        try:
            onnx_diffs = export_onnx(shrunk, example, out_dir / "shrunk.onnx")
        except ValueError as err:
            raise Stop(str(err), EXIT_ERROR) from None
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
