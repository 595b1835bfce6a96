"""CIFAR-10 from the standard "python version" batches, read with a restricted unpickler.

Source: Krizhevsky, "Learning Multiple Layers of Features from Tiny Images" (2009),
https://www.cs.toronto.edu/~kriz/cifar.html. The archive ``cifar-10-python.tar.gz``
extracts to ``cifar-10-batches-py/`` with ``data_batch_1`` … ``data_batch_5``,
``test_batch`` and ``batches.meta``: Python-2 pickles of dicts with bytes keys,
``b"data"`` a uint8 array of shape (N, 3072) (row-major 3×32×32, channels R, G, B)
and ``b"labels"`` a list of ints in 0..9.

Pickle can run arbitrary code, so the batches are read with :class:`RestrictedUnpickler`,
whose ``find_class`` hands out only the few numpy callables an ndarray needs and refuses
every other global *before* anything is called. The tar archive itself is also accepted
(members are read in memory, nothing is extracted). Every problem with a file — a
refused global, a truncated or corrupt pickle or archive, a wrong layout — raises a
:class:`ValueError` whose one-line message names the file (refusals and corrupt
pickles are :class:`CifarFileError`, also a :class:`pickle.UnpicklingError`), so the
command line reports it as a usage error (exit 2) without a traceback.

Searched: ``data_dir``, ``data_dir/cifar-10-batches-py``,
``data_dir/cifar10[/cifar-10-batches-py]``, ``data_dir/cifar-10[/cifar-10-batches-py]``;
without ``data_dir`` the same sub-directories of ``$SPARSEOPT_DATA`` (if set) and of the
cache root. Extracted batches win over an archive.
"""

from __future__ import annotations

import codecs
import importlib
import io
import os
import pickle
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ._common import (
    RawData,
    check_bool,
    check_int,
    check_labels,
    dataset_dirs,
    dataset_not_found,
    file_raw_data,
)

__all__ = [
    "CifarFileError",
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "RestrictedUnpickler",
    "load_cifar10",
    "read_cifar_batch",
    "restricted_load",
]

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
#: Per-channel mean and standard deviation of the 50 000 training images (scaled to [0, 1]).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
ARCHIVE = "cifar-10-python.tar.gz"
BATCH_DIR = "cifar-10-batches-py"


def _numpy_attr(module: str, name: str) -> Callable[[], Any]:
    """Resolve ``numpy._core.<module>.<name>`` (numpy 2) or ``numpy.core...`` (numpy 1)."""

    def get() -> Any:
        try:
            mod = importlib.import_module(f"numpy._core.{module}")
        except ImportError:  # numpy < 2
            mod = importlib.import_module(f"numpy.core.{module}")
        return getattr(mod, name)

    return get


def _latin1_encode(obj: str, encoding: str = "latin1", *args: Any) -> bytes:
    """``_codecs.encode`` as used by protocol-2 pickles for bytes, limited to latin-1."""
    if codecs.lookup(encoding).name != "iso8859-1" or args:
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return codecs.encode(obj, "latin1")


# (module, name) -> a zero-argument resolver. Both the numpy 1 (``numpy.core``) and the
# numpy 2 (``numpy._core``) spellings appear in real files, so both are accepted and
# resolved to whatever the installed numpy provides.
_ALLOWED: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: _latin1_encode,
}
for _prefix in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_prefix}.multiarray", "_reconstruct")] = _numpy_attr("multiarray", "_reconstruct")
    _ALLOWED[(f"{_prefix}.multiarray", "scalar")] = _numpy_attr("multiarray", "scalar")
    _ALLOWED[(f"{_prefix}.numeric", "_frombuffer")] = _numpy_attr("numeric", "_frombuffer")


class CifarFileError(pickle.UnpicklingError, ValueError):
    """A CIFAR-10 file that cannot be read safely: a refused global, a truncated or corrupt
    pickle or archive. The message is one line and names the file."""


