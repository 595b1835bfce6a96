"""Output helpers of the training engine: progress bar, epoch lines, metric files.

- :class:`ProgressBar` — a small batch progress bar on ``stderr``, drawn only on a TTY;
- :func:`format_epoch_line`, :func:`format_layers` — the per-epoch line and its compact
  per-layer density summary;
- :func:`write_metrics` — ``metrics.csv`` and ``metrics.jsonl`` from the history;
- :func:`atomic_write_text`, :func:`atomic_torch_save` — write-then-``os.replace`` so a
  file is either the old or the new version, never half written;
- :func:`open_tensorboard` — TensorBoard's scalar event files (:mod:`sparseopt.tbevents`);
- :func:`one_line` — a message of several lines (an exception's) as one line.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "one_line",
    "ProgressBar",
    "MetricsWriter",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_text",
    "flatten_metrics",
    "format_duration",
    "format_epoch_line",
    "format_layers",
    "markdown_table",
    "open_tensorboard",
    "write_metrics",
]

_BLOCKS = "▁▂▃▄▅▆▇█"


class ProgressBar:
    """A minimal batch progress bar written to ``stream`` (default ``sys.stderr``).

    Drawn only when ``enabled`` (default: the stream is a TTY), at most every
    ``min_interval`` seconds; :meth:`close` erases it so the next line starts clean.

    Example:
        >>> bar = ProgressBar(3, "epoch 1", enabled=False)
        >>> for _ in range(3):
        ...     bar.update(loss=0.5)
        >>> bar.close()
        >>> bar.n
        3
    """

    def __init__(
        self,
        total: int,
        desc: str = "",
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        width: int = 24,
        min_interval: float = 0.1,
        initial: int = 0,
    ) -> None:
        self.total = max(int(total), 0)
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.width = width
        self.min_interval = min_interval
        self.n = initial
        self._start = time.perf_counter()
        self._start_n = initial
        self._last_draw = 0.0
        self._postfix: dict[str, Any] = {}
        self._drawn = False

    def update(self, n: int = 1, **postfix: Any) -> None:
        """Advance by ``n`` batches; ``postfix`` values (e.g. ``loss=0.3``) are shown after."""
        self.n += n
        if postfix:
            self._postfix.update(postfix)
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last_draw >= self.min_interval or self.n >= self.total:
            self._last_draw = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        frac = self.n / self.total if self.total else 1.0
        filled = round(frac * self.width)
        bar = "█" * filled + "·" * (self.width - filled)
        elapsed = max(now - self._start, 1e-9)
        rate = (self.n - self._start_n) / elapsed
        eta = (self.total - self.n) / rate if rate > 0 else float("nan")
        post = " ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in self._postfix.items()
        )
        line = (
            f"{self.desc} |{bar}| {self.n}/{self.total} {rate:.1f} it/s "
            f"eta {format_duration(eta)} {post}"
        )
        self.stream.write("\r" + line.rstrip() + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Erase the bar (if it was drawn)."""
        if self.enabled and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
        self._drawn = False

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- formatting


def format_duration(seconds: float) -> str:
    """``"12.3s"``, ``"4m05s"``, ``"1h02m"`` (``"?"`` for NaN/inf).

    Example:
        >>> format_duration(3.14), format_duration(245), format_duration(3725)
        ('3.1s', '4m05s', '1h02m')
    """
    if not math.isfinite(seconds):
        return "?"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        m, s = divmod(round(seconds), 60)
        return f"{m}m{s:02d}s"
    h, rem = divmod(round(seconds), 3600)
    return f"{h}h{rem // 60:02d}m"


