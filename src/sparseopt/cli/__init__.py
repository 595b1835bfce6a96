"""The ``sparseopt`` command line: ``train``, ``compare``, ``list``, ``plot``, ``path``, ``prune``.

``sparseopt train`` with no arguments trains the main job (an AdaBreg-trained sparse
MLP on the embedded scikit-learn digits). Every setting is a flag and a key of a
config file (``--config FILE``, YAML/TOML/JSON, keys are the
:class:`~sparseopt.config.TrainConfig` fields); flags override the file.

Exit codes: 0 success; 1 unexpected error, or a file that cannot be written (disk
full: one line, the previous files intact); 2 usage error (bad flag, unknown name,
invalid value, missing data, an --out that is not the command's own — one message, no
traceback); 3 training diverged (NaN/Inf loss or weights; the last good checkpoint is
kept); 4 trained but stalled or collapsed; 130/143 interrupted by SIGINT/SIGTERM after
writing a checkpoint (resume with ``--resume RUN_DIR``; ``compare --resume OUT``).
Under ``torchrun`` only rank 0 prints these messages.

The parser is built from small tables, so a new subcommand is one entry in
:data:`COMMANDS` (``name -> (help, add_arguments, run)``). The package:

- :mod:`~sparseopt.cli.flags`: the ``train``/``compare`` flags, generated from the
  :class:`~sparseopt.config.TrainConfig` fields' metadata (and docs/cli.md's flag table);
- :mod:`~sparseopt.cli.train`: ``train`` and ``list``; :mod:`~sparseopt.cli.plot`: ``plot``;
- :mod:`~sparseopt.cli.compare`: ``compare`` (runs, table, Pareto plot, pruning baseline);
- :mod:`~sparseopt.cli.tools`: ``path``; :mod:`~sparseopt.cli.prune`: ``prune``;
- :mod:`~sparseopt.cli._common`: exit codes, the one-line usage error, argument types.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from sparseopt._version import __version__
from sparseopt.cli._common import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    Parser,
    UsageError,
    one_line,
    skip_dynamo_import,
)
from sparseopt.cli.compare import add_compare_arguments, comparison_table, run_compare
from sparseopt.cli.flags import train_flag_dests
from sparseopt.cli.plot import add_plot_arguments, run_plot
from sparseopt.cli.train import add_list_arguments, add_train_arguments, run_list, run_train

__all__ = [
    "COMMANDS",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_USAGE",
    "UsageError",
    "all_commands",
    "build_parser",
    "comparison_table",
    "main",
    "train_flag_dests",
]


#: Subcommands: name -> (help, add_arguments(parser), run(args) -> exit code).
COMMANDS: dict[
    str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
] = {
    "train": (
        "train one network (no flags: the default digits job)",
        add_train_arguments,
        run_train,
    ),
    "compare": (
        "train several optimizers on the same task and seed; Markdown table + Pareto plot",
        add_compare_arguments,
        run_compare,
    ),
    "list": ("list the datasets, models and optimizers", add_list_arguments, run_list),
    "plot": (
        "draw a run's PNG plots (accuracy, density, per-layer density) from its files",
        add_plot_arguments,
        run_plot,
    ),
}


def all_commands() -> dict[str, Any]:
    """:data:`COMMANDS` plus the structure tools' subcommands (:mod:`sparseopt.cli.tools`)."""
    from sparseopt.cli.tools import COMMANDS as extra

    return {**COMMANDS, **{k: v for k, v in extra.items() if k not in COMMANDS}}


def build_parser() -> argparse.ArgumentParser:
    """The ``sparseopt`` argument parser."""
    parser = Parser(
        prog="sparseopt",
        description="Train sparse neural networks with sparsity-promoting optimizers.",
        epilog="exit codes: 0 ok, 1 error, 2 usage error, 3 diverged (NaN/Inf), 4 trained but "
        "stalled or collapsed (summary.json says why), 130/143 interrupted",
    )
    parser.add_argument("--version", action="version", version=f"sparseopt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add, _) in all_commands().items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sparseopt`` command; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # usage errors (2), --help and --version (0)
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    commands = all_commands()
    if args.command is None:
        print(
            f"sparseopt: error: a command is required: {', '.join(commands)} "
            "(see sparseopt --help)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    prog = f"sparseopt {args.command}"
    run = commands[args.command][2]

    from sparseopt.data import DatasetNotFoundError
    from sparseopt.engine import (
        EXIT_DIVERGED,
        ConfigError,
        NonFiniteLossError,
        OutputWriteError,
        TrainingInterrupted,
    )

    # Under torchrun every process runs this; the ones that are not rank 0 say nothing.
    say = _rank() == 0
    skip_dynamo_import()  # the command compiles nothing: no 1.2 s import of torch._dynamo
    try:
        return run(args)
    except (UsageError, ConfigError) as err:
        _report(say, f"{prog}: error: {one_line(str(err))}")
        return EXIT_USAGE
    except DatasetNotFoundError as err:  # one line: its directories joined by "; "
        _report(say, f"{prog}: error: {one_line(str(err))}")
        return EXIT_USAGE
    except NonFiniteLossError as err:
        _report(say, f"{prog}: error: {one_line(str(err))}")
        return EXIT_DIVERGED
    except OutputWriteError as err:  # disk full...: the previous files are intact
        _report(say, f"{prog}: error: {one_line(str(err))}")
        return EXIT_ERROR
    except TrainingInterrupted as err:
        _report(say, f"{prog}: {err}")
        return err.exit_code
    except KeyboardInterrupt:
        _report(say, f"{prog}: interrupted")
        return 130


def _rank() -> int:
    """This process's rank under ``torchrun`` (0 otherwise)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _report(say: bool, line: str) -> None:
    if say:
        print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
