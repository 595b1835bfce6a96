"""Datasets for the experiments: one entry point, :func:`load_dataset`.

========================  ==============================================  ==================
name                      what                                            input / task
========================  ==============================================  ==================
``digits``                scikit-learn's embedded 8×8 digits (UCI)         (1, 8, 8), 10 cls
``mnist``                 MNIST, IDX files from ``data_dir``               (1, 28, 28), 10 cls
``fashion-mnist``         Fashion-MNIST, IDX files (or Debian package)     (1, 28, 28), 10 cls
``cifar10``               CIFAR-10 python batches (restricted unpickler)   (3, 32, 32), 10 cls
``curves``                synthetic regular vs shaky curves (Xue & Xin)    (1, S, S), 2 cls
``teacher``               no-overlap CNN teacher regression (Dinh & Xin)   (r·k,), regression
``words``                 words in fonts, regular vs shaky (Xue & Xin)     (1, H, W), 2 cls
========================  ==============================================  ==================

Every loader returns a :class:`SplitData` with ``train`` / ``val`` / ``test``
``TensorDataset`` parts (x float32; y int64 for classification, float32 for regression).
The validation part is carved out of the training data with a permutation seeded by
``seed`` (``val_fraction=0`` gives an empty validation part); the same arguments give the
same tensors bit for bit. Dataset-specific options are keyword arguments (see each
loader: :func:`~sparseopt.data.mnist.load_mnist`, :func:`~sparseopt.data.cifar.load_cifar10`,
:func:`~sparseopt.data.curves.load_curves`, :func:`~sparseopt.data.teacher.load_teacher`,
:func:`~sparseopt.data.digits.load_digits`, :func:`~sparseopt.data.words.load_words`);
unknown options raise ``ValueError``.

Batch-wise augmentation on device: :mod:`sparseopt.data.augment`.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import augment
from ._common import (
    DatasetNotFoundError,
    RawData,
    SplitData,
    check_fraction,
    check_seed,
    finalize,
)
from .cifar import load_cifar10
from .curves import load_curves
from .digits import load_digits
from .mnist import load_fashion_mnist, load_mnist
from .teacher import load_teacher
from .words import load_words

__all__ = [
    "DatasetNotFoundError",
    "DatasetSpec",
    "SplitData",
    "augment",
    "get_dataset_spec",
    "list_datasets",
    "load_dataset",
]


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset.

    Attributes:
        name: canonical name.
        loader: keyword-only function returning a :class:`RawData`.
        description: one line.
        uses_files: whether it reads files from ``data_dir`` (else it is embedded or
            synthetic; ``curves`` and ``words`` use ``data_dir`` as their cache directory).
        classification: whether its targets are classes (else a regression).
    """

    name: str
    loader: Callable[..., RawData]
    description: str
    uses_files: bool
    classification: bool = True

    @property
    def options(self) -> tuple[str, ...]:
        """The dataset-specific keyword options (besides ``data_dir``, ``seed``, ``val_fraction``)."""
        params = inspect.signature(self.loader).parameters
        return tuple(p for p in params if p not in ("data_dir", "seed", "val_fraction"))


_REGISTRY: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("cifar10", load_cifar10, "CIFAR-10, 3x32x32 colour images, 10 classes", True),
        DatasetSpec("curves", load_curves, "synthetic regular vs shaky curves, 2 classes", False),
        DatasetSpec("digits", load_digits, "scikit-learn 8x8 digits, 10 classes", False),
        DatasetSpec(
            "fashion-mnist", load_fashion_mnist, "Fashion-MNIST, 28x28 grey, 10 classes", True
        ),
        DatasetSpec("mnist", load_mnist, "MNIST, 28x28 grey digits, 10 classes", True),
        DatasetSpec(
            "teacher", load_teacher, "no-overlap CNN teacher-student regression", False, False
        ),
        DatasetSpec("words", load_words, "words in fonts, regular vs trembling, 2 classes", False),
    )
}

_ALIASES = {
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "cifar_10": "cifar10",
}


def list_datasets() -> list[str]:
    """The canonical dataset names, sorted.

    Example:
        >>> list_datasets()
        ['cifar10', 'curves', 'digits', 'fashion-mnist', 'mnist', 'teacher', 'words']
    """
    return sorted(_REGISTRY)


def get_dataset_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name`` (case-insensitive; a few aliases accepted).

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    if not isinstance(name, str):
        raise ValueError(f"Invalid dataset name: {name!r}; valid names: {list_datasets()}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise ValueError(f"Unknown dataset {name!r}; valid names: {', '.join(list_datasets())}")
    return _REGISTRY[key]


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    **options: Any,
) -> SplitData:
    """Load dataset ``name`` split into train / val / test.

    Args:
        name: one of :func:`list_datasets`.
        data_dir: where the files are (MNIST, Fashion-MNIST, CIFAR-10; default
            ``$SPARSEOPT_DATA`` then ``$SPARSEOPT_CACHE`` or ``~/.cache/sparseopt``), or the
            cache root for ``curves``; ignored by ``digits`` and ``teacher``.
        seed: seeds the validation split and anything random in the dataset (subsampling,
            synthetic data). A non-negative integer.
        val_fraction: fraction of the training data moved to ``val``, in ``[0, 1)``.
        **options: dataset-specific options, e.g. ``limit_train``/``limit_test`` (file
            datasets), ``n_train``/``n_test``/``image_size`` (curves), ``r``/``k``/``noise``
            (teacher), ``normalize`` (image datasets).

    Returns:
        A :class:`SplitData`.

    Raises:
        ValueError: unknown name (listing the valid ones), unknown option, invalid value.
        DatasetNotFoundError: the files of a file-based dataset are missing.

    Example:
        >>> data = load_dataset("digits", seed=0, val_fraction=0.1)
        >>> data.input_shape, data.num_classes, len(data.test)
        ((1, 8, 8), 10, 359)
        >>> x, y = data.train[0]
        >>> x.dtype, y.dtype
        (torch.float32, torch.int64)
    """
    spec = get_dataset_spec(name)
    seed = check_seed(seed)
    val_fraction = check_fraction("val_fraction", val_fraction)
    valid = spec.options
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"Unknown option(s) {', '.join(unknown)} for dataset {spec.name!r}; "
            f"valid options: {', '.join(valid) or 'none'}"
        )
    kwargs: dict[str, Any] = dict(options)
    params = inspect.signature(spec.loader).parameters
    if "data_dir" in params:
        kwargs["data_dir"] = data_dir
    if "seed" in params:
        kwargs["seed"] = seed
    if "val_fraction" in params:  # words: puts its validation words where finalize cuts
        kwargs["val_fraction"] = val_fraction
    raw = spec.loader(**kwargs)
    data = finalize(spec.name, raw, seed=seed, val_fraction=val_fraction)
    data.meta.setdefault("seed", seed)
    data.meta.setdefault("val_fraction", val_fraction)
    return data
