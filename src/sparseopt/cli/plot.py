"""``sparseopt plot RUN_DIR``: draw a run's PNG plots from its files.

``train`` draws them at its end only with ``--plots`` (matplotlib's import and drawing
cost about 0.8–1.7 s, more than the default job's training); this command draws the same
figures afterwards, for a finished run or one still training: ``accuracy.png``
(``loss.png`` for regression) and ``density.png`` from ``metrics.jsonl``, and
``layer_density.png`` from ``summary.json`` once the run has finished. Into RUN_DIR it
replaces the run's own plots; into another directory (``--out``) it replaces none
without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sparseopt.cli._common import creatable
from sparseopt.engine.errors import ConfigError

__all__ = ["add_plot_arguments", "run_plot"]


def add_plot_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``plot`` arguments."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of sparseopt train")
    parser.add_argument(
        "--out", metavar="DIR", help="where to write the PNG files (default: RUN_DIR)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="with --out: replace plots already there"
    )


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read {what} {path}: {err}") from None


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """The metrics rows of ``run_dir/metrics.jsonl`` (one per epoch).

    Raises:
        ConfigError: no such file (not a run directory of ``sparseopt train``), or a
            line that is not JSON.
    """
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory of sparseopt train: no {path.name}")
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:
                raise ConfigError(f"cannot read {path}: line {i} is not JSON") from None
    if not rows:
        raise ConfigError(f"{path} has no epoch yet")
    return rows


def _out_dir(out: Path, overwrite: bool) -> Path:
    """``--out``, created; refuses (exit 2) a file, or plots there that this command would
    replace without ``overwrite`` (in RUN_DIR itself the plots are the run's own files)."""
    from sparseopt.engine.rundir import PLOT_FILES

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a directory")
    taken = [name for name in PLOT_FILES if (out / name).exists()]
    if taken and not overwrite:
        raise ConfigError(
            f"--out {out} already holds {', '.join(taken)}; pass --overwrite to replace them"
        )
    creatable(out / PLOT_FILES[0], "--out")
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_plot(args: argparse.Namespace) -> int:
    """Run ``sparseopt plot``; returns the exit status."""
    from sparseopt.engine.rundir import RunDir

    run_dir = Path(args.run_dir)
    history = read_history(run_dir)
    summary_file = run_dir / "summary.json"
    summary = _read_json(summary_file, "the summary") if summary_file.is_file() else {}
    accuracy = any(row.get(k) is not None for row in history for k in ("train_acc", "val_acc"))
    out = run_dir if args.out is None else _out_dir(Path(args.out), args.overwrite)
    written, note = RunDir(out).plots(
        history,
        summary.get("layers") or {},
        "classification" if accuracy else "regression",
        summary.get("config") or {},
    )
    if note:
        raise ConfigError(note)
    for path in written:
        print(path)
    return 0
