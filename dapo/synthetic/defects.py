"""The defect types of the synthetic world, each with its own visual signature and pixel mask.

A defect is drawn onto a :class:`Scene` (the product layer before lighting) and returns the
boolean mask of the pixels it changed. Names are defect *superclasses* of the knowledge base
(``dapo/data/knowledge/defects.yaml``), so the same words reach the text encoder as for the
real datasets. ``severity`` in ``[0, 1]`` scales size and contrast: low values give subtle
defects, which keeps the world from saturating.

Signatures (what tells the types apart):

========== ================================================================================
scratch    thin, long, nearly straight line, brighter (dark surfaces) or darker than the surface
crack      thin dark jagged random walk with a branch
thread     long thin looping fibre of a foreign colour, lying over product and background
cut        short straight slit, two to three pixels wide, through which the background shows
hole       small round opening with a dark rim and a bright lip
contamination  cluster of tiny dark or metallic specks with a faint haze
spot       one to three soft round dots of a saturated foreign colour
rust       irregular orange-brown mottled patch with a rough edge
burnt      black core fading into a brown scorched halo
liquid     translucent darkened amber blob with a specular highlight
missing    a removable part (tooth, component, tablet, pin, tube, cap, tab) is absent
bent       smooth local warp: the contour bulges or dents, pattern lines bend
flattening the contour is pressed into a straight chord with a flat, shiny band behind it
           (textures: a patch whose structure is pressed smooth)
========== ================================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from dapo.synthetic.products import Layer
from dapo.synthetic.raster import (
    Grid,
    blend,
    blur,
    coverage,
    dilate,
    fractal_noise,
    hsv_color,
    luminance,
    stroke,
    value_noise,
)


class DefectPlacementError(RuntimeError):
    """A defect found no room on the product (the generator retries with a new draw)."""


@dataclass
class Scene:
    """A product layer being defected.

    ``occupied`` marks pixels that already hold a defect (new defects keep apart from them);
    ``overlays`` are ``(colour, coverage)`` pairs drawn over the composited image (threads).
    """

    grid: Grid
    layer: Layer
    occupied: np.ndarray
    overlays: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)


@dataclass(frozen=True)
class DefectType:
    """A defect superclass: drawing order, whether it needs removable parts, and its painter."""

    name: str
    stage: int
    needs_parts: bool
    draw: Callable[[Scene, np.random.Generator, float], np.ndarray] = field(repr=False)


MIN_MASK_PIXELS = 6


# ----------------------------------------------------------------------------- placement

def _lerp(lo: float, hi: float, t: float) -> float:
    return lo + (hi - lo) * t


def _to_unit(grid: Grid, flat_index: int) -> np.ndarray:
    row, col = divmod(int(flat_index), grid.size)
    return np.array([grid.x[row, col], grid.y[row, col]], dtype=np.float32)


def _free(scene: Scene, margin_px: int) -> np.ndarray:
    return ~dilate(scene.occupied, margin_px)


def interior_point(scene: Scene, rng: np.random.Generator, margin_px: int = 3) -> np.ndarray:
    """A random point ``(x, y)`` inside the product, ``margin_px`` from its edge where it is wide
    enough (thin products get smaller margins), and away from earlier defects."""
    solid = scene.layer.alpha > 0.98
    free = _free(scene, margin_px + 4)
    for margin in sorted({margin_px, margin_px // 2, 1}, reverse=True):
        inner = ndimage.minimum_filter(solid.astype(np.uint8), size=2 * margin + 1, mode="constant") > 0
        candidates = np.flatnonzero(inner & free)
        if candidates.size:
            return _to_unit(scene.grid, rng.choice(candidates))
    raise DefectPlacementError("no free interior room on the product")


def _outer_silhouette(layer: Layer) -> np.ndarray:
    return ndimage.binary_fill_holes(layer.alpha > 0.5)


def contour_point(scene: Scene, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A point on the product's outer contour and the outward unit normal there."""
    silhouette = _outer_silhouette(scene.layer)
    edge = silhouette & ~ndimage.binary_erosion(silhouette)
    border = np.zeros_like(edge)
    border[3:-3, 3:-3] = True  # contour touching the frame is not a contour of the product
    candidates = np.flatnonzero(edge & border & _free(scene, 8))
    if candidates.size == 0:
        raise DefectPlacementError("no free outer contour on the product")
    index = rng.choice(candidates)
    smooth = ndimage.gaussian_filter(silhouette.astype(np.float32), 2.0)
    gy, gx = np.gradient(smooth)
    row, col = divmod(int(index), scene.grid.size)
    normal = -np.array([gx[row, col], gy[row, col]], dtype=np.float32)
    norm = float(np.hypot(*normal))
    if norm < 1e-6:
        raise DefectPlacementError("degenerate contour normal")
    return _to_unit(scene.grid, index), normal / norm


