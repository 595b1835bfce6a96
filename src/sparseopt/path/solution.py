"""The recorded solution path as data: :class:`SolutionPath` (densities, supports,
group norms, plots) and :class:`Selection` of a point; :func:`load_path` reads it.
See :mod:`sparseopt.path`."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sparseopt.prune._files import atomic_write

__all__ = ["PATH_FORMAT", "Selection", "SolutionPath", "load_path"]

#: Version of the ``path.npz``/``path.json`` layout.
PATH_FORMAT = 1
_NPZ = "path.npz"
_JSON = "path.json"
_CHUNKS = "path_chunks"  # points saved since the last full path.npz, one file per save

#: Candidate selection metrics in order of preference: (key, higher is better).
_METRICS: tuple[tuple[str, bool], ...] = (
    ("val_acc", True),
    ("val_loss", False),
    ("test_acc", True),
    ("test_loss", False),
    ("train_acc", True),
    ("train_loss", False),
)


@dataclass(frozen=True)
class Selection:
    """A selected point of a path.

    Attributes:
        index: position in the path.
        epoch: its epoch.
        step: its global step.
        density: its weight density (nonzero Conv/Linear weights of the deployable
            network, see the module docstring).
        metric: name of the validation metric used (``None`` if none was available).
        value: that metric at the point.
        rule: the rule that picked it (``"epoch=3"``, ``"within=0.01"``, ...).
        param_density: its density over all parameters (``None`` for old paths).
        note: a remark on the choice, e.g. that no point reaches the target density.
    """

    index: int
    epoch: int
    step: int | None
    density: float
    metric: str | None
    value: float | None
    rule: str
    param_density: float | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view."""
        return dict(self.__dict__)

    def __str__(self) -> str:
        val = "" if self.value is None else f", {self.metric}={self.value:.4f}"
        params = "" if self.param_density is None else f" (all parameters {self.param_density:.2%})"
        note = "" if self.note is None else f"; note: {self.note}"
        return (
            f"selected epoch {self.epoch} (point {self.index}, step {self.step}) by {self.rule}: "
            f"weight density {self.density:.2%}{params}{val}{note}"
        )


