"""Drawing concepts: a coloured, patterned shape on a styled background, many at once in numpy.

A concept is a combination of visual factors (colour, shape, pattern); a style (background,
noise, scale and position jitter, lighting) is what makes one dataset look unlike another.
Colours come in hue pairs, a bright shade and a dark one (``HUE_PAIRS``), and a style's
lighting scales each image's colours by a random factor, so two shades of one hue are a fine
distinction that takes learning, not a glance. Rendering is vectorised over a batch so that a
whole dataset is drawn in well under a second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLOURS = {
    "red": (220, 40, 40),
    "orange": (240, 140, 20),
    "yellow": (230, 220, 40),
    "green": (40, 180, 60),
    "cyan": (40, 200, 210),
    "blue": (40, 70, 220),
    "purple": (140, 50, 200),
    "pink": (240, 120, 190),
    # the dark shade of each hue above, in the same order (0.6 of its brightness)
    "maroon": (132, 24, 24),
    "brown": (144, 84, 12),
    "olive": (138, 132, 24),
    "forest": (24, 108, 36),
    "teal": (24, 120, 126),
    "navy": (24, 42, 132),
    "plum": (84, 30, 120),
    "mauve": (144, 72, 114),
}
HUES = 8  # colour i and colour i + HUES are the bright and dark shade of one hue
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")
PATTERNS = ("solid", "striped", "barred", "checkered", "dotted", "diagonal")


@dataclass(frozen=True)
class Style:
    """How a dataset draws: background kind and level, noise, size and jitter of the shape."""

    background: str  # "flat", "gradient" or "speckle"
    level: int  # background brightness 0-255
    noise: float  # std of pixel noise (0-255 scale)
    scale: tuple[float, float]  # shape radius as a fraction of the image side
    jitter: float  # centre offset as a fraction of the image side
    lighting: float = 0.0  # each image's colours scaled by a factor in [1 - l, 1 + l]


def _shape_masks(dx: np.ndarray, dy: np.ndarray, r: np.ndarray, shape_ids: np.ndarray):
    """Boolean (N, H, W) masks; dx, dy are offsets from each image's centre, r its radius."""
    d = np.sqrt(dx**2 + dy**2)
    masks = {
        "circle": d < r,
        "square": np.maximum(np.abs(dx), np.abs(dy)) < 0.8 * r,
        "triangle": (dy < 0.7 * r) & (np.abs(dx) < (dy + r) * 0.6),
        "diamond": np.abs(dx) + np.abs(dy) < r,
        "cross": ((np.abs(dx) < r / 3) & (np.abs(dy) < r))
        | ((np.abs(dy) < r / 3) & (np.abs(dx) < r)),
        "ring": (d < r) & (d > 0.55 * r),
    }
    out = np.zeros(dx.shape, dtype=bool)
    for i, name in enumerate(SHAPES):
        sel = shape_ids == i
        out[sel] = masks[name][sel]
    return out


def _pattern_masks(x: np.ndarray, y: np.ndarray, pattern_ids: np.ndarray, period: int):
    """True where the shape shows its full colour; False where the pattern darkens it."""
    h = (y // period) % 2 == 0
    v = (x // period) % 2 == 0
    masks = {
        "solid": np.ones_like(h),
        "striped": h,
        "barred": v,
        "checkered": h ^ v,
        "dotted": h & v,
        "diagonal": ((x + y) // period) % 2 == 0,
    }
    out = np.zeros(x.shape, dtype=bool)
    for i, name in enumerate(PATTERNS):
        sel = pattern_ids == i
        out[sel] = masks[name][sel]
    return out


def render(
    colour_ids: np.ndarray,
    shape_ids: np.ndarray,
    pattern_ids: np.ndarray,
    styles: list[Style],
    style_ids: np.ndarray,
    size: int,
    rng: np.random.Generator,
    chunk: int = 1024,
) -> np.ndarray:
    """uint8 images (N, size, size, 3), one per row of the id arrays, drawn in chunks."""
    parts = [
        _render(
            colour_ids[i : i + chunk],
            shape_ids[i : i + chunk],
            pattern_ids[i : i + chunk],
            styles,
            style_ids[i : i + chunk],
            size,
            rng,
        )
        for i in range(0, len(colour_ids), chunk)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, size, size, 3), np.uint8)


def _render(
    colour_ids: np.ndarray,
    shape_ids: np.ndarray,
    pattern_ids: np.ndarray,
    styles: list[Style],
    style_ids: np.ndarray,
    size: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """uint8 images (N, size, size, 3), one per row of the id arrays."""
    n = len(colour_ids)
    palette = np.array(list(COLOURS.values()), dtype=np.float32)
    level = np.array([s.level for s in styles], dtype=np.float32)[style_ids]
    noise = np.array([s.noise for s in styles], dtype=np.float32)[style_ids]
    lo = np.array([s.scale[0] for s in styles], dtype=np.float32)[style_ids]
    hi = np.array([s.scale[1] for s in styles], dtype=np.float32)[style_ids]
    jitter = np.array([s.jitter for s in styles], dtype=np.float32)[style_ids]
    lighting = np.array([s.lighting for s in styles], dtype=np.float32)[style_ids]
    kind = np.array([["flat", "gradient", "speckle"].index(s.background) for s in styles])
    kind = kind[style_ids]

    grid = np.arange(size, dtype=np.float32)
    y, x = np.meshgrid(grid, grid, indexing="ij")
    x, y = np.broadcast_to(x, (n, size, size)), np.broadcast_to(y, (n, size, size))
    r = (lo + (hi - lo) * rng.random(n, dtype=np.float32)) * size
    cx = size / 2 + (rng.random(n, dtype=np.float32) * 2 - 1) * jitter * size
    cy = size / 2 + (rng.random(n, dtype=np.float32) * 2 - 1) * jitter * size
    dx, dy = x - cx[:, None, None], y - cy[:, None, None]
    rr = r[:, None, None]
    shape = _shape_masks(dx, dy, rr, shape_ids)
    full = _pattern_masks(x.astype(int), y.astype(int), pattern_ids, max(2, size // 10))

    background = np.broadcast_to(level[:, None, None], (n, size, size)).copy()
    gradient = kind == 1
    background[gradient] *= 0.4 + 1.2 * (x[gradient] / size)
    speckle = kind == 2
    background[speckle] += 40 * rng.standard_normal((int(speckle.sum()), size, size), np.float32)
    image = np.repeat(background[..., None], 3, axis=-1)
    light = 1 + (rng.random(n, dtype=np.float32) * 2 - 1) * lighting if lighting.any() else 1
    colour = (palette[colour_ids] * np.reshape(light, (-1, 1)))[:, None, None, :]
    fill = np.where(full[..., None], colour, colour * 0.35)
    image = np.where(shape[..., None], fill, image)
    image += rng.standard_normal(image.shape, np.float32) * noise[:, None, None, None]
    return np.clip(image, 0, 255).astype(np.uint8)
