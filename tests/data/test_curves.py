"""Synthetic regular-vs-shaky curves: determinism, caching, balance, and a learnable signal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sparseopt.data import SplitData, load_dataset
from sparseopt.data._common import rng_for
from sparseopt.data.curves import FAMILIES, render_curve

SMALL = {"n_train": 60, "n_test": 20}


@pytest.fixture(autouse=True)
def _cache_in_tmp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SPARSEOPT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def curves(tmp_path_factory: pytest.TempPathFactory) -> SplitData:
    d = tmp_path_factory.mktemp("curves")
    return load_dataset("curves", data_dir=d, n_train=120, n_test=40, val_fraction=0.25)


def test_shapes_dtypes_balance(curves: SplitData) -> None:
    assert curves.input_shape == (1, 32, 32)
    assert curves.num_classes == 2 and curves.task == "classification"
    assert (len(curves.train), len(curves.val), len(curves.test)) == (90, 30, 40)
    x, y = curves.train.tensors
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    y_all = torch.cat([curves.train.tensors[1], curves.val.tensors[1]])
    assert torch.bincount(y_all).tolist() == [60, 60]
    assert torch.bincount(curves.test.tensors[1]).tolist() == [20, 20]
    # every family occurs, and the per-split family labels line up with the data
    fam = curves.meta["family"]
    assert set(torch.cat([fam["train"], fam["val"]]).tolist()) == set(range(len(FAMILIES)))
    assert len(fam["train"]) == 90 and len(fam["val"]) == 30 and len(fam["test"]) == 40


def test_images_normalised_and_not_empty(curves: SplitData) -> None:
    x = torch.cat([curves.train.tensors[0], curves.val.tensors[0]])
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3
    background = -curves.meta["mean"][0] / curves.meta["std"][0]
    ink = (x > background + 1e-3).flatten(1).sum(1)
    assert int(ink.min()) > 10  # every image has a visible stroke


def test_deterministic_and_cached(tmp_path: Path) -> None:
    first = load_dataset("curves", data_dir=tmp_path, seed=5, **SMALL)
    assert first.meta["from_cache"] is False
    cache = Path(first.meta["cache_path"])
    assert cache.is_file() and cache.parent == tmp_path / "curves"
    second = load_dataset("curves", data_dir=tmp_path, seed=5, **SMALL)
    assert second.meta["from_cache"] is True
    fresh = load_dataset("curves", data_dir=tmp_path, seed=5, cache=False, **SMALL)
    assert fresh.meta["from_cache"] is False
    for other in (second, fresh):
        for part in ("train", "val", "test"):
            for a, b in zip(
                getattr(first, part).tensors, getattr(other, part).tensors, strict=True
            ):
                assert torch.equal(a, b)
    other_seed = load_dataset("curves", data_dir=tmp_path, seed=6, **SMALL)
    assert other_seed.meta["cache_path"] != first.meta["cache_path"]
    assert not torch.equal(other_seed.test.tensors[0], first.test.tensors[0])


def test_corrupt_cache_is_regenerated(tmp_path: Path) -> None:
    first = load_dataset("curves", data_dir=tmp_path, **SMALL)
    Path(first.meta["cache_path"]).write_bytes(b"not a zip file")
    again = load_dataset("curves", data_dir=tmp_path, **SMALL)
    assert again.meta["from_cache"] is False
    assert torch.equal(first.test.tensors[0], again.test.tensors[0])


def test_default_cache_dir_from_env(tmp_path: Path) -> None:
    data = load_dataset("curves", n_train=4, n_test=2, image_size=16)
    assert Path(data.meta["cache_path"]).parent == tmp_path / "cache" / "curves"
    assert data.input_shape == (1, 16, 16)


@pytest.mark.parametrize(
    ("option", "value"),
    [("n_train", 1), ("n_test", -1), ("image_size", 8), ("supersample", 0), ("cache", "yes")],
)
def test_invalid_options(option: str, value: object) -> None:
    with pytest.raises(ValueError, match=option) as info:
        load_dataset("curves", **{option: value})
    assert str(value) in str(info.value)


def _roughness(img: np.ndarray) -> float:
    """Laplacian energy relative to gradient energy: larger for wiggly strokes."""
    x = img.astype(np.float64) / 255
    lap = np.abs(4 * x[1:-1, 1:-1] - x[2:, 1:-1] - x[:-2, 1:-1] - x[1:-1, 2:] - x[1:-1, :-2])
    gy, gx = np.gradient(x)
    return float(lap.sum() / np.hypot(gx, gy).sum())


def test_tremor_is_visible_but_ink_is_matched() -> None:
    # The same random draws with and without tremor give the same curve, shaky or not.
    rougher, log_ink = [], []
    for i in range(40):
        regular, fam_r = render_curve(rng_for(11, i), shaky=False)
        shaky, fam_s = render_curve(rng_for(11, i), shaky=True)
        assert fam_r == fam_s
        assert not np.array_equal(regular, shaky)
        rougher.append(_roughness(shaky) > _roughness(regular))
        log_ink.append(np.log(shaky.sum() / regular.sum()))
    assert np.mean(rougher) >= 0.75  # the tremor shows as high-frequency wiggles
    # ...but the amount of ink is about the same (no pixel-count shortcut)
    assert abs(np.mean(log_ink)) < 0.1 and np.median(np.abs(log_ink)) < 0.15


def test_class_means_of_ink_close(curves: SplitData) -> None:
    x = torch.cat([curves.train.tensors[0], curves.val.tensors[0]]).flatten(1)
    y = torch.cat([curves.train.tensors[1], curves.val.tensors[1]])
    ink = (x * curves.meta["std"][0] + curves.meta["mean"][0]).sum(1)  # back to [0, 1] pixels
    ratio = float(ink[y == 1].mean() / ink[y == 0].mean())
    assert 0.85 < ratio < 1.15
