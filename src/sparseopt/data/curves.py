"""Synthetic "regular vs shaky curves" images (binary classification, multi-scale).

After the curve-classification experiment of Xue & Xin, "Learning sparse neural networks
via ℓ0 and Tℓ1 by a relaxed variable splitting method with application to multi-scale
curve classification" (WCGO 2019, arXiv 1902.07419; see also "Convergence of a relaxed
variable splitting coarse gradient descent method...", arXiv 1901.09731): tell smooth
curves (label 0, "regular") from curves drawn with a simulated hand tremor (label 1,
"shaky"). The original images are not public; this generator is ours:

* **Curves** (``meta["family_names"]``): handwriting-like *words* (glyph outlines of short
  words from matplotlib's bundled DejaVu / STIX / Computer Modern fonts, via
  :class:`matplotlib.textpath.TextPath`, so no system fonts are needed), *Archimedean
  spirals* ``r = a + bθ``, *meanders* (Leopold–Langbein sine-generated curves, direction
  ``θ(s) = ω sin(2πs/L)``) and cursive *loops* (prolate cycloids).
* **Multi-scale**: random rotation, a random size between 40 % and 90 % of the image, a
  random position, stroke width and ink intensity.
* **Tremor** (shaky class): each polyline is resampled uniformly in arc length ``s`` and
  displaced along its normal by ``d(s) = Σ_m a_m sin(2πs/λ_m + φ_m) + smoothed noise``
  with 2–3 components, random wavelengths ``λ_m`` (2.5–8 px at 32 px, scaled with the
  image) and a random RMS amplitude (0.45–1.1 px at 32 px).
* **No pixel-count shortcut**: a tremor lengthens the stroke by a measured factor ``ρ``
  (median ≈ 1.3); a shaky curve is therefore shrunk by ``√ρ`` and drawn with a stroke
  ``√ρ`` thinner, so that its ink (length × width) has the distribution of the regular
  curves' while size and width only shift by ``√ρ`` inside their wide random ranges.
  Measured on 1 000 images (5-fold logistic regression): total ink / thresholded pixel
  counts 0.50 (chance), bounding box 0.58, radial power spectrum + roughness 0.74; a small
  4-layer CNN reaches 83 % test accuracy after 10 epochs on 3 000 images (still rising).
  Meanders and loops are the hardest families (their own wiggles resemble tremor).

Drawing uses Pillow (``ImageDraw.line`` on a canvas supersampled ``supersample`` times,
then box-filtered down: anti-aliasing). Every sample has its own
``numpy.random.Generator`` seeded by ``(seed, split, index)``, so generation is
deterministic and could be parallelised; labels are exactly balanced (a seeded
permutation of 0/1). Bit-for-bit reproducibility assumes the same numpy, Pillow and
matplotlib (glyph outlines) versions; the uint8 images are cached in
``<data_dir or $SPARSEOPT_CACHE or ~/.cache/sparseopt>/curves/`` under a hash of every
generation option, so a cached dataset never changes. Default size 32×32 (cheap to train
on a CPU; tremor and stroke sizes scale with ``image_size``); generation costs about 1 ms
per image on one core (2 000 images: a few seconds), independent of the size.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ._common import (
    RawData,
    cached_npz,
    check_bool,
    check_int,
    npz_cache_path,
    rng_for,
    shaky_raw_data,
)

__all__ = [
    "CURVES_VERSION",
    "FAMILIES",
    "WORDS",
    "curves_cache_path",
    "generate_curves",
    "load_curves",
    "render_curve",
]

#: Bump when the generator changes: it is part of the cache key.
CURVES_VERSION = 1

FAMILIES = ("word", "spiral", "meander", "loops")

#: Short words, so that the letters stay legible at 32 px.
WORDS = tuple(
    (
        "a an as at be by do go he if in is it me my no of on or so to up us we ace air all "
        "and arc art bag cat cup day dog ear egg fly fun gel hat ink joy key law man net owl "
        "pen run sun sea tea two way yes zoo blue calm draw echo fern glow hand idea jolt kite "
        "line moon note oval pure quiz rain soft tree wave zero curve shake sleek swirl"
    ).split()
)

# Bundled matplotlib fonts (italic ones look more like handwriting); missing ones are skipped.
_FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Italic.ttf",
    "STIXGeneralItalic.ttf",
    "cmti10.ttf",
    "cmr10.ttf",
)

_SPLIT_TAGS = {"train": 101, "test": 102}
_LABEL_TAGS = {"train": 201, "test": 202}


# --------------------------------------------------------------------------- base curves


@lru_cache(maxsize=1)
def _fonts() -> tuple[Any, ...]:
    import matplotlib
    from matplotlib.font_manager import FontProperties

    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    fonts = tuple(FontProperties(fname=str(ttf / f)) for f in _FONT_FILES if (ttf / f).is_file())
    return fonts or (FontProperties(family="DejaVu Sans"),)


def _unit(polys: list[np.ndarray]) -> list[np.ndarray]:
    """Centre the polylines on their bounding box and scale the longer side to 1."""
    pts = np.concatenate(polys)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    centre, extent = (lo + hi) / 2, max(float((hi - lo).max()), 1e-9)
    return [(p - centre) / extent for p in polys]


@lru_cache(maxsize=4096)
def _word_polylines(word: str, font_index: int) -> tuple[np.ndarray, ...]:
    from matplotlib.textpath import TextPath

    path = TextPath((0, 0), word, size=1.0, prop=_fonts()[font_index])
    polys = [np.asarray(p, dtype=np.float64) for p in path.to_polygons(closed_only=True)]
    polys = [p for p in polys if len(p) >= 2]
    out = _unit(polys)
    for p in out:
        p[:, 1] *= -1  # image y axis points down
        p.setflags(write=False)
    return tuple(out)


def _word(rng: np.random.Generator) -> list[np.ndarray]:
    word = WORDS[rng.integers(len(WORDS))]
    polys = _word_polylines(word, int(rng.integers(len(_fonts()))))
    return [p.copy() for p in polys]


def _spiral(rng: np.random.Generator) -> list[np.ndarray]:
    turns = rng.uniform(1.5, 3.5)
    a = rng.uniform(0.0, 0.6)  # inner radius, in units of the pitch b
    theta = np.linspace(0.0, 2 * np.pi * turns, 400)
    r = a + theta / (2 * np.pi)
    sign = rng.choice((-1.0, 1.0))
    return _unit([np.stack([r * np.cos(theta), sign * r * np.sin(theta)], axis=1)])


def _meander(rng: np.random.Generator) -> list[np.ndarray]:
    omega = np.deg2rad(rng.uniform(50, 115))  # maximum deflection angle
    bends = rng.uniform(1.5, 3.5)  # number of full wavelengths
    s = np.linspace(0.0, bends, 500)
    theta = omega * np.sin(2 * np.pi * s + rng.uniform(0, 2 * np.pi))
    ds = s[1] - s[0]
    xy = np.cumsum(np.stack([np.cos(theta), np.sin(theta)], axis=1) * ds, axis=0)
    return _unit([xy])


def _loops(rng: np.random.Generator) -> list[np.ndarray]:
    n_loops = rng.uniform(2.0, 5.0)
    c = rng.uniform(1.4, 2.6)  # > 1: the cycloid makes loops
    t = np.linspace(0.0, 2 * np.pi * n_loops, 600)
    xy = np.stack([t - c * np.sin(t), -c * np.cos(t) * rng.uniform(0.7, 1.3)], axis=1)
    return _unit([xy])


_BUILDERS = {"word": _word, "spiral": _spiral, "meander": _meander, "loops": _loops}


# --------------------------------------------------------------------------- geometry


def _resample(p: np.ndarray, spacing: float) -> tuple[np.ndarray, float]:
    """Resample a polyline at uniform arc-length ``spacing``; return points and length."""
    seg = np.linalg.norm(np.diff(p, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    length = float(s[-1])
    n = max(int(np.ceil(length / spacing)) + 1, 2)
    si = np.linspace(0.0, length, n)
    return np.stack([np.interp(si, s, p[:, 0]), np.interp(si, s, p[:, 1])], axis=1), length


def _normals(p: np.ndarray) -> np.ndarray:
    t = np.gradient(p, axis=0)
    t /= np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    return np.stack([-t[:, 1], t[:, 0]], axis=1)


class _Tremor:
    """A random displacement profile d(s) (pixels) along the arc length s (pixels)."""

    def __init__(self, rng: np.random.Generator, px: float) -> None:
        m = int(rng.integers(2, 4))
        self.wavelengths = np.exp(rng.uniform(np.log(3.5), np.log(9.0), m)) * px
        self.phases = rng.uniform(0, 2 * np.pi, m)
        weights = rng.uniform(0.3, 1.0, m)
        amplitude = rng.uniform(0.45, 1.0) * px  # RMS
        # RMS of Σ w sin(...) is sqrt(Σ w²/2)
        self.amplitudes = weights * amplitude / np.sqrt(np.sum(weights**2) / 2)
        self.noise_std = 0.15 * amplitude
        self.noise_seed = int(rng.integers(2**62))

    def __call__(self, s: np.ndarray, offset: float, index: int) -> np.ndarray:
        """Displacement at arc lengths ``s`` of polyline number ``index``."""
        arg = 2 * np.pi * (s[:, None] + offset) / self.wavelengths + self.phases
        d = (np.sin(arg) * self.amplitudes).sum(axis=1)
        noise = np.random.default_rng([self.noise_seed, index]).standard_normal(len(s) + 2)
        return d + self.noise_std * np.convolve(noise, np.ones(3) / np.sqrt(3), mode="valid")


def _shake(polys: list[np.ndarray], tremor: _Tremor, spacing: float) -> tuple[list, float]:
    out, total = [], 0.0
    offset = 0.0
    for index, p in enumerate(polys):
        q, length = _resample(p, spacing)
        s = np.linspace(0.0, length, len(q))
        q = q + _normals(q) * tremor(s, offset, index)[:, None]
        out.append(q)
        total += float(np.linalg.norm(np.diff(q, axis=0), axis=1).sum())
        offset += length + 17.0  # decorrelate the contours of a word a little
    return out, total


def render_curve(
    rng: np.random.Generator,
    shaky: bool,
    image_size: int = 32,
    supersample: int = 4,
    family: int | None = None,
) -> tuple[np.ndarray, int]:
    """Draw one regular or shaky curve; return ``(uint8 image (H, W), family index)``.

    Args:
        rng: the sample's generator (all randomness comes from it).
        shaky: add the simulated tremor.
        image_size: side of the square image in pixels.
        supersample: drawing resolution factor (anti-aliasing).
        family: force a curve family (index into :data:`FAMILIES`), else random.

    Example:
        >>> import numpy as np
        >>> img, fam = render_curve(np.random.default_rng(0), shaky=True)
        >>> img.shape, img.dtype, bool(img.max() > 0)
        ((32, 32), dtype('uint8'), True)
    """
    from PIL import Image, ImageDraw

    size = image_size
    px = size / 32.0  # tremor and stroke sizes scale with the image
    fam = int(rng.integers(len(FAMILIES))) if family is None else int(family)
    polys = _BUILDERS[FAMILIES[fam]](rng)
    angle = rng.uniform(-0.45, 0.45) if FAMILIES[fam] == "word" else rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    polys = [p @ rot.T for p in polys]
    pts = np.concatenate(polys)
    extent = float((pts.max(axis=0) - pts.min(axis=0)).max())
    low = 0.6 if FAMILIES[fam] == "word" else 0.4  # keep the letters legible
    scale = rng.uniform(low, 0.9) * size / max(extent, 1e-9)
    polys = [p * scale for p in polys]
    width = rng.uniform(1.0, 2.0) * px
    intensity = round(rng.uniform(0.6, 1.0) * 255)
    spacing = 0.35 * px
    tremor = _Tremor(rng, px)  # drawn for both classes: same random stream layout
    if shaky:
        base_len = sum(_resample(p, spacing)[1] for p in polys)
        _, shaken_len = _shake(polys, tremor, spacing)
        # The tremor lengthens the stroke by rho; compensate half in size and half in
        # stroke width so that the ink (length x width) keeps the regular distribution.
        comp = np.sqrt(shaken_len / max(base_len, 1e-9))
        polys, _ = _shake([p / comp for p in polys], tremor, spacing)
        width /= comp
    else:
        polys = [_resample(p, spacing)[0] for p in polys]
    pts = np.concatenate(polys)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    margin = width / 2 + 0.5
    room = size - 2 * margin - (hi - lo)
    if np.any(room < 0):  # only with extreme tremor: shrink to fit
        shrink = float(((size - 2 * margin) / (hi - lo)).min())
        polys = [(p - lo) * shrink + lo for p in polys]
        hi = lo + (hi - lo) * shrink
        room = np.maximum(size - 2 * margin - (hi - lo), 0.0)
    shift = margin - lo + rng.uniform(0.0, 1.0, 2) * room

    ss = supersample
    canvas = Image.new("L", (size * ss, size * ss), 0)
    draw = ImageDraw.Draw(canvas)
    line_width = max(1, round(width * ss))
    r = line_width / 2
    for p in polys:
        q = (p + shift) * ss
        draw.line(q.ravel().tolist(), fill=intensity, width=line_width)
        for x, y in (q[0], q[-1]):  # round caps
            draw.ellipse((x - r, y - r, x + r, y + r), fill=intensity)
    if ss > 1:
        canvas = canvas.reduce(ss)
    return np.asarray(canvas, dtype=np.uint8), fam


# --------------------------------------------------------------------------- datasets


def _balanced_labels(n: int, seed: int, split: str) -> np.ndarray:
    labels = np.arange(n, dtype=np.int64) % 2
    return labels[rng_for(seed, _LABEL_TAGS[split]).permutation(n)]


def generate_curves(
    n: int, *, seed: int = 0, split: str = "train", image_size: int = 32, supersample: int = 4
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generate ``n`` images: ``(uint8 (n, 1, S, S), labels int64, families int64)``.

    Sample ``i`` uses ``numpy.random.default_rng(SeedSequence([seed, tag(split), i]))``,
    so any subset of indices can be generated independently (e.g. in parallel).
    """
    labels = _balanced_labels(n, seed, split)
    images = np.empty((n, 1, image_size, image_size), dtype=np.uint8)
    families = np.empty(n, dtype=np.int64)
    tag = _SPLIT_TAGS[split]
    for i in range(n):
        images[i, 0], families[i] = render_curve(
            rng_for(seed, tag, i), bool(labels[i]), image_size, supersample
        )
    return images, labels, families


