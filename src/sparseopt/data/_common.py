"""Shared pieces of :mod:`sparseopt.data`: the :class:`SplitData` container, the
not-found error, option validation, seeded splitting and the cache location.

Nothing here knows about a particular dataset; the loaders in the sibling modules
return a :class:`RawData` (full training part + test part as numpy arrays) and
:func:`finalize` carves the validation part out of the training part with a seeded
permutation and converts everything to tensors.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

__all__ = [
    "DatasetNotFoundError",
    "RawData",
    "SplitData",
    "cache_root",
    "check_fraction",
    "check_int",
    "check_seed",
    "finalize",
    "seeded_subset",
]

#: Environment variable that overrides the cache root (default ``~/.cache/sparseopt``).
CACHE_ENV = "SPARSEOPT_CACHE"
#: Environment variable naming an extra directory searched for file-based datasets.
DATA_ENV = "SPARSEOPT_DATA"


class DatasetNotFoundError(FileNotFoundError):
    """The files of a file-based dataset (MNIST, Fashion-MNIST, CIFAR-10) are missing.

    The message lists every directory that was searched and says how to get the files.
    """


@dataclass
class SplitData:
    """A dataset split into train / validation / test parts.

    Attributes:
        name: canonical dataset name (one of :func:`sparseopt.data.list_datasets`).
        train: training part, a ``TensorDataset(x, y)``.
        val: validation part carved out of the training data (may be empty).
        test: test part.
        input_shape: per-sample shape, ``(C, H, W)`` for images, ``(D,)`` for vectors.
        num_classes: number of classes, ``None`` for regression.
        task: ``"classification"`` (``y`` int64) or ``"regression"`` (``y`` float32).
        meta: anything else worth knowing (normalisation, sources, teacher weights...).
    """

    name: str
    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    input_shape: tuple[int, ...]
    num_classes: int | None
    task: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"SplitData(name={self.name!r}, train={len(self.train)}, val={len(self.val)}, "
            f"test={len(self.test)}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes}, task={self.task!r})"
        )


@dataclass
class RawData:
    """What a loader hands to :func:`finalize` (numpy arrays, not yet split).

    ``x_*`` are float32 (already normalised) or uint8 arrays of shape ``(N, *input_shape)``;
    ``aux_*`` hold optional per-sample arrays (e.g. the curve family) that are split
    alongside ``x`` and ``y`` and end up in ``meta[key] = {"train", "val", "test"}``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int | None
    task: str
    meta: dict[str, Any] = field(default_factory=dict)
    aux_train: dict[str, np.ndarray] = field(default_factory=dict)
    aux_test: dict[str, np.ndarray] = field(default_factory=dict)


# --------------------------------------------------------------------------- validation


def check_int(name: str, value: Any, minimum: int | None = 0, *, allow_none: bool = False) -> Any:
    """Return ``value`` if it is an int ``>= minimum`` (bools are refused), else raise.

    Raises:
        ValueError: naming the option and the offending value.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"Invalid {name} value: {value!r} (expected an integer)")
    if minimum is not None and value < minimum:
        raise ValueError(f"Invalid {name} value: {value} (must be >= {minimum})")
    return int(value)


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` if it is a bool, else raise ``ValueError`` naming it."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"Invalid {name} value: {value!r} (expected True or False)")
    return bool(value)


def check_float(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Return ``float(value)`` if it is a finite real in the given range, else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"Invalid {name} value: {value!r} (expected a real number)")
    v = float(value)
    ok = math.isfinite(v)
    if ok and low is not None:
        ok = v >= low if low_inclusive else v > low
    if ok and high is not None:
        ok = v <= high if high_inclusive else v < high
    if not ok:
        lo = "-inf" if low is None else f"{low}"
        hi = "inf" if high is None else f"{high}"
        interval = (
            ("[" if low_inclusive else "(") + f"{lo}, {hi}" + ("]" if high_inclusive else ")")
        )
        raise ValueError(f"Invalid {name} value: {value!r} (must be in {interval})")
    return v


def check_fraction(name: str, value: Any) -> float:
    """Validate a fraction in ``[0, 1)`` (``val_fraction``, ``test_fraction``)."""
    return check_float(name, value, 0.0, 1.0, high_inclusive=False)


def check_seed(seed: Any) -> int:
    """Validate a seed: a non-negative integer."""
    return check_int("seed", seed, 0)


# --------------------------------------------------------------------------- splitting


def rng_for(seed: int, *tags: int) -> np.random.Generator:
    """A numpy generator seeded by ``(seed, *tags)`` (independent streams per tag)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, tags)]))


# Tags that keep the random streams of the different uses of ``seed`` independent.
TAG_VAL_SPLIT = 1
TAG_SUBSET_TRAIN = 2
TAG_SUBSET_TEST = 3


def split_count(n: int, fraction: float) -> int:
    """``round(fraction * n)``, but never all of ``n`` when ``n > 0`` and ``fraction < 1``."""
    k = round(fraction * n)
    return min(k, max(n - 1, 0))