def _on_product(scene: Scene, cov: np.ndarray) -> np.ndarray:
    return cov * (scene.layer.alpha > 0.5)


def _mask(cov: np.ndarray, threshold: float = 0.25, grow: int = 1) -> np.ndarray:
    return dilate(cov > threshold, grow)


def _at(image: np.ndarray, point: np.ndarray, grid: Grid) -> np.ndarray:
    """The value of ``image`` at the pixel under unit-space ``point``."""
    col = int(np.clip((point[0] + 1) / grid.pixel, 0, grid.size - 1))
    row = int(np.clip((point[1] + 1) / grid.pixel, 0, grid.size - 1))
    return image[row, col]


def _contrast_target(rgb: np.ndarray, point: np.ndarray, grid: Grid) -> np.ndarray:
    """Bright marks on dark surfaces, dark marks on bright ones (what a scratch reflects)."""
    if luminance(_at(rgb, point, grid)) < 0.55:
        return rgb + (1.0 - rgb) * 0.8
    return rgb * 0.3


def _irregular_blob(grid: Grid, rng: np.random.Generator, center: np.ndarray, radius: float,
                    roughness: float = 0.5) -> np.ndarray:
    """Boolean blob: a disk whose edge is pushed in and out by smooth noise."""
    aspect = rng.uniform(0.6, 1.0)
    angle = rng.uniform(0, np.pi)
    dx, dy = grid.x - center[0], grid.y - center[1]
    a = (np.cos(angle) * dx + np.sin(angle) * dy) / radius
    b = (-np.sin(angle) * dx + np.cos(angle) * dy) / (radius * aspect)
    noise = fractal_noise(rng, grid.size, 8, octaves=2) - 0.5
    return np.hypot(a, b) + roughness * noise < 1.0


# ----------------------------------------------------------------------------- painters

def draw_scratch(scene: Scene, rng: np.random.Generator, s: float) -> np.ndarray:
    layer, grid = scene.layer, scene.grid
    center = interior_point(scene, rng, 4)
    length = _lerp(0.4, 0.8, s) * rng.uniform(0.8, 1.2)
    angle = rng.uniform(0, np.pi)
    direction = np.array([np.cos(angle), np.sin(angle)], np.float32)
    normal = np.array([-direction[1], direction[0]])
    bow = rng.uniform(-0.03, 0.03)
    points = np.stack([center - direction * length / 2, center + normal * bow, center + direction * length / 2])
    cov = _on_product(scene, stroke(grid, points, rng.uniform(0.022, 0.03)))
    layer.rgb = blend(layer.rgb, _contrast_target(layer.rgb, center, grid), cov * _lerp(0.6, 1.0, s))
    return _mask(cov)


def _random_walk(rng: np.random.Generator, start: np.ndarray, heading: float, steps: int, step: float) -> np.ndarray:
    points = [start]
    for _ in range(steps):
        heading += rng.normal(0.0, 0.55)
        points.append(points[-1] + step * np.array([np.cos(heading), np.sin(heading)], np.float32))
    return np.stack(points)