class _Refused(CifarFileError):
    """A refusal by :class:`RestrictedUnpickler`; its message already names the source."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only builds plain containers and numpy arrays.

    ``find_class`` allows ``numpy.ndarray``, ``numpy.dtype``, the array reconstructors
    ``numpy[._]core.multiarray._reconstruct`` / ``scalar`` and
    ``numpy[._]core.numeric._frombuffer`` (protocol 5), and ``_codecs.encode`` restricted to
    latin-1 (protocol 2 writes bytes that way). Any other global raises
    :class:`pickle.UnpicklingError` naming the source and the global, before it is called.

    Args:
        file: binary file object.
        source: name used in error messages (usually the path).
        **kwargs: passed to :class:`pickle.Unpickler` (e.g. ``encoding="bytes"``).

    Example:
        >>> import io, pickle, numpy as np
        >>> blob = pickle.dumps({b"data": np.arange(3, dtype=np.uint8)}, protocol=2)
        >>> RestrictedUnpickler(io.BytesIO(blob), source="blob").load()[b"data"].tolist()
        [0, 1, 2]
    """

    def __init__(self, file: BinaryIO, *, source: str = "<pickle>", **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        resolver = _ALLOWED.get((module, name))
        if resolver is None:
            raise _Refused(
                f"{self.source}: refused: the pickle asks for global {module}.{name}; a "
                "CIFAR-10 batch holds only numpy arrays and plain containers, and "
                "unpickling anything else could run code"
            )
        return resolver()

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused(f"{self.source}: refused: the pickle uses persistent ids")


def restricted_load(data: bytes | BinaryIO, *, source: str = "<pickle>") -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (Python-2 strings kept as bytes).

    Raises:
        CifarFileError: a refused global or a truncated / corrupt pickle (naming ``source``).
    """
    f = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        return RestrictedUnpickler(f, source=source, encoding="bytes").load()
    except _Refused:
        raise
    except Exception as e:  # truncated data, EOFError, bad opcodes...
        detail = " ".join(str(e).split()) or "no detail"
        raise CifarFileError(
            f"{source}: not a readable CIFAR-10 batch: truncated or corrupt pickle "
            f"({type(e).__name__}: {detail})"
        ) from None


def _get(d: dict[Any, Any], key: str, source: str) -> Any:
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise ValueError(f"{source}: missing key {key!r} (found {sorted(map(repr, d))})")


def read_cifar_batch(data: bytes | BinaryIO, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse one CIFAR-10 python batch into ``(images uint8 (N, 3, 32, 32), labels int64)``.

    Raises:
        CifarFileError: the pickle references a forbidden global or is corrupt (also a
            :class:`pickle.UnpicklingError` and a :class:`ValueError`).
        ValueError: naming ``source``, if the content does not have the CIFAR-10 layout.
    """
    d = restricted_load(data, source=source)
    if not isinstance(d, dict):
        raise ValueError(f"{source}: expected a dict, got {type(d).__name__}")
    x = _get(d, "data", source)
    y = _get(d, "labels", source)
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        desc = (
            f"{x.dtype} array of shape {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        )
        raise ValueError(f"{source}: 'data' must be a uint8 array of shape (N, 3072), got {desc}")
    if isinstance(y, np.ndarray):
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise ValueError(f"{source}: 'labels' must be a 1-D integer array")
        labels = y.astype(np.int64)
    else:
        if not isinstance(y, (list, tuple)) or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in y
        ):
            raise ValueError(f"{source}: 'labels' must be a list of ints")
        labels = np.asarray(y, dtype=np.int64).reshape(-1)
    if len(labels) != len(x):
        raise ValueError(f"{source}: {len(x)} images but {len(labels)} labels")
    check_labels(labels, 10, source)
    return x.reshape(-1, 3, 32, 32), labels


def _read_label_names(data: bytes | BinaryIO, source: str) -> tuple[str, ...] | None:
    try:
        d = restricted_load(data, source=source)
        names = _get(d, "label_names", source)
        out = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    except (pickle.UnpicklingError, ValueError, TypeError, AttributeError):
        return None
    return out if len(out) == 10 else None


def candidate_dirs(data_dir: str | os.PathLike[str] | None) -> list[Path]:
    """Directories searched for the batches (or the ``.tar.gz`` archive), in order."""
    subdirs = (BATCH_DIR, "cifar10", f"cifar10/{BATCH_DIR}", "cifar-10", f"cifar-10/{BATCH_DIR}")
    return dataset_dirs(data_dir, subdirs)


def _read_from_dir(d: Path) -> tuple[list[tuple[bytes, str]], bytes | None, str]:
    parts = [((d / n).read_bytes(), str(d / n)) for n in (*TRAIN_BATCHES, TEST_BATCH)]
    meta_path = d / "batches.meta"
    return parts, (meta_path.read_bytes() if meta_path.is_file() else None), str(d)


def _read_from_archive(archive: Path) -> tuple[list[tuple[bytes, str]], bytes | None, str]:
    try:
        return _read_archive_members(archive)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        detail = " ".join(str(e).split()) or type(e).__name__
        raise CifarFileError(f"{archive}: not a readable CIFAR-10 archive ({detail})") from None


def _read_archive_members(archive: Path) -> tuple[list[tuple[bytes, str]], bytes | None, str]:
    parts = []
    with tarfile.open(archive, "r:*") as tar:

        def member(name: str) -> bytes | None:
            try:
                f = tar.extractfile(f"{BATCH_DIR}/{name}")
            except KeyError:
                return None
            return None if f is None else f.read()

        for n in (*TRAIN_BATCHES, TEST_BATCH):
            blob = member(n)
            if blob is None:
                raise ValueError(f"{archive}: member {BATCH_DIR}/{n} missing")
            parts.append((blob, f"{archive}:{BATCH_DIR}/{n}"))
        meta = member("batches.meta")
    return parts, meta, str(archive)


def _locate(data_dir: str | os.PathLike[str] | None) -> tuple[str, Path]:
    dirs = candidate_dirs(data_dir)
    for d in dirs:
        if all((d / n).is_file() for n in (*TRAIN_BATCHES, TEST_BATCH)):
            return "dir", d
    for d in dirs:
        if (d / ARCHIVE).is_file():
            return "archive", d / ARCHIVE
    raise dataset_not_found(
        "CIFAR-10",
        f"{', '.join(TRAIN_BATCHES)}, {TEST_BATCH} (or {ARCHIVE})",
        dirs,
        f"Download https://www.cs.toronto.edu/~kriz/{ARCHIVE} and extract it into {dirs[0]} "
        f"(it creates {dirs[0] / BATCH_DIR}), or put the archive there as is, or pass "
        "data_dir=DIR.",
    )


def load_cifar10(
    *,
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    limit_train: int | None = None,
    limit_test: int | None = None,
    normalize: bool = True,
) -> RawData:
    """CIFAR-10 (50 000 train / 10 000 test images, 3×32×32, 10 classes).

    Args:
        data_dir: directory holding the batches, ``cifar-10-batches-py/`` or the archive.
        seed: seeds the ``limit_*`` subsampling.
        limit_train: keep a seeded random subset of this many training images.
        limit_test: keep a seeded random subset of this many test images.
        normalize: standardise per channel with :data:`CIFAR10_MEAN` / :data:`CIFAR10_STD`.
    """
    limit_train = check_int("limit_train", limit_train, 1, allow_none=True)
    limit_test = check_int("limit_test", limit_test, 1, allow_none=True)
    normalize = check_bool("normalize", normalize)
    kind, where = _locate(data_dir)
    parts, meta_blob, source = (_read_from_dir if kind == "dir" else _read_from_archive)(where)
    batches = [read_cifar_batch(blob, src) for blob, src in parts]
    train = (
        np.concatenate([b[0] for b in batches[:-1]]),
        np.concatenate([b[1] for b in batches[:-1]]),
    )
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if normalize else ((0.0,) * 3, (1.0,) * 3)
    classes = None
    if meta_blob is not None:
        classes = _read_label_names(meta_blob, f"{source}/batches.meta")
    return file_raw_data(
        train,
        batches[-1],
        seed=seed,
        limits=(limit_train, limit_test),
        mean=mean,
        std=std,
        meta={"classes": classes or CIFAR10_CLASSES, "source": source},
    )
