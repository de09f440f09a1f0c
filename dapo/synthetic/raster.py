"""Vectorised drawing primitives on a square pixel grid.

Coordinates are in *unit* space: the image spans ``[-1, 1]`` on both axes, so shapes keep
their proportions at any image size. Shapes are drawn through signed distance functions
(negative inside) and an anti-aliased coverage of one pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Grid:
    """Pixel-centre coordinates of a ``size`` x ``size`` image in unit space."""

    size: int
    y: np.ndarray  # (H, W) float32, top row = -1
    x: np.ndarray  # (H, W) float32, left column = -1

    @property
    def pixel(self) -> float:
        """Width of one pixel in unit space."""
        return 2.0 / self.size


@lru_cache(maxsize=8)
def make_grid(size: int) -> Grid:
    """The coordinate grid of a ``size`` x ``size`` image (cached; do not modify its arrays)."""
    if size < 16:
        raise ValueError(f"image size must be at least 16 pixels, got {size}")
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    y, x = np.meshgrid(axis, axis, indexing="ij")
    y.setflags(write=False)
    x.setflags(write=False)
    return Grid(size, y, x)


def to_local(grid: Grid, center: tuple[float, float], angle: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Object-frame coordinates ``(u, v)`` of every pixel for a pose (centre ``(x, y)``, angle, scale)."""
    dx = grid.x - center[0]
    dy = grid.y - center[1]
    c, s = np.cos(angle), np.sin(angle)
    u = (c * dx + s * dy) / scale
    v = (-s * dx + c * dy) / scale
    return u.astype(np.float32), v.astype(np.float32)


def coverage(sdf: np.ndarray, grid: Grid, scale: float = 1.0) -> np.ndarray:
    """Anti-aliased inside-coverage in ``[0, 1]`` of a signed distance field (unit space / ``scale``)."""
    return np.clip(0.5 - sdf * scale / grid.pixel, 0.0, 1.0).astype(np.float32)


def sdf_circle(u: np.ndarray, v: np.ndarray, radius: float, cu: float = 0.0, cv: float = 0.0) -> np.ndarray:
    return np.hypot(u - cu, v - cv) - radius


def sdf_box(u: np.ndarray, v: np.ndarray, half_u: float, half_v: float, corner: float = 0.0,
            cu: float = 0.0, cv: float = 0.0) -> np.ndarray:
    """Rounded box centred at ``(cu, cv)`` with half sizes and corner radius."""
    du = np.abs(u - cu) - (half_u - corner)
    dv = np.abs(v - cv) - (half_v - corner)
    outside = np.hypot(np.maximum(du, 0.0), np.maximum(dv, 0.0))
    inside = np.minimum(np.maximum(du, dv), 0.0)
    return outside + inside - corner


def sdf_polygon_regular(u: np.ndarray, v: np.ndarray, radius: float, sides: int) -> np.ndarray:
    """Regular polygon with circumradius ``radius`` (distance-like, exact on the edges)."""
    angle = np.arctan2(v, u)
    sector = 2.0 * np.pi / sides
    local = np.mod(angle, sector) - sector / 2.0
    return np.hypot(u, v) * np.cos(local) - radius * np.cos(np.pi / sides)


def sdf_polyline(u: np.ndarray, v: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Unsigned distance to a polyline given as ``(K, 2)`` points ``(u, v)``."""
    points = np.asarray(points, dtype=np.float32)
    a = points[:-1, :, None, None]
    b = points[1:, :, None, None]
    ab = b - a
    pu = u[None] - a[:, 0]
    pv = v[None] - a[:, 1]
    length2 = np.maximum(ab[:, 0] ** 2 + ab[:, 1] ** 2, 1e-12)
    t = np.clip((pu * ab[:, 0] + pv * ab[:, 1]) / length2, 0.0, 1.0)
    du = pu - t * ab[:, 0]
    dv = pv - t * ab[:, 1]
    return np.sqrt(du * du + dv * dv).min(axis=0)


def stroke(grid: Grid, points: np.ndarray, width: float) -> np.ndarray:
    """Coverage of a polyline drawn ``width`` unit-space wide (anti-aliased)."""
    return coverage(sdf_polyline(grid.x, grid.y, points) - width / 2.0, grid)


def value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise in ``[0, 1]``: random values on a ``cells`` lattice, smoothstep-interpolated."""
    lattice = rng.random((cells + 1, cells + 1), dtype=np.float32)
    pos = (np.arange(size, dtype=np.float32) + 0.5) / size * cells
    i0 = np.minimum(pos.astype(np.int64), cells - 1)
    t = pos - i0
    t = t * t * (3.0 - 2.0 * t)
    rows = lattice[i0] * (1.0 - t)[:, None] + lattice[i0 + 1] * t[:, None]
    return (rows[:, i0] * (1.0 - t)[None, :] + rows[:, i0 + 1] * t[None, :]).astype(np.float32)


def fractal_noise(rng: np.random.Generator, size: int, cells: int, octaves: int = 3) -> np.ndarray:
    """Sum of value-noise octaves (each twice as fine, half as strong), rescaled to ``[0, 1]``."""
    total = np.zeros((size, size), dtype=np.float32)
    weight, norm = 1.0, 0.0
    for octave in range(octaves):
        total += weight * value_noise(rng, size, min(cells * 2**octave, size))
        norm += weight
        weight *= 0.5
    return total / norm


def blend(rgb: np.ndarray, color, weight: np.ndarray) -> np.ndarray:
    """``rgb`` moved towards ``color`` (an RGB triple or an image) by per-pixel ``weight``."""
    w = weight[..., None]
    return rgb * (1.0 - w) + np.asarray(color, dtype=np.float32) * w


def blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur over the two spatial axes (channels kept apart)."""
    sigma = (sigma_px, sigma_px) + (0,) * (image.ndim - 2)
    return ndimage.gaussian_filter(image, sigma=sigma, mode="nearest")


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Binary dilation by a square of half-width ``pixels``."""
    if pixels <= 0:
        return mask.astype(bool)
    return ndimage.maximum_filter(mask.astype(np.uint8), size=2 * pixels + 1).astype(bool)


def luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)


def hsv_color(rng: np.random.Generator, hue: float, sat: float, val: float, jitter: float = 0.04) -> np.ndarray:
    """An RGB colour from HSV with small random jitter on each component."""
    h = (hue + rng.normal(0.0, jitter * 0.5)) % 1.0
    s = float(np.clip(sat + rng.normal(0.0, jitter), 0.0, 1.0))
    v = float(np.clip(val + rng.normal(0.0, jitter), 0.0, 1.0))
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.asarray(rgb, dtype=np.float32)
