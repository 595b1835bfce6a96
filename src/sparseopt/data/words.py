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
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ._common import (
    TAG_VAL_SPLIT,
    RawData,
    check_bool,
    check_fraction,
    check_int,
    normalize_images,
    npz_cache_path,
    read_npz_cache,
    rng_for,
    split_count,
    write_npz_cache,
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

#: Nominal x-height of handwriting (mm): converts the tremor's physical units to pixels.
X_HEIGHT_MM = 2.5

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

#: (family, file name) of the fonts used, all shipped with matplotlib.
FONTS: tuple[tuple[str, str], ...] = (
    ("DejaVu Sans", "DejaVuSans.ttf"),
    ("DejaVu Sans", "DejaVuSans-Bold.ttf"),
    ("DejaVu Sans", "DejaVuSans-Oblique.ttf"),
    ("DejaVu Sans", "DejaVuSans-BoldOblique.ttf"),
    ("DejaVu Sans Mono", "DejaVuSansMono.ttf"),
    ("DejaVu Sans Mono", "DejaVuSansMono-Bold.ttf"),
    ("DejaVu Sans Mono", "DejaVuSansMono-Oblique.ttf"),
    ("DejaVu Sans Mono", "DejaVuSansMono-BoldOblique.ttf"),
    ("DejaVu Serif", "DejaVuSerif.ttf"),
    ("DejaVu Serif", "DejaVuSerif-Bold.ttf"),
    ("DejaVu Serif", "DejaVuSerif-Italic.ttf"),
    ("DejaVu Serif", "DejaVuSerif-BoldItalic.ttf"),
    ("STIX", "STIXGeneral.ttf"),
    ("STIX", "STIXGeneralBol.ttf"),
    ("STIX", "STIXGeneralItalic.ttf"),
    ("STIX", "STIXGeneralBolIta.ttf"),
    ("Computer Modern", "cmr10.ttf"),
    ("Computer Modern", "cmb10.ttf"),
    ("Computer Modern", "cmss10.ttf"),
    ("Computer Modern", "cmtt10.ttf"),
    ("Computer Modern", "cmti10.ttf"),
)

#: Tremor frequency (Hz), pen speed (mm/s), RMS displacement (mm): ranges of the uniform
#: draws (see :meth:`Tremor.sample`).
TREMOR_HZ = (5.0, 7.0)
PEN_SPEED_MM_S = (10.0, 16.0)
TREMOR_RMS_MM = (0.45, 0.7)
#: Largest strain ``Σ 2π a / λ`` of the waves along one direction.
MAX_STRAIN = 0.9
#: x-height range as a fraction of the image height (multi-scale).
X_HEIGHT_FRACTION = (0.25, 0.42)

_PART_TAGS = {"train": 301, "val": 302, "test": 303}
_TAG_WORDS, _TAG_ORDER = 311, 312
_REF_SIZE = 100  # font size at which the x-height is measured


# --------------------------------------------------------------------------- fonts


def font_path(index: int) -> Path:
    """The TrueType file of ``FONTS[index]`` in matplotlib's data directory."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / FONTS[index][1]


@cache
def _x_height_per_size(index: int) -> float:
    """x-height in pixels per pixel of font size (the fonts differ: CM is small)."""
    from PIL import ImageFont

    _, top, _, bottom = ImageFont.truetype(str(font_path(index)), _REF_SIZE).getbbox("x")
    return (bottom - top) / _REF_SIZE


@lru_cache(maxsize=256)
def _font(index: int, size: int) -> Any:
    from PIL import ImageFont

    return ImageFont.truetype(str(font_path(index)), size)


def _fonts_matching(names: str) -> tuple[int, ...]:
    """Indices of the fonts named (family or file stem, comma-separated, case-insensitive)."""
    wanted = {n.strip().lower() for n in names.split(",") if n.strip()}
    found = {
        i
        for i, (family, file) in enumerate(FONTS)
        if family.lower() in wanted or Path(file).stem.lower() in wanted
    }
    unknown = wanted - {f.lower() for f, _ in FONTS} - {Path(f).stem.lower() for _, f in FONTS}
    if unknown or not found:
        valid = sorted({f for f, _ in FONTS} | {Path(f).stem for _, f in FONTS})
        raise ValueError(f"Invalid test_fonts value: {names!r}; valid names: {', '.join(valid)}")
    return tuple(sorted(found))


# --------------------------------------------------------------------------- tremor


@dataclass(frozen=True)
class Tremor:
    """A smooth displacement field, the sum of transverse plane waves (pixels).

    ``D(p) = Σ_m amplitudes[m] · (−sin θ_m, cos θ_m) · sin(k_m · p + phases[m])`` with
    ``k_m = (2π / wavelengths[m]) · (cos θ_m, sin θ_m)``; the displacement is
    perpendicular to ``k_m``, so ``div D = 0`` (area-preserving to first order).

    Attributes:
        wavelengths: ``λ_m`` in output pixels.
        angles: ``θ_m``, the directions of the wave vectors.
        phases: ``φ_m``.
        amplitudes: ``a_m`` in output pixels (RMS of ``|D|`` is ``sqrt(Σ a_m² / 2)``).
    """

    wavelengths: tuple[float, ...]
    angles: tuple[float, ...]
    phases: tuple[float, ...]
    amplitudes: tuple[float, ...]

    @classmethod
    def sample(cls, rng: np.random.Generator, x_height: float) -> Tremor:
        """Draw the physiological parameters of the module docstring for an x-height (px).

        Four waves: two travel along the writing direction ``θ0 ~ U(−15°, 15°)`` (they
        shake the pen across the line), two perpendicular to it (along the line), each
        direction jittered by ``U(−10°, 10°)``; amplitudes are scaled down if the strain
        ``Σ 2π a_m / λ_m`` of either pair exceeds :data:`MAX_STRAIN`.
        """
        px_per_mm = x_height / X_HEIGHT_MM
        freq = rng.uniform(*TREMOR_HZ)
        speed = rng.uniform(*PEN_SPEED_MM_S)
        rms = rng.uniform(*TREMOR_RMS_MM) * px_per_mm
        wavelengths = speed / (freq * rng.uniform(0.9, 1.1, 4)) * px_per_mm
        theta0 = rng.uniform(-np.pi / 12, np.pi / 12)
        angles = theta0 + np.array([0.0, 0.0, np.pi / 2, np.pi / 2])
        angles += rng.uniform(-np.pi / 18, np.pi / 18, 4)
        phases = rng.uniform(0.0, 2 * np.pi, 4)
        weights = rng.uniform(0.5, 1.0, 4)
        amplitudes = weights * rms / np.sqrt(np.sum(weights**2) / 2)
        strain = 2 * np.pi * amplitudes / wavelengths
        worst = max(strain[:2].sum(), strain[2:].sum())
        if worst > MAX_STRAIN:  # stroke shapes wave but never fold
            amplitudes *= MAX_STRAIN / worst
        return cls(
            tuple(map(float, wavelengths)),
            tuple(map(float, angles)),
            tuple(map(float, phases)),
            tuple(map(float, amplitudes)),
        )

    def scaled(self, factor: float) -> Tremor:
        """The same tremor with every amplitude multiplied by ``factor``."""
        return Tremor(
            self.wavelengths, self.angles, self.phases, tuple(a * factor for a in self.amplitudes)
        )

    def displacement(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``D`` on the grid ``x[None, :] × y[:, None]`` (pixels); returns ``(dx, dy)``.

        Each wave is evaluated separably, ``sin(αx + βy + φ) = sin(αx + φ) cos(βy) +
        cos(αx + φ) sin(βy)``: two outer products instead of a sine per grid point.
        """
        dx = np.zeros((len(y), len(x)))
        dy = np.zeros((len(y), len(x)))
        for lam, theta, phi, a in zip(
            self.wavelengths, self.angles, self.phases, self.amplitudes, strict=True
        ):
            k = 2 * np.pi / lam
            ax, by = k * np.cos(theta) * x + phi, k * np.sin(theta) * y
            wave = np.outer(a * np.cos(by), np.sin(ax)) + np.outer(a * np.sin(by), np.cos(ax))
            dx -= np.sin(theta) * wave
            dy += np.cos(theta) * wave
        return dx, dy

    @property
    def reach(self) -> float:
        """An upper bound of ``|D|`` (pixels)."""
        return float(np.sum(self.amplitudes))


def _warp(image: np.ndarray, tremor: Tremor, scale: float) -> np.ndarray:
    """``I'(q) = I(q − D(q))`` by bilinear resampling; ``scale`` = canvas px per output px.

    Only the box around the ink dilated by ``tremor.reach`` can change: elsewhere
    ``q − D(q)`` lands on background, so the rest of the canvas is copied.
    """
    h, w = image.shape
    rows, cols = np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))
    out = image.copy()
    if rows.size == 0:
        return out
    pad = int(np.ceil(tremor.reach * scale)) + 2
    r0, r1 = max(rows[0] - pad, 0), min(rows[-1] + pad + 1, h)
    c0, c1 = max(cols[0] - pad, 0), min(cols[-1] + pad + 1, w)
    ys, xs = np.arange(r0, r1, dtype=np.float64), np.arange(c0, c1, dtype=np.float64)
    dx, dy = tremor.displacement((xs + 0.5) / scale, (ys + 0.5) / scale)
    sx = np.clip(xs[None, :] - dx * scale, 0, w - 1).astype(np.float32)
    sy = np.clip(ys[:, None] - dy * scale, 0, h - 1).astype(np.float32)
    x0, y0 = sx.astype(np.intp), sy.astype(np.intp)  # floor: coordinates are >= 0
    fx, fy = sx - x0, sy - y0
    padded = np.zeros((h + 1, w + 1), dtype=np.float32)  # x0 + 1, y0 + 1 stay inside
    padded[:h, :w] = image
    flat, i00 = padded.ravel(), y0 * (w + 1) + x0
    top = flat[i00] + fx * (flat[i00 + 1] - flat[i00])
    bottom = flat[i00 + w + 1] + fx * (flat[i00 + w + 2] - flat[i00 + w + 1])
    value = top + fy * (bottom - top)
    out[r0:r1, c0:c1] = np.rint(value).astype(np.uint8)
    return out


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class Scene:
    """Everything that fixes one image except the tremor.

    Attributes:
        word: the text.
        font: index into :data:`FONTS`.
        size: font size in output pixels (float; the canvas uses ``size · supersample``).
        x: left edge of the ink, output pixels.
        y: top edge of the ink, output pixels.
        intensity: ink grey level, 1..255.
    """

    word: str
    font: int
    size: float
    x: float
    y: float
    intensity: int


