"""Shared pieces of the reproduction scripts in ``benchmarks/repro/``.

Every script ``expN_*.py`` describes one experiment of the papers the project is built
from (see ``docs/results.md``) and exposes ``main(argv) -> dict``; this module holds
what they have in common:

* the command line (:func:`parser`): ``--smoke`` (seconds, used by
  ``tests/test_repro.py``), ``--quick`` (at most ~10 min on two CPU cores) or the full
  budget (the papers' settings), ``--out``, ``--threads``, ``--data-dir``,
  ``--dataset``, ``--seed``, ``--epochs``, ``--device``;
* training through the engine (:func:`train_run`: ``sparseopt.engine.train`` with
  quiet output and a run directory under ``OUT/runs/``), and the numbers of a finished
  run (:func:`row_from_result`);
* the library pieces the scripts use as ``C.*``: the magnitude-pruning baseline
  (:func:`magnitude_masks`, :class:`FixedMask`, :mod:`sparseopt.baselines`), evaluation
  of the deployable network (:func:`accuracy`, :func:`deployed_state`,
  :func:`kind_density`, :mod:`sparseopt.engine.evaluate`) and the dataset of a run
  (:func:`load_data`, :mod:`sparseopt.engine.build`);
* the result files (:class:`Report`: ``results.json`` and ``results.md`` with the
  command, machine, date, mode, epochs actually run and the numbers) and small plots.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from sparseopt.baselines import FixedMask, magnitude_masks, prunable_weights  # noqa: F401 (C.*)
from sparseopt.config import TrainConfig
from sparseopt.engine import NonFiniteLossError, TrainResult, train
from sparseopt.engine import evaluate as _evaluate
from sparseopt.engine.build import load_data as _load_data
from sparseopt.engine.evaluate import accuracy, kind_density  # noqa: F401 (the scripts use C.*)
from sparseopt.logging_utils import markdown_table

MODES = ("smoke", "quick", "full")

#: Datasets read from files; they accept ``limit_train`` / ``limit_test``.
FILE_DATASETS = ("mnist", "fashion-mnist", "cifar10")


# ----------------------------------------------------------------------------- CLI


def parser(description: str, *, dataset: str | None = "fashion-mnist") -> argparse.ArgumentParser:
    """The common command line of every reproduction script."""
    p = argparse.ArgumentParser(description=description)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--smoke",
        dest="mode",
        action="store_const",
        const="smoke",
        help="tiny budget (seconds): checks that the script runs",
    )
    mode.add_argument(
        "--quick",
        dest="mode",
        action="store_const",
        const="quick",
        help="shortened run, <= ~10 min on 2 CPU cores",
    )
    mode.add_argument(
        "--full",
        dest="mode",
        action="store_const",
        const="full",
        help="the papers' budget (default)",
    )
    p.set_defaults(mode="full")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default runs/repro/<experiment>-<mode>)",
    )
    p.add_argument("--overwrite", action="store_true", help="delete --out first if it exists")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1, leaving cores to others)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, auto (default cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None, help="override the mode's epoch budget")
    if dataset is not None:
        p.add_argument(
            "--dataset",
            default=dataset,
            help=f"dataset (default {dataset}; e.g. digits or mnist instead)",
        )
        p.add_argument(
            "--data-dir",
            default=None,
            help="directory with the dataset files (MNIST/Fashion-MNIST IDX, CIFAR)",
        )
    return p


def setup(args: argparse.Namespace, experiment: str) -> Path:
    """Fix threads, choose and create the output directory; returns it."""
    torch.set_num_threads(max(1, int(args.threads)))
    out = args.out or Path("runs") / "repro" / f"{experiment}-{args.mode}"
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            raise SystemExit(f"{out} exists and is not empty: use another --out or --overwrite")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    args.out = out
    return out


def data_config(args: argparse.Namespace, **limits: int | None) -> dict[str, Any]:
    """``dataset``/``data_dir``/``dataset_options`` for :class:`TrainConfig`.

    ``limits`` (``limit_train``, ``limit_test``) apply only to file datasets.
    """
    cfg: dict[str, Any] = {"dataset": args.dataset, "data_dir": args.data_dir}
    if args.dataset in FILE_DATASETS:
        cfg["dataset_options"] = {k: v for k, v in limits.items() if v is not None}
    return cfg


# ----------------------------------------------------------------------------- training


def train_run(
    out: Path,
    name: str,
    config: Mapping[str, Any],
    args: argparse.Namespace,
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """One engine run into ``OUT/runs/<name>`` (quiet, no plots, no TensorBoard)."""
    cfg = {
        "seed": args.seed,
        "device": args.device,
        "threads": args.threads,
        "quiet": True,
        "plots": False,
        "tensorboard": False,
        # the papers' runs have no lr warm-up (AdaBreg's and SplitLBI's recipes warm up
        # since rounds 71-72 of docs/recipes.md): a row that wants one says so
        "warmup": 0.0,
        **config,
        "out": str(out / "runs" / name),
    }
    print(f"[{time.strftime('%H:%M:%S')}] {name}: training ...", flush=True)
    t0 = time.perf_counter()
    try:
        result = train(TrainConfig.from_dict(cfg), callbacks=list(callbacks))
    except NonFiniteLossError as err:
        print(f"[{time.strftime('%H:%M:%S')}] {name}: diverged: {err}", flush=True)
        raise Diverged(name, cfg["out"], str(err)) from None
    print(
        f"[{time.strftime('%H:%M:%S')}] {name}: done in {time.perf_counter() - t0:.0f}s, "
        f"test {_fmt_acc(result.metrics.get('test_acc'))}, density {100 * result.density:.2f}%",
        flush=True,
    )
    return result


class Diverged(RuntimeError):
    """A run whose loss became NaN/Inf; :meth:`row` is its result-table entry."""

    def __init__(self, name: str, run_dir: str, message: str) -> None:
        super().__init__(message)
        self.name, self.run_dir = name, run_dir

    def row(self, method: str) -> dict[str, Any]:
        return {
            "method": method,
            "epochs_run": 0,
            "run_dir": self.run_dir,
            "note": f"diverged: {str(self).split(';')[0]}",
        }


def train_with_backoff(
    out: Path,
    name: str,
    config: Mapping[str, Any],
    args: argparse.Namespace,
    callbacks: Sequence[Any] = (),
    *,
    tries: int = 3,
) -> tuple[TrainResult, str | None]:
    """:func:`train_run`, halving ``lr`` after a divergence (at most ``tries`` runs).

    Returns the result and a note naming the learning rates that diverged (``None`` if
    the first run finished). Raises :class:`Diverged` if every try diverged.
    """
    cfg = dict(config)
    failed: list[float] = []
    for attempt in range(tries):
        run_name = name if attempt == 0 else f"{name}_lr{cfg['lr']:g}"
        try:
            result = train_run(out, run_name, cfg, args, callbacks)
        except Diverged:
            if cfg.get("lr") is None or attempt == tries - 1:
                raise
            failed.append(float(cfg["lr"]))
            cfg["lr"] = float(cfg["lr"]) / 2
            continue
        if not failed:
            return result, None
        lrs = ", ".join(f"{lr:g}" for lr in failed)
        return result, f"lr {cfg['lr']:g} (diverged at lr {lrs})"
    raise AssertionError("unreachable")


def _fmt_acc(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def row_from_result(method: str, result: TrainResult, **extra: Any) -> dict[str, Any]:
    """The numbers of one finished run (fractions, not percent)."""
    m = result.metrics
    row: dict[str, Any] = {
        "method": method,
        "test_acc": m.get("test_acc"),
        "val_acc": m.get("val_acc"),
        "train_acc": m.get("train_acc"),
        "test_loss": m.get("test_loss"),
        "density": m["density"],
        "weight_density": m["weight_density"],
        "nonzero": m["nonzero"],
        "params": m["params"],
        **kind_density(result.model, result.optimizer),
        "epochs_run": int(result.history[-1]["epoch"]),
        "steps": int(result.history[-1]["step"]),
        "wall_time_s": round(float(result.wall_time), 1),
        "run_dir": str(result.run_dir),
        "config": _hyper(result.config),
    }
    row.update(extra)
    return row


def _hyper(cfg: TrainConfig) -> dict[str, Any]:
    keys = (
        "optimizer",
        "lr",
        "penalty",
        "lam",
        "conv_penalty",
        "conv_groups",
        "conv_lam",
        "linear_penalty",
        "linear_lam",
        "a",
        "delta",
        "momentum",
        "kappa",
        "nu",
        "beta",
        "gamma",
        "init_density",
        "batch_size",
        "epochs",
        "schedule",
        "warmup",
        "dataset_options",
    )
    d = cfg.to_dict()
    shown = {k: d[k] for k in keys if d.get(k) not in (None, {}, [])}
    if not shown.get("warmup"):  # an lr warm-up is named where a run has one
        shown.pop("warmup", None)
    return shown


# ----------------------------------------------------------------------------- pruning


def deployed_state(result: TrainResult) -> dict[str, torch.Tensor]:
    """State dict of the deployable network of a finished run."""
    return _evaluate.deployed_state(result.model, result.optimizer)


# ----------------------------------------------------------------------------- results


def machine() -> dict[str, Any]:
    """Where the numbers were measured."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        from sparseopt import __version__

        info["sparseopt"] = __version__
    except ImportError:  # pragma: no cover
        pass
    return info