class SolutionPath:
    """A recorded solution path (see the module docstring); built by :func:`load_path`.

    Attributes:
        layers: recorded parameter names (e.g. ``"features.conv1.weight"``).
        points: one dict per point: ``epoch``, ``step``, ``metrics``, ``shapes``,
            ``nonzero`` (per layer), ``filters_alive`` (per layer), ``density``.
    """

    def __init__(
        self,
        layers: Sequence[str],
        points: Sequence[dict[str, Any]],
        bits: Mapping[str, list[np.ndarray]],
        norms: Mapping[str, list[np.ndarray]],
    ) -> None:
        self.layers = list(layers)
        self.points = list(points)
        self._bits = {k: list(v) for k, v in bits.items()}
        self._norms = {k: list(v) for k, v in norms.items()}

    def __len__(self) -> int:
        return len(self.points)

    def __repr__(self) -> str:
        return f"SolutionPath({len(self)} points, {len(self.layers)} layers)"

    # ------------------------------------------------------------------ accessors

    @property
    def epochs(self) -> np.ndarray:
        """Epoch of every point."""
        return np.array([p["epoch"] for p in self.points], dtype=np.int64)

    @property
    def density(self) -> np.ndarray:
        """Weight density of every point (nonzero Conv/Linear weights, deployable network)."""
        return np.array(
            [p.get("weight_density", p["density"]) for p in self.points], dtype=np.float64
        )

    @property
    def param_density(self) -> np.ndarray:
        """Density over all parameters of every point (NaN for paths recorded without it)."""
        return np.array(
            [p["density"] if "weight_density" in p else np.nan for p in self.points],
            dtype=np.float64,
        )

    def layer_density(self, layer: str) -> np.ndarray:
        """Fraction of nonzero weights of one layer at every point."""
        out = []
        for p in self.points:
            size = math.prod(p["shapes"][layer])
            out.append(p["nonzero"][layer] / max(size, 1))
        return np.array(out, dtype=np.float64)

    def metric(self, key: str) -> np.ndarray:
        """A metric at every point (NaN where missing)."""
        vals = [p["metrics"].get(key) for p in self.points]
        return np.array([np.nan if v is None else float(v) for v in vals], dtype=np.float64)

    def support(self, index: int, layer: str) -> np.ndarray:
        """Boolean support of ``layer`` at point ``index``, shaped like the weight."""
        shape = tuple(self.points[index]["shapes"][layer])
        n = math.prod(shape)
        return np.unpackbits(self._bits[layer][index], count=n).astype(bool).reshape(shape)

    def group_norms(self, index: int, layer: str) -> np.ndarray:
        """Filter (output channel / neuron) norms of ``layer`` at point ``index``."""
        return self._norms[layer][index]

    def masks(self, index: int) -> dict[str, Tensor]:
        """Boolean keep-masks (torch) of every recorded layer at point ``index``."""
        return {name: torch.from_numpy(self.support(index, name)) for name in self.layers}

    # ------------------------------------------------------------------ selection

    def _metric_key(self, metric: str | None) -> tuple[str | None, bool]:
        if metric is not None:
            for key, higher in _METRICS:
                if key == metric:
                    return key, higher
            return metric, not metric.endswith("loss")
        for key, higher in _METRICS:
            if np.isfinite(self.metric(key)).any():
                return key, higher
        return None, True

    def select(
        self,
        *,
        epoch: int | None = None,
        within: float | None = None,
        target_density: float | None = None,
        metric: str | None = None,
    ) -> Selection:
        """Select one point by exactly one rule (see the module docstring).

        Args:
            epoch: pick the last point recorded at this epoch.
            within: ε ≥ 0 for "sparsest within ε of the best" (accuracies are fractions:
                0.01 = one point).
            target_density: D in (0, 1] for "best among weight density ≤ D".
            metric: the validation metric (default: the first of ``val_acc``,
                ``val_loss``, ``test_acc``, ``test_loss``, ``train_acc``, ``train_loss``
                that was recorded).

        Raises:
            ValueError: no rule or several, an invalid value, an epoch not on the path, or
                an empty path.
        """
        given = [r for r in (epoch, within, target_density) if r is not None]
        if len(given) != 1:
            raise ValueError("select needs exactly one of epoch, within, target_density")
        if not self.points:
            raise ValueError("the solution path is empty")
        note: str | None = None
        key, higher = self._metric_key(metric)
        vals = self.metric(key) if key is not None else np.full(len(self), np.nan)
        score = vals if higher else -vals
        dens = self.density
        if epoch is not None:
            hits = np.flatnonzero(self.epochs == int(epoch))
            if hits.size == 0:
                raise ValueError(
                    f"Invalid epoch value: {epoch}; the path has epochs "
                    f"{sorted(set(self.epochs.tolist()))}"
                )
            idx, rule = int(hits[-1]), f"epoch={epoch}"
        elif within is not None:
            if not (isinstance(within, (int, float)) and within >= 0 and math.isfinite(within)):
                raise ValueError(f"Invalid within value: {within!r}; expected a number >= 0")
            finite = np.isfinite(score)
            if not finite.any():
                raise ValueError(
                    f"cannot select within {within}: no validation metric on the path "
                    f"(looked for {metric or [k for k, _ in _METRICS]})"
                )
            best = np.max(score[finite])
            ok = np.flatnonzero(finite & (score >= best - within - 1e-12))
            # sparsest; ties: better metric, then earlier
            idx = int(min(ok, key=lambda i: (dens[i], -score[i], i)))
            rule = f"within={within}"
        else:
            assert target_density is not None
            if not (0 < target_density <= 1):
                raise ValueError(
                    f"Invalid target_density value: {target_density!r}; expected a number in (0, 1]"
                )
            ok = np.flatnonzero(dens <= target_density + 1e-12)
            if ok.size == 0:
                idx = int(np.argmin(dens))
                note = (
                    f"no point reaches weight density <= {target_density:.2%}; this is the "
                    f"sparsest point, above the target"
                )
            else:
                sc = np.where(np.isfinite(score), score, -np.inf)
                # best metric; ties: denser, then later
                idx = int(max(ok, key=lambda i: (sc[i], dens[i], i)))
            rule = f"target_density={target_density}"
        value = None if key is None or not np.isfinite(vals[idx]) else float(vals[idx])
        p = self.points[idx]
        pd = float(self.param_density[idx])
        return Selection(
            idx,
            int(p["epoch"]),
            p.get("step"),
            float(dens[idx]),
            key,
            value,
            rule,
            param_density=pd if math.isfinite(pd) else None,
            note=note,
        )

    # ------------------------------------------------------------------ plotting

    def plot(
        self,
        out: str | os.PathLike[str],
        *,
        selection: Selection | None = None,
        max_layers: int = 8,
        title: str | None = None,
    ) -> Path:
        """Draw the path to a PNG file and return its path.

        Top left: weight density of every layer and overall vs epoch. Top right:
        validation metric vs weight density (the accuracy–sparsity trade-off along the path). Below: the
        group-norm paths, one panel per layer (at most ``max_layers``): the norm of
        every filter vs epoch, like a Lasso path. The selected point, if given, is
        marked everywhere. The file is written atomically (temporary file, then rename).
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        layers = self.layers[:max_layers]
        ncols = min(4, max(1, len(layers)))
        nrows = 1 + math.ceil(len(layers) / ncols)
        fig = Figure(figsize=(3.6 * max(ncols, 2), 3.0 * nrows), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        grid = fig.add_gridspec(nrows, max(ncols, 2))
        x = self.epochs
        ax = fig.add_subplot(grid[0, : max(ncols, 2) // 2])
        for name in self.layers:
            ax.plot(
                x, self.layer_density(name), lw=1, alpha=0.8, label=name.removesuffix(".weight")
            )
        ax.plot(x, self.density, color="black", lw=2, label="overall")
        ax.set_xlabel("epoch")
        ax.set_ylabel("weight density (nonzero)")
        ax.set_ylim(0, 1.02)
        if len(self.layers) <= 10:
            ax.legend(fontsize=6)
        key, _ = self._metric_key(None)
        ax2 = fig.add_subplot(grid[0, max(ncols, 2) // 2 :])
        if key is not None:
            ax2.plot(self.density, self.metric(key), marker="o", ms=3, lw=1)
            ax2.set_ylabel(key)
        ax2.set_xlabel("weight density")
        if selection is not None:
            ax.axvline(selection.epoch, color="red", ls="--", lw=1)
            if selection.value is not None:
                ax2.plot([selection.density], [selection.value], "r*", ms=12)
        for i, name in enumerate(layers):
            axl = fig.add_subplot(grid[1 + i // ncols, i % ncols])
            norms = [self.group_norms(j, name) for j in range(len(self))]
            width = max(len(n) for n in norms) if norms else 0
            mat = np.full((len(norms), width), np.nan)
            for j, n in enumerate(norms):
                mat[j, : len(n)] = n
            axl.plot(x, mat, lw=0.6, alpha=0.7)
            axl.set_title(name.removesuffix(".weight"), fontsize=8)
            axl.set_xlabel("epoch", fontsize=7)
            axl.set_ylabel("filter norm", fontsize=7)
            axl.tick_params(labelsize=6)
            if selection is not None:
                axl.axvline(selection.epoch, color="red", ls="--", lw=1)
        if title:
            fig.suptitle(title)
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(out, lambda p: fig.savefig(p, format="png"))


def load_path(run_dir: str | os.PathLike[str]) -> SolutionPath:
    """Read the ``path.npz``/``path.json`` pair of a run directory.

    Raises:
        FileNotFoundError: no recorded path in ``run_dir``.
        ValueError: an unknown file format.
    """
    d = Path(run_dir)
    if not (d / _JSON).exists() or not (d / _NPZ).exists():
        raise FileNotFoundError(
            f"no solution path in {d} (expected {_JSON} and {_NPZ}; train with a PathRecorder)"
        )
    meta = json.loads((d / _JSON).read_text(encoding="utf-8"))
    if meta.get("format") != PATH_FORMAT:
        raise ValueError(f"{d / _JSON} has an unknown format {meta.get('format')!r}")
    layers = list(meta["layers"])
    n = len(meta["points"])
    bits: dict[str, list[np.ndarray]] = {}
    norms: dict[str, list[np.ndarray]] = {}
    for name in layers:
        bits[name], norms[name] = [], []
    files = [(d / _NPZ, 0, None)] + [
        (d / _CHUNKS / str(c[0]), int(c[1]), int(c[2])) for c in meta.get("chunks", [])
    ]
    for path_file, first, end in files:
        with np.load(path_file, allow_pickle=False) as z:
            for j, name in enumerate(layers):
                for kind, store in (("bits", bits), ("norms", norms)):
                    dtype = np.uint8 if kind == "bits" else np.float32
                    if f"{kind}_{j}" not in z:  # a layer first seen after this file
                        count = (end if end is not None else n) - first
                        store[name].extend([np.zeros(0, dtype)] * count)
                        continue
                    flat, off = z[f"{kind}_{j}"], z[f"{kind}_{j}_offsets"]
                    store[name].extend(flat[off[i] : off[i + 1]] for i in range(len(off) - 1))
    for name in layers:
        if len(bits[name]) != n:
            raise ValueError(f"{d} holds {len(bits[name])} supports of {name} for {n} points")
    return SolutionPath(layers, meta["points"], bits, norms)