def sample_scene(
    rng: np.random.Generator, word: str, font: int, height: int, width: int
) -> tuple[Scene, float]:
    """Draw size, position and ink of ``word`` in ``font``; returns the scene and x-height (px).

    The x-height is ``U(*X_HEIGHT_FRACTION) · height``, reduced if the word would not fit inside a
    margin of 10 % of the height (room for the tremor); the position is uniform in the
    room left.
    """
    per_size = _x_height_per_size(font)
    x_height = rng.uniform(*X_HEIGHT_FRACTION) * height
    size = x_height / per_size
    margin = 0.1 * height
    left, top, right, bottom = _font(font, _REF_SIZE).getbbox(word)
    ink_w, ink_h = (right - left) / _REF_SIZE, (bottom - top) / _REF_SIZE
    fit = min((width - 2 * margin) / ink_w, (height - 2 * margin) / ink_h)
    if size > fit:
        size = fit
        x_height = size * per_size
    room_x = width - 2 * margin - ink_w * size
    room_y = height - 2 * margin - ink_h * size
    x = margin + rng.uniform(0.0, 1.0) * max(room_x, 0.0)
    y = margin + rng.uniform(0.0, 1.0) * max(room_y, 0.0)
    intensity = round(rng.uniform(0.6, 1.0) * 255)
    return Scene(word, font, float(size), float(x), float(y), int(intensity)), float(x_height)