class Report:
    """Collects the rows of one experiment and writes ``results.json`` / ``results.md``.

    Args:
        experiment: short name (``exp1_fmnist_l1``).
        title: one line.
        args: the parsed command line (mode, out, seed...).
        argv: the arguments the script was called with (for the command line recorded).
        script: the script's file (for the command line recorded).
    """

    def __init__(
        self,
        experiment: str,
        title: str,
        args: argparse.Namespace,
        argv: Sequence[str] | None,
        script: str,
    ) -> None:
        self.experiment = experiment
        self.title = title
        self.args = args
        self.out = Path(args.out)
        argv = list(sys.argv[1:] if argv is None else argv)
        rel = os.path.relpath(script, Path.cwd()) if os.path.isabs(script) else script
        self.command = shlex.join(["python", rel, *argv])
        self.started = _dt.datetime.now().astimezone()
        self._t0 = time.perf_counter()
        self.rows: list[dict[str, Any]] = []
        self.published: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.extra: dict[str, Any] = {}
        self.figures: list[str] = []

    def add(self, row: Mapping[str, Any]) -> None:
        self.rows.append(dict(row))
        self.write()  # partial results survive an interrupted run

    def to_dict(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment,
            "title": self.title,
            "command": self.command,
            "mode": self.args.mode,
            "date": self.started.date().isoformat(),
            "started": self.started.isoformat(timespec="seconds"),
            "wall_time_s": round(time.perf_counter() - self._t0, 1),
            "machine": machine(),
            "seed": self.args.seed,
            "rows": self.rows,
            "published": self.published,
            "notes": self.notes,
            "figures": self.figures,
            **self.extra,
        }

    def write(self, columns: Sequence[tuple[str, str]] | None = None) -> Path:
        """Write both files into ``OUT``; returns the JSON path."""
        data = self.to_dict()
        path = self.out / "results.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
        tmp.replace(path)
        if columns is not None:
            self._columns = list(columns)
        (self.out / "results.md").write_text(self.markdown(), encoding="utf-8")
        return path

    def finish(self, columns: Sequence[tuple[str, str]] | None = None) -> dict[str, Any]:
        """Write the final files, print ``results.md`` and return the results as a dict."""
        self.write(columns)
        print((self.out / "results.md").read_text(encoding="utf-8"))
        return self.to_dict()

    def markdown(self) -> str:
        d = self.to_dict()
        m = d["machine"]
        cols = getattr(self, "_columns", None) or DEFAULT_COLUMNS
        lines = [
            f"# {self.title}",
            "",
            f"- command: `{self.command}`",
            f"- mode: {self.args.mode}; date: {d['date']}; wall time: {d['wall_time_s']:.0f} s",
            f"- machine: {m['cpu']} ({m['cpu_count']} cores, {m['torch_threads']} torch threads), "
            f"torch {m['torch']}" + (f", GPU {m['cuda']}" if m["cuda"] else ""),
            "",
            table(self.rows, cols),
        ]
        if self.published:
            lines += ["", "Published:", "", table(self.published, cols)]
        if self.notes:
            lines += ["", *[f"- {n}" for n in self.notes]]
        return "\n".join(lines) + "\n"


