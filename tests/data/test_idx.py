"""MNIST / Fashion-MNIST from tiny IDX files written in the real format."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from sparseopt.data import DatasetNotFoundError, load_dataset
from sparseopt.data import mnist as mnist_mod
from sparseopt.data.mnist import IDX_FILES, read_idx, write_idx

N_TRAIN, N_TEST, SIDE = 40, 12, 28
REAL_SYSTEM_DIR = mnist_mod.FASHION_MNIST_SYSTEM_DIR


def make_idx_dir(
    directory: Path, *, compress: bool = False, seed: int = 0
) -> dict[str, np.ndarray]:
    """Write the four IDX files with random content; return the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (N_TRAIN, SIDE, SIDE), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, N_TRAIN, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (N_TEST, SIDE, SIDE), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, N_TEST, dtype=np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for role, arr in arrays.items():
        write_idx(directory / IDX_FILES[role], arr, compress=compress)
    return arrays


@pytest.fixture(autouse=True)
def _no_system_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Keep tests independent of the machine: no Debian package, no user cache.
    monkeypatch.setattr(mnist_mod, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "no-system-dir")
    monkeypatch.setenv("SPARSEOPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SPARSEOPT_DATA", raising=False)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path: Path, compress: bool) -> None:
    arr = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    path = write_idx(tmp_path / "x-idx3-ubyte", arr, compress=compress)
    assert path.name.endswith(".gz") == compress
    raw = path.read_bytes()
    if compress:
        raw = gzip.decompress(raw)
    assert raw[:4] == b"\x00\x00\x08\x03"
    assert raw[4:16] == (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + (5).to_bytes(4, "big")
    np.testing.assert_array_equal(read_idx(path, 0x00000803), arr)


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("layout", ["", "mnist", "mnist/raw", "MNIST/raw"])
def test_mnist_loads(tmp_path: Path, compress: bool, layout: str) -> None:
    arrays = make_idx_dir(tmp_path / layout, compress=compress)
    data = load_dataset("mnist", data_dir=tmp_path, val_fraction=0.25)
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert (len(data.train), len(data.val), len(data.test)) == (30, 10, N_TEST)
    x, y = data.test.tensors
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    np.testing.assert_array_equal(y.numpy(), arrays["test_labels"])
    mean, std = data.meta["mean"][0], data.meta["std"][0]
    expected = (arrays["test_images"][:, None] / np.float32(255) - mean) / std
    np.testing.assert_allclose(x.numpy(), expected, rtol=1e-5, atol=1e-5)
    # the training part is the training file minus the validation rows, in order
    tr = data.meta["train_indices"].numpy()
    np.testing.assert_array_equal(data.train.tensors[1].numpy(), arrays["train_labels"][tr])


def test_limits_are_seeded_subsets(tmp_path: Path) -> None:
    arrays = make_idx_dir(tmp_path)
    a = load_dataset("mnist", data_dir=tmp_path, limit_train=20, limit_test=5, val_fraction=0)
    b = load_dataset("mnist", data_dir=tmp_path, limit_train=20, limit_test=5, val_fraction=0)
    assert len(a.train) == 20 and len(a.test) == 5
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    # the kept rows are rows of the file, still paired with their labels
    first_row = {
        bytes(img[0]): int(lab)
        for img, lab in zip(arrays["test_images"], arrays["test_labels"], strict=True)
    }
    raw = load_dataset("mnist", data_dir=tmp_path, limit_test=5, normalize=False)
    pixels = (raw.test.tensors[0][:, 0, 0] * 255).round().to(torch.uint8).numpy()
    assert [first_row[bytes(r)] for r in pixels] == raw.test.tensors[1].tolist()
    c = load_dataset("mnist", data_dir=tmp_path, limit_test=5, seed=1)
    assert not torch.equal(a.test.tensors[0], c.test.tensors[0])
    with pytest.raises(ValueError, match="limit_train"):
        load_dataset("mnist", data_dir=tmp_path, limit_train=0)


def test_corrupt_magic_names_file(tmp_path: Path) -> None:
    make_idx_dir(tmp_path)
    bad = tmp_path / IDX_FILES["train_images"]
    raw = bytearray(bad.read_bytes())
    raw[3] = 0x01  # now claims to be a 1-d file
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="magic") as info:
        load_dataset("mnist", data_dir=tmp_path)
    assert str(bad) in str(info.value)


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_file_names_file(tmp_path: Path, compress: bool) -> None:
    make_idx_dir(tmp_path)
    path = tmp_path / IDX_FILES["test_images"]
    payload = path.read_bytes()[:-100]
    path.unlink()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    with pytest.raises(ValueError, match="truncated") as info:
        load_dataset("mnist", data_dir=tmp_path)
    assert str(path) in str(info.value)


