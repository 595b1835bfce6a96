"""MNIST and Fashion-MNIST from the standard IDX files, parsed and validated with numpy.

File format (LeCun, Cortes, Burges, "The MNIST database of handwritten digits",
http://yann.lecun.com/exdb/mnist/): a big-endian header ``0x00 0x00 <type> <ndim>``
(type ``0x08`` = unsigned byte), then ``ndim`` big-endian uint32 dimensions, then the
data. Images are ``0x00000803`` (N × rows × cols), labels ``0x00000801`` (N).
Fashion-MNIST (Xiao, Rasul, Vollgraf, arXiv 1708.07747,
https://github.com/zalandoresearch/fashion-mnist) uses the same files and names; the
Debian package ``dataset-fashion-mnist`` installs them, gzipped, into
``/usr/share/datasets/fashion-mnist``.

Each of the four files may be plain or gzipped (``.gz``; also the ``train-images.idx3-ubyte``
spelling of some mirrors). They are looked up in ``data_dir``, ``data_dir/<name>``,
``data_dir/<name>/raw`` and torchvision's ``data_dir/MNIST/raw`` /
``data_dir/FashionMNIST/raw``; without ``data_dir``, in the same sub-directories of
``$SPARSEOPT_DATA`` (if set) and of the cache root (``$SPARSEOPT_CACHE`` or
``~/.cache/sparseopt``), and for Fashion-MNIST finally
:data:`FASHION_MNIST_SYSTEM_DIR` (never when ``data_dir`` is given: the directory named
is the one read). The first directory with all four files wins.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from ._common import (
    RawData,
    check_bool,
    check_int,
    check_labels,
    dataset_dirs,
    dataset_not_found,
    file_raw_data,
    unique_paths,
)

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_SYSTEM_DIR",
    "IDX_FILES",
    "find_idx_dir",
    "load_fashion_mnist",
    "load_mnist",
    "read_idx",
    "write_idx",
]

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801

#: The four files, by role.
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: Where the Debian package ``dataset-fashion-mnist`` puts the (gzipped) IDX files.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# Normalisation constants of the full training sets (pixel values scaled to [0, 1]).
_STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
}

_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """The decompressed contents of ``path`` (gzip detected from the magic bytes)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{path}: corrupt gzip data ({e})") from e
    return data


def read_idx(path: str | os.PathLike[str], expected_magic: int | None = None) -> np.ndarray:
    """Read an unsigned-byte IDX file (plain or gzipped) into a uint8 array.

    Args:
        path: the file.
        expected_magic: if given, the required magic number, e.g. ``0x00000803`` for
            MNIST images or ``0x00000801`` for labels.

    Returns:
        A read-only uint8 array whose shape is given by the header.

    Raises:
        ValueError: naming the file, for a wrong magic number, an unsupported data type,
            a truncated or over-long body, or corrupt gzip data.

    Example:
        >>> import tempfile, numpy as np
        >>> d = tempfile.mkdtemp()
        >>> p = write_idx(f"{d}/labels", np.array([3, 1, 4], dtype=np.uint8))
        >>> read_idx(p, 0x00000801).tolist()
        [3, 1, 4]
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(
            f"{path}: bad IDX magic number 0x{magic:08x} (expected 0x{expected_magic:08x})"
        )
    if data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic 0x{magic:08x})")
    ndim = data[3]
    if ndim == 0:
        raise ValueError(f"{path}: IDX file with zero dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes, need {header})")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64))
    body = len(data) - header
    if body < expected:
        raise ValueError(
            f"{path}: truncated IDX data: {body} bytes after the header, "
            f"header dimensions {dims} need {expected}"
        )
    if body > expected:
        raise ValueError(
            f"{path}: {body - expected} unexpected trailing bytes after the IDX data "
            f"(dimensions {dims})"
        )
    return np.frombuffer(data, dtype=np.uint8, count=expected, offset=header).reshape(dims)


def write_idx(path: str | os.PathLike[str], array: np.ndarray, *, compress: bool = False) -> Path:
    """Write a uint8 array as an IDX file (gzipped if ``compress``; ``.gz`` is then appended).

    Useful to build small test fixtures in the real format.

    Args:
        path: destination (without ``.gz``).
        array: uint8 array with at least one dimension.
        compress: gzip the file.

    Returns:
        The path written.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim == 0:
        raise ValueError(f"write_idx needs a uint8 array with ndim >= 1, got {array.dtype}")
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + np.ascontiguousarray(array).tobytes()
    path = Path(path)
    if compress:
        path = path.with_name(path.name + ".gz")
        # mtime=0 keeps the output byte-identical from run to run.
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)
    return path


def _file_candidates(base: str) -> list[str]:
    # Some mirrors use "train-images.idx3-ubyte" instead of "train-images-idx3-ubyte".
    dotted = base.replace("-idx", ".idx")
    return [base, base + ".gz", dotted, dotted + ".gz"]


def _find_in_dir(directory: Path) -> dict[str, Path] | None:
    found = {}
    for role, base in IDX_FILES.items():
        for cand in _file_candidates(base):
            if (directory / cand).is_file():
                found[role] = directory / cand
                break
        else:
            return None
    return found


