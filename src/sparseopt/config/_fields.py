"""The flag metadata of :class:`~sparseopt.config.TrainConfig`'s fields.

Every field carries, in ``dataclasses.field(metadata=...)``, what its ``sparseopt train``
flag needs; :mod:`sparseopt.cli.flags` builds the parser and docs/cli.md's flag table
from it.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any


def _key(name: str) -> str:
    return str(name).replace("-", "_")


def _meta(
    group: str,
    help: str,
    *,
    flags: tuple[str, ...] = (),
    metavar: str | tuple[str, ...] | None = None,
    choices: tuple[str, ...] | None = None,
    shown: str | None = None,
    nargs: int | str | None = None,
    action: str | None = None,
) -> dict[str, Any]:
    """The metadata of a field: its command-line flag (see :class:`TrainConfig`).

    ``shown`` is the default as the help prints it (else the default value itself, if
    not None).
    """
    return {
        "help": help,
        "group": group,
        "flags": flags,
        "metavar": metavar,
        "choices": choices,
        "shown": shown,
        "nargs": nargs,
        "action": action,
    }


def _opt(default: Any, group: str, help: str, **flag: Any) -> Any:
    """A field with an immutable default and the flag metadata :func:`_meta`."""
    return field(default=default, metadata=_meta(group, help, **flag))
