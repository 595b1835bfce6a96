"""Recording the solution path during training: :class:`PathRecorder` (a callback).
See :mod:`sparseopt.path`."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sparseopt.coupled import CONTAINER, packed_groups
from sparseopt.fsdp import full_tensor
from sparseopt.groups import group_norms, is_penalised, layer_weights
from sparseopt.metrics import density as _density
from sparseopt.path.solution import _CHUNKS, _JSON, _NPZ, PATH_FORMAT, SolutionPath, load_path

__all__ = ["PathRecorder"]


def _plain_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _tracked(
    model: nn.Module, optimizer: torch.optim.Optimizer | None
) -> list[tuple[str, Tensor, bool]]:
    """(parameter name, weight, stored ``(in, out)``) of every penalised layer weight
    (:func:`sparseopt.groups.layer_weights`; all of them without a sparse optimizer)."""
    penalised: set[int] | None = None
    if optimizer is not None and hasattr(optimizer, "support"):
        penalised = {id(p) for g in optimizer.param_groups if is_penalised(g) for p in g["params"]}
    out = [  # a coupled-packed weight is no parameter any more: not listed
        (w.param_name, w.param, w.transposed)
        for w in layer_weights(model)
        if penalised is None or id(w.param) in penalised
    ]
    prefix = f"{CONTAINER}.packed."
    for name, p in model.named_parameters():  # coupled sets: row g = head/neuron g
        if name.startswith(prefix) and (penalised is None or id(p) in penalised):
            out.append((name, p, False))
    return out


def _coupled_alive(model: nn.Module, optimizer: Any) -> dict[str, dict[str, Any]]:
    """Per coupled set of a packed model: its kind, size and groups (heads, neurons)
    in the support."""
    sets = packed_groups(model)
    if not sets:
        return {}
    support_fn = getattr(optimizer, "support", None)
    out = {}
    for cg, p in zip(sets, getattr(model, CONTAINER).packed, strict=True):
        s = full_tensor(support_fn(p) if support_fn is not None else (p != 0))
        alive = int(s.detach().reshape(s.shape[0], -1).any(1).sum())
        out[cg.name] = {"kind": cg.kind, "groups": cg.num_groups, "alive": alive}
    return out


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
        tracked = _tracked(model, optimizer)
        if self.layers:  # the layers of the first point (a refit's optimizer would add the rest)
            tracked = [t for t in tracked if t[0] in self._bits]
        for name, w, flipped in tracked:
            s = support_fn(w) if support_fn is not None else (w != 0)
            d = deploy_fn(w) if deploy_fn is not None else w
            s, d = full_tensor(s), full_tensor(d)  # whole tensors under FSDP2 (every rank)
            s_np = s.detach().to("cpu", torch.bool).numpy()
            if name not in self._bits:
                self.layers.append(name)
                self._bits[name] = [np.zeros(0, np.uint8)] * len(self.points)
                self._norms[name] = [np.zeros(0, np.float32)] * len(self.points)
            self._bits[name].append(np.packbits(s_np.reshape(-1)))
            # the support as stored (it masks the parameter); filters (output units) from
            # the (out, in) view: a Hugging Face Conv1D's transpose
            units = d.T if flipped else d
            norms = group_norms(units.detach().float(), "filter").flatten().cpu().numpy()
            self._norms[name].append(norms.astype(np.float32))
            nz = int(((d != 0) & s.to(torch.bool)).sum())  # nonzero deployable weights
            point["shapes"][name] = list(s_np.shape)
            point["nonzero"][name] = nz
            rows = s_np.T if flipped else s_np
            point["filters_alive"][name] = int(rows.reshape(rows.shape[0], -1).any(1).sum())
        for name in self.layers:  # a layer not seen this time (should not happen)
            if len(self._bits[name]) < len(self.points) + 1:
                self._bits[name].append(np.zeros(0, np.uint8))
                self._norms[name].append(np.zeros(0, np.float32))
                point["shapes"][name] = [0]
                point["nonzero"][name] = 0
                point["filters_alive"][name] = 0
        coupled = _coupled_alive(model, optimizer)
        if coupled:
            point["coupled"] = coupled
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
        if self._resume_points is not None:
            # Resuming: the writing rank reloads its files; the others (no run directory)
            # record nothing here either, so that every rank runs the same collectives
            # (a sharded model's record() gathers) and none records a bogus start point.
            if self.run_dir is not None:
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