def candidate_dirs(name: str, data_dir: str | os.PathLike[str] | None) -> list[Path]:
    """Directories searched for the IDX files of dataset ``name``, in order; Fashion-MNIST
    falls back to the Debian package's directory only when no ``data_dir`` is given (a
    directory the user names is the one read, or the error)."""
    torchvision_name = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}[name]
    dirs = dataset_dirs(data_dir, (name, f"{name}/raw", f"{torchvision_name}/raw"))
    if name == "fashion-mnist" and data_dir is None:
        dirs = unique_paths([*dirs, Path(FASHION_MNIST_SYSTEM_DIR)])
    return dirs


def _how_to_get(name: str, target: Path) -> str:
    names = ", ".join(IDX_FILES.values())
    if name == "mnist":
        return (
            f"Download the four MNIST IDX files ({names}; plain or .gz) from "
            f"https://ossci-datasets.s3.amazonaws.com/mnist/ (mirror of "
            f"http://yann.lecun.com/exdb/mnist/) into {target}, or pass data_dir=DIR."
        )
    return (
        f"Install the Debian package: `apt-get install dataset-fashion-mnist` (files land in "
        f"{FASHION_MNIST_SYSTEM_DIR}), or download the four IDX files ({names}; plain or .gz) "
        f"from https://github.com/zalandoresearch/fashion-mnist (data/fashion) into {target}, "
        f"or pass data_dir=DIR."
    )


def find_idx_dir(name: str, data_dir: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """Locate the four IDX files of ``name`` (``"mnist"`` or ``"fashion-mnist"``).

    Returns:
        ``{"train_images": path, "train_labels": ..., "test_images": ..., "test_labels": ...}``,
        all from the first directory that has all four.

    Raises:
        DatasetNotFoundError: listing the directories tried and how to get the files.
    """
    dirs = candidate_dirs(name, data_dir)
    for d in dirs:
        found = _find_in_dir(d)
        if found is not None:
            return found
    label = "MNIST" if name == "mnist" else "Fashion-MNIST"
    files = f"{', '.join(IDX_FILES.values())} (each optionally .gz)"
    raise dataset_not_found(f"{label} IDX files", files, dirs, _how_to_get(name, dirs[0]))


def _load_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, IDX_IMAGES_MAGIC)
    labels = read_idx(labels_path, IDX_LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{images_path} has {images.shape[0]} images but {labels_path} has "
            f"{labels.shape[0]} labels"
        )
    check_labels(labels, 10, labels_path)
    return images, labels


def _load_idx_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None,
    seed: int,
    limit_train: int | None,
    limit_test: int | None,
    normalize: bool,
) -> RawData:
    limit_train = check_int("limit_train", limit_train, 1, allow_none=True)
    limit_test = check_int("limit_test", limit_test, 1, allow_none=True)
    normalize = check_bool("normalize", normalize)
    files = find_idx_dir(name, data_dir)
    xtr, ytr = _load_pair(files["train_images"], files["train_labels"])
    xte, yte = _load_pair(files["test_images"], files["test_labels"])
    if xtr.shape[1:] != xte.shape[1:]:
        raise ValueError(
            f"{files['train_images']} holds {xtr.shape[1:]} images but "
            f"{files['test_images']} holds {xte.shape[1:]} images"
        )
    mean, std = _STATS[name] if normalize else ((0.0,), (1.0,))
    classes = FASHION_MNIST_CLASSES if name == "fashion-mnist" else tuple(map(str, range(10)))
    meta = {
        "files": {k: str(v) for k, v in files.items()},
        "source_dir": str(files["train_images"].parent),
        "classes": classes,
    }
    return file_raw_data(
        (xtr[:, None], ytr.astype(np.int64)),
        (xte[:, None], yte.astype(np.int64)),
        seed=seed,
        limits=(limit_train, limit_test),
        mean=mean,
        std=std,
        meta=meta,
    )


def load_mnist(
    *,
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    limit_train: int | None = None,
    limit_test: int | None = None,
    normalize: bool = True,
) -> RawData:
    """MNIST from IDX files; see the module docstring for where they are looked up.

    Args:
        data_dir: directory holding the files (or ``<data_dir>/mnist[/raw]``).
        seed: seeds the ``limit_*`` subsampling.
        limit_train: keep a seeded random subset of this many training images.
        limit_test: keep a seeded random subset of this many test images.
        normalize: standardise with the MNIST mean 0.1307 / std 0.3081 (else [0, 1]).
    """
    return _load_idx_dataset("mnist", data_dir, seed, limit_train, limit_test, normalize)


def load_fashion_mnist(
    *,
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    limit_train: int | None = None,
    limit_test: int | None = None,
    normalize: bool = True,
) -> RawData:
    """Fashion-MNIST from IDX files, falling back to the Debian package's directory.

    Args:
        data_dir: directory holding the files (or ``<data_dir>/fashion-mnist[/raw]``).
        seed: seeds the ``limit_*`` subsampling.
        limit_train: keep a seeded random subset of this many training images.
        limit_test: keep a seeded random subset of this many test images.
        normalize: standardise with mean 0.2860 / std 0.3530 (else [0, 1]).
    """
    return _load_idx_dataset("fashion-mnist", data_dir, seed, limit_train, limit_test, normalize)