def render_word(
    scene: Scene,
    height: int = 32,
    width: int = 64,
    tremor: Tremor | None = None,
    supersample: int = 4,
) -> np.ndarray:
    """Render ``scene`` (uint8 ``(height, width)``, ink bright on black), optionally shaky.

    The word is drawn by Pillow on a canvas ``supersample`` times larger, warped by
    ``tremor`` (if given) and box-filtered down (anti-aliasing). ``tremor=None`` is the
    plain rendering; a tremor of zero amplitude gives the same image.

    Example:
        >>> import numpy as np
        >>> scene, _ = sample_scene(np.random.default_rng(0), "wave", 0, 32, 64)
        >>> img = render_word(scene)
        >>> img.shape, img.dtype, bool(img.max() > 0)
        ((32, 64), dtype('uint8'), True)
    """
    from PIL import Image, ImageDraw

    ss = supersample
    font = _font(scene.font, max(1, round(scene.size * ss)))
    left, top, _, _ = font.getbbox(scene.word)
    canvas = Image.new("L", (width * ss, height * ss), 0)
    ImageDraw.Draw(canvas).text(
        (scene.x * ss - left, scene.y * ss - top), scene.word, font=font, fill=scene.intensity
    )
    if tremor is not None:
        canvas = Image.fromarray(_warp(np.asarray(canvas), tremor, ss))
    if ss > 1:
        canvas = canvas.reduce(ss)
    return np.asarray(canvas, dtype=np.uint8)


