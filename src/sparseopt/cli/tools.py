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
reports: the *weight density* (nonzero layer weights — Conv, Linear, attention
projections — of the deployable network)
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sparseopt.cli._common import creatable, fresh, int_at_least, note
from sparseopt.cli._selection import add_overwrite, add_selection, has_rule, load_path, select
from sparseopt.cli.prune import PRUNE_OUTPUTS, add_prune_arguments, run_prune
from sparseopt.engine.errors import ConfigError

__all__ = [
    "COMMANDS",
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


# --------------------------------------------------------------------------- outputs


def _path_out_file(args: argparse.Namespace, run_dir: Path) -> Path:
    """Where ``path`` draws; refuses (usage error) to replace an existing file."""
    if args.out is not None:
        out = Path(args.out)
        if out.is_dir():
            raise ConfigError(f"--out {out} is a directory; give a PNG file name")
        if out.exists() and not args.overwrite:
            raise ConfigError(f"--out {out} exists; pass --overwrite to replace it")
        creatable(out, "--out")
        return out
    default = run_dir / "path.png"
    if args.overwrite and not default.is_dir():
        return default
    out = fresh(default)
    creatable(out, "the plot")
    if out != default:
        note(f"{default} exists: drawing to {out} instead (--overwrite replaces it)")
    return out


# --------------------------------------------------------------------------- path


def add_path_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sparseopt path``."""
    parser.add_argument(
        "run_dir", metavar="RUN_DIR", help="a run directory with path.npz/path.json"
    )
    add_selection(parser)
    parser.add_argument(
        "--out", default=None, help="PNG file (default RUN_DIR/path.png, or path-2.png... if taken)"
    )
    add_overwrite(parser, "the PNG")
    parser.add_argument(
        "--max-layers",
        type=int_at_least(0),
        default=8,
        help="group-norm panels to draw (default 8)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run_path(args: argparse.Namespace) -> int:
    """Run ``sparseopt path``; returns the exit status."""
    run_dir = Path(args.run_dir)
    path = load_path(run_dir)
    if len(path) == 0:
        raise ConfigError(f"the solution path in {run_dir} has no points")
    sel = select(path, args) if has_rule(args) else None
    out = _path_out_file(args, run_dir)
    try:
        path.plot(out, selection=sel, max_layers=args.max_layers, title=run_dir.name)
    except OSError as err:
        raise ConfigError(f"cannot write {out}: {err.strerror or err}") from None
    density = path.density
    coupled = _coupled_alive(path.points)
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
                    "coupled_alive": coupled,
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
    at = sel.index if sel is not None else len(path) - 1
    for name, alive in coupled.items():  # a --coupled run: heads/neurons alive
        epoch = int(path.epochs[at])
        print(f"  {name}: {alive[0]} alive at epoch {int(path.epochs[0])}, {alive[at]} at {epoch}")
    if sel is not None:
        print(sel)
    print(f"plot: {out}")
    return 0


def _coupled_alive(points: list[dict[str, Any]]) -> dict[str, list[int | None]]:
    """Per coupled set (heads, neurons) of a ``--coupled`` run, its groups alive at
    every point (``None`` where a point did not record it); ``{}`` for other runs."""
    names = sorted({n for p in points for n in p.get("coupled", {})})
    return {
        n: [p["coupled"][n]["alive"] if n in p.get("coupled", {}) else None for p in points]
        for n in names
    }


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
