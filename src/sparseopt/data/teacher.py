"""Teacher–student regression with a no-overlap one-hidden-layer CNN teacher.

Source: Dinh & Xin, "Convergence of a relaxed variable splitting method for learning
sparse neural networks via ℓ1, ℓ0, and transformed-ℓ1 penalties", arXiv 1812.05719
(the setting of Brutzkus & Globerson, ICML 2017, with a sparse filter).

An input ``x ~ N(0, I)`` of dimension ``r·k`` is cut into ``r`` disjoint patches
``x_j = x[j·k:(j+1)·k]``; the label is

    y = (1/r) · Σ_j ReLU(w* · x_j)  (+ noise · ε, ε ~ N(0, 1), training part only)

with a sparse teacher filter ``w* ∈ R^k`` (``teacher_nonzeros`` entries, chosen at random
positions, drawn N(0, 1) and the whole filter scaled to unit Euclidean norm). Test targets
are noise-free, so the test mean squared error measures the distance to the teacher's
function; the validation part is carved from the (noisy) training part.
"""

from __future__ import annotations

import numpy as np
import torch

from ._common import RawData, check_float, check_int, rng_for

__all__ = ["load_teacher", "teacher_forward"]

_TAG_TEACHER, _TAG_TRAIN, _TAG_TEST, _TAG_NOISE = 11, 12, 13, 14


def teacher_forward(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``(1/r) Σ_j ReLU(w · x_j)`` for ``x`` of shape ``(N, r·k)`` and ``w`` of shape ``(k,)``.

    Example:
        >>> import numpy as np
        >>> teacher_forward(np.array([[1.0, -2.0, 3.0, 4.0]]), np.array([1.0, 0.0])).tolist()
        [2.0]
    """
    k = w.shape[0]
    if x.ndim != 2 or x.shape[1] % k:
        raise ValueError(f"input width {x.shape[-1]} is not a multiple of the filter size {k}")
    patches = x.reshape(x.shape[0], -1, k)
    return np.maximum(patches @ w, 0.0).mean(axis=1)


def load_teacher(
    *,
    seed: int = 0,
    r: int = 8,
    k: int = 16,
    teacher_nonzeros: int | None = None,
    teacher_density: float | None = None,
    noise: float = 0.0,
    n_train: int = 2000,
    n_test: int = 1000,
    teacher_seed: int | None = None,
) -> RawData:
    """Samples of the no-overlap CNN teacher (defaults: r=8 patches of size k=16, 4 nonzeros).

    Args:
        seed: seeds the inputs and the noise (and the teacher unless ``teacher_seed``).
        r: number of patches (hidden units sharing the filter).
        k: patch size = filter length.
        teacher_nonzeros: number of nonzero entries of ``w*`` (1..k).
        teacher_density: alternatively, the fraction of nonzeros in (0, 1]
            (``round(density·k)``, at least 1). Default when neither is given: 0.25.
        noise: standard deviation of the Gaussian label noise on the training part.
        n_train: training samples (validation included).
        n_test: test samples.
        teacher_seed: seed of ``w*`` (default: ``seed``), to vary the data but not the teacher.

    Returns:
        Inputs float32 ``(N, r·k)``, targets float32 ``(N,)``; ``meta["teacher"]`` is ``w*``
        (a float32 tensor), with ``meta["r"]``, ``meta["k"]``, ``meta["support"]``.
    """
    r = check_int("r", r, 1)
    k = check_int("k", k, 1)
    n_train = check_int("n_train", n_train, 1)
    n_test = check_int("n_test", n_test, 0)
    noise = check_float("noise", noise, 0.0)
    if teacher_nonzeros is not None and teacher_density is not None:
        raise ValueError(
            f"give teacher_nonzeros ({teacher_nonzeros}) or teacher_density "
            f"({teacher_density}), not both"
        )
    if teacher_nonzeros is not None:
        nnz = check_int("teacher_nonzeros", teacher_nonzeros, 1)
        if nnz > k:
            raise ValueError(f"Invalid teacher_nonzeros value: {nnz} (must be <= k = {k})")
    else:
        density = 0.25 if teacher_density is None else teacher_density
        density = check_float("teacher_density", density, 0.0, 1.0, low_inclusive=False)
        nnz = max(1, round(density * k))
    t_seed = seed if teacher_seed is None else check_int("teacher_seed", teacher_seed, 0)

    rng = rng_for(t_seed, _TAG_TEACHER)
    w = np.zeros(k)
    support = np.sort(rng.choice(k, size=nnz, replace=False))
    w[support] = rng.standard_normal(nnz)
    w /= np.linalg.norm(w)
    w = w.astype(np.float32).astype(np.float64)  # exactly the stored float32 filter
    # Computed in float64 from float32 inputs, so y matches the formula applied to x exactly
    # up to the final rounding.
    x_train = rng_for(seed, _TAG_TRAIN).standard_normal((n_train, r * k)).astype(np.float32)
    x_test = rng_for(seed, _TAG_TEST).standard_normal((n_test, r * k)).astype(np.float32)
    y_train = teacher_forward(x_train.astype(np.float64), w)
    if noise > 0:
        y_train = y_train + noise * rng_for(seed, _TAG_NOISE).standard_normal(n_train)
    y_test = teacher_forward(x_test.astype(np.float64), w)
    meta = {
        "teacher": torch.from_numpy(w.astype(np.float32)),
        "r": r,
        "k": k,
        "support": torch.from_numpy(support.astype(np.int64)),
        "noise": noise,
        "teacher_seed": t_seed,
        "source": "Dinh & Xin, arXiv 1812.05719 (no-overlap CNN teacher)",
    }
    return RawData(
        x_train,
        y_train.astype(np.float32),
        x_test,
        y_test.astype(np.float32),
        None,
        "regression",
        meta,
    )