def _ink_box(image: np.ndarray, level: float) -> tuple[int, int]:
    """Height and width of the bounding box of the pixels above ``level``."""
    rows, cols = (
        np.flatnonzero((image > level).any(axis=1)),
        np.flatnonzero((image > level).any(axis=0)),
    )
    if rows.size == 0:
        return 0, 0
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def render_shaky(
    scene: Scene, tremor: Tremor, height: int = 32, width: int = 64, supersample: int = 4
) -> tuple[np.ndarray, Scene]:
    """Render ``scene`` with ``tremor``, shrunk so that its ink box stays near the plain one.

    A tremor pushes the extreme points of a word outwards, so a shaky word's bounding
    box is taller than the plain one's (by ~1 px at 32 px high) while its ink (area) is
    not larger. The word is therefore rendered once, and again at the font size scaled by
    ``s = (h_plain / h_shaky)^0.35`` about its centre (box heights of the pixels above a
    quarter of the ink level, measured at half the supersampling): a third of the way, in
    logarithm, from keeping the ink (``s = 1``) to matching the box height
    (``s = h_plain / h_shaky``), where neither the ink nor the box separates the classes
    (exponents 0.25 and 0.5 left the box height or the dark-pixel count at 0.57–0.58).
    Returns the image and the scene used.
    """
    coarse = max(supersample // 2, 1)  # the box heights need no fine anti-aliasing
    plain = render_word(scene, height, width, None, coarse)
    shaky = render_word(scene, height, width, tremor, coarse)
    level = scene.intensity / 4
    hp, _ = _ink_box(plain, level)
    hs, _ = _ink_box(shaky, level)
    if hp == 0 or hs <= hp:
        return render_word(scene, height, width, tremor, supersample), scene
    s = (hp / hs) ** 0.35
    left, top, right, bottom = _font(scene.font, _REF_SIZE).getbbox(scene.word)
    ink_w, ink_h = (right - left) / _REF_SIZE * scene.size, (bottom - top) / _REF_SIZE * scene.size
    smaller = Scene(
        scene.word,
        scene.font,
        scene.size * s,
        scene.x + ink_w * (1 - s) / 2,
        scene.y + ink_h * (1 - s) / 2,
        scene.intensity,
    )
    return render_word(smaller, height, width, tremor, supersample), smaller


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
    arrays = read_npz_cache(path, _ARRAYS) if cache and path.is_file() else None
    from_cache = arrays is not None
    if arrays is None:
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
        arrays = dict(zip(_ARRAYS, (*pool, *test), strict=True))
        if cache:
            write_npz_cache(path, arrays)
    mean, std = (None, None) if normalize else ((0.0,), (1.0,))
    xtr_f, mean, std = normalize_images(arrays["x_train"], mean, std)
    xte_f, _, _ = normalize_images(arrays["x_test"], mean, std)
    meta = {
        "mean": mean,
        "std": std,
        "classes": ("regular", "shaky"),
        "words": parts,
        "fonts": {p: tuple(FONTS[i][1] for i in f) for p, f in fonts.items()},
        "options": options,
        "cache_path": str(path) if cache else None,
        "from_cache": from_cache,
        "version": WORDS_VERSION,
        "source": "fonts rendered with a simulated tremor, after Xue & Xin arXiv 1902.07419",
    }
    return RawData(
        xtr_f,
        arrays["y_train"].astype(np.int64),
        xte_f,
        arrays["y_test"].astype(np.int64),
        2,
        "classification",
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
