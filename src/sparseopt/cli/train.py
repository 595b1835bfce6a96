"""``sparseopt train`` and ``sparseopt list``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sparseopt.cli._common import EXIT_OK, UsageError
from sparseopt.cli.flags import add_train_flags, config_from, settings

__all__ = ["add_list_arguments", "add_train_arguments", "exit_status", "run_list", "run_train"]


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "-c", metavar="FILE", help="YAML/TOML/JSON config file (flags override it)"
    )
    parser.add_argument(
        "--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint"
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config (YAML) and exit"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="allow --out to be an existing directory that is not a run directory: the "
        "run's files (config.yaml, metrics.csv, summary.json, ...) replace those of the "
        "same name there, other files are left alone (a run directory is never replaced)",
    )
    add_train_flags(parser)


def run_train(args: argparse.Namespace) -> int:
    from sparseopt.engine import train

    values = settings(args)
    if args.resume:
        if args.print_config:
            raise UsageError("--print-config cannot be combined with --resume")
        if args.overwrite:
            raise UsageError("--overwrite cannot be combined with --resume")
        result = train(values, resume=args.resume)
        return exit_status(result)
    config = config_from(values)
    if args.print_config:
        import yaml

        try:
            resolved = config.resolve()
        except ValueError as err:
            raise UsageError(str(err)) from None
        print(yaml.safe_dump(resolved.to_dict(), sort_keys=False, default_flow_style=None), end="")
        return EXIT_OK
    return exit_status(train(config, overwrite=args.overwrite))


def exit_status(result: Any) -> int:
    """0 for a healthy run; :data:`~sparseopt.health.EXIT_FAILED` with one line otherwise."""
    from sparseopt.health import EXIT_FAILED

    if result.status == "ok":
        return EXIT_OK
    health = result.health
    hint = f"; {health['hint']}" if health.get("hint") else ""
    reason = health["reason"]  # it begins with the status ("stalled: ...")
    if not reason.startswith(f"{result.status}:"):
        reason = f"{result.status}: {reason}"
    print(f"sparseopt: error: run {reason}{hint}", file=sys.stderr)
    return EXIT_FAILED


def add_list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "what",
        nargs="?",
        choices=("datasets", "models", "optimizers"),
        help="what to list (default: everything)",
    )


def run_list(args: argparse.Namespace) -> int:
    from sparseopt.data import list_datasets
    from sparseopt.models import get_model_spec, list_models
    from sparseopt.optim.registry import get_optimizer_info, list_optimizers

    what = [args.what] if args.what else ["datasets", "models", "optimizers"]
    for kind in what:
        print(f"{kind}:")
        if kind == "datasets":
            for name in list_datasets():
                print(f"  {name}")
        elif kind == "models":
            for name in list_models():
                print(f"  {name:<10} {get_model_spec(name).description}")
        else:
            for name in list_optimizers():
                print(f"  {name:<10} {get_optimizer_info(name).description}")
    return EXIT_OK
