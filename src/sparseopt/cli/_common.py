"""What every ``sparseopt`` subcommand shares: exit codes, the one-line usage error,
the parser class, ``KEY=VALUE`` flags and small argument types."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from sparseopt.logging_utils import one_line

__all__ = [
    "EXIT_DIVERGED",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_USAGE",
    "KeyValue",
    "Parser",
    "Stop",
    "UsageError",
    "creatable",
    "finite_float",
    "fresh",
    "int_at_least",
    "note",
    "one_line",
    "parse_value",
    "skip_dynamo_import",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
#: Exit status of a command that met NaN/Inf (as ``sparseopt train`` on divergence).
EXIT_DIVERGED = 3


class UsageError(ValueError):
    """A problem with the command line or the settings: one line, exit status 2."""


class Stop(Exception):
    """Ends a command with one line on stderr and an exit status other than 2."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line on stderr (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parse_value(raw: str) -> Any:
    """A flag value parsed as YAML (``[64, 32]``, ``1e-3``, ``true``); the text otherwise."""
    try:
        from sparseopt.config.files import load_yaml

        return load_yaml(raw) if raw.strip() else ""
    except Exception:
        return raw


class KeyValue(argparse.Action):
    """``KEY=VALUE`` pairs collected into a dict; values parsed by :func:`parse_value`."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        key, sep, raw = str(values).partition("=")
        if not sep or not key:
            parser.error(f"argument {option_string}: expected KEY=VALUE, got {values!r}")
        current = dict(getattr(namespace, self.dest, None) or {})
        current[key.strip().replace("-", "_")] = parse_value(raw)
        setattr(namespace, self.dest, current)


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """A run directory's ``summary.json`` (written when a run finishes), or ``None`` where
    it is missing, unreadable or not a JSON object."""
    try:
        summary = json.loads((Path(run_dir) / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def note(message: str) -> None:
    """``note: message`` on stderr."""
    print(f"note: {message}", file=sys.stderr)


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low``."""

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


def _number(text: str, what: str, ok: Callable[[float], bool]) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    return _number(text, "a finite number > 0", lambda v: math.isfinite(v) and v > 0)


def finite_float(text: str) -> float:
    """An argparse type: a finite number."""
    return _number(text, "a finite number", math.isfinite)


def creatable(path: Path, flag: str) -> None:
    """Refuse (usage error) a ``path`` that cannot be created: its nearest existing
    ancestor must be a writable directory."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"cannot create {flag} {path}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot create {flag} {path}: {parent} is not writable")


def fresh(path: Path) -> Path:
    """``path`` if it does not exist, else the first free ``<stem>-2<suffix>``, ``-3``…"""
    if not path.exists():
        return path
    n = 2
    while True:
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        if not candidate.exists():
            return candidate
        n += 1


def skip_dynamo_import() -> int:
    """Keep torch from importing ``torch._dynamo`` (about 1.2 s) in a command that never
    compiles; returns how many torch functions were marked.

    ``torch.optim.Optimizer.add_param_group``, ``zero_grad``, ``state_dict``... and some
    schedulers' methods are wrapped by ``torch._disable_dynamo``, which imports
    ``torch._dynamo`` at their first call only to mark them "not to be compiled"; the
    wrapper caches that mark on the function (``__dynamo_disable``). When nothing has
    imported ``torch._dynamo`` yet, this sets the cache to the plain function, so the
    first call is a plain call. Only for the ``sparseopt`` command's own process (it
    compiles nothing); anything unexpected in torch's layout leaves torch as it is.
    (torch's own ``SGD``/``Adam`` ``step`` imports ``torch._dynamo`` itself, so this
    helps sparseopt's optimizers, whose ``step`` does not.)
    """
    if "torch._dynamo" in sys.modules:
        return 0
    try:
        import torch
        import torch._compile
        import torch.optim.lr_scheduler as schedulers

        wrapper_file = torch._compile.__file__
        owners = [torch.optim.Optimizer]
        owners += [v for v in vars(schedulers).values() if isinstance(v, type)]
        marked = 0
        for owner in owners:
            for fn in list(vars(owner).values()):
                code, plain = getattr(fn, "__code__", None), getattr(fn, "__wrapped__", None)
                if code is not None and plain is not None and code.co_filename == wrapper_file:
                    if getattr(plain, "__dynamo_disable", None) is None:
                        plain.__dynamo_disable = plain
                        marked += 1
        return marked
    except Exception:  # a torch without these internals: nothing to skip
        return 0
