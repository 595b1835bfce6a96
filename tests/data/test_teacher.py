"""The no-overlap CNN teacher of Dinh & Xin: targets follow the formula exactly."""

from __future__ import annotations

import pytest
import torch

from sparseopt.data import load_dataset


def formula(x: torch.Tensor, w: torch.Tensor, r: int, k: int) -> torch.Tensor:
    patches = x.double().reshape(-1, r, k)
    return torch.relu(patches @ w.double()).sum(dim=1) / r


def test_shapes_and_meta() -> None:
    data = load_dataset("teacher", r=4, k=6, teacher_nonzeros=2, n_train=100, n_test=30)
    assert data.task == "regression" and data.num_classes is None
    assert data.input_shape == (24,)
    assert (len(data.train), len(data.val), len(data.test)) == (90, 10, 30)
    x, y = data.train.tensors
    assert x.dtype == torch.float32 and y.dtype == torch.float32
    assert x.shape == (90, 24) and y.shape == (90,)
    w = data.meta["teacher"]
    assert isinstance(w, torch.Tensor) and w.shape == (6,)
    assert data.meta["r"] == 4 and data.meta["k"] == 6
    assert int((w != 0).sum()) == 2
    assert torch.equal(torch.nonzero(w).flatten(), data.meta["support"])
    assert torch.isclose(w.double().norm(), torch.tensor(1.0, dtype=torch.float64))


def test_targets_equal_formula_without_noise() -> None:
    data = load_dataset("teacher", r=5, k=8, teacher_density=0.5, n_train=200, n_test=50)
    w, r, k = data.meta["teacher"], data.meta["r"], data.meta["k"]
    assert int((w != 0).sum()) == 4
    for part in (data.train, data.val, data.test):
        x, y = part.tensors
        err = (y.double() - formula(x, w, r, k)).abs().max()
        assert float(err) < 1e-6  # only the final float32 rounding differs


def test_noise_on_training_targets_only() -> None:
    kw = dict(r=3, k=4, n_train=2000, n_test=100, seed=1)
    clean = load_dataset("teacher", **kw)
    noisy = load_dataset("teacher", noise=0.5, **kw)
    assert torch.equal(clean.train.tensors[0], noisy.train.tensors[0])  # same inputs
    resid = noisy.train.tensors[1] - clean.train.tensors[1]
    assert 0.45 < float(resid.std()) < 0.55
    assert torch.equal(clean.test.tensors[1], noisy.test.tensors[1])  # test stays clean


def test_deterministic_and_seeded() -> None:
    a = load_dataset("teacher", seed=7, n_train=50, n_test=10)
    b = load_dataset("teacher", seed=7, n_train=50, n_test=10)
    c = load_dataset("teacher", seed=8, n_train=50, n_test=10)
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    assert torch.equal(a.meta["teacher"], b.meta["teacher"])
    assert not torch.equal(a.train.tensors[0], c.train.tensors[0])
    d = load_dataset("teacher", seed=8, teacher_seed=7, n_train=50, n_test=10)
    assert torch.equal(d.meta["teacher"], a.meta["teacher"])


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("r", 0),
        ("k", -1),
        ("n_train", 0),
        ("n_test", -5),
        ("noise", -0.1),
        ("teacher_density", 0.0),
        ("teacher_density", 1.5),
        ("teacher_nonzeros", 0),
        ("teacher_nonzeros", 17),
        ("r", 2.5),
    ],
)
def test_invalid_options_name_the_value(option: str, value: object) -> None:
    with pytest.raises(ValueError, match=option) as info:
        load_dataset("teacher", **{option: value})
    assert str(value) in str(info.value)


def test_density_and_nonzeros_exclusive() -> None:
    with pytest.raises(ValueError, match="not both"):
        load_dataset("teacher", teacher_density=0.5, teacher_nonzeros=2)
