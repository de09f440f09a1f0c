"""Seeded image generator: a product, zero or more defects, a photographic style.

``generate_image`` is a pure function of its arguments and the random generator's state, so a
seed fixes every image of a world or a pretraining corpus (see :func:`make_rng`).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dapo.synthetic.defects import DEFECTS, MIN_MASK_PIXELS, DefectPlacementError, Scene, get_defect
from dapo.synthetic.products import Layer, get_product
from dapo.synthetic.raster import Grid, blend, blur, fractal_noise, hsv_color, make_grid, value_noise

MAX_ATTEMPTS = 12


@dataclass(frozen=True)
class Style:
    """How a world is photographed: backdrop, lighting and sensor.

    Ranges are ``(low, high)`` and drawn per image.
    """

    name: str
    backdrop_value: tuple[float, float]
    backdrop_saturation: tuple[float, float]
    backdrop_texture: float
    light_gradient: float
    vignette: float
    noise: tuple[float, float]
    warmth: float
    blur_px: float


STYLES: dict[str, Style] = {s.name: s for s in (
    # bright, even studio light on a plain backdrop (MVTec-AD-like)
    Style("studio", (0.05, 0.9), (0.0, 0.08), 0.02, 0.12, 0.05, (0.003, 0.012), 0.02, 0.0),
    # darker tinted conveyor belt, warm light, stronger vignette and noise (VisA-like)
    Style("conveyor", (0.12, 0.35), (0.15, 0.5), 0.06, 0.2, 0.25, (0.01, 0.025), 0.08, 0.5),
    # textured grey workbench under a raking side light (MPDD-like)
    Style("workbench", (0.3, 0.6), (0.0, 0.12), 0.15, 0.4, 0.1, (0.008, 0.02), 0.04, 0.3),
)}


@dataclass(frozen=True)
class SyntheticImage:
    """One generated image.

    ``defects`` are defect superclasses in drawing order (a later defect is drawn over an
    earlier one); ``masks`` maps each to its ``(H, W)`` bool mask.
    """

    product: str
    defects: tuple[str, ...]
    image: np.ndarray
    masks: dict[str, np.ndarray]

    @property
    def is_normal(self) -> bool:
        return not self.defects


def make_rng(seed: int, *keys: int | str) -> np.random.Generator:
    """A generator for ``seed`` and a path of keys (strings hashed stably with CRC-32)."""
    words = [int(seed)] + [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(words))


def _backdrop(grid: Grid, rng: np.random.Generator, style: Style) -> np.ndarray:
    color = hsv_color(rng, rng.uniform(0, 1), rng.uniform(*style.backdrop_saturation), rng.uniform(*style.backdrop_value))
    texture = 1.0 + style.backdrop_texture * (fractal_noise(rng, grid.size, 6, octaves=3) - 0.5) * 2
    return color[None, None] * texture[..., None]


def _composite(scene: Scene, backdrop: np.ndarray) -> np.ndarray:
    layer: Layer = scene.layer
    if layer.backing is not None:
        behind = layer.backing
    else:
        shadow = blur(np.roll(layer.alpha, (2, 2), axis=(0, 1)), 2.0)
        behind = backdrop * (1.0 - 0.35 * shadow)[..., None]
    image = blend(behind, layer.rgb, layer.alpha)
    for color, cov in scene.overlays:
        image = blend(image, color, cov)
    return image


def _photograph(image: np.ndarray, grid: Grid, rng: np.random.Generator, style: Style) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi)
    gradient = rng.uniform(0, style.light_gradient) * (np.cos(angle) * grid.x + np.sin(angle) * grid.y)
    light = (1.0 + gradient - style.vignette * (grid.x**2 + grid.y**2) / 2) * rng.uniform(0.85, 1.1)
    warmth = rng.uniform(-style.warmth, style.warmth)
    tint = np.asarray([1 + warmth, 1.0, 1 - warmth], np.float32)
    image = image * light[..., None] * tint
    if style.blur_px > 0:
        image = blur(image, rng.uniform(0, style.blur_px))
    grain = rng.normal(0.0, 1.0, image.shape).astype(np.float32) * rng.uniform(*style.noise)
    grain += (value_noise(rng, grid.size, 32)[..., None] - 0.5) * 0.02
    return (np.clip(image + grain, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def generate_image(
    product: str,
    defects: Sequence[str],
    rng: np.random.Generator,
    *,
    size: int = 128,
    style: str = "studio",
    severity: tuple[float, float] = (0.25, 1.0),
) -> SyntheticImage:
    """Render ``product`` with the given defect superclasses (``()`` for a normal image).

    Parameters
    ----------
    product:
        A name from :data:`dapo.synthetic.products.PRODUCTS`.
    defects:
        Distinct names from :data:`dapo.synthetic.defects.DEFECTS`; ``missing`` needs a
        product with removable parts.
    rng:
        Source of every random choice (see :func:`make_rng`).
    size:
        Image side in pixels.
    style:
        A name from :data:`STYLES`.
    severity:
        Range of the per-defect severity (size and contrast), within ``[0, 1]``.
    """
    spec = get_product(product)
    types = sorted((get_defect(d) for d in defects), key=lambda d: d.stage)
    if len({d.name for d in types}) != len(types):
        raise ValueError(f"repeated defect type in {tuple(defects)}")
    for defect in types:
        if defect.needs_parts and not spec.has_parts:
            raise ValueError(f"defect {defect.name!r} needs removable parts; product {product!r} has none")
    if style not in STYLES:
        raise KeyError(f"unknown style {style!r}; known: {sorted(STYLES)}")
    if not 0.0 <= severity[0] <= severity[1] <= 1.0:
        raise ValueError(f"severity range must lie in [0, 1], got {severity}")
    grid = make_grid(size)
    for _ in range(MAX_ATTEMPTS):
        scene = Scene(grid, spec.render(grid, rng), np.zeros((size, size), bool))
        masks = _draw_defects(scene, types, rng, severity)
        if masks is not None:
            break
    else:
        raise RuntimeError(f"could not place defects {tuple(defects)} on {product!r} in {MAX_ATTEMPTS} attempts")
    image = _photograph(_composite(scene, _backdrop(grid, rng, STYLES[style])), grid, rng, STYLES[style])
    return SyntheticImage(product, tuple(d.name for d in types), image, masks)


def _draw_defects(scene: Scene, types, rng: np.random.Generator, severity) -> dict[str, np.ndarray] | None:
    masks: dict[str, np.ndarray] = {}
    for defect in types:
        try:
            mask = defect.draw(scene, rng, float(rng.uniform(*severity)))
        except DefectPlacementError:
            return None
        if np.count_nonzero(mask) < MIN_MASK_PIXELS:
            return None
        masks[defect.name] = mask
        scene.occupied |= mask
    return masks


def applicable_defects(product: str) -> tuple[str, ...]:
    """Defect types the generator can draw on ``product`` (``missing`` needs removable parts)."""
    spec = get_product(product)
    return tuple(name for name, d in DEFECTS.items() if spec.has_parts or not d.needs_parts)
