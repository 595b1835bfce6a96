"""PNG plots of training runs, drawn with matplotlib's Agg canvas.

The figures are built with :class:`matplotlib.figure.Figure` and
:class:`~matplotlib.backends.backend_agg.FigureCanvasAgg` directly, so plotting never
touches pyplot's global backend (safe in notebooks and on headless machines).

- :func:`plot_history` — accuracy (or loss, for regression) and density vs epoch;
- :func:`plot_layer_density` — per-layer bars: nonzero weights and live filters;
- :func:`plot_pareto` — test accuracy vs density of several runs (log density axis, a
  legend entry per run, pruning baselines drawn as crosses), Pareto front marked.

Every PNG is written atomically: to a temporary file beside it, then renamed.
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


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    """``fig.savefig`` as PNG, atomically (:func:`sparseopt.logging_utils.atomic_write`)."""
    from sparseopt.logging_utils import atomic_write

    return atomic_write(path, lambda f: fig.savefig(f, format="png"), fsync=False)


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
    written.append(_save(fig, out / name))

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
    written.append(_save(fig, out / "density.png"))
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
    return _save(fig, path)


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


def _is_baseline(row: Mapping[str, Any], label: str) -> bool:
    """A pruning-baseline row of ``sparseopt compare --prune-baseline``."""
    return bool(row.get("baseline")) or str(row.get(label, "")).startswith("pruning @")


def plot_pareto(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    x: str = "density",
    y: str = "test_acc",
    label: str = "optimizer",
    title: str = "",
) -> Path:
    """Scatter of ``y`` (test accuracy) against ``x`` (density), one legend entry per run.

    The density axis is logarithmic (sparse methods sit one or two decades left of the
    dense ones, which a linear axis crowds into its left tenth); runs are told apart by
    colour and marker in a legend beside the axes, so no label can overlap another.
    Pruning-baseline rows (``pruning @ <method>``) are crosses in their method's colour.
    The Pareto front of the compared methods (no other one is both sparser and more
    accurate) is joined by a dashed line. For a loss (``y`` ending in ``_loss``) lower
    is better and the y axis is logarithmic too.
    """
    lower_better = y.endswith("_loss")
    scale_y = 1.0 if lower_better else 100.0
    fig = _figure(8.4, 4.4)
    fig.subplots_adjust(left=0.09, right=0.68, bottom=0.13, top=0.91)
    ax = fig.add_subplot()
    markers = "osD^v<>pPh*"
    methods = [r for r in rows if not _is_baseline(r, label)]
    colours: dict[str, Any] = {}
    for k, r in enumerate(methods):
        name = str(r.get(label, ""))
        colours[name] = f"C{k % 10}"
        ax.scatter(
            [100 * float(r[x])],
            [scale_y * float(r[y])],
            s=45,
            zorder=3,
            color=colours[name],
            marker=markers[k % len(markers)],
            label=name,
        )
    for r in rows:
        if not _is_baseline(r, label):
            continue
        name = str(r.get(label, ""))
        method = name.removeprefix("pruning @").strip()
        ax.scatter(
            [100 * float(r[x])],
            [scale_y * float(r[y])],
            s=55,
            zorder=3,
            color=colours.get(method, "0.4"),
            marker="x",
            linewidths=1.8,
            label=name,
        )
    pts = [(float(r[x]), float(r[y])) for r in methods]
    front = [methods[i] for i in pareto_front([(a, -b if lower_better else b) for a, b in pts])]
    if len(front) > 1:
        ax.plot(
            [100 * float(r[x]) for r in front],
            [scale_y * float(r[y]) for r in front],
            "k--",
            lw=1,
            alpha=0.6,
            label="Pareto front",
        )
    ax.set_xscale("log")
    xs = [100 * float(r[x]) for r in rows if float(r[x]) > 0]
    if xs:
        ax.set_xlim(min(xs) / 1.6, max(max(xs) * 1.6, 110.0))
    ax.set_xlabel("nonzero parameters (%, log scale)")
    ax.set_ylabel(y.replace("_", " ") + ("" if lower_better else " (%)"))
    if lower_better:
        ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    if rows:
        ax.legend(
            fontsize="small",
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            borderaxespad=0.0,
            title="× = magnitude pruning" if len(methods) < len(rows) else None,
            title_fontsize="small",
        )
    ax.set_title(title or "accuracy vs density")
    return _save(fig, path)