def _pct(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "  -  "
    return f"{100 * x:.1f}%"


def format_layers(layer_density: Mapping[str, float], max_named: int = 6) -> str:
    """Compact per-layer density: names and percentages, or a block sparkline.

    Up to ``max_named`` layers are listed by name (``fc1 8% fc2 21%``); deeper networks
    get one block character per layer, from ``▁`` (empty) to ``█`` (dense), plus the
    range.

    Example:
        >>> format_layers({"fc1": 0.08, "fc2": 0.214, "fc3": 1.0})
        'fc1 8% fc2 21% fc3 100%'
        >>> format_layers({str(i): i / 9 for i in range(10)}, max_named=3)
        '▁▂▃▃▄▅▆▆▇█ (0%..100%)'
    """
    if not layer_density:
        return ""
    if len(layer_density) <= max_named:
        return " ".join(f"{name} {100 * d:.0f}%" for name, d in layer_density.items())
    values = list(layer_density.values())
    top = len(_BLOCKS) - 1
    spark = "".join(_BLOCKS[min(max(round(d * top), 0), top)] for d in values)
    return f"{spark} ({100 * min(values):.0f}%..{100 * max(values):.0f}%)"


def format_epoch_line(row: Mapping[str, Any], epochs: int, task: str = "classification") -> str:
    """One line per epoch: loss, accuracies (or losses), density, per-layer summary, time.

    Example:
        >>> row = {"epoch": 2, "train_loss": 0.25, "train_acc": 0.93, "val_acc": 0.9,
        ...        "test_acc": 0.91, "density": 0.12, "weight_density": 0.11,
        ...        "layer_density": {"fc1": 0.1, "fc2": 0.3}, "lr": 0.1, "epoch_time": 1.5}
        >>> format_epoch_line(row, 10)
        'epoch  2/10 loss 0.2500 acc train 93.0% val 90.0% test 91.0% | density 12.0% (weights 11.0%) [fc1 10% fc2 30%] | lr 0.1 1.5s'
    """
    width = len(str(epochs))
    parts = [f"epoch {row['epoch']:>{width}}/{epochs}"]
    loss = row.get("train_loss")
    parts.append(f"loss {loss:.4f}" if loss is not None else "loss   -   ")
    if task == "classification":
        parts.append(
            f"acc train {_pct(row.get('train_acc'))} val {_pct(row.get('val_acc'))} "
            f"test {_pct(row.get('test_acc'))}"
        )
    else:
        parts.append(f"val loss {_num(row.get('val_loss'))} test loss {_num(row.get('test_loss'))}")
    line = " ".join(parts)
    line += f" | density {_pct(row.get('density'))}"
    if row.get("weight_density") is not None:  # "density" counts biases and norms too
        line += f" (weights {_pct(row['weight_density'])})"
    layers = format_layers(row.get("layer_density") or {})
    if layers:
        line += f" [{layers}]"
    tail = []
    if row.get("lr") is not None:
        tail.append(f"lr {row['lr']:.3g}")
    if row.get("epoch_time") is not None:
        tail.append(format_duration(row["epoch_time"]))
    if tail:
        line += " | " + " ".join(tail)
    return line


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


# --------------------------------------------------------------------------- files


def atomic_write_text(path: str | os.PathLike[str], text: str, *, fsync: bool = True) -> Path:
    """Write ``text`` to ``path`` atomically (temporary file in the same dir + ``os.replace``)."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")), fsync=fsync)


def atomic_torch_save(obj: Any, path: str | os.PathLike[str], *, fsync: bool = True) -> Path:
    """``torch.save`` to ``path`` atomically (temporary file in the same dir + ``os.replace``)."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f), fsync=fsync)


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[Any], Any], *, fsync: bool = True
) -> Path:
    """``write(f)`` into a temporary file next to ``path`` (opened ``wb``), then
    ``os.replace`` it onto ``path``: readers see the old file or the new one, never half
    of one. ``fsync`` also forces the bytes to the disk before the rename (what a
    checkpoint needs to survive a power cut; a file that is rewritten soon does not)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; use the usual mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def flatten_metrics(row: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts with ``/`` (``{"layer_density": {"fc1": .1}}`` → ``layer_density/fc1``).

    Example:
        >>> flatten_metrics({"epoch": 1, "layer_density": {"fc1": 0.5}})
        {'epoch': 1, 'layer_density/fc1': 0.5}
    """
    out: dict[str, Any] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_metrics(value, f"{name}/"))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(list(value))
        else:
            out[name] = value
    return out


