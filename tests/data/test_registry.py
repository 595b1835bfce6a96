"""load_dataset / list_datasets: names, options, splitting and determinism (digits, teacher)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sparseopt.data import (
    DatasetNotFoundError,
    SplitData,
    get_dataset_spec,
    list_datasets,
    load_dataset,
)

ALL = ["cifar10", "curves", "digits", "fashion-mnist", "mnist", "teacher", "words"]


def test_list_datasets() -> None:
    assert list_datasets() == ALL


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="Unknown dataset 'imagenet'") as info:
        load_dataset("imagenet")
    for name in ALL:
        assert name in str(info.value)


def test_aliases_and_case() -> None:
    assert get_dataset_spec("Fashion_MNIST").name == "fashion-mnist"
    assert get_dataset_spec("CIFAR-10").name == "cifar10"


def test_unknown_option_is_named() -> None:
    with pytest.raises(ValueError, match="n_trian") as info:
        load_dataset("teacher", n_trian=10)
    assert "n_train" in str(info.value)  # the valid options are listed


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "0.1", None])
def test_invalid_val_fraction(bad: object) -> None:
    with pytest.raises(ValueError, match="val_fraction"):
        load_dataset("teacher", val_fraction=bad, n_train=10, n_test=2)


@pytest.mark.parametrize("bad", [-1, 1.5, "0", True])
def test_invalid_seed(bad: object) -> None:
    with pytest.raises(ValueError, match="seed"):
        load_dataset("teacher", seed=bad, n_train=10, n_test=2)


def test_not_found_error_is_a_file_not_found_error() -> None:
    assert issubclass(DatasetNotFoundError, FileNotFoundError)


@pytest.fixture(scope="module")
def digits() -> SplitData:
    return load_dataset("digits", seed=3, val_fraction=0.1)


def test_digits_shapes_and_dtypes(digits: SplitData) -> None:
    assert digits.name == "digits"
    assert digits.input_shape == (1, 8, 8)
    assert digits.num_classes == 10
    assert digits.task == "classification"
    n = len(digits.train) + len(digits.val) + len(digits.test)
    assert n == 1797
    # 20 % per class in the test part (stratified), rounding per class
    assert abs(len(digits.test) - 0.2 * 1797) <= 10
    assert torch.bincount(digits.test.tensors[1], minlength=10).min() >= 34
    for part in (digits.train, digits.val, digits.test):
        x, y = part.tensors
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == (1, 8, 8)
        assert int(y.min()) >= 0 and int(y.max()) <= 9
    # normalised with the recorded statistics: mean ~0, std ~1 on the training data
    x = torch.cat([digits.train.tensors[0], digits.val.tensors[0]])
    assert abs(float(x.mean())) < 1e-4
    assert abs(float(x.std()) - 1) < 1e-3
    assert len(digits.meta["mean"]) == 1 and len(digits.meta["std"]) == 1


def test_val_fraction_and_disjoint(digits: SplitData) -> None:
    n_trainval = len(digits.train) + len(digits.val)
    assert len(digits.val) == round(0.1 * n_trainval)
    tr, va = digits.meta["train_indices"], digits.meta["val_indices"]
    assert set(tr.tolist()).isdisjoint(va.tolist())
    assert sorted(tr.tolist() + va.tolist()) == list(range(n_trainval))


def test_test_split_fixed_val_split_seeded(digits: SplitData) -> None:
    other = load_dataset("digits", seed=4, val_fraction=0.1)
    # test part independent of the seed, validation part not
    assert torch.equal(other.test.tensors[1], digits.test.tensors[1])
    assert not torch.equal(other.meta["val_indices"], digits.meta["val_indices"])
    again = load_dataset("digits", seed=3, val_fraction=0.1)
    for a, b in zip(
        (*digits.train.tensors, *digits.val.tensors),
        (*again.train.tensors, *again.val.tensors),
        strict=True,
    ):
        assert torch.equal(a, b)


def test_val_fraction_zero_gives_empty_val() -> None:
    data = load_dataset("teacher", val_fraction=0.0, n_train=50, n_test=10)
    assert len(data.val) == 0 and len(data.train) == 50
    assert data.val.tensors[0].shape == (0, data.input_shape[0])
    full = load_dataset("teacher", val_fraction=0.2, n_train=50, n_test=10)
    assert len(full.val) == 10 and len(full.train) == 40
    # the training samples keep their order and values
    assert torch.equal(full.train.tensors[0], data.train.tensors[0][full.meta["train_indices"]])


def test_repr_is_short(digits: SplitData) -> None:
    text = repr(digits)
    assert "digits" in text and "train=" in text and len(text) < 200


@pytest.mark.slow  # importing scikit-learn takes seconds
def test_digits_fast_path_matches_scikit_learn() -> None:
    from sklearn.datasets import load_digits as sk_load_digits

    from sparseopt.data.digits import _read_digits

    images, target, _ = _read_digits()
    bunch = sk_load_digits()
    assert np.array_equal(images, bunch.images) and np.array_equal(target, bunch.target)


def test_dataset_dirs_and_the_not_found_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sparseopt.data._common import DatasetNotFoundError, dataset_dirs, dataset_not_found

    monkeypatch.delenv("SPARSEOPT_DATA", raising=False)
    monkeypatch.setenv("SPARSEOPT_CACHE", str(tmp_path / "cache"))
    # an explicit data_dir is searched itself, a default root only below; no duplicates
    assert dataset_dirs(tmp_path, ("a", "a/raw", "a")) == [
        tmp_path,
        tmp_path / "a",
        tmp_path / "a/raw",
    ]
    assert dataset_dirs(None, ("a",)) == [tmp_path / "cache" / "a"]
    err = dataset_not_found("X", "f1, f2", [tmp_path, tmp_path / "a"], "Get them.")
    assert isinstance(err, DatasetNotFoundError)
    assert (
        str(err)
        == f"X not found. Looked for f1, f2 in:\n  {tmp_path}\n  {tmp_path / 'a'}\nGet them."
    )


def test_file_raw_data_subsamples_normalizes_and_fills_meta() -> None:
    from sparseopt.data._common import file_raw_data

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (12, 1, 2, 2), dtype=np.uint8)
    y = np.arange(12, dtype=np.int64) % 10
    raw = file_raw_data(
        (x, y), (x[:5], y[:5]), seed=1, limits=(4, None), mean=(0.5,), std=(0.25,), meta={"k": 1}
    )
    assert list(raw.meta) == ["mean", "std", "k", "n_train_full", "n_test_full"]
    assert (raw.meta["n_train_full"], raw.meta["n_test_full"]) == (12, 5)
    assert raw.x_train.shape == (4, 1, 2, 2) and raw.x_test.shape == (5, 1, 2, 2)
    assert (raw.num_classes, raw.task) == (10, "classification")
    np.testing.assert_array_equal(raw.x_test, (x[:5].astype(np.float32) / 255 - 0.5) / 0.25)