def curves_cache_path(data_dir: str | os.PathLike[str] | None, options: dict[str, Any]) -> Path:
    """The cache file for these generation options."""
    return npz_cache_path(data_dir, "curves", CURVES_VERSION, options)


_ARRAYS = ("x_train", "y_train", "f_train", "x_test", "y_test", "f_test")


def load_curves(
    *,
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    n_train: int = 2000,
    n_test: int = 1000,
    image_size: int = 32,
    supersample: int = 4,
    normalize: bool = True,
    cache: bool = True,
) -> RawData:
    """Regular (0) vs shaky (1) curve images, ``(N, 1, S, S)``; see the module docstring.

    Args:
        data_dir: cache directory root (default ``$SPARSEOPT_CACHE`` or ``~/.cache/sparseopt``).
        seed: seeds every image and the label order.
        n_train: training images (validation included), at least 2.
        n_test: test images.
        image_size: side in pixels (>= 16; default 32).
        supersample: anti-aliasing factor (1 = none).
        normalize: scale to [0, 1] and standardise with the training part's mean/std.
        cache: read/write the ``.npz`` cache.

    Returns:
        ``meta`` has ``family_names``, per-split ``family`` indices (after the split),
        ``cache_path`` and ``from_cache``.
    """
    seed = check_int("seed", seed, 0)
    n_train = check_int("n_train", n_train, 2)
    n_test = check_int("n_test", n_test, 0)
    image_size = check_int("image_size", image_size, 16)
    supersample = check_int("supersample", supersample, 1)
    if supersample > 16:
        raise ValueError(f"Invalid supersample value: {supersample} (must be <= 16)")
    normalize = check_bool("normalize", normalize)
    cache = check_bool("cache", cache)
    options = {
        "seed": seed,
        "n_train": n_train,
        "n_test": n_test,
        "image_size": image_size,
        "supersample": supersample,
    }
    path = curves_cache_path(data_dir, options)

    def generate() -> tuple[np.ndarray, ...]:
        train = generate_curves(
            n_train, seed=seed, split="train", image_size=image_size, supersample=supersample
        )
        test = generate_curves(
            n_test, seed=seed, split="test", image_size=image_size, supersample=supersample
        )
        return (*train, *test)

    arrays, from_cache = cached_npz(path, _ARRAYS, cache, generate)
    meta = {
        "family_names": FAMILIES,
        "options": options,
        "cache_path": str(path) if cache else None,
        "from_cache": from_cache,
        "version": CURVES_VERSION,
        "source": "synthetic, after Xue & Xin arXiv 1902.07419",
    }
    return shaky_raw_data(
        arrays,
        normalize,
        meta,
        aux_train={"family": arrays["f_train"].astype(np.int64)},
        aux_test={"family": arrays["f_test"].astype(np.int64)},
    )