def _csv_lines(flat: Sequence[Mapping[str, Any]], columns: Sequence[str], header: bool) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    if header:
        writer.writeheader()
    for row in flat:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def _columns(flat: Sequence[Mapping[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in flat:
        for key in row:
            if key not in columns:
                columns.append(key)
    return columns


def write_metrics(
    history: Sequence[Mapping[str, Any]], run_dir: str | os.PathLike[str], *, fsync: bool = True
) -> None:
    """(Re)write ``metrics.csv`` and ``metrics.jsonl`` in ``run_dir`` from the full history."""
    run_dir = Path(run_dir)
    jsonl = "".join(json.dumps(dict(row), allow_nan=True) + "\n" for row in history)
    atomic_write_text(run_dir / "metrics.jsonl", jsonl, fsync=fsync)
    flat = [flatten_metrics(row) for row in history]
    text = _csv_lines(flat, _columns(flat), header=True)
    atomic_write_text(run_dir / "metrics.csv", text, fsync=fsync)


class MetricsWriter:
    """``metrics.csv`` and ``metrics.jsonl`` of a growing history, appended row by row.

    The first :meth:`write` (and any write after which the CSV columns change, e.g. a
    callback adding a metric) rewrites both files whole and atomically, as
    :func:`write_metrics`; later ones append only the new rows, so an epoch costs the
    same whatever the number of epochs before it (the files' earlier bytes stay as they
    are). A process that resumes a run starts with a whole rewrite, which also drops a
    row that an interruption may have left after the checkpoint.
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self._rows = -1  # rows in the files (-1: unknown, rewrite)
        self._columns: list[str] = []

    def write(self, history: Sequence[Mapping[str, Any]]) -> None:
        """Bring the files up to ``history`` (every row so far)."""
        new = history[self._rows :] if 0 <= self._rows <= len(history) else None
        flat = [flatten_metrics(row) for row in new] if new is not None else []
        if new is None or any(k not in self._columns for row in flat for k in row):
            write_metrics(history, self.run_dir, fsync=False)
            self._columns = _columns([flatten_metrics(row) for row in history])
        else:
            jsonl = "".join(json.dumps(dict(row), allow_nan=True) + "\n" for row in new)
            with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(jsonl)
            with open(self.run_dir / "metrics.csv", "a", encoding="utf-8", newline="") as f:
                f.write(_csv_lines(flat, self._columns, header=False))
        self._rows = len(history)


def markdown_table(head: Sequence[str], rows: Iterable[Sequence[str]], left: int = 1) -> str:
    """A Markdown table: the first ``left`` columns left-aligned, the others right-aligned.

    Example:
        >>> print(markdown_table(["method", "acc"], [["sgd", "97.1"]]))
        | method | acc |
        |---|---:|
        | sgd | 97.1 |
    """
    sep = ["---" if i < left else "---:" for i in range(len(head))]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(sep) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- tensorboard


def open_tensorboard(
    log_dir: str | os.PathLike[str], enabled: bool | None, note: Callable[[str], None]
) -> Any | None:
    """A :class:`sparseopt.tbevents.ScalarWriter` for ``log_dir`` (TensorBoard's scalar
    event files, written without importing TensorBoard), or ``None``.

    ``enabled=None`` logs only if TensorBoard is installed (to read the files), silently
    otherwise; ``False`` never logs; ``True`` always writes the files, and ``note`` is
    called once if TensorBoard is not installed to read them.
    """
    from sparseopt.tbevents import ScalarWriter

    if enabled is False:
        return None
    if not _installed("tensorboard"):
        if not enabled:
            return None
        note(
            f"TensorBoard is not installed: the event files are written to {log_dir}; "
            "pip install tensorboard to view them"
        )
    return ScalarWriter(log_dir)


def _installed(name: str) -> bool:
    """Whether ``import name`` would find a module (without importing it)."""
    import importlib.util

    if name in sys.modules:
        return sys.modules[name] is not None
    return importlib.util.find_spec(name) is not None


def one_line(text: str, limit: int = 800) -> str:
    """``text`` on one line, at most ``limit`` characters: whitespace collapsed, its lines
    joined by "; " (by a space after a line that ends in ":", which introduces the next).

    Example:
        >>> one_line("no dataset found:\\n  /a\\n  /b")
        'no dataset found: /a; /b'
    """
    line = ""
    for part in (" ".join(raw.split()) for raw in str(text).splitlines()):
        if part:
            line = part if not line else line + (" " if line.endswith(":") else "; ") + part
    return line if len(line) <= limit else line[: limit - 1] + "…"
