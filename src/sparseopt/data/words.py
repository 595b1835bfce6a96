"""Words rendered in fonts, regular against trembling (binary classification, multi-scale).

The curve data of Xue & Xin, "Learning sparse neural networks via ℓ0 and Tℓ1 by a relaxed
variable splitting method with application to multi-scale curve classification" (WCGO
2019, arXiv 1902.07419), were texts written in different fonts (label 0, "regular") and
words written with trembling hands simulating Parkinson's patients (label 1, "shaky"), at
several scales. Those images are not public; this generator is ours:

* **Words**: :data:`WORDS` (lowercase English words of 3 to 6 letters), rendered by
  Pillow from matplotlib's bundled TrueType fonts (:data:`FONTS`: DejaVu Sans, Sans Mono
  and Serif, STIX and Computer Modern faces, found under ``matplotlib.get_data_path()``,
  so no system font is needed).
* **Multi-scale**: the x-height (the height of a lowercase "x") is drawn between 25 % and
  42 % of the image height (:data:`X_HEIGHT_FRACTION`; words too wide are shrunk to fit
  inside a 10 % margin); random position, ink intensity 0.6–1.0. Images are 32×64 by
  default (``height``, ``width``).
* **Tremor** (:class:`Tremor`): the rendered word is warped by a smooth displacement
  field ``D(p) = Σ_m a_m u_m sin(k_m · p + φ_m)`` of four transverse plane waves
  (``u_m ⟂ k_m``): two travel along the line of writing (they shake the pen across it),
  two across it, directions jittered. A pen moving at speed ``v`` with a tremor of
  frequency ``f`` draws a wave of wavelength ``λ = v / f`` along its stroke, so
  ``|k_m| = 2π f_m / v``. Parameters, in physical units at a nominal x-height of
  :data:`X_HEIGHT_MM` = 2.5 mm (handwriting's), drawn uniformly from:

  ========================  =================  ==========================================
  tremor frequency ``f``    5–7 Hz             Parkinsonian rest tremor 4–6 Hz, postural
                                               and essential tremor 4–12 Hz (Deuschl,
                                               Bain & Brin, Mov. Disord. 13 S3, 1998)
  each wave's frequency     ``f``·(0.9–1.1)    narrow band (the waves beat)
  pen speed ``v``           10–16 mm/s         slow writing (bradykinesia)
  wavelength ``λ = v/f``    1.3–3.6 mm         0.5–1.4 x-heights
  RMS displacement          0.45–0.7 mm        drawn, then capped (see below)
  ========================  =================  ==========================================

  (:data:`TREMOR_HZ`, :data:`PEN_SPEED_MM_S`, :data:`TREMOR_RMS_MM`). The amplitudes are
  scaled down where the shear strain ``Σ 2π a_m / λ_m`` of a pair would exceed
  :data:`MAX_STRAIN` = 0.9: a pair of shears ``(x + h(y), y + g(x))`` stays one-to-one
  while ``g' h' < 1`` (up to the ±10° jitter), so strokes shake but do not fold. With
  these ranges the cap always binds, so the displacement is set by the wavelength: RMS
  0.58–1.25 px (5–95 %, median 0.87 px) at 32 px high, about 0.15–0.3 mm at the nominal
  x-height. The field is evaluated on the supersampled canvas and applied by bilinear
  resampling, ``I'(q) = I(q − D(q))``.
* **No ink or size shortcut**: transverse waves are shears, which keep the ink area; a
  tremor does push a word's extreme points outwards, which :func:`render_shaky` offsets
  by shrinking the shaky word part of the way towards the plain word's box height. Both
  classes draw every random number in the same order (the tremor is drawn and discarded
  for regular samples) and each word is rendered equally often in each class. Measured
  on 1 800 train / 1 000 test images (best single threshold fitted on train, accuracy on
  test; chance 0.5): ink mass 0.521, pixels above 0.3 0.533, bounding-box height 0.541
  and width 0.521, ink energy Σx² 0.531 (``tests/data/test_words.py`` checks < 0.6).
  Examples: ``docs/figures/exp5_words_examples.png``.
* **Splits**: the words are partitioned (seeded) into train, validation and test words
  in proportion to the sample counts, so no word is in two splits; with ``test_fonts``
  the named fonts are used only for the test part (generalisation to an unseen font).
  :func:`load_words` places the validation words where :func:`sparseopt.data._common.finalize`
  carves the validation part (:func:`~sparseopt.data.load_dataset` gives it ``val_fraction``).

Every sample has its own ``numpy.random.Generator`` seeded by ``(seed, part, index)``;
the uint8 images are cached in ``<data_dir or $SPARSEOPT_CACHE or ~/.cache/sparseopt>/words/``
under a hash of every generation option. Generation costs about 1 ms per 32×64 image on
one core (3 000 images: a few seconds). Bit-for-bit reproducibility assumes the same
numpy, Pillow (FreeType) and matplotlib (font files) versions.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ._common import (
    TAG_VAL_SPLIT,
    RawData,
    cached_npz,
    check_bool,
    check_fraction,
    check_int,
    npz_cache_path,
    rng_for,
    shaky_raw_data,
    split_count,
)
from ._glyphs import (
    FONTS,
    X_HEIGHT_MM,
    Scene,
    Tremor,
    _fonts_matching,
    font_path,
    render_shaky,
    render_word,
    sample_scene,
)

__all__ = [
    "FONTS",
    "WORDS",
    "WORDS_VERSION",
    "X_HEIGHT_MM",
    "Scene",
    "Tremor",
    "font_path",
    "generate_words",
    "load_words",
    "render_shaky",
    "render_word",
    "sample_scene",
    "words_cache_path",
]

#: Bump when the generator changes: it is part of the cache key.
WORDS_VERSION = 2

#: The word list (our own choice: common lowercase words of 3 to 6 letters).
WORDS = tuple(
    (
        "able acid aged also area army away baby back ball band bank base bath bear beat "
        "bell belt best bird blow blue boat body bone book born both bowl burn busy cake "
        "call calm camp card care case cash cell chin city clay club coal coat code cold "
        "cook cool copy corn cost crew crop dark data dawn deal deep desk diet dish door "
        "down draw drop drum duck dust duty earn east easy edge else even ever face fact "
        "fair fall farm fast fear feel fern file fill film find fine fire firm fish five "
        "flag flat flow folk food foot form four free frog fuel full game gate gift girl "
        "glad glow goal gold golf good gray grow hair half hall hand hard harm head hear "
        "heat help herb hero hide high hill hold hole home hope horn host hour huge idea "
        "inch iron item jazz join joke jump just keen keep kind king kite knee know lake "
        "lamp land lane last late lawn lead leaf lean left lend life lift like line link "
        "lion list live load loan lock long look loud love luck mail main make many mark "
        "meal meet milk mind mint miss mode moon more most move much name near neck need "
        "nest news next nice nine none noon nose note open oven pace pack page pain pair "
        "park part pass past path peak pear pick pile pine pink plan play plum poem pole "
        "pond pool poor port pure push quiz race rain rank rare read real rest rice rich "
        "ride ring rise road rock role roof room root rope rose rule safe sail salt sand "
        "seed seen self ship shoe shop shot side sign silk sing site size skin slow snow "
        "soap sock soft soil song soon sort soup spin star stay step stem stop suit swim "
        "tail tale talk tall task team tell tent term test text than tide tile time tiny "
        "tone tool tour town tree trip true tune turn twin type unit upon used vast verb "
        "very view vote wage wait wake walk wall warm wave week well west wide wild wind "
        "wine wing wire wise wish wolf wood wool word work yard year zero zone "
        "ant arc art bag bee cat cup day dog ear egg elm fox fun hat ink ivy jam jar joy "
        "key law man net oak owl pen run sea sun tea toy van web yes zoo "
        "apple bread chair cloud dream earth field grape green happy house juice light "
        "money music night ocean paper plant quiet river sheep smile stone sugar table "
        "tiger train water whale white world young zebra animal bridge castle circle "
        "flower forest garden letter little orange pencil planet rabbit silver spring "
        "summer window winter yellow"
    ).split()
)

_PART_TAGS = {"train": 301, "val": 302, "test": 303}
_TAG_WORDS, _TAG_ORDER = 311, 312


# --------------------------------------------------------------------------- datasets


def _word_parts(seed: int, counts: dict[str, int]) -> dict[str, tuple[str, ...]]:
    """Partition :data:`WORDS` (seeded) into parts in proportion to ``counts``.

    Every part with samples gets at least one word; the training part gets the rest.
    """
    words = [WORDS[i] for i in rng_for(seed, _TAG_WORDS).permutation(len(WORDS))]
    total = sum(counts.values())
    out: dict[str, tuple[str, ...]] = {}
    start = 0
    for part in ("test", "val"):
        k = max(round(len(words) * counts[part] / total), 1) if counts[part] else 0
        out[part] = tuple(words[start : start + k])
        start += k
    out["train"] = tuple(words[start:])
    return out


def generate_words(
    n: int,
    words: tuple[str, ...],
    fonts: tuple[int, ...],
    *,
    seed: int = 0,
    part: str = "train",
    height: int = 32,
    width: int = 64,
    supersample: int = 4,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``n`` images of ``words`` in ``fonts``: ``(uint8 (n, 1, H, W), labels, word, font)``.

    Sample ``j`` (before the final seeded shuffle) is word ``words[(j // 2) % len(words)]``
    with label ``j % 2``, so the classes and the words within each class are balanced; its
    font, size, position, ink and tremor come from
    ``numpy.random.default_rng(SeedSequence([seed, tag(part), j]))`` (the tremor is drawn
    for both classes and applied to label 1). ``word`` holds indices into :data:`WORDS`,
    ``font`` into :data:`FONTS`.
    """
    tag = _PART_TAGS[part]
    order = rng_for(seed, tag, _TAG_ORDER).permutation(n)
    images = np.empty((n, 1, height, width), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    word_ids = np.empty(n, dtype=np.int64)
    font_ids = np.empty(n, dtype=np.int64)
    index = {w: i for i, w in enumerate(WORDS)}
    for j in range(n):
        rng = rng_for(seed, tag, j)
        word = words[(j // 2) % len(words)]
        font = fonts[int(rng.integers(len(fonts)))]
        scene, x_height = sample_scene(rng, word, font, height, width)
        tremor = Tremor.sample(rng, x_height)
        shaky = j % 2 == 1
        k = order[j]
        if shaky:
            images[k, 0] = render_shaky(scene, tremor, height, width, supersample)[0]
        else:
            images[k, 0] = render_word(scene, height, width, None, supersample)
        labels[k], word_ids[k], font_ids[k] = int(shaky), index[word], font
    return images, labels, word_ids, font_ids


def words_cache_path(data_dir: str | os.PathLike[str] | None, options: dict[str, Any]) -> Path:
    """The cache file for these generation options."""
    return npz_cache_path(data_dir, "words", WORDS_VERSION, options)


_ARRAYS = tuple(f"{a}_{p}" for p in ("train", "test") for a in ("x", "y", "word", "font"))


def load_words(
    *,
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    n_train: int = 4000,
    n_test: int = 2000,
    height: int = 32,
    width: int = 64,
    supersample: int = 4,
    test_fonts: str | None = None,
    normalize: bool = True,
    cache: bool = True,
) -> RawData:
    """Regular (0) vs shaky (1) words, ``(N, 1, height, width)``; see the module docstring.

    Args:
        data_dir: cache directory root (default ``$SPARSEOPT_CACHE`` or ``~/.cache/sparseopt``).
        seed: seeds the word partition, every image and the sample order.
        val_fraction: the validation share that :func:`~sparseopt.data.load_dataset` will
            carve out of the training part (passed by it): the validation words are put
            exactly where that split falls, so validation words are never trained on.
        n_train: training images (validation included), at least 4.
        n_test: test images.
        height: image height in pixels (>= 16).
        width: image width in pixels (>= 16).
        supersample: anti-aliasing factor (1 = none, at most 8).
        test_fonts: fonts held out for the test part (comma-separated families such as
            ``"STIX"`` or file stems such as ``"cmr10"``); ``None``: every font everywhere.
        normalize: scale to [0, 1] and standardise with the training part's mean/std.
        cache: read/write the ``.npz`` cache.

    Returns:
        ``meta`` has ``words`` (the words of each part), ``fonts`` (the font files of
        each part), per-sample ``word`` and ``font`` indices after the split
        (into :data:`WORDS` / :data:`FONTS`), ``cache_path`` and ``from_cache``.

    Example:
        >>> raw = load_words(n_train=8, n_test=4, val_fraction=0.25, cache=False)
        >>> raw.x_train.shape, raw.y_train.tolist().count(1)
        ((8, 1, 32, 64), 4)
    """
    seed = check_int("seed", seed, 0)
    val_fraction = check_fraction("val_fraction", val_fraction)
    n_train = check_int("n_train", n_train, 4)
    n_test = check_int("n_test", n_test, 0)
    height = check_int("height", height, 16)
    width = check_int("width", width, 16)
    supersample = check_int("supersample", supersample, 1)
    if supersample > 8:
        raise ValueError(f"Invalid supersample value: {supersample} (must be <= 8)")
    if test_fonts is not None and not isinstance(test_fonts, str):
        raise ValueError(f"Invalid test_fonts value: {test_fonts!r} (expected names)")
    held_out = _fonts_matching(test_fonts) if test_fonts else ()
    kept = tuple(i for i in range(len(FONTS)) if i not in held_out)
    fonts = {"train": kept, "val": kept, "test": held_out or kept}
    if not kept:
        raise ValueError(f"Invalid test_fonts value: {test_fonts!r} (leaves no training font)")
    normalize = check_bool("normalize", normalize)
    cache = check_bool("cache", cache)
    n_val = split_count(n_train, val_fraction)
    options = {
        "seed": seed,
        "n_train": n_train,
        "n_val": n_val,
        "n_test": n_test,
        "height": height,
        "width": width,
        "supersample": supersample,
        "test_fonts": sorted(held_out),
    }
    parts = _word_parts(seed, {"train": n_train - n_val, "val": n_val, "test": n_test})
    path = words_cache_path(data_dir, options)

    def generate() -> tuple[np.ndarray, ...]:
        kw = {"seed": seed, "height": height, "width": width, "supersample": supersample}
        # finalize() takes the first n_val entries of this permutation as validation.
        is_val = np.zeros(n_train, dtype=bool)
        is_val[rng_for(seed, TAG_VAL_SPLIT).permutation(n_train)[:n_val]] = True
        pool = [np.empty((n_train, *a.shape[1:]), a.dtype) for a in _empty(height, width)]
        for part, mask in (("train", ~is_val), ("val", is_val)):
            if mask.any():
                made = generate_words(int(mask.sum()), parts[part], fonts[part], part=part, **kw)
                for dst, src in zip(pool, made, strict=True):
                    dst[mask] = src
        test = generate_words(n_test, parts["test"], fonts["test"], part="test", **kw)
        return (*pool, *test)

    arrays, from_cache = cached_npz(path, _ARRAYS, cache, generate)
    meta = {
        "words": parts,
        "fonts": {p: tuple(FONTS[i][1] for i in f) for p, f in fonts.items()},
        "options": options,
        "cache_path": str(path) if cache else None,
        "from_cache": from_cache,
        "version": WORDS_VERSION,
        "source": "fonts rendered with a simulated tremor, after Xue & Xin arXiv 1902.07419",
    }
    return shaky_raw_data(
        arrays,
        normalize,
        meta,
        aux_train={"word": arrays["word_train"], "font": arrays["font_train"]},
        aux_test={"word": arrays["word_test"], "font": arrays["font_test"]},
    )


def _empty(height: int, width: int) -> tuple[np.ndarray, ...]:
    """Zero-length arrays with the dtypes and trailing shapes of :func:`generate_words`."""
    return (
        np.empty((0, 1, height, width), np.uint8),
        np.empty(0, np.int64),
        np.empty(0, np.int64),
        np.empty(0, np.int64),
    )
