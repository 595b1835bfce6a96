"""CIFAR-10 from tiny batches in the real pickle format; the unpickler refuses code."""

from __future__ import annotations

import collections
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from sparseopt.data import DatasetNotFoundError, load_dataset
from sparseopt.data.cifar import CIFAR10_MEAN, CifarFileError, read_cifar_batch, restricted_load

PER_BATCH, N_TEST = 6, 8


def batch(n: int, rng: np.random.Generator, labels_as: str = "list") -> dict[bytes, object]:
    labels = rng.integers(0, 10, n)
    return {
        b"batch_label": b"training batch",
        b"labels": labels.tolist() if labels_as == "list" else labels,
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def write_batches(directory: Path, protocol: int = 2, seed: int = 0) -> dict[str, dict]:
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        out[name] = batch(N_TEST if name == "test_batch" else PER_BATCH, rng)
        with open(directory / name, "wb") as f:
            pickle.dump(out[name], f, protocol=protocol)
    names = [
        b"plane",
        b"car",
        b"bird",
        b"cat",
        b"deer",
        b"dog",
        b"frog",
        b"horse",
        b"ship",
        b"truck",
    ]
    meta = {b"label_names": names, b"num_vis": 3072}
    (directory / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return out


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SPARSEOPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SPARSEOPT_DATA", raising=False)


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL, 5])
def test_loads_tiny_batches(tmp_path: Path, protocol: int) -> None:
    src = write_batches(tmp_path / "cifar-10-batches-py", protocol=protocol)
    data = load_dataset("cifar10", data_dir=tmp_path, val_fraction=0.2)
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10
    assert (len(data.train), len(data.val), len(data.test)) == (24, 6, N_TEST)
    x, y = data.test.tensors
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert y.tolist() == src["test_batch"][b"labels"]
    # channel 0 of image 0 is the first 1024 bytes (R plane, row-major)
    r_plane = src["test_batch"][b"data"][0, :1024].reshape(32, 32) / np.float32(255)
    expected = (r_plane - CIFAR10_MEAN[0]) / data.meta["std"][0]
    np.testing.assert_allclose(x[0, 0].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert data.meta["classes"][1] == "car"  # read from batches.meta


def test_labels_as_array_and_str_keys(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    d = batch(5, rng, labels_as="array")
    blob = pickle.dumps({k.decode(): v for k, v in d.items()})
    x, y = read_cifar_batch(blob, "mem")
    assert x.shape == (5, 3, 32, 32) and y.dtype == np.int64
    np.testing.assert_array_equal(y, d[b"labels"])


def test_reads_archive_without_extracting(tmp_path: Path) -> None:
    src = write_batches(tmp_path / "staging" / "cifar-10-batches-py")
    archive = tmp_path / "data" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "staging" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    data = load_dataset("cifar10", data_dir=tmp_path / "data", val_fraction=0)
    assert data.test.tensors[1].tolist() == src["test_batch"][b"labels"]
    assert sorted(os.listdir(tmp_path / "data")) == ["cifar-10-python.tar.gz"]


def test_deterministic_limits(tmp_path: Path) -> None:
    write_batches(tmp_path)
    a = load_dataset("cifar10", data_dir=tmp_path, limit_train=10, limit_test=3, seed=2)
    b = load_dataset("cifar10", data_dir=tmp_path, limit_train=10, limit_test=3, seed=2)
    assert len(a.train) + len(a.val) == 10 and len(a.test) == 3
    for ta, tb in zip(
        (*a.train.tensors, *a.test.tensors), (*b.train.tensors, *b.test.tensors), strict=True
    ):
        assert torch.equal(ta, tb)


class _Evil:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.target}",))


class _EvilEval:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (eval, (f"open({str(self.target)!r}, 'w').close()",))


@pytest.mark.parametrize("evil_cls", [_Evil, _EvilEval])
@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
def test_malicious_pickle_refused(tmp_path: Path, evil_cls: type, protocol: int) -> None:
    target = tmp_path / "pwned"
    directory = tmp_path / "cifar-10-batches-py"
    write_batches(directory)
    rng = np.random.default_rng(0)
    payload = batch(PER_BATCH, rng)
    payload[b"labels"] = evil_cls(target)
    (directory / "data_batch_3").write_bytes(pickle.dumps(payload, protocol=protocol))
    assert not target.exists()
    with pytest.raises(pickle.UnpicklingError) as info:
        load_dataset("cifar10", data_dir=tmp_path)
    msg = str(info.value)
    assert "data_batch_3" in msg
    assert ("system" in msg) if evil_cls is _Evil else ("eval" in msg)
    assert not target.exists()


def test_plain_pickle_would_execute_payload(tmp_path: Path) -> None:
    # Control experiment for the test above: the payload is real.
    target = tmp_path / "pwned"
    pickle.loads(pickle.dumps(_EvilEval(target)))
    assert target.exists()


def test_other_globals_refused() -> None:
    blob = pickle.dumps({b"data": collections.OrderedDict(a=1)})
    with pytest.raises(pickle.UnpicklingError, match=r"blob.*collections\.OrderedDict"):
        restricted_load(blob, source="blob")
    # a hand-written GLOBAL opcode for os.system, never called
    with pytest.raises(pickle.UnpicklingError, match=r"os\.system"):
        restricted_load(b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00truec.", source="blob")
    # an object array of allowed contents unpickles, but is refused as CIFAR data
    obj = {b"data": np.zeros((1, 3072), dtype=object), b"labels": [0]}
    with pytest.raises(ValueError, match="uint8"):
        read_cifar_batch(pickle.dumps(obj), "objects")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({b"data": np.zeros((4, 3000), dtype=np.uint8)}, "3072"),
        ({b"data": np.zeros((4, 3072), dtype=np.float32)}, "uint8"),
        ({b"labels": [0, 1, 2]}, "labels"),
        ({b"labels": [0, 1, 2, 10]}, "out of range"),
        ({b"labels": [0, 1, 2, -1]}, "out of range"),
        ({b"labels": "0123"}, "labels"),
    ],
)
def test_bad_content_refused_with_file_name(tmp_path: Path, change: dict, match: str) -> None:
    directory = tmp_path / "cifar-10-batches-py"
    write_batches(directory)
    payload = {b"data": np.zeros((4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
    payload.update(change)
    (directory / "test_batch").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(ValueError, match=match) as info:
        load_dataset("cifar10", data_dir=tmp_path)
    assert "test_batch" in str(info.value)


def test_truncated_pickle_refused(tmp_path: Path) -> None:
    directory = tmp_path / "cifar-10-batches-py"
    write_batches(directory)
    path = directory / "data_batch_1"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(pickle.UnpicklingError, match="data_batch_1"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_missing_files_message(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10", data_dir=tmp_path)
    msg = str(info.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg
    assert "cifar-10-python.tar.gz" in msg and "data_batch_1" in msg


def test_truncated_archive_refused_in_one_line(tmp_path: Path) -> None:
    write_batches(tmp_path / "staging" / "cifar-10-batches-py")
    archive = tmp_path / "data" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "staging" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    archive.write_bytes(archive.read_bytes()[:300])
    with pytest.raises(CifarFileError, match=r"cifar-10-python\.tar\.gz") as info:
        load_dataset("cifar10", data_dir=tmp_path / "data")
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def test_file_errors_are_value_errors_in_one_line(tmp_path: Path) -> None:
    # a ValueError: `sparseopt train` and `prune` turn it into a usage error (exit 2)
    with pytest.raises(ValueError, match=r"blob: not a readable CIFAR-10 batch") as info:
        restricted_load(pickle.dumps({b"a": 1})[:-3], source="blob")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"refused.*posix\.system|refused.*os\.system"):
        restricted_load(pickle.dumps(os.system), source="blob")