def draw_crack(scene: Scene, rng: np.random.Generator, s: float) -> np.ndarray:
    layer, grid = scene.layer, scene.grid
    start = interior_point(scene, rng, 5)
    heading = rng.uniform(0, 2 * np.pi)
    trunk = _random_walk(rng, start, heading, int(_lerp(14, 24, s)), 0.035)
    width = rng.uniform(0.022, 0.032)
    cov = stroke(grid, trunk, width)
    branch_at = trunk[int(rng.integers(2, len(trunk) - 1))]
    branch = _random_walk(rng, branch_at, heading + rng.choice([-1, 1]) * 0.9, int(rng.integers(3, 6)), 0.025)
    cov = _on_product(scene, np.maximum(cov, stroke(grid, branch, width * 0.8)))
    layer.rgb = blend(layer.rgb, layer.rgb * 0.15, cov * _lerp(0.6, 1.0, s))
    return _mask(cov)


def draw_thread(scene: Scene, rng: np.random.Generator, s: float) -> np.ndarray:
    grid = scene.grid
    start = interior_point(scene, rng, 3)
    angle = rng.uniform(0, 2 * np.pi)
    length = _lerp(0.55, 0.95, s)
    t = np.linspace(0.0, 1.0, 40, dtype=np.float32)[:, None]
    direction = np.array([np.cos(angle), np.sin(angle)], np.float32)
    normal = np.array([-direction[1], direction[0]], np.float32)
    wiggle = sum(rng.uniform(0.02, 0.08) * np.sin(2 * np.pi * rng.uniform(0.7, 2.2) * t + rng.uniform(0, 6.3))
                 for _ in range(2))
    points = start + direction * (t - 0.3) * length + normal * wiggle
    cov = stroke(grid, points, rng.uniform(0.02, 0.028))
    color = hsv_color(rng, rng.uniform(0, 1), rng.uniform(0.0, 0.9), float(rng.choice([0.08, 0.95, 0.6])))
    scene.overlays.append((color, cov * _lerp(0.6, 1.0, s)))
    return _mask(cov)


def draw_cut(scene: Scene, rng: np.random.Generator, s: float) -> np.ndarray:
    layer, grid = scene.layer, scene.grid
    center = interior_point(scene, rng, 6)
    angle = rng.uniform(0, np.pi)
    direction = np.array([np.cos(angle), np.sin(angle)], np.float32)
    normal = np.array([-direction[1], direction[0]], np.float32)
    half = _lerp(0.12, 0.25, s) * direction
    width = rng.uniform(0.045, 0.06)
    slit = stroke(grid, np.stack([center - half, center + half]), width)
    shadow = stroke(grid, np.stack([center - half, center + half]) + normal * width * 0.7, width)
    layer.rgb = blend(layer.rgb, layer.rgb * 0.35, _on_product(scene, shadow) * 0.8)
    layer.alpha = layer.alpha * (1.0 - slit * _lerp(0.8, 1.0, s))
    return _mask(np.maximum(slit, shadow * 0.5))


def draw_hole(scene: Scene, rng: np.random.Generator, s: float) -> np.ndarray:
    layer, grid = scene.layer, scene.grid
    center = interior_point(scene, rng, 6)
    radius = _lerp(0.06, 0.11, s) * rng.uniform(0.85, 1.15)
    distance = np.hypot(grid.x - center[0], grid.y - center[1])
    opening = coverage(distance - radius, grid)
    rim = np.exp(-((distance - radius - 0.01) ** 2) / (2 * 0.008**2)).astype(np.float32)
    lip = np.exp(-((distance - radius - 0.03) ** 2) / (2 * 0.008**2)).astype(np.float32)
    on_product = layer.alpha > 0.5
    layer.rgb = blend(layer.rgb, layer.rgb * 0.25, rim * 0.8)
    layer.rgb = blend(layer.rgb, np.minimum(layer.rgb * 1.4 + 0.1, 1.0), lip * 0.5)
    layer.alpha = layer.alpha * (1.0 - opening)
    return dilate(distance < radius + 0.02, 1) & on_product


