"""The run directory: which directory a run may use, and every file it writes there.

Files (all written atomically, by rank 0 only, but the shards)::

    config.yaml        resolved configuration (every default filled in)
    checkpoint.pt      latest checkpoint (:mod:`sparseopt.engine.checkpoint`)
    checkpoints/       one checkpoint per epoch (with keep_checkpoints)
    checkpoint.dcp/    a sharded (FSDP2) run's model and optimizer shards, one
                       torch.distributed.checkpoint directory per checkpoint (every
                       rank writes its own files; checkpoint.pt names the latest)
    metrics.csv        one row per epoch (per-layer densities as layer_density/<name>, λs as
                       layer_lam/<name>)
    metrics.jsonl      the same as JSON lines
    log.txt            the lines printed during training
    model_sparse.pt    state dict of the deployable sparse network (at the end)
    path.npz, path.json  the solution path, one point per epoch (with record_path)
    summary.json       final metrics, wall time and the resolved config
    accuracy.png       (loss.png for regression) and density.png vs epoch,
    layer_density.png  per-layer nonzero weights and live filters
    tensorboard/       when torch.utils.tensorboard imports

A failed write (disk full...) is one :class:`~sparseopt.engine.errors.OutputWriteError`
that says which checkpoint is intact and how to resume.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sparseopt.config import TrainConfig
from sparseopt.engine.checkpoint import CHECKPOINT_FILE, SHARDED_DIR
from sparseopt.engine.distributed import Dist, broadcast_object
from sparseopt.engine.errors import ConfigError, OutputWriteError
from sparseopt.logging_utils import MetricsWriter, atomic_torch_save, atomic_write_text

__all__ = [
    "CONFIG_FILE",
    "LOG_FILE",
    "RUN_FILES",
    "TIME_KEYS",
    "RunDir",
    "claim",
    "out_error",
    "tensorboard_row",
]

CONFIG_FILE = "config.yaml"
LOG_FILE = "log.txt"
#: Metrics keys that measure time (they differ between otherwise identical runs).
TIME_KEYS = ("train_time", "epoch_time", "elapsed")

#: The PNG plots a run may hold (``--plots``, ``sparseopt plot``).
PLOT_FILES = ("accuracy.png", "loss.png", "density.png", "layer_density.png")
#: What a run writes in its directory (``--overwrite`` replaces these and nothing else).
RUN_FILES = (
    CONFIG_FILE,
    CHECKPOINT_FILE,
    "checkpoints",
    SHARDED_DIR,
    "metrics.csv",
    "metrics.jsonl",
    LOG_FILE,
    "model_sparse.pt",
    "summary.json",
    "path.npz",
    "path.json",
    "path_chunks",
    *PLOT_FILES,
    "tensorboard",
)


#: What only a run that reached a checkpoint or its end leaves behind: a directory with
#: any of these is not "stopped before its first checkpoint" (nothing to keep).
_KEPT_OUTPUTS = ("checkpoints", SHARDED_DIR, "summary.json", "model_sparse.pt")


def own_fresh_run(run_dir: Path) -> bool:
    """A run directory of ours stopped before its first checkpoint (nothing to keep): its
    ``log.txt`` starts with the run header, every entry has a run output's name, and none
    is one that only a checkpointed or finished run writes (a finished run whose
    ``checkpoint.pt`` was deleted is not fresh)."""
    try:
        with open(run_dir / LOG_FILE, encoding="utf-8") as f:
            first = f.readline()
    except (OSError, UnicodeDecodeError):
        return False
    allowed = set(RUN_FILES) - set(_KEPT_OUTPUTS)
    return first.startswith("sparseopt train: ") and all(
        p.name in allowed for p in run_dir.iterdir()
    )


def out_error(run_dir: Path, overwrite: bool) -> str:
    """Why a fresh run may not write into ``run_dir`` ("" if it may).

    A new or empty directory is fine, and so is a run directory of ours that never
    reached its first checkpoint (its ``log.txt`` starts with the run header). A run
    with a checkpoint is resumed, not replaced; any other existing directory needs
    ``overwrite``, and then only :data:`RUN_FILES` are replaced (a note on stderr).
    """
    if run_dir.exists() and not run_dir.is_dir():
        return f"cannot use --out {run_dir}: it is a file, not a directory"
    if (run_dir / CHECKPOINT_FILE).exists():
        return (
            f"{run_dir} already holds a run; resume it with --resume {run_dir} "
            "or choose another --out"
        )
    if not run_dir.is_dir():
        return ""
    present = sorted(p.name for p in run_dir.iterdir())
    if not present or own_fresh_run(run_dir):
        return ""
    replaced = [name for name in RUN_FILES if name in present and not (run_dir / name).is_dir()]
    folders = [name for name in RUN_FILES if name in present and (run_dir / name).is_dir()]
    if not overwrite:
        shown = ", ".join(present[:5]) + (", …" if len(present) > 5 else "")
        clash = f"; --overwrite would replace {', '.join(replaced)}" if replaced else ""
        return (
            f"--out {run_dir} exists and is not a run directory (it holds {shown}); "
            f"choose a new --out, or pass --overwrite to train into it{clash} "
            "(other files are left alone)"
        )
    what = (
        f"files of these names are replaced: {', '.join(replaced)}"
        if replaced
        else "no file there has the name of a run output"
    )
    if folders:
        what += (
            f"; folders {', '.join(folders)} are kept and written into (earlier "
            "TensorBoard event files directly in tensorboard/ are removed, unless "
            "--no-tensorboard)"
        )
    print(
        f"sparseopt: note: --overwrite: training into the existing directory {run_dir}; "
        f"{what}; other files are left alone",
        file=sys.stderr,
        flush=True,
    )
    return ""


def clear_run_files(run_dir: Path, *, ours: bool, tensorboard: bool) -> None:
    """Remove the run outputs already in ``run_dir`` before a fresh run writes there.

    ``ours`` (a run of ours stopped before its first checkpoint, :func:`own_fresh_run`):
    every entry of :data:`RUN_FILES`, folders whole — they are that run's. Otherwise
    (``--overwrite``, announced by :func:`out_error`): the files of those names, which
    the note says are replaced, and — unless this run's TensorBoard logging is off
    (``tensorboard`` false) — the earlier event files directly in ``tensorboard/``
    (TensorBoard would show both runs as one); every folder and every other file is
    left alone.
    """
    for name in RUN_FILES:
        entry = run_dir / name
        if entry.is_dir() and not entry.is_symlink():
            if ours:
                shutil.rmtree(entry)
            elif name == "tensorboard" and tensorboard:
                for event in entry.glob("events.out.tfevents.*"):
                    if event.is_file() or event.is_symlink():
                        event.unlink()
        elif entry.exists() or entry.is_symlink():
            entry.unlink()


def claim(cfg: TrainConfig, resume_dir: Path | None, overwrite: bool, ctx: Dist) -> Path:
    """The run directory of ``cfg`` (created by rank 0), the same on every rank.

    ``cfg.out``, or ``runs/<name>`` / ``runs/<timestamp>-<dataset>-<optimizer>`` (with
    ``-2``, ``-3``... if taken); a fresh run removes the run outputs already there
    (:func:`clear_run_files`: a run of ours stopped before its first checkpoint, or the
    files ``--overwrite`` replaces).

    Raises:
        ConfigError: the directory may not be used (see :func:`out_error`).
    """
    error = ""
    run_dir: Path | None = None
    if ctx.is_main:
        if resume_dir is not None:
            run_dir = resume_dir
        elif cfg.out:
            run_dir = Path(cfg.out)
            error = out_error(run_dir, overwrite)
        else:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            base = Path("runs") / (cfg.name or f"{stamp}-{cfg.dataset}-{cfg.optimizer}")
            run_dir, k = base, 1
            while run_dir.exists():
                k += 1
                run_dir = base.with_name(f"{base.name}-{k}")
        if not error and run_dir is not None:
            try:
                ours = run_dir.is_dir() and own_fresh_run(run_dir)
                run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                error = f"cannot create run directory {run_dir}: {err.strerror or err}"
            if not error and resume_dir is None:  # a fresh run replaces the outputs there
                try:
                    clear_run_files(run_dir, ours=ours, tensorboard=cfg.tensorboard is not False)
                except OSError as err:
                    error = (
                        f"cannot remove the earlier run outputs in {run_dir}: {err.strerror or err}"
                    )
    run_dir_s, error = broadcast_object([str(run_dir) if run_dir is not None else "", error], ctx)
    if error:
        raise ConfigError(error)
    return Path(run_dir_s)


class RunDir:
    """Writes the files of one run directory (rank 0); every failure is one line.

    Args:
        path: the directory (it exists).
        saved_epoch: returns the epoch of the last checkpoint written or loaded (for the
            message of a failed write).
    """

    def __init__(self, path: Path, saved_epoch: Callable[[], int] = lambda: 0) -> None:
        self.path = path
        self._saved_epoch = saved_epoch
        self._metrics = MetricsWriter(path)

    def write(self, path: Path, write: Callable[[Path], Any]) -> Any:
        """``write(path)``; a failure to write (disk full...) is one :class:`OutputWriteError`."""
        try:
            return write(path)
        except OSError as err:
            reason = err.strerror or str(err) or type(err).__name__
            raise OutputWriteError(self._failure(path, reason)) from None
        except RuntimeError as err:  # torch.save reports a failed write as a RuntimeError
            if "writ" not in str(err).lower():
                raise
            reason = " ".join(str(err).split())[:200]
            raise OutputWriteError(self._failure(path, reason)) from None

    def _failure(self, path: Path, reason: str) -> str:
        if (self.path / CHECKPOINT_FILE).is_file():
            keep = (
                f"the previous {CHECKPOINT_FILE} (epoch {self._saved_epoch()}) is intact; free "
                f"some space and resume with: sparseopt train --resume {self.path}"
            )
        else:
            keep = "no checkpoint was written yet"
        return f"cannot write {path}: {reason}; {keep}"

    def log(self, line: str) -> None:
        """Append ``line`` to ``log.txt``."""

        def append(path: Path) -> None:
            with open(path, "a", encoding="utf-8") as f:
                f.write(line + "\n")

        self.write(self.path / LOG_FILE, append)

    def write_config(self, config: TrainConfig) -> None:
        """Write ``config.yaml`` atomically, unless it already says the same (resume)."""
        import yaml

        text = yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=None)
        path = self.path / CONFIG_FILE
        with contextlib.suppress(OSError):
            if path.read_text(encoding="utf-8") == text:
                return
        self.write(path, lambda p: atomic_write_text(p, text, fsync=False))

    def save_checkpoint(self, state: Mapping[str, Any], epoch: int | None = None) -> Path:
        """Write ``checkpoint.pt`` (and ``checkpoints/epoch_NNNN.pt`` when ``epoch`` is given)."""
        path = self.write(self.path / CHECKPOINT_FILE, lambda p: atomic_torch_save(state, p))
        if epoch is not None:
            kept = self.path / "checkpoints" / f"epoch_{epoch:04d}.pt"
            self.write(kept, lambda p: atomic_torch_save(state, p))
        return path

    def publish_shards(self, tmp: Path, final: Path) -> None:
        """Rename the shard directory ``tmp`` (written completely) to ``final``; an
        existing ``final`` (the same step saved again after a resume) is replaced."""

        def publish(path: Path) -> None:
            old = path.with_name(f"{path.name}.old")
            if path.exists():
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)

        self.write(final, publish)

    def drop_shards(self, but: str, kept: bool) -> None:
        """Delete the shard directories in ``checkpoint.dcp/`` other than ``but`` (the
        one ``checkpoint.pt`` names), except, when ``kept``, the end-of-epoch ones
        (``checkpoints/epoch_NNNN.pt`` name them); leftovers of an interrupted save too."""
        root = self.path / SHARDED_DIR
        for d in root.iterdir() if root.is_dir() else ():
            if d == self.path / but or (kept and re.fullmatch(r"epoch-\d{4,}", d.name)):
                continue
            if d.name.startswith("epoch-"):
                shutil.rmtree(d, ignore_errors=True)

    def write_metrics(self, history: Sequence[Mapping[str, Any]]) -> None:
        """``metrics.csv`` and ``metrics.jsonl`` of the history so far (new rows appended)."""
        self.write(self.path / "metrics.csv", lambda p: self._metrics.write(history))

    def write_model(self, state: Mapping[str, Any], name: str = "model_sparse.pt") -> None:
        """A state dict, atomically (not forced to the disk: only checkpoints are)."""
        self.write(self.path / name, lambda p: atomic_torch_save(state, p, fsync=False))

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """``summary.json``."""
        text = json.dumps(summary, indent=2, default=str) + "\n"
        self.write(self.path / "summary.json", lambda p: atomic_write_text(p, text, fsync=False))

    def plots(
        self,
        history: Sequence[Mapping[str, Any]],
        layers: Mapping[str, Any],
        task: str,
        config: Mapping[str, Any],
    ) -> tuple[list[Path], str]:
        """Draw the PNG plots, titled from the run's ``config`` (its dataset, model and
        optimizer); returns the files written and a note when they were skipped (else "")."""
        try:
            from sparseopt.plots import plot_history, plot_layer_density
        except ImportError:  # pragma: no cover - matplotlib missing
            return [], "plots skipped (matplotlib is not installed)"
        title = " / ".join(str(config.get(k, "?")) for k in ("dataset", "model", "optimizer"))
        written = plot_history(list(history), self.path, task, title)
        if layers:
            written.append(plot_layer_density(layers, self.path / "layer_density.png", title))
        return written, ""


def tensorboard_row(writer: Any, row: Mapping[str, Any]) -> None:
    """Every number of a metrics row (and of its per-layer dicts) as a scalar at its epoch."""
    for key, value in row.items():
        if key == "epoch":
            continue
        if isinstance(value, (int, float)) and value is not None:
            writer.add_scalar(key, value, row["epoch"])
        elif isinstance(value, Mapping):
            for sub, v in value.items():
                if isinstance(v, (int, float)):
                    writer.add_scalar(f"{key}/{sub}", v, row["epoch"])
    writer.flush()
