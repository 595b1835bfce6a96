"""Fonts, tremor and rendering of the ``words`` dataset (:mod:`sparseopt.data.words`).

A word is drawn by Pillow in one of matplotlib's TrueType fonts on a supersampled canvas,
optionally warped by a :class:`Tremor` (a smooth displacement field with the frequencies
and amplitudes of a physiological tremor), and box-filtered down. The dataset module
documents the parameters and builds the splits; this one holds the drawing.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np

#: Nominal x-height of handwriting (mm): converts the tremor's physical units to pixels.
X_HEIGHT_MM = 2.5

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
