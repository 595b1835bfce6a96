"""The scikit-learn ``digits`` data: 1 797 greyscale 8×8 handwritten digits, 10 classes.

Source: the UCI "Optical Recognition of Handwritten Digits" test set (Alpaydin & Kaynak,
1998) as embedded in scikit-learn (:func:`sklearn.datasets.load_digits`); no download.
Pixel values are integers 0..16.

Split: a fixed 20 % test part, stratified by class (for each class, ``round(0.2·n_c)``
samples picked by a permutation seeded with the constant :data:`TEST_SPLIT_SEED`, so the
test set is the same for every ``seed``); the validation part is then carved out of the
remaining 80 % by :func:`sparseopt.data.load_dataset` with ``seed``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ._common import RawData, check_bool, check_float, check_labels, normalize_images, rng_for

__all__ = ["TEST_SPLIT_SEED", "load_digits"]

#: Seed of the fixed train/test split (independent of the ``seed`` of ``load_dataset``).
TEST_SPLIT_SEED = 20240611


def _read_digits() -> tuple[np.ndarray, np.ndarray, str]:
    """The 1797 images (uint8, 8×8) and labels.

    Reads scikit-learn's bundled ``datasets/data/digits.csv.gz`` directly (fast: importing
    scikit-learn takes seconds); falls back to :func:`sklearn.datasets.load_digits`.
    """
    spec = importlib.util.find_spec("sklearn")
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            try:
                table = np.loadtxt(path, delimiter=",")
            except ValueError:
                break
            if table.shape == (1797, 65) and table.min() >= 0 and table[:, :-1].max() <= 16:
                images = table[:, :-1].round().astype(np.uint8).reshape(-1, 8, 8)
                return images, table[:, -1].round().astype(np.int64), str(path)
            break
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the 'digits' dataset needs scikit-learn: pip install 'sparseopt[cli]' "
            "(or pip install scikit-learn)"
        ) from e
    bunch = sk_load_digits()
    images = np.asarray(bunch.images, dtype=np.float64).round().astype(np.uint8)
    return images, np.asarray(bunch.target, dtype=np.int64), "sklearn.datasets.load_digits"


def load_digits(*, seed: int = 0, test_fraction: float = 0.2, normalize: bool = True) -> RawData:
    """scikit-learn digits as ``(N, 1, 8, 8)`` float32 images.

    Args:
        seed: unused here (the test split is fixed); accepted for a uniform signature.
        test_fraction: fraction of each class put in the test part, in ``(0, 1)``.
        normalize: scale to [0, 1] (dividing by 16) and standardise with the mean/std of
            the 80 % training part, validation included (recorded in ``meta``); otherwise
            only scale to [0, 1].

    Example:
        >>> raw = load_digits()
        >>> raw.x_train.shape[1:], raw.num_classes
        ((1, 8, 8), 10)
    """
    del seed
    test_fraction = check_float(
        "test_fraction", test_fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False
    )
    normalize = check_bool("normalize", normalize)
    images, target, source = _read_digits()
    check_labels(target, 10, source)
    rng = rng_for(TEST_SPLIT_SEED)
    is_test = np.zeros(len(target), dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(target == c)
        k = round(test_fraction * len(idx))
        is_test[idx[rng.permutation(len(idx))[:k]]] = True
    xtr, ytr = images[~is_test][:, None], target[~is_test]
    xte, yte = images[is_test][:, None], target[is_test]
    mean, std = (None, None) if normalize else ((0.0,), (1.0,))
    xtr_f, mean, std = normalize_images(xtr, mean, std, scale=16.0)
    xte_f, _, _ = normalize_images(xte, mean, std, scale=16.0)
    meta = {
        "mean": mean,
        "std": std,
        "scale": 16.0,
        "classes": tuple(str(i) for i in range(10)),
        "source": source,
        "test_split_seed": TEST_SPLIT_SEED,
        "test_fraction": test_fraction,
    }
    return RawData(xtr_f, ytr, xte_f, yte, 10, "classification", meta)