def test_truncated_gzip_stream_names_file(tmp_path: Path) -> None:
    make_idx_dir(tmp_path, compress=True)
    path = tmp_path / (IDX_FILES["train_labels"] + ".gz")
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(ValueError) as info:
        load_dataset("mnist", data_dir=tmp_path)
    assert str(path) in str(info.value)


def test_trailing_bytes_refused(tmp_path: Path) -> None:
    make_idx_dir(tmp_path)
    path = tmp_path / IDX_FILES["train_labels"]
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(ValueError, match="trailing") as info:
        load_dataset("mnist", data_dir=tmp_path)
    assert str(path) in str(info.value)


def test_count_mismatch_names_files(tmp_path: Path) -> None:
    make_idx_dir(tmp_path)
    labels = tmp_path / IDX_FILES["train_labels"]
    write_idx(labels, np.zeros(N_TRAIN - 1, dtype=np.uint8))
    with pytest.raises(ValueError, match="labels") as info:
        load_dataset("mnist", data_dir=tmp_path)
    assert str(labels) in str(info.value)
    assert str(tmp_path / IDX_FILES["train_images"]) in str(info.value)


def test_label_out_of_range_names_file(tmp_path: Path) -> None:
    make_idx_dir(tmp_path)
    labels = tmp_path / IDX_FILES["test_labels"]
    bad = np.zeros(N_TEST, dtype=np.uint8)
    bad[3] = 10
    write_idx(labels, bad)
    with pytest.raises(ValueError, match="out of range") as info:
        load_dataset("mnist", data_dir=tmp_path)
    assert str(labels) in str(info.value)


def test_missing_files_message(tmp_path: Path) -> None:
    (tmp_path / "mnist").mkdir()
    write_idx(tmp_path / "mnist" / IDX_FILES["train_images"], np.zeros((1, 2, 2), np.uint8))
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", data_dir=tmp_path)
    msg = str(info.value)
    assert str(tmp_path) in msg and str(tmp_path / "mnist" / "raw") in msg
    assert "train-images-idx3-ubyte" in msg and "download" in msg.lower()


def test_fashion_missing_mentions_debian_package(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion-mnist", data_dir=tmp_path)
    msg = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in msg
    assert str(tmp_path / "fashion-mnist") in msg
    assert str(mnist_mod.FASHION_MNIST_SYSTEM_DIR) in msg


def test_fashion_falls_back_to_system_dir_only_without_a_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = tmp_path / "usr-share"
    arrays = make_idx_dir(system, compress=True, seed=5)
    monkeypatch.setattr(mnist_mod, "FASHION_MNIST_SYSTEM_DIR", system)
    empty = tmp_path / "empty"
    empty.mkdir()
    data = load_dataset("fashion-mnist", val_fraction=0)
    assert data.meta["source_dir"] == str(system)
    np.testing.assert_array_equal(data.train.tensors[1].numpy(), arrays["train_labels"])
    assert data.meta["classes"][0] == "T-shirt/top"
    # a directory the user names is the one read: no silent fallback to the system copy
    for named in (empty, tmp_path / "typo"):
        with pytest.raises(DatasetNotFoundError, match="apt-get install"):
            load_dataset("fashion-mnist", data_dir=named, val_fraction=0)


def test_default_dir_is_cache_root(tmp_path: Path) -> None:
    make_idx_dir(tmp_path / "cache" / "mnist")
    data = load_dataset("mnist")  # SPARSEOPT_CACHE points at tmp_path / "cache"
    assert data.meta["source_dir"] == str(tmp_path / "cache" / "mnist")


@pytest.mark.skipif(
    not (REAL_SYSTEM_DIR / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_real_fashion_mnist_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mnist_mod, "FASHION_MNIST_SYSTEM_DIR", REAL_SYSTEM_DIR)
    data = load_dataset("fashion-mnist", limit_train=500, limit_test=200)
    assert data.meta["n_train_full"] == 60000 and data.meta["n_test_full"] == 10000
    assert (len(data.train), len(data.val), len(data.test)) == (450, 50, 200)
    assert data.input_shape == (1, 28, 28)
    assert set(data.test.tensors[1].tolist()) == set(range(10))