def draw_contamination(scene: Scene, rng: np.random.Generator, s: float) -> np.ndarray:
    layer, grid = scene.layer, scene.grid
    center = interior_point(scene, rng, 5)
    spread = _lerp(0.09, 0.16, s)
    dark_surface = luminance(_at(layer.rgb, center, grid)) < 0.4
    value = rng.uniform(0.75, 0.95) if dark_surface else rng.uniform(0.03, 0.25)
    color = hsv_color(rng, rng.uniform(0, 1), rng.uniform(0, 0.15), value)
    specks = np.zeros(grid.x.shape, np.float32)
    for _ in range(int(_lerp(18, 40, s))):
        r = spread * np.sqrt(rng.random())
        a = rng.uniform(0, 2 * np.pi)
        size = rng.uniform(0.012, 0.026)
        d = np.hypot(grid.x - center[0] - r * np.cos(a), grid.y - center[1] - r * np.sin(a))
        specks = np.maximum(specks, coverage(d - size, grid))
    haze = np.exp(-((grid.x - center[0]) ** 2 + (grid.y - center[1]) ** 2) / (2 * spread**2)).astype(np.float32)
    layer.rgb = blend(layer.rgb, color, _on_product(scene, haze) * 0.15)
    layer.rgb = blend(layer.rgb, color, _on_product(scene, specks) * _lerp(0.7, 1.0, s))
    return dilate(_on_product(scene, specks) > 0.2, 2)


def draw_spot(scene: Scene, rng: np.random.Generator, s: float) -> np.ndarray:
    layer, grid = scene.layer, scene.grid
    center = interior_point(scene, rng, 5)
    color = hsv_color(rng, rng.uniform(0, 1), rng.uniform(0.7, 1.0), rng.uniform(0.6, 0.95))
    weight = np.zeros(grid.x.shape, np.float32)
    for _ in range(int(rng.integers(1, 4))):
        offset = rng.normal(0.0, 0.05, size=2) if weight.any() else np.zeros(2)
        radius = _lerp(0.05, 0.085, s) * rng.uniform(0.8, 1.2)
        d = np.hypot(grid.x - center[0] - offset[0], grid.y - center[1] - offset[1])
        weight = np.maximum(weight, np.clip((radius - d) / 0.015 + 0.5, 0, 1))
    weight = _on_product(scene, weight)
    layer.rgb = blend(layer.rgb, color, weight * _lerp(0.55, 0.95, s))
    return weight > 0.3


def draw_rust(scene: Scene, rng: np.random.Generator, s: float) -> np.ndarray:
    layer, grid = scene.layer, scene.grid
    center = interior_point(scene, rng, 5)
    patch = _irregular_blob(grid, rng, center, _lerp(0.11, 0.2, s), roughness=0.9) & (layer.alpha > 0.5)
    mottle = value_noise(rng, grid.size, 40)
    color = hsv_color(rng, rng.uniform(0.04, 0.08), 0.85, rng.uniform(0.4, 0.6))
    tone = color[None, None] * (0.5 + 1.0 * mottle)[..., None]
    edge = ndimage.gaussian_filter(patch.astype(np.float32), 0.7)
    layer.rgb = blend(layer.rgb, tone, (edge * (0.6 + 0.4 * mottle) * _lerp(0.6, 1.0, s)).astype(np.float32))
    return edge > 0.15