#: (key, header) of the default Markdown table; fractions are shown in percent.
DEFAULT_COLUMNS = [
    ("method", "method"),
    ("density", "nonzero params (%)"),
    ("test_acc", "test acc (%)"),
    ("train_acc", "train acc (%)"),
    ("epochs_run", "epochs run"),
]

_PERCENT = {
    "density",
    "weight_density",
    "test_acc",
    "val_acc",
    "train_acc",
    "conv_density",
    "linear_density",
    "removed",
    "fc_sparsity",
    "support_recovery",
    "acc",
}


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and (key in _PERCENT or key.endswith("_acc")):
        return f"{100 * value:.2f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A Markdown table of ``rows`` (fractions in percent)."""
    body = [[_cell(k, r.get(k)) for k, _ in columns] for r in rows]
    return markdown_table([h for _, h in columns], body)


def budget(args: argparse.Namespace, smoke: Any, quick: Any, full: Any) -> Any:
    """The value of the current mode."""
    return {"smoke": smoke, "quick": quick, "full": full}[args.mode]


def epochs(args: argparse.Namespace, smoke: int, quick: int, full: int) -> int:
    """Epochs of the current mode (``--epochs`` overrides)."""
    return int(args.epochs) if args.epochs is not None else budget(args, smoke, quick, full)


def figure(out: Path, name: str, report: Report | None = None) -> tuple[Any, Path]:
    """A matplotlib (Agg) module and the path ``OUT/<name>.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = out / f"{name}.png"
    if report is not None:
        report.figures.append(path.name)
    return plt, path


def load_data(config: Mapping[str, Any], seed: int) -> Any:
    """The :class:`sparseopt.data.SplitData` an engine run with ``config`` trains on
    (:func:`sparseopt.engine.build.load_data`)."""
    return _load_data(TrainConfig.from_dict({**config, "seed": seed}))


def slug(label: str) -> str:
    """A directory name for a method label."""
    for a, b in (("ℓ", "l"), ("λ", "lam"), ("β", "beta"), ("%", "pct"), (".", "p")):
        label = label.replace(a, b)
    name = "".join(c if c.isascii() and c.isalnum() else "_" for c in label.lower())
    while "__" in name:
        name = name.replace("__", "_")
    return name.strip("_")