def seeded_subset(n: int, limit: int | None, seed: int, tag: int) -> np.ndarray | None:
    """Sorted indices of a seeded random subset of size ``limit`` (``None``: keep all)."""
    if limit is None or limit >= n:
        return None
    idx = rng_for(seed, tag).permutation(n)[:limit]
    return np.sort(idx)


def subsample(
    x: np.ndarray, y: np.ndarray, limit: int | None, seed: int, tag: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` at the indices :func:`seeded_subset` picks (as they are for ``None``)."""
    sub = seeded_subset(len(x), limit, seed, tag)
    return (x, y) if sub is None else (x[sub], y[sub])


def _to_x(a: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a))
    return t if t.dtype == torch.float32 else t.to(torch.float32)


def _to_y(a: np.ndarray, task: str) -> torch.Tensor:
    dtype = torch.int64 if task == "classification" else torch.float32
    return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)


def finalize(name: str, raw: RawData, *, seed: int, val_fraction: float) -> SplitData:
    """Carve the validation part out of ``raw``'s training part and build :class:`SplitData`.

    The validation indices are the first ``round(val_fraction * N)`` entries of a permutation
    drawn from ``numpy.random.default_rng(SeedSequence([seed, 1]))``; both the remaining
    training samples and the validation samples keep their original relative order, so
    ``val_fraction=0`` returns the training data unchanged.
    """
    n = len(raw.x_train)
    if len(raw.y_train) != n or len(raw.y_test) != len(raw.x_test):
        raise ValueError(f"{name}: inputs and targets differ in length")
    n_val = split_count(n, val_fraction)
    is_val = np.zeros(n, dtype=bool)
    if n_val:
        is_val[rng_for(seed, TAG_VAL_SPLIT).permutation(n)[:n_val]] = True
    tr, va = np.flatnonzero(~is_val), np.flatnonzero(is_val)

    def part(x: np.ndarray, y: np.ndarray, idx: np.ndarray | None) -> TensorDataset:
        if idx is not None:
            x, y = x[idx], y[idx]
        return TensorDataset(_to_x(x), _to_y(y, raw.task))

    meta = dict(raw.meta)
    for key, values in raw.aux_train.items():
        meta[key] = {
            "train": torch.from_numpy(np.ascontiguousarray(values[tr])),
            "val": torch.from_numpy(np.ascontiguousarray(values[va])),
            "test": torch.from_numpy(np.ascontiguousarray(raw.aux_test[key])),
        }
    meta["train_indices"] = torch.from_numpy(tr)
    meta["val_indices"] = torch.from_numpy(va)
    return SplitData(
        name=name,
        train=part(raw.x_train, raw.y_train, tr if n_val else None),
        val=part(raw.x_train, raw.y_train, va),
        test=part(raw.x_test, raw.y_test, None),
        input_shape=tuple(int(s) for s in raw.x_train.shape[1:]),
        num_classes=raw.num_classes,
        task=raw.task,
        meta=meta,
    )


# --------------------------------------------------------------------------- images


def normalize_images(
    x: np.ndarray,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    scale: float = 255.0,
) -> tuple[np.ndarray, tuple[float, ...], tuple[float, ...]]:
    """Scale integer images ``(N, C, H, W)`` to ``[0, 1]`` and standardise per channel.

    If ``mean``/``std`` are ``None`` they are computed from ``x`` itself (per channel,
    in float64 for reproducibility). Returns the float32 images and the statistics used.
    """
    xf = x.astype(np.float32) / np.float32(scale)
    if mean is None or std is None:
        c = xf.shape[1]
        flat = xf.transpose(1, 0, 2, 3).reshape(c, -1).astype(np.float64)
        mean = tuple(float(m) for m in flat.mean(axis=1)) if mean is None else mean
        std = tuple(float(s) if s > 0 else 1.0 for s in flat.std(axis=1)) if std is None else std
    m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    xf -= m
    xf /= s
    return xf, tuple(float(v) for v in mean), tuple(float(v) for v in std)


# --------------------------------------------------------------------------- locations


def cache_root() -> Path:
    """The cache root: ``$SPARSEOPT_CACHE`` if set, else ``~/.cache/sparseopt``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sparseopt"


def npz_cache_path(
    data_dir: str | os.PathLike[str] | None, name: str, version: int, options: dict[str, Any]
) -> Path:
    """``<root>/<name>/<name>-v<version>-<hash of the options>.npz`` for a generated dataset."""
    root = Path(data_dir).expanduser() if data_dir is not None else cache_root()
    blob = json.dumps({"version": version, **options}, sort_keys=True)
    key = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return root / name / f"{name}-v{version}-{key}.npz"


def read_npz_cache(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray] | None:
    """The arrays ``keys`` of a cache file, or ``None`` when it is missing or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in keys}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def write_npz_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write a cache file atomically; a read-only cache only costs regeneration time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(tmp, path)  # atomic: concurrent readers never see a partial file
    except OSError:
        pass


def cached_npz(
    path: Path,
    keys: Sequence[str],
    cache: bool,
    generate: Callable[[], Sequence[np.ndarray]],
) -> tuple[dict[str, np.ndarray], bool]:
    """The arrays ``keys`` of the cache file ``path``, else of ``generate()`` (in that order).

    Generated arrays are written to ``path`` when ``cache`` is true; a missing or
    unreadable file is regenerated. Returns the arrays and whether they came from the cache.
    """
    arrays = read_npz_cache(path, keys) if cache and path.is_file() else None
    if arrays is not None:
        return arrays, True
    arrays = dict(zip(keys, generate(), strict=True))
    if cache:
        write_npz_cache(path, arrays)
    return arrays, False


def shaky_raw_data(
    arrays: dict[str, np.ndarray],
    normalize: bool,
    meta: dict[str, Any],
    aux_train: dict[str, np.ndarray],
    aux_test: dict[str, np.ndarray],
) -> RawData:
    """The :class:`RawData` of a generated regular (0) vs shaky (1) image set.

    ``arrays`` holds ``x_train``, ``y_train``, ``x_test``, ``y_test``; with ``normalize``
    the images are standardised with the training part's mean/std (else only scaled to
    [0, 1]). ``meta`` gets ``mean``, ``std`` and ``classes`` in front of its own keys.
    """
    mean, std = (None, None) if normalize else ((0.0,), (1.0,))
    xtr_f, mean, std = normalize_images(arrays["x_train"], mean, std)
    xte_f, _, _ = normalize_images(arrays["x_test"], mean, std)
    meta = {"mean": mean, "std": std, "classes": ("regular", "shaky"), **meta}
    return RawData(
        xtr_f,
        arrays["y_train"].astype(np.int64),
        xte_f,
        arrays["y_test"].astype(np.int64),
        2,
        "classification",
        meta,
        aux_train=aux_train,
        aux_test=aux_test,
    )


def file_raw_data(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    seed: int,
    limits: tuple[int | None, int | None],
    mean: Sequence[float],
    std: Sequence[float],
    meta: dict[str, Any],
) -> RawData:
    """The :class:`RawData` of a 10-class image set read from files (MNIST, CIFAR-10).

    ``train`` and ``test`` are ``(uint8 images (N, C, H, W), int64 labels)``; each part
    is cut to a seeded subset of its limit in ``limits`` (``None``: all of it), scaled
    to [0, 1] and standardised with ``mean``/``std``. ``meta`` gets ``mean`` and
    ``std`` in front of its own keys and ``n_train_full``/``n_test_full`` (the sizes
    before the limits) after them.
    """
    (xtr, ytr), (xte, yte) = train, test
    full = {"n_train_full": len(xtr), "n_test_full": len(xte)}
    xtr, ytr = subsample(xtr, ytr, limits[0], seed, TAG_SUBSET_TRAIN)
    xte, yte = subsample(xte, yte, limits[1], seed, TAG_SUBSET_TEST)
    xtr_f, mean, std = normalize_images(xtr, mean, std)
    xte_f, _, _ = normalize_images(xte, mean, std)
    meta = {"mean": mean, "std": std, **meta, **full}
    return RawData(xtr_f, ytr, xte_f, yte, 10, "classification", meta)


def search_roots(data_dir: str | os.PathLike[str] | None) -> list[Path]:
    """Roots searched for file-based datasets.

    ``[data_dir]`` if given, otherwise ``$SPARSEOPT_DATA`` (if set) and the cache root.
    """
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    roots = []
    env = os.environ.get(DATA_ENV)
    if env:
        roots.append(Path(env).expanduser())
    roots.append(cache_root())
    return roots


def unique_paths(paths: Sequence[Path]) -> list[Path]:
    """``paths`` without duplicates, order kept."""
    seen: set[Path] = set()
    out = []
    for p in paths:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def dataset_dirs(data_dir: str | os.PathLike[str] | None, subdirs: Sequence[str]) -> list[Path]:
    """Directories searched for a file-based dataset, in order, without duplicates.

    Under each of :func:`search_roots`, the ``subdirs``; an explicit ``data_dir`` is
    searched itself first, a default root (``$SPARSEOPT_DATA``, the cache root) never
    at its top level, since it holds several datasets.
    """
    dirs = []
    for root in search_roots(data_dir):
        if data_dir is not None:
            dirs.append(root)
        dirs += [root / sub for sub in subdirs]
    return unique_paths(dirs)


def dataset_not_found(
    what: str, files: str, dirs: Sequence[Path], how: str
) -> DatasetNotFoundError:
    """The error for ``what`` when its ``files`` are in none of ``dirs``; ``how``: how to get them."""
    return DatasetNotFoundError(
        f"{what} not found. Looked for {files} in:\n{format_dirs(dirs)}\n{how}"
    )


def format_dirs(dirs: Sequence[Path]) -> str:
    """One indented line per directory, for error messages."""
    return "\n".join(f"  {d}" for d in dirs)


def check_labels(y: np.ndarray, num_classes: int, source: str | os.PathLike[str]) -> None:
    """Raise ``ValueError`` naming ``source`` if a label is outside ``0..num_classes-1``."""
    if y.size and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        bad = y[(y < 0) | (y >= num_classes)]
        raise ValueError(
            f"{source}: label {int(bad[0])} out of range 0..{num_classes - 1}"
            f" ({bad.size} invalid labels)"
        )