def draw_burnt(scene: Scene, rng: np.random.Generator, s: float) -> np.ndarray:
    layer, grid = scene.layer, scene.grid
    center = interior_point(scene, rng, 5)
    radius = _lerp(0.08, 0.14, s)
    d = np.hypot(grid.x - center[0], grid.y - center[1])
    char = np.clip(1.0 - d / (2 * radius) + 0.35 * (fractal_noise(rng, grid.size, 10, 2) - 0.5), 0, 1)
    char = _on_product(scene, char.astype(np.float32)) ** 0.8
    scorch = np.clip(char * 1.6, 0, 1) * _lerp(0.6, 0.9, s)
    layer.rgb = blend(layer.rgb, (0.22, 0.12, 0.05), scorch)
    layer.rgb = blend(layer.rgb, (0.02, 0.02, 0.02), np.clip(char * 2 - 1, 0, 1))
    return scorch > 0.2


def draw_liquid(scene: Scene, rng: np.random.Generator, s: float) -> np.ndarray:
    layer, grid = scene.layer, scene.grid
    center = interior_point(scene, rng, 5)
    radius = _lerp(0.11, 0.19, s)
    blob = _irregular_blob(grid, rng, center, radius, roughness=0.35) & (layer.alpha > 0.5)
    weight = ndimage.gaussian_filter(blob.astype(np.float32), 1.0)
    tinted = layer.rgb * np.asarray([0.55, 0.48, 0.3], np.float32) * _lerp(1.2, 0.9, s)
    layer.rgb = blend(layer.rgb, tinted, weight)
    glint = np.exp(-((grid.x - center[0] + radius * 0.35) ** 2 / (2 * (radius * 0.35) ** 2)
                     + (grid.y - center[1] + radius * 0.4) ** 2 / (2 * (radius * 0.12) ** 2))).astype(np.float32)
    layer.rgb = blend(layer.rgb, (1.0, 1.0, 0.95), glint * blob * 0.7)
    return weight > 0.15


def draw_missing(scene: Scene, rng: np.random.Generator, s: float) -> np.ndarray:
    layer = scene.layer
    if layer.n_parts == 0:
        raise DefectPlacementError("the product has no removable parts")
    free = _free(scene, 3)
    labels = [k for k in range(1, layer.n_parts + 1)
              if np.count_nonzero((layer.part_map == k) & free) >= MIN_MASK_PIXELS]
    if not labels:
        raise DefectPlacementError("every removable part is taken by another defect")
    first = int(rng.choice(labels))
    chosen = [first] + ([first + 1] if s > 0.6 and first + 1 in labels and len(labels) > 2 else [])
    part = dilate(np.isin(layer.part_map, chosen), 1)
    layer.rgb = np.where(part[..., None], layer.base_rgb, layer.rgb)
    before = layer.alpha
    layer.alpha = np.where(part, layer.base_alpha, layer.alpha)
    return part & ((before > 0.5) | (layer.alpha > 0.5))


