"""Words regular vs trembling: determinism, balance, word/font splits, plain rendering, and
no single global image statistic (ink, dark pixels, bounding box) tells the classes apart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sparseopt.data import SplitData, load_dataset
from sparseopt.data._common import rng_for
from sparseopt.data.words import (
    FONTS,
    WORDS,
    Tremor,
    font_path,
    generate_words,
    load_words,
    render_shaky,
    render_word,
    sample_scene,
)

SMALL = {"n_train": 40, "n_test": 20}


@pytest.fixture(autouse=True)
def _cache_in_tmp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SPARSEOPT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def words(tmp_path_factory: pytest.TempPathFactory) -> SplitData:
    d = tmp_path_factory.mktemp("words")
    return load_dataset(
        "words", data_dir=d, n_train=800, n_test=400, val_fraction=0.2, normalize=False
    )


PARTS = ("train", "val", "test")


def test_shapes_and_balance(words: SplitData) -> None:
    assert words.input_shape == (1, 32, 64)
    assert words.num_classes == 2 and words.task == "classification"
    assert (len(words.train), len(words.val), len(words.test)) == (640, 160, 400)
    for part, n in (("train", 640), ("val", 160), ("test", 400)):
        y = getattr(words, part).tensors[1]
        assert y.dtype == torch.int64
        assert torch.bincount(y).tolist() == [n // 2, n // 2]
        # each word is drawn equally often in both classes (within one of each other)
        w = words.meta["word"][part]
        for word in w.unique():
            counts = torch.bincount(y[w == word], minlength=2)
            assert abs(int(counts[0]) - int(counts[1])) <= 1


def test_no_word_in_two_splits(words: SplitData) -> None:
    seen = {p: set(words.meta["word"][p].tolist()) for p in PARTS}
    assert seen["train"] and seen["val"] and seen["test"]
    assert not seen["train"] & seen["val"]
    assert not seen["train"] & seen["test"]
    assert not seen["val"] & seen["test"]
    listed = {p: {WORDS.index(w) for w in words.meta["words"][p]} for p in PARTS}
    for p in PARTS:
        assert seen[p] <= listed[p]


def test_unseen_font_split(tmp_path: Path) -> None:
    data = load_dataset("words", data_dir=tmp_path, test_fonts="STIX, cmr10", **SMALL)
    stix = {i for i, (family, file) in enumerate(FONTS) if family == "STIX" or file == "cmr10.ttf"}
    assert set(data.meta["font"]["test"].tolist()) <= stix
    for part in ("train", "val"):
        assert not set(data.meta["font"][part].tolist()) & stix
    with pytest.raises(ValueError, match="test_fonts"):
        load_dataset("words", data_dir=tmp_path, test_fonts="Comic Sans", **SMALL)


def test_deterministic_and_cached(tmp_path: Path) -> None:
    first = load_dataset("words", data_dir=tmp_path, seed=3, **SMALL)
    assert first.meta["from_cache"] is False
    assert Path(first.meta["cache_path"]).parent == tmp_path / "words"
    second = load_dataset("words", data_dir=tmp_path, seed=3, **SMALL)
    fresh = load_dataset("words", data_dir=tmp_path, seed=3, cache=False, **SMALL)
    assert second.meta["from_cache"] is True and fresh.meta["from_cache"] is False
    for other in (second, fresh):
        for part in PARTS:
            for a, b in zip(
                getattr(first, part).tensors, getattr(other, part).tensors, strict=True
            ):
                assert torch.equal(a, b)
    other_seed = load_dataset("words", data_dir=tmp_path, seed=4, **SMALL)
    assert not torch.equal(other_seed.test.tensors[0], first.test.tensors[0])


def test_tremor_free_image_is_the_plain_rendering() -> None:
    # generate_words: sample j has label j % 2 and draws its scene from (seed, part, j)
    images, labels, word_ids, _ = generate_words(4, ("hand", "wave"), (0, 8), seed=7)
    for j in range(4):
        rng = rng_for(7, 301, j)  # the "train" part's tag
        word = ("hand", "wave")[(j // 2) % 2]
        font = (0, 8)[int(rng.integers(2))]
        scene, x_height = sample_scene(rng, word, font, 32, 64)
        tremor = Tremor.sample(rng, x_height)
        k = int(np.flatnonzero((word_ids == WORDS.index(word)) & (labels == j % 2))[0])
        plain = render_word(scene)
        np.testing.assert_array_equal(render_word(scene, tremor=tremor.scaled(0.0)), plain)
        if j % 2 == 0:
            np.testing.assert_array_equal(images[k, 0], plain)
        else:
            shaky, used = render_shaky(scene, tremor)
            np.testing.assert_array_equal(images[k, 0], shaky)
            np.testing.assert_array_equal(images[k, 0], render_word(used, tremor=tremor))
            assert used.word == scene.word and used.size <= scene.size
            assert not np.array_equal(images[k, 0], plain)  # the tremor shows


def test_plain_rendering_is_pillow_text() -> None:
    from PIL import Image, ImageDraw, ImageFont

    scene, _ = sample_scene(np.random.default_rng(0), "quiz", 4, 32, 64)
    font = ImageFont.truetype(str(font_path(4)), round(scene.size * 4))
    left, top, _, _ = font.getbbox("quiz")
    canvas = Image.new("L", (256, 128), 0)
    ImageDraw.Draw(canvas).text(
        (scene.x * 4 - left, scene.y * 4 - top), "quiz", font=font, fill=scene.intensity
    )
    np.testing.assert_array_equal(render_word(scene), np.asarray(canvas.reduce(4)))


def _stats(x: np.ndarray) -> dict[str, np.ndarray]:
    """Single global statistics of images ``(N, H, W)`` in [0, 1]."""
    ink = x > 0.25

    def extent(mask: np.ndarray) -> np.ndarray:
        first = mask.argmax(axis=1)
        last = mask.shape[1] - 1 - mask[:, ::-1].argmax(axis=1)
        return np.where(mask.any(axis=1), last - first + 1, 0)

    return {
        "ink mass": x.sum(axis=(1, 2)),
        "dark pixels": ink.sum(axis=(1, 2)),
        "mean intensity of the ink": x.sum(axis=(1, 2)) / np.maximum(ink.sum(axis=(1, 2)), 1),
        "bounding-box width": extent(ink.any(axis=1)),
        "bounding-box height": extent(ink.any(axis=2)),
    }


def _best_threshold(a: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The threshold and sign of the best one-statistic classifier ``sign·a > t``."""
    best = (-1.0, 0.0, 1.0)
    for t in np.unique(a):
        for sign in (1.0, -1.0):
            acc = float(((sign * a > sign * t) == y).mean())
            best = max(best, (acc, float(t), sign))
    return best[1], best[2]


def test_global_statistics_are_near_chance(words: SplitData) -> None:
    xtr, ytr = (t.numpy() for t in words.train.tensors)
    xte, yte = (t.numpy() for t in words.test.tensors)
    train, test = _stats(xtr[:, 0]), _stats(xte[:, 0])
    for name in train:
        t, sign = _best_threshold(train[name], ytr)
        acc = float(((sign * test[name] > sign * t) == yte).mean())
        assert acc < 0.6, f"{name} separates the classes: {acc:.3f}"


def test_options_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="height"):
        load_dataset("words", data_dir=tmp_path, height=8)
    with pytest.raises(ValueError, match="Unknown option"):
        load_dataset("words", data_dir=tmp_path, image_size=32)
    with pytest.raises(ValueError, match="no training font"):
        load_words(test_fonts=",".join(sorted({f for f, _ in FONTS})), cache=False)
