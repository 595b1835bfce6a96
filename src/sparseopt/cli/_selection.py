"""The selection rules of ``sparseopt path`` and ``prune`` (``--epoch``, ``--within``,
``--target-density``) and the reading of a run's solution path."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sparseopt.cli._common import finite_float, one_line
from sparseopt.engine.errors import ConfigError

__all__ = ["add_overwrite", "add_selection", "has_rule", "load_path", "select"]


def add_selection(parser: argparse.ArgumentParser) -> None:
    sel = parser.add_mutually_exclusive_group()
    sel.add_argument("--epoch", type=int, help="select the point recorded at this epoch")
    sel.add_argument(
        "--within",
        type=finite_float,
        metavar="EPS",
        help="select the sparsest point whose validation accuracy is within EPS (a fraction, "
        "0.01 = 1 point) of the best",
    )
    sel.add_argument(
        "--target-density",
        type=finite_float,
        metavar="D",
        help="select the best point (validation metric) among those with weight density "
        "(nonzero layer weights, as train reports it) <= D; if none is that sparse, "
        "the sparsest, with a note",
    )
    parser.add_argument(
        "--metric",
        default=None,
        help="validation metric for the rules (default: val_acc, else val_loss, else test_*)",
    )


def add_overwrite(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace {what} of an earlier call (default: a fresh name for the default "
        "output, a refusal for an existing --out)",
    )


def has_rule(args: argparse.Namespace) -> bool:
    return any(getattr(args, k) is not None for k in ("epoch", "within", "target_density"))


def select(path: Any, args: argparse.Namespace) -> Any:
    try:
        return path.select(
            epoch=args.epoch,
            within=args.within,
            target_density=args.target_density,
            metric=args.metric,
        )
    except ValueError as err:
        raise ConfigError(str(err)) from None


def load_path(run_dir: Path) -> Any:
    from sparseopt.path import load_path

    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is not a directory")
    try:
        return load_path(run_dir)
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"cannot read the solution path in {run_dir}: path.json is not valid JSON ({err})"
        ) from None
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(one_line(str(err))) from None
    except KeyError as err:
        raise ConfigError(
            f"cannot read the solution path in {run_dir}: path.json has no entry {err}"
        ) from None
    except Exception as err:  # a truncated npz...
        detail = one_line(str(err), 200) or type(err).__name__
        raise ConfigError(f"cannot read the solution path in {run_dir}: {detail}") from None