def _warp(layer: Layer, grid: Grid, displacement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample the layer at ``p - displacement(p)`` (displacement in unit space, shape (2, H, W))."""
    rows = (grid.y - displacement[1] + 1.0) / grid.pixel - 0.5
    cols = (grid.x - displacement[0] + 1.0) / grid.pixel - 0.5
    coords = np.stack([rows, cols])
    rgb = np.stack([ndimage.map_coordinates(layer.rgb[..., c], coords, order=1, mode="nearest") for c in range(3)], -1)
    alpha = ndimage.map_coordinates(layer.alpha, coords, order=1, mode="constant", cval=0.0)
    return rgb.astype(np.float32), alpha.astype(np.float32)


def draw_bent(scene: Scene, rng: np.random.Generator, s: float) -> np.ndarray:
    layer, grid = scene.layer, scene.grid
    if layer.kind == "object":
        center, direction = contour_point(scene, rng)
        direction = direction * rng.choice([-1.0, 1.0])
    else:
        center = interior_point(scene, rng, 10)
        angle = rng.uniform(0, 2 * np.pi)
        direction = np.array([np.cos(angle), np.sin(angle)], np.float32)
    sigma = _lerp(0.07, 0.11, s)
    amplitude = _lerp(0.06, 0.11, s)
    bump = np.exp(-((grid.x - center[0]) ** 2 + (grid.y - center[1]) ** 2) / (2 * sigma**2)).astype(np.float32)
    displacement = amplitude * bump[None] * direction[:, None, None]
    rgb, alpha = _warp(layer, grid, displacement)
    tangent = np.array([-direction[1], direction[0]], np.float32)
    gy, gx = np.gradient(bump)
    slope = gx * tangent[0] + gy * tangent[1]
    rgb = rgb * (1.0 + 0.3 * slope / max(float(np.abs(slope).max()), 1e-6))[..., None]
    changed = (np.abs(rgb - layer.rgb).sum(-1) * np.maximum(alpha, layer.alpha) > 0.1) | (np.abs(alpha - layer.alpha) > 0.3)
    layer.rgb, layer.alpha = rgb, alpha
    region = ndimage.binary_closing(changed & (bump > 0.05), iterations=2)
    return dilate(region, 1)


def draw_flattening(scene: Scene, rng: np.random.Generator, s: float) -> np.ndarray:
    layer, grid = scene.layer, scene.grid
    if layer.kind == "texture":
        center = interior_point(scene, rng, 8)
        patch = _irregular_blob(grid, rng, center, _lerp(0.13, 0.2, s), roughness=0.25)
        weight = ndimage.gaussian_filter(patch.astype(np.float32), 1.0) * _lerp(0.8, 1.0, s)
        smooth = blur(layer.rgb, 4.0) * 1.12 + 0.03
        layer.rgb = blend(layer.rgb, np.minimum(smooth, 1.0), weight)
        return patch
    center, normal = contour_point(scene, rng)
    depth = _lerp(0.07, 0.14, s)
    reach = np.hypot(grid.x - center[0], grid.y - center[1]) < _lerp(0.22, 0.32, s)
    along = (grid.x - center[0]) * normal[0] + (grid.y - center[1]) * normal[1]
    removed = reach & (along > -depth) & (layer.alpha > 0.5)
    band = reach & (along <= -depth) & (along > -depth - 0.06) & (layer.alpha > 0.5)
    edge = reach & (np.abs(along + depth) < grid.pixel * 1.2) & (layer.alpha > 0.5)
    flat = layer.rgb[band].mean(axis=0) if band.any() else layer.rgb.mean(axis=(0, 1))
    layer.rgb = blend(layer.rgb, flat * 1.1, band.astype(np.float32) * 0.75)
    layer.rgb = blend(layer.rgb, np.minimum(flat * 1.6 + 0.1, 1.0), edge.astype(np.float32) * 0.8)
    layer.alpha = np.where(reach & (along > -depth), np.clip(0.5 - (along + depth) / grid.pixel, 0, 1) * layer.alpha,
                           layer.alpha).astype(np.float32)
    return removed | band


DEFECTS: dict[str, DefectType] = {d.name: d for d in (
    DefectType("missing", 0, True, draw_missing),
    DefectType("flattening", 1, False, draw_flattening),
    DefectType("bent", 2, False, draw_bent),
    DefectType("cut", 3, False, draw_cut),
    DefectType("hole", 3, False, draw_hole),
    DefectType("crack", 4, False, draw_crack),
    DefectType("scratch", 4, False, draw_scratch),
    DefectType("rust", 5, False, draw_rust),
    DefectType("burnt", 5, False, draw_burnt),
    DefectType("liquid", 5, False, draw_liquid),
    DefectType("spot", 6, False, draw_spot),
    DefectType("contamination", 6, False, draw_contamination),
    DefectType("thread", 7, False, draw_thread),
)}


def get_defect(name: str) -> DefectType:
    """The defect type called ``name``; ``KeyError`` lists the known types."""
    try:
        return DEFECTS[name]
    except KeyError:
        raise KeyError(f"unknown synthetic defect {name!r}; known: {sorted(DEFECTS)}") from None
