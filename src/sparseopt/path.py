"""The solution (regularisation) path: record, save, load, plot and select.

Sparsity-promoting training traces a path of sparse networks. For inverse scale space
methods the path is the point of the method: LinBreg/AdaBreg (Bungert et al., JMLR 23,
2022, arXiv 2105.04319) and Split LBI / DessiLBI (Fu et al., ICML 2020, arXiv
2007.02010) start from an (almost) empty support and let weights or whole filters
enter it one after another, like the Lasso path of LARS where the penalty decreases.
DessiLBI's *simplify* then picks one point of that path (an epoch) and keeps the
network restricted to the support it had there.

:class:`PathRecorder` is a training callback (``on_train_begin``/``on_epoch_end`` of
:mod:`sparseopt.engine`; :meth:`PathRecorder.record` for any loop) that stores, per
recorded point (epoch, or every ``k`` steps),

- the support of every penalised Conv/Linear weight in the deployable network
  (``optimizer.support(p)``: supp Γ for SplitLBI), bit-packed with
  :func:`numpy.packbits` (1 bit per weight),
- its group norms :math:`\\|W_g\\|_2` per filter (output channel / neuron), the lasso-path
  coordinates,
- the epoch's metrics (validation/test accuracy and loss...).

:meth:`PathRecorder.save` writes ``path.npz`` (arrays) and ``path.json`` (layer names,
shapes, per-point metrics and densities) into the run directory; :func:`load_path`
reads them back as a :class:`SolutionPath`, which draws the path
(:meth:`SolutionPath.plot`: per-layer density vs epoch, accuracy vs density and the
group-norm paths) and selects a point (:meth:`SolutionPath.select`):

- ``epoch=N`` — the (last) point recorded at epoch ``N``;
- ``within=ε`` — the sparsest point whose validation metric is within ε of the best
  one (accuracy ≥ best − ε; for a loss: ≤ best + ε);
- ``target_density=D`` — among the points with weight density ≤ D the one with the
  best validation metric (ties: the denser, later one); if no point is that sparse, the
  sparsest point, and the selection says so (:attr:`Selection.note`).

**Density** has the one definition of :func:`sparseopt.metrics.density`, the one that
``sparseopt train`` reports, counted on the deployable network: the *weight density*
is the fraction of nonzero Conv/Linear weights (train's ``weight_density``; the rules
above and the plots use it) and the *parameter density* the fraction of nonzero
entries over all parameters, biases and norms included (train's ``density``). A point
stores both, as ``weight_density`` and ``density``, with the same names as
``metrics.jsonl``. The recorded support (the masks that ``sparseopt prune`` applies)
can be larger than the nonzero weights: under a group penalty it holds whole groups.
Paths written before this definition store only the support fraction as ``density``;
it is read as their weight density.

Example:
    >>> import tempfile
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> rec = PathRecorder()
    >>> for epoch, acc in [(1, 0.5), (2, 0.9)]:
    ...     with torch.no_grad():
    ...         _ = net[0].weight.fill_(1.0)
    ...         net[0].weight[epoch:] = 0  # `epoch` live neurons
    ...     _ = rec.record(net, epoch=epoch, metrics={"val_acc": acc})
    >>> d = tempfile.mkdtemp()
    >>> _ = rec.save(d)
    >>> path = load_path(d)
    >>> len(path), path.select(within=0.5).epoch  # sparsest within 0.5 of the best
    (2, 1)
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sparseopt.groups import group_norms
from sparseopt.metrics import density as _density
from sparseopt.prune._files import atomic_write

__all__ = [
    "PATH_FORMAT",
    "PathRecorder",
    "Selection",
    "SolutionPath",
    "load_path",
]

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


def _is_layer(m: nn.Module) -> bool:
    return isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))


def _plain_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _tracked(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> list[tuple[str, Tensor]]:
    """(parameter name, weight) of every penalised Conv/Linear weight (all of them without
    a sparse optimizer)."""
    penalised: set[int] | None = None
    if optimizer is not None and hasattr(optimizer, "support"):
        penalised = {
            id(p)
            for g in optimizer.param_groups
            if g.get("penalty", "none") != "none"
            for p in g["params"]
        }
    out = []
    for name, m in model.named_modules():
        if _is_layer(m) and m.weight is not None:
            if penalised is None or id(m.weight) in penalised:
                out.append((f"{name}.weight" if name else "weight", m.weight))
    return out


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


class PathRecorder:
    """Record the solution path during training (an engine callback).

    Args:
        run_dir: where :meth:`save` writes by default (the engine's ``trainer.run_dir``
            is used when the recorder runs as a callback).
        every_steps: also record every this many optimizer steps from
            :meth:`on_step_end` (when the training loop calls it); ``None``: per epoch only.
        save_every_epoch: rewrite the files after every epoch (so an interrupted run
            keeps its path); otherwise only at the end.

    As a callback it records the starting point in ``on_train_begin`` (its metrics are
    filled from the engine's epoch-0 evaluation) and one point per ``on_epoch_end``.
    Its ``state_dict`` holds only the number of points; on resume the recorder reloads
    the files from the run directory and drops points recorded after the checkpoint.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str] | None = None,
        *,
        every_steps: int | None = None,
        save_every_epoch: bool = True,
    ) -> None:
        if every_steps is not None and (not isinstance(every_steps, int) or every_steps < 1):
            raise ValueError(f"Invalid every_steps value: {every_steps!r}; expected an int >= 1")
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.every_steps = every_steps
        self.save_every_epoch = save_every_epoch
        self.layers: list[str] = []
        self.points: list[dict[str, Any]] = []
        self._bits: dict[str, list[np.ndarray]] = {}
        self._norms: dict[str, list[np.ndarray]] = {}
        self._resume_points: int | None = None
        self._saved = 0  # points already in path.npz / chunk files
        self._chunks: list[list[Any]] = []  # [file name, first point, end point]

    # ------------------------------------------------------------------ recording

    @torch.no_grad()
    def record(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        epoch: int,
        step: int | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Append one point: supports, group norms, densities and the scalar ``metrics``."""
        support_fn = getattr(optimizer, "support", None)
        deploy_fn = getattr(optimizer, "deployable", None)
        point: dict[str, Any] = {
            "epoch": int(epoch),
            "step": None if step is None else int(step),
            "metrics": {k: v for k, v in (metrics or {}).items() if _plain_scalar(v)},
            "shapes": {},
            "nonzero": {},
            "filters_alive": {},
        }
        for name, w in _tracked(model, optimizer):
            s = support_fn(w) if support_fn is not None else (w != 0)
            d = deploy_fn(w) if deploy_fn is not None else w
            s_np = s.detach().to("cpu", torch.bool).numpy()
            if name not in self._bits:
                self.layers.append(name)
                self._bits[name] = [np.zeros(0, np.uint8)] * len(self.points)
                self._norms[name] = [np.zeros(0, np.float32)] * len(self.points)
            self._bits[name].append(np.packbits(s_np.reshape(-1)))
            norms = group_norms(d.detach().float(), "filter").flatten().cpu().numpy()
            self._norms[name].append(norms.astype(np.float32))
            nz = int(((d != 0) & s.to(torch.bool)).sum())  # nonzero deployable weights
            point["shapes"][name] = list(s_np.shape)
            point["nonzero"][name] = nz
            point["filters_alive"][name] = int(s_np.reshape(s_np.shape[0], -1).any(1).sum())
        for name in self.layers:  # a layer not seen this time (should not happen)
            if len(self._bits[name]) < len(self.points) + 1:
                self._bits[name].append(np.zeros(0, np.uint8))
                self._norms[name].append(np.zeros(0, np.float32))
                point["shapes"][name] = [0]
                point["nonzero"][name] = 0
                point["filters_alive"][name] = 0
        rep = _density(model, optimizer)  # the definition train reports
        point["weight_density"] = rep.weight_density
        point["density"] = rep.overall
        self.points.append(point)
        return point

    def path(self) -> SolutionPath:
        """The recorded path (without going through files)."""
        return SolutionPath(self.layers, self.points, self._bits, self._norms)

    def save(self, run_dir: str | os.PathLike[str] | None = None, *, full: bool = False) -> Path:
        """Write the path to ``path.npz``/``path.json`` atomically; return the directory.

        Saving is append-only while training: a call writes only the points recorded
        since the previous one, as a small file under ``path_chunks/`` listed in
        ``path.json``, so saving every epoch costs O(new points), not O(all points).
        ``full=True`` (and the first save) rewrites ``path.npz`` with every point and
        removes the chunks; :func:`load_path` reads both layouts.
        """
        d = Path(run_dir) if run_dir is not None else self.run_dir
        if d is None:
            raise ValueError("PathRecorder.save needs a run directory")
        d.mkdir(parents=True, exist_ok=True)
        n = len(self.points)
        if full or self._saved == 0 or not (d / _NPZ).exists():
            _write_arrays(d / _NPZ, self.layers, self._bits, self._norms, 0, n)
            shutil.rmtree(d / _CHUNKS, ignore_errors=True)
            self._chunks = []
        elif n > self._saved:
            name = f"{self._saved:06d}-{n:06d}.npz"
            (d / _CHUNKS).mkdir(exist_ok=True)
            _write_arrays(d / _CHUNKS / name, self.layers, self._bits, self._norms, self._saved, n)
            self._chunks.append([name, self._saved, n])
        self._saved = n
        meta = {
            "format": PATH_FORMAT,
            "layers": self.layers,
            "points": self.points,
            "chunks": self._chunks,
        }
        tmpj = d / (_JSON + ".tmp")
        tmpj.write_text(json.dumps(meta, default=_json_default) + "\n", encoding="utf-8")
        os.replace(tmpj, d / _JSON)
        return d

    def _truncate(self, n: int) -> None:
        self._saved = 0  # the files may hold points past n: the next save rewrites them
        self.points = self.points[:n]
        for name in self.layers:
            self._bits[name] = self._bits[name][:n]
            self._norms[name] = self._norms[name][:n]

    # ------------------------------------------------------------------ callback

    def on_train_begin(self, trainer: Any) -> None:
        """Record the starting point (or reload the path when resuming)."""
        run_dir = getattr(trainer, "run_dir", None)
        if run_dir is not None:
            self.run_dir = Path(run_dir)
        if self._resume_points is not None and self.run_dir is not None:
            if (self.run_dir / _JSON).exists():
                old = load_path(self.run_dir)
                self.layers, self.points = old.layers, old.points
                self._bits, self._norms = old._bits, old._norms
            self._truncate(self._resume_points)
            self._resume_points = None
            return
        if not self.points:
            self.record(
                trainer.model,
                getattr(trainer, "optimizer", None),
                epoch=int(getattr(trainer, "epoch", 0)),
                step=int(getattr(trainer, "global_step", 0)),
            )

    def on_step_end(self, trainer: Any, step: int | None = None, *_: Any) -> None:
        """Record every ``every_steps`` optimizer steps (when the loop calls this hook)."""
        if self.every_steps is None:
            return
        step = int(getattr(trainer, "global_step", 0) if step is None else step)
        if step % self.every_steps == 0:
            epoch = int(getattr(trainer, "epoch", 0)) + 1  # the epoch in progress
            self.record(trainer.model, getattr(trainer, "optimizer", None), epoch=epoch, step=step)

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: Mapping[str, Any]) -> None:
        """Record the epoch's point with its metrics; save if the trainer is rank 0."""
        history = getattr(trainer, "history", None)
        if self.points and self.points[0]["epoch"] == 0 and not self.points[0]["metrics"]:
            if history and history[0].get("epoch") == 0:
                self.points[0]["metrics"] = {
                    k: v for k, v in history[0].items() if _plain_scalar(v)
                }
        self.record(
            trainer.model,
            getattr(trainer, "optimizer", None),
            epoch=epoch,
            step=getattr(trainer, "global_step", None),
            metrics=metrics,
        )
        if self.save_every_epoch and getattr(trainer, "is_main", True) and self.run_dir is not None:
            self.save()

    def on_train_end(self, trainer: Any, result: Any = None) -> None:
        """Save the path (rank 0)."""
        if getattr(trainer, "is_main", True) and self.run_dir is not None:
            self.save(full=True)  # one consolidated path.npz, no chunks

    def state_dict(self) -> dict[str, Any]:
        """The number of recorded points (the arrays live in the run directory)."""
        return {"num_points": len(self.points)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Remember how many points to keep when the path is reloaded on resume."""
        self._resume_points = int(state["num_points"])


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    return str(obj)


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


def _write_arrays(
    target: Path,
    layers: list[str],
    bits: dict[str, list[np.ndarray]],
    norms: dict[str, list[np.ndarray]],
    first: int,
    end: int,
) -> None:
    """Write points ``[first, end)`` of every layer (flat arrays + offsets) atomically."""
    arrays: dict[str, np.ndarray] = {}
    for j, name in enumerate(layers):
        for kind, store in (("bits", bits[name]), ("norms", norms[name])):
            part = store[first:end]
            dtype = np.uint8 if kind == "bits" else np.float32
            arrays[f"{kind}_{j}"] = (
                np.concatenate(part).astype(dtype) if part else np.zeros(0, dtype)
            )
            arrays[f"{kind}_{j}_offsets"] = np.cumsum([0] + [len(a) for a in part]).astype(np.int64)
    tmp = target.with_name(target.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, target)
