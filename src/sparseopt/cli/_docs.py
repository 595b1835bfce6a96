"""Rewrite the generated flag table of docs/cli.md: ``python -m sparseopt.cli._docs docs/cli.md``."""

from __future__ import annotations

import sys
from pathlib import Path

from sparseopt.cli.flags import flag_table

__all__ = ["write_flag_table"]

_START, _END = "<!-- flags:start -->", "<!-- flags:end -->"


def generated_table(text: str) -> str:
    """The part of a Markdown text between the ``flags:start``/``flags:end`` markers."""
    return text.partition(_START)[2].partition(_END)[0].strip("\n")


def write_flag_table(path: str | Path) -> bool:
    """Put :func:`~sparseopt.cli.flags.flag_table` between the markers of the Markdown
    file ``path``; returns whether the file changed."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    head, _, rest = text.partition(_START)
    _, _, tail = rest.partition(_END)
    new = f"{head}{_START}\n{flag_table()}\n{_END}{tail}"
    if new != text:
        p.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(f"{arg}: {'rewritten' if write_flag_table(arg) else 'up to date'}")
