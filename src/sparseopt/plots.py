"""PNG plots of training runs, drawn with matplotlib's Agg canvas.

The figures are built with :class:`matplotlib.figure.Figure` and
:class:`~matplotlib.backends.backend_agg.FigureCanvasAgg` directly, so plotting never
touches pyplot's global backend (safe in notebooks and on headless machines).

- :func:`plot_history` — accuracy (or loss, for regression) and density vs epoch;
- :func:`plot_layer_density` — per-layer bars: nonzero weights and live filters;
- :func:`plot_pareto` — test accuracy vs density of several runs, Pareto front marked.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["pareto_front", "plot_history", "plot_layer_density", "plot_pareto"]


def _figure(width: float = 6.4, height: float = 4.0) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Fixed margins: constrained layout would cost most of the drawing time.
    fig = Figure(figsize=(width, height), dpi=100)
    fig.subplots_adjust(left=0.11, right=0.97, bottom=0.13, top=0.91)
    FigureCanvasAgg(fig)
    return fig


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for row in history:
        v = row.get(key)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        xs.append(int(row["epoch"]))
        ys.append(float(v))
    return xs, ys


def plot_history(
    history: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike[str],
    task: str = "classification",
    title: str = "",
) -> list[Path]:
    """Write ``accuracy.png`` (``loss.png`` for regression) and ``density.png``.

    Args:
        history: one metrics dict per epoch (``epoch``, ``train_acc``, ``val_acc``,
            ``test_acc`` or the ``*_loss`` keys, ``density``, ``weight_density``,
            ``layer_density``).
        out_dir: destination directory.
        task: ``"classification"`` or ``"regression"``.
        title: figure title (e.g. the run name).

    Returns:
        The paths written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []

    fig = _figure()
    ax = fig.add_subplot()
    if task == "classification":
        keys, name, ylabel = ("train_acc", "val_acc", "test_acc"), "accuracy.png", "accuracy (%)"
        scale = 100.0
    else:
        keys, name, ylabel = ("train_loss", "val_loss", "test_loss"), "loss.png", "MSE loss"
        scale = 1.0
    for key in keys:
        xs, ys = _series(history, key)
        if xs:
            ax.plot(xs, [scale * y for y in ys], marker="o", ms=3, label=key.split("_")[0])
    if task != "classification":
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title or ylabel)
    fig.savefig(out / name)
    written.append(out / name)

    fig = _figure()
    ax = fig.add_subplot()
    layer_names: list[str] = []
    for row in history:
        for layer in row.get("layer_density") or {}:
            if layer not in layer_names:
                layer_names.append(layer)
    if len(layer_names) <= 12:
        for layer in layer_names:
            xs = [int(r["epoch"]) for r in history if layer in (r.get("layer_density") or {})]
            ys = [
                100 * r["layer_density"][layer]
                for r in history
                if layer in (r.get("layer_density") or {})
            ]
            ax.plot(xs, ys, lw=1, alpha=0.6, label=layer)
    for key, style in (("density", "k-"), ("weight_density", "k--")):
        xs, ys = _series(history, key)
        if xs:
            ax.plot(xs, [100 * y for y in ys], style, lw=2, label=key.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.set_ylabel("nonzero (%)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", ncol=2)
    ax.set_title(title or "density")
    fig.savefig(out / "density.png")
    written.append(out / "density.png")
    return written


def plot_layer_density(
    layers: Mapping[str, Mapping[str, Any]], path: str | os.PathLike[str], title: str = ""
) -> Path:
    """Bar chart of each layer's nonzero-weight fraction and live-filter fraction.

    Args:
        layers: ``{name: {"density": .., "filters_alive": .., "filters": ..}}`` as in
            :meth:`sparseopt.metrics.DensityReport.to_dict`'s ``layers``.
        path: destination PNG.
        title: figure title.
    """
    names = list(layers)
    dens = [100 * float(layers[n]["density"]) for n in names]
    filt = [
        100 * layers[n]["filters_alive"] / max(layers[n]["filters"], 1)
        if "filters" in layers[n]
        else float("nan")
        for n in names
    ]
    fig = _figure(max(6.4, 0.45 * len(names) + 2), 4.0)
    if len(names) > 6:
        fig.subplots_adjust(bottom=0.25)
    ax = fig.add_subplot()
    xs = list(range(len(names)))
    ax.bar([x - 0.2 for x in xs], dens, width=0.4, label="nonzero weights")
    ax.bar([x + 0.2 for x in xs], filt, width=0.4, label="live filters / neurons")
    ax.set_xticks(
        xs, names, rotation=45 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center"
    )
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize="small")
    ax.set_title(title or "per-layer density")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p)
    return p


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the Pareto-optimal points (lower density, higher accuracy), by density.

    Args:
        points: ``(density, accuracy)`` pairs.

    Example:
        >>> pareto_front([(0.1, 0.9), (0.2, 0.95), (0.3, 0.93), (0.05, 0.5)])
        [3, 0, 1]
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def plot_pareto(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    x: str = "density",
    y: str = "test_acc",
    label: str = "optimizer",
    title: str = "",
) -> Path:
    """Scatter of ``y`` (test accuracy) against ``x`` (density), one labelled point per run.

    The Pareto front (no other run is both sparser and more accurate) is joined by a line.
    For a loss (``y`` ending in ``_loss``) lower is better and the axis is logarithmic.
    """
    lower_better = y.endswith("_loss")
    pts = [(float(r[x]), float(r[y])) for r in rows]
    fig = _figure()
    ax = fig.add_subplot()
    scale_x = 100.0
    scale_y = 1.0 if lower_better else 100.0
    order = sorted(range(len(pts)), key=lambda i: pts[i])
    for rank, i in enumerate(order):
        r, (px, py) = rows[i], pts[i]
        ax.scatter([scale_x * px], [scale_y * py], s=40, zorder=3)
        right = px > 0.85 * max(p[0] for p in pts)
        ax.annotate(
            str(r.get(label, "")),
            (scale_x * px, scale_y * py),
            textcoords="offset points",
            # alternate above/below so that neighbouring labels do not overlap
            xytext=(-5 if right else 5, 5 if rank % 2 == 0 else -11),
            ha="right" if right else "left",
            fontsize="small",
        )
    front = pareto_front([(px, -py if lower_better else py) for px, py in pts])
    if len(front) > 1:
        ax.plot(
            [scale_x * pts[i][0] for i in front],
            [scale_y * pts[i][1] for i in front],
            "k--",
            lw=1,
            alpha=0.6,
            label="Pareto front",
        )
        ax.legend(fontsize="small")
    ax.set_xlabel("nonzero parameters (%)")
    ax.set_ylabel(y.replace("_", " ") + ("" if lower_better else " (%)"))
    if lower_better:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.set_title(title or "accuracy vs density")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p)
    return p
