"""Procedural products of the synthetic world: textures and objects.

Each product draws one *layer* (colour and coverage of the product) in a random pose, colour
and scale. Objects with removable parts (a gear's teeth, a circuit's components, one of
several tablets) also draw the layer without those parts, which is what a "missing" defect
reveals. Lighting, background and sensor noise are added later by the generator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from dapo.synthetic.raster import (
    Grid,
    blend,
    coverage,
    fractal_noise,
    hsv_color,
    sdf_box,
    sdf_circle,
    sdf_polygon_regular,
    sdf_polyline,
    to_local,
    value_noise,
)


@dataclass
class Layer:
    """A rendered product before lighting and background.

    Attributes
    ----------
    rgb, alpha:
        ``(H, W, 3)`` colour and ``(H, W)`` coverage in ``[0, 1]``.
    kind:
        ``"object"`` or ``"texture"`` (textures cover the whole frame).
    base_rgb, base_alpha:
        The product without its removable parts (``None`` when it has none).
    part_map:
        ``(H, W)`` int16: 0 outside removable parts, ``k`` inside part ``k`` (1-based).
    backing:
        What shows through holes and cuts of a texture (``None``: the scene background).
    """

    rgb: np.ndarray
    alpha: np.ndarray
    kind: str
    base_rgb: np.ndarray | None = None
    base_alpha: np.ndarray | None = None
    part_map: np.ndarray | None = None
    backing: np.ndarray | None = None

    @property
    def n_parts(self) -> int:
        return 0 if self.part_map is None else int(self.part_map.max())


@dataclass(frozen=True)
class Product:
    """A product type: its name, kind, whether it has removable parts, and its renderer."""

    name: str
    kind: str
    has_parts: bool
    render: Callable[[Grid, np.random.Generator], Layer] = field(repr=False)


# ----------------------------------------------------------------------------- helpers

def _pose(rng: np.random.Generator, free_rotation: bool = True, jitter_deg: float = 15.0,
          scale: tuple[float, float] = (1.2, 1.45)) -> tuple[tuple[float, float], float, float]:
    center = (float(rng.uniform(-0.08, 0.08)), float(rng.uniform(-0.08, 0.08)))
    if free_rotation:
        angle = float(rng.uniform(0.0, 2.0 * np.pi))
    else:
        angle = float(np.deg2rad(rng.uniform(-jitter_deg, jitter_deg)) + rng.integers(0, 4) * np.pi / 2)
    return center, angle, float(rng.uniform(*scale))


def _bevel(sdf: np.ndarray, width: float, depth: float = 0.3) -> np.ndarray:
    """Shading that darkens towards the contour (fake relief)."""
    return (1.0 - depth) + depth * np.clip(-sdf / width, 0.0, 1.0)


def _highlight(u: np.ndarray, v: np.ndarray, cu: float, cv: float, radius: float) -> np.ndarray:
    return np.exp(-((u - cu) ** 2 + (v - cv) ** 2) / (2 * radius**2)).astype(np.float32)


def _metal(rng: np.random.Generator) -> np.ndarray:
    choice = rng.integers(0, 4)
    if choice == 0:
        return hsv_color(rng, 0.12, 0.45, 0.75)  # brass
    if choice == 1:
        return hsv_color(rng, 0.06, 0.55, 0.65)  # copper
    return hsv_color(rng, rng.uniform(0, 1), 0.06, rng.uniform(0.55, 0.8))  # steel


def _paint(rgb_shape: tuple[int, int], color: np.ndarray) -> np.ndarray:
    return np.broadcast_to(color, rgb_shape + (3,)).astype(np.float32).copy()


def _streaks(coord: np.ndarray, rng: np.random.Generator, n: int, freq: tuple[float, float]) -> np.ndarray:
    """Sum of random sinusoids of one coordinate, in ``[0, 1]`` (brushed metal, wood fibre)."""
    out = np.zeros_like(coord)
    for _ in range(n):
        out += np.sin(coord * rng.uniform(*freq) + rng.uniform(0, 2 * np.pi))
    return 0.5 + 0.5 * out / n


def _parts_layer(rgb, alpha, kind, base_rgb, base_alpha, parts: list[np.ndarray]) -> Layer:
    part_map = np.zeros(alpha.shape, dtype=np.int16)
    for k, part in enumerate(parts, start=1):
        part_map[part > 0.5] = k
    return Layer(rgb, alpha, kind, base_rgb, base_alpha, part_map)


# ----------------------------------------------------------------------------- textures

def render_canvas(grid: Grid, rng: np.random.Generator) -> Layer:
    """Plain-woven textile: alternating warp and weft threads."""
    _, angle, _ = _pose(rng, free_rotation=False, jitter_deg=10)
    u, v = to_local(grid, (rng.uniform(-1, 1), rng.uniform(-1, 1)), angle, 1.0)
    period = rng.uniform(0.05, 0.08)
    cu, cv = u / period, v / period
    over = (np.floor(cu) + np.floor(cv)) % 2 == 0
    warp = 0.72 + 0.28 * np.sin(np.pi * (cv % 1.0))
    weft = 0.72 + 0.28 * np.sin(np.pi * (cu % 1.0))
    weave = np.where(over, warp, weft).astype(np.float32)
    fibre = 0.9 + 0.2 * value_noise(rng, grid.size, 24)
    color = hsv_color(rng, rng.uniform(0, 1), rng.uniform(0.25, 0.7), rng.uniform(0.5, 0.8))
    rgb = _paint((grid.size, grid.size), color) * (weave * fibre)[..., None]
    backing = _paint((grid.size, grid.size), color * 0.18)
    return Layer(rgb, np.ones_like(weave), "texture", backing=backing)


def render_plank(grid: Grid, rng: np.random.Generator) -> Layer:
    """Wood grain: warped growth rings and fine fibres."""
    _, angle, _ = _pose(rng, free_rotation=False, jitter_deg=12)
    u, v = to_local(grid, (0.0, 0.0), angle, 1.0)
    warp = fractal_noise(rng, grid.size, 3, octaves=2)
    rings = 0.5 + 0.5 * np.sin(2 * np.pi * (v * rng.uniform(3.5, 6.0) + 1.6 * warp))
    fibres = _streaks(v, rng, 5, (40.0, 110.0))
    light = hsv_color(rng, 0.08, rng.uniform(0.35, 0.55), rng.uniform(0.7, 0.85))
    dark = hsv_color(rng, 0.07, rng.uniform(0.55, 0.7), rng.uniform(0.35, 0.5))
    rgb = blend(_paint((grid.size, grid.size), light), dark, (rings**3 * 0.8 + 0.2 * fibres).astype(np.float32))
    backing = _paint((grid.size, grid.size), dark * 0.3)
    return Layer(rgb.astype(np.float32), np.ones(u.shape, np.float32), "texture", backing=backing)


def render_marble(grid: Grid, rng: np.random.Generator) -> Layer:
    """Polished stone: pale base with thin dark veins and soft mottling."""
    angle = rng.uniform(0, np.pi)
    t = (grid.x * np.cos(angle) + grid.y * np.sin(angle)) * rng.uniform(2.0, 3.5)
    t = t + 2.2 * fractal_noise(rng, grid.size, 4, octaves=3)
    veins = (1.0 - np.abs(np.sin(np.pi * t))) ** 10
    base = hsv_color(rng, rng.uniform(0, 1), rng.uniform(0.03, 0.2), rng.uniform(0.78, 0.92))
    vein = hsv_color(rng, rng.uniform(0, 1), rng.uniform(0.05, 0.3), rng.uniform(0.3, 0.5))
    mottle = 0.93 + 0.07 * fractal_noise(rng, grid.size, 8, octaves=2)
    rgb = blend(_paint((grid.size, grid.size), base), vein, (0.85 * veins).astype(np.float32)) * mottle[..., None]
    backing = _paint((grid.size, grid.size), base * 0.25)
    return Layer(rgb.astype(np.float32), np.ones(t.shape, np.float32), "texture", backing=backing)


# ----------------------------------------------------------------------------- objects

def render_gear(grid: Grid, rng: np.random.Generator) -> Layer:
    """Spur gear with a hub bore; each tooth is a removable part."""
    center, angle, scale = _pose(rng)
    u, v = to_local(grid, center, angle, scale)
    n_teeth = int(rng.integers(10, 16))
    root, tip = 0.48, 0.6
    rho, phi = np.hypot(u, v), np.arctan2(v, u)
    profile = 0.5 * (1 + np.clip(1.8 * np.cos(n_teeth * phi), -1, 1))
    outline = rho - (root + (tip - root) * profile)
    bore = coverage(rho - 0.13, grid, scale)
    holes = np.zeros_like(u)
    if rng.random() < 0.6:
        for k in range(int(rng.integers(4, 7))):
            a = 2 * np.pi * k / 6
            holes = np.maximum(holes, coverage(sdf_circle(u, v, 0.06, 0.3 * np.cos(a), 0.3 * np.sin(a)), grid, scale))
    alpha = coverage(outline, grid, scale) * (1 - bore) * (1 - holes)
    base_alpha = coverage(rho - root, grid, scale) * (1 - bore) * (1 - holes)
    color = _metal(rng)
    groove = 1.0 - 0.25 * np.exp(-((rho - 0.4) ** 2) / 0.0004)
    shade = _bevel(outline, 0.08, 0.25) * groove * (0.95 + 0.1 * value_noise(rng, grid.size, 16))
    shade = shade + 0.25 * _highlight(u, v, -0.15, -0.2, 0.2)
    rgb = _paint(u.shape, color) * shade[..., None]
    tooth_index = np.round(phi * n_teeth / (2 * np.pi)) % n_teeth
    teeth = [(tooth_index == k) & (rho > root - 0.01) & (alpha > 0.5) for k in range(n_teeth)]
    return _parts_layer(rgb, alpha, "object", rgb, base_alpha, [t.astype(np.float32) for t in teeth])


def render_button(grid: Grid, rng: np.random.Generator) -> Layer:
    """Four-hole sewing button with a raised rim."""
    center, angle, scale = _pose(rng)
    u, v = to_local(grid, center, angle, scale)
    radius = 0.55
    outline = sdf_circle(u, v, radius)
    holes = np.zeros_like(u)
    for su in (-1, 1):
        for sv in (-1, 1):
            holes = np.maximum(holes, coverage(sdf_circle(u, v, 0.055, 0.12 * su, 0.12 * sv), grid, scale))
    alpha = coverage(outline, grid, scale) * (1 - holes)
    if rng.random() < 0.25:
        color = hsv_color(rng, rng.uniform(0, 1), 0.05, rng.choice([0.15, 0.9]))
    else:
        color = hsv_color(rng, rng.uniform(0, 1), rng.uniform(0.5, 0.85), rng.uniform(0.55, 0.85))
    rho = np.hypot(u, v)
    rim = 1.0 + 0.18 * np.exp(-((rho - 0.47) ** 2) / 0.0015) - 0.15 * np.exp(-((rho - 0.4) ** 2) / 0.0006)
    shade = _bevel(outline, 0.06, 0.3) * rim + 0.2 * _highlight(u, v, -0.2, -0.25, 0.18)
    return Layer(_paint(u.shape, color) * shade[..., None], alpha, "object")


def render_battery(grid: Grid, rng: np.random.Generator) -> Layer:
    """Cylindrical cell seen from the side: wrapped body, cap band and a removable terminal."""
    center, angle, scale = _pose(rng)
    u, v = to_local(grid, center, angle, scale)
    body = sdf_box(u, v, 0.6, 0.25, 0.06)
    terminal = coverage(sdf_box(u, v, 0.06, 0.08, 0.02, cu=0.63), grid, scale) * (u > 0.58)
    body_alpha = coverage(body, grid, scale)
    wrap = hsv_color(rng, rng.uniform(0, 1), rng.uniform(0.4, 0.9), rng.uniform(0.2, 0.7))
    band = hsv_color(rng, rng.choice([0.08, 0.12, 0.0]), rng.uniform(0.3, 0.7), rng.uniform(0.6, 0.85))
    rgb = np.where((u > 0.25)[..., None], band, wrap).astype(np.float32)
    label = np.abs(v) < 0.04
    rgb = np.where((label & (u < 0.1) & (u > -0.45))[..., None], rgb * 0.6 + 0.4, rgb)
    cylinder = 0.7 + 0.45 * (1 - (v / 0.25) ** 2).clip(0, 1) ** 0.5 + 0.25 * np.exp(-((v + 0.1) ** 2) / 0.002)
    rgb = rgb * cylinder[..., None]
    terminal_rgb = _paint(u.shape, hsv_color(rng, 0, 0.02, 0.75)) * cylinder[..., None]
    full_rgb = blend(rgb, terminal_rgb, terminal)
    alpha = np.maximum(body_alpha, terminal)
    return _parts_layer(full_rgb.astype(np.float32), alpha, "object", rgb.astype(np.float32), body_alpha, [terminal])


def render_circuit(grid: Grid, rng: np.random.Generator) -> Layer:
    """Printed circuit board with traces, solder pads and removable components."""
    center, angle, scale = _pose(rng, free_rotation=False, jitter_deg=12, scale=(1.1, 1.25))
    u, v = to_local(grid, center, angle, scale)
    alpha = coverage(sdf_box(u, v, 0.72, 0.56, 0.04), grid, scale)
    board = hsv_color(rng, rng.choice([0.33, 0.36, 0.6, 0.0]), rng.uniform(0.55, 0.8), rng.uniform(0.3, 0.5))
    base = _paint(u.shape, board) * (0.95 + 0.1 * value_noise(rng, grid.size, 20))[..., None]
    for _ in range(int(rng.integers(6, 10))):
        p = rng.uniform(-0.6, 0.6, size=2)
        points = [p.copy()]
        for step in range(3):
            p = p.copy()
            p[step % 2] = rng.uniform(-0.6, 0.6)
            points.append(p)
        base = blend(base, board * 1.35 + 0.05, coverage(sdf_polyline(u, v, np.array(points)) - 0.012, grid, scale))
    pad_color = hsv_color(rng, 0.12, 0.5, 0.8)
    slots = [(-0.4, -0.28), (0.05, -0.28), (0.45, -0.28), (-0.4, 0.25), (0.05, 0.25), (0.45, 0.25)]
    order = rng.permutation(len(slots))[: int(rng.integers(4, 7))]
    kinds = ["ic", "ic"] + [str(k) for k in rng.choice(["resistor", "capacitor"], size=4)]
    components = []
    for (cu, cv), kind in zip((slots[i] for i in order), kinds):
        shape, color, pads = _component(u, v, cu, cv, kind, grid, scale, rng)
        base = blend(base, pad_color, pads)
        components.append((shape, color))
    rgb = base.copy()
    for shape, color in components:
        rgb = blend(rgb, color, shape)
    parts = [shape for shape, _ in components]
    return _parts_layer(rgb.astype(np.float32), alpha, "object", base.astype(np.float32), alpha, parts)


def _component(u, v, cu, cv, kind, grid, scale, rng):
    """Coverage, colour image and solder-pad coverage of one circuit component."""
    if kind == "ic":
        pin_rows = (np.abs(((u - cu) / 0.05) % 1 - 0.5) < 0.2).astype(np.float32)
        pads = coverage(sdf_box(u, v, 0.2, 0.16, 0.0, cu, cv), grid, scale) * pin_rows
        pins = coverage(sdf_box(u, v, 0.18, 0.15, 0.0, cu, cv), grid, scale) * pin_rows
        chip = coverage(sdf_box(u, v, 0.18, 0.1, 0.01, cu, cv), grid, scale)
        color = np.where(chip[..., None] > 0.5, hsv_color(rng, 0, 0, 0.12), hsv_color(rng, 0, 0, 0.78))
        dot = coverage(sdf_circle(u, v, 0.02, cu - 0.13, cv - 0.05), grid, scale)
        return np.maximum(pins, chip), blend(color, (0.4, 0.4, 0.4), dot), pads
    if kind == "resistor":
        pads = coverage(sdf_box(u, v, 0.11, 0.05, 0.0, cu, cv), grid, scale)
        shape = coverage(sdf_box(u, v, 0.09, 0.04, 0.01, cu, cv), grid, scale)
        color = np.where((np.abs(u - cu) > 0.06)[..., None], hsv_color(rng, 0, 0, 0.8), hsv_color(rng, 0.08, 0.5, 0.5))
        return shape, color, pads
    pads = coverage(sdf_circle(u, v, 0.1, cu, cv), grid, scale)
    shape = coverage(sdf_circle(u, v, 0.085, cu, cv), grid, scale)
    can = hsv_color(rng, float(rng.choice([0.6, 0.0, 0.75])), 0.6, 0.35)
    color = np.where((np.abs(u - cu - 0.05) < 0.02)[..., None], np.float32(0.8), can)
    color = color * (1 + 0.4 * _highlight(u, v, cu - 0.03, cv - 0.03, 0.03))[..., None]
    return shape, color, pads


def render_cookie(grid: Grid, rng: np.random.Generator) -> Layer:
    """Round biscuit with an uneven edge, browned rim, docking holes and chocolate chips."""
    center, angle, scale = _pose(rng)
    u, v = to_local(grid, center, angle, scale)
    rho, phi = np.hypot(u, v), np.arctan2(v, u)
    wobble = sum(rng.uniform(0.005, 0.015) * np.sin(k * phi + rng.uniform(0, 6.3)) for k in (3, 5, 7))
    outline = rho - (0.57 + wobble)
    alpha = coverage(outline, grid, scale)
    dough = hsv_color(rng, rng.uniform(0.08, 0.11), rng.uniform(0.45, 0.65), rng.uniform(0.7, 0.85))
    rgb = _paint(u.shape, dough) * (0.88 + 0.2 * fractal_noise(rng, grid.size, 10, 2))[..., None]
    rgb = blend(rgb, dough * 0.6, (np.clip((rho - 0.42) / 0.15, 0, 1) ** 2).astype(np.float32))
    for cu in (-0.2, 0.0, 0.2):
        for cv in (-0.2, 0.0, 0.2):
            rgb = blend(rgb, dough * 0.55, coverage(sdf_circle(u, v, 0.018, cu, cv), grid, scale))
    chip_color = hsv_color(rng, 0.05, 0.6, 0.22)
    for _ in range(int(rng.integers(4, 8))):
        r, a = rng.uniform(0.1, 0.45), rng.uniform(0, 2 * np.pi)
        blob = sdf_circle(u, v, rng.uniform(0.03, 0.05), r * np.cos(a), r * np.sin(a))
        rgb = blend(rgb, chip_color, coverage(blob + 0.01 * np.sin(7 * np.arctan2(v, u)), grid, scale))
    return Layer(rgb.astype(np.float32), alpha, "object")


def render_tablets(grid: Grid, rng: np.random.Generator) -> Layer:
    """Several scored tablets in a blister grid; each tablet is a removable part."""
    center, angle, scale = _pose(rng, free_rotation=False, jitter_deg=10, scale=(1.15, 1.35))
    u, v = to_local(grid, center, angle, scale)
    cols, rows = (2, 2) if rng.random() < 0.5 else (3, 2)
    oblong = rng.random() < 0.5
    color = hsv_color(rng, rng.uniform(0, 1), rng.uniform(0.0, 0.35), rng.uniform(0.8, 0.95))
    rgb = np.zeros(u.shape + (3,), np.float32)
    alpha = np.zeros(u.shape, np.float32)
    parts = []
    for i in range(cols):
        for j in range(rows):
            cu, cv = (i - (cols - 1) / 2) * 0.45, (j - (rows - 1) / 2) * 0.5
            sdf = sdf_box(u, v, 0.19, 0.12, 0.12, cu, cv) if oblong else sdf_circle(u, v, 0.17, cu, cv)
            part = coverage(sdf, grid, scale)
            score = 1.0 - 0.35 * (np.abs(u - cu) < 0.008 + 0.5 * grid.pixel) * (sdf < -0.03)
            shade = (_bevel(sdf, 0.05, 0.35) * score + 0.2 * _highlight(u, v, cu - 0.05, cv - 0.05, 0.06))
            rgb = blend(rgb, color * shade[..., None], part)
            alpha = np.maximum(alpha, part)
            parts.append(part)
    empty = np.zeros_like(alpha)
    return _parts_layer(rgb, alpha, "object", rgb.copy(), empty, parts)


def render_fuse(grid: Grid, rng: np.random.Generator) -> Layer:
    """Glass cartridge fuse: translucent tube, metal end caps and a wire; caps and wire are parts."""
    center, angle, scale = _pose(rng)
    u, v = to_local(grid, center, angle, scale)
    glass_sdf = sdf_box(u, v, 0.46, 0.15, 0.04)
    glass = coverage(glass_sdf, grid, scale)
    tint = hsv_color(rng, rng.uniform(0.45, 0.65), rng.uniform(0.05, 0.3), 0.9)
    base_rgb = _paint(u.shape, tint) * (0.85 + 0.4 * np.exp(-((v + 0.07) ** 2) / 0.0015))[..., None]
    base_alpha = glass * 0.55
    metal = _metal(rng)
    cylinder = (0.65 + 0.5 * np.clip(1 - (v / 0.19) ** 2, 0, 1) ** 0.5)[..., None]
    caps = [coverage(sdf_box(u, v, 0.12, 0.19, 0.03, side * 0.55, 0.0), grid, scale) for side in (-1, 1)]
    sag = rng.uniform(-0.04, 0.04)
    wire_pts = np.array([[-0.45, 0.0], [0.0, sag], [0.45, 0.0]])
    wire = coverage(sdf_polyline(u, v, wire_pts) - 0.012, grid, scale) * glass
    rgb = blend(base_rgb, (0.25, 0.25, 0.25), wire)
    alpha = np.maximum(base_alpha, wire)
    for cap in caps:
        rgb = blend(rgb, metal * cylinder, cap)
        alpha = np.maximum(alpha, cap)
    return _parts_layer(rgb.astype(np.float32), alpha, "object", base_rgb, base_alpha, [caps[0], caps[1], wire])


def render_socket(grid: Grid, rng: np.random.Generator) -> Layer:
    """Power socket face: rounded plate, recessed well and removable contact pins."""
    center, angle, scale = _pose(rng, free_rotation=False, jitter_deg=15)
    u, v = to_local(grid, center, angle, scale)
    outline = sdf_box(u, v, 0.55, 0.55, 0.14)
    alpha = coverage(outline, grid, scale)
    plastic = hsv_color(rng, rng.uniform(0.05, 0.15), rng.uniform(0.0, 0.2), float(rng.choice([0.88, 0.75, 0.2])))
    well = sdf_circle(u, v, 0.38)
    shade = _bevel(outline, 0.08, 0.25) * (1 - 0.15 * coverage(well, grid, scale))
    shade = shade * (1 - 0.25 * np.exp(-((np.hypot(u, v) - 0.37) ** 2) / 0.0006))
    base = _paint(u.shape, plastic) * shade[..., None]
    metal = _metal(rng)
    pins = [(-0.17, 0.0), (0.17, 0.0)] + ([(0.0, -0.22)] if rng.random() < 0.5 else [])
    parts = []
    for cu, cv in pins:
        base = blend(base, (0.06, 0.06, 0.06), coverage(sdf_circle(u, v, 0.06, cu, cv), grid, scale))
    rgb = base.copy()
    for cu, cv in pins:
        pin = coverage(sdf_circle(u, v, 0.065, cu, cv), grid, scale)
        rgb = blend(rgb, metal * (0.8 + 0.5 * _highlight(u, v, cu - 0.02, cv - 0.02, 0.025))[..., None], pin)
        parts.append(pin)
    return _parts_layer(rgb.astype(np.float32), alpha, "object", base.astype(np.float32), alpha, parts)


def render_bracket(grid: Grid, rng: np.random.Generator) -> Layer:
    """Painted L-shaped bracket with mounting holes and a removable tab."""
    center, angle, scale = _pose(rng, scale=(1.0, 1.15))
    u, v = to_local(grid, center, angle, scale)
    arm = np.minimum(sdf_box(u, v, 0.55, 0.15, 0.03, 0.05, 0.35), sdf_box(u, v, 0.15, 0.5, 0.03, -0.35, 0.0))
    holes = np.zeros_like(u)
    for cu, cv in ((0.3, 0.35), (-0.35, -0.25), (-0.35, 0.05)):
        holes = np.maximum(holes, coverage(sdf_circle(u, v, 0.055, cu, cv), grid, scale))
    body = coverage(arm, grid, scale) * (1 - holes)
    tab = coverage(sdf_box(u, v, 0.09, 0.08, 0.02, 0.66, 0.35), grid, scale) * (u > 0.58)
    paint = hsv_color(rng, rng.uniform(0.05, 0.1), rng.uniform(0.0, 0.6), float(rng.choice([0.15, 0.45, 0.85])))
    shade = _bevel(arm, 0.05, 0.3) + 0.15 * _highlight(u, v, -0.35, -0.4, 0.2)
    rgb = _paint(u.shape, paint) * shade[..., None] * (0.96 + 0.08 * value_noise(rng, grid.size, 24))[..., None]
    alpha = np.maximum(body, tab)
    return _parts_layer(rgb.astype(np.float32), alpha, "object", rgb.astype(np.float32), body, [tab])


def render_nut(grid: Grid, rng: np.random.Generator) -> Layer:
    """Hexagon nut with a threaded bore and chamfer ring."""
    center, angle, scale = _pose(rng)
    u, v = to_local(grid, center, angle, scale)
    outline = sdf_polygon_regular(u, v, 0.5, 6)
    rho, phi = np.hypot(u, v), np.arctan2(v, u)
    bore = coverage(rho - 0.2, grid, scale)
    alpha = coverage(outline, grid, scale) * (1 - bore)
    color = _metal(rng)
    thread = 1 - 0.3 * ((rho < 0.26) & (np.sin(phi * 18 + rho * 90) > 0))
    chamfer = 1 + 0.2 * np.exp(-((rho - 0.4) ** 2) / 0.0008)
    shade = _bevel(outline, 0.06, 0.3) * thread * chamfer * (0.95 + 0.1 * value_noise(rng, grid.size, 20))
    rgb = _paint(u.shape, color) * (shade + 0.2 * _highlight(u, v, -0.2, -0.2, 0.15))[..., None]
    return Layer(rgb.astype(np.float32), alpha, "object")


def render_tubes(grid: Grid, rng: np.random.Generator) -> Layer:
    """Parallel metal tubes lying side by side; each tube is a removable part."""
    center, angle, scale = _pose(rng, free_rotation=False, jitter_deg=20, scale=(1.1, 1.3))
    u, v = to_local(grid, center, angle, scale)
    count = int(rng.integers(3, 6))
    radius = 0.085
    metal = _metal(rng)
    rgb = np.zeros(u.shape + (3,), np.float32)
    alpha = np.zeros(u.shape, np.float32)
    parts = []
    for k in range(count):
        cv = (k - (count - 1) / 2) * 0.22
        sdf = sdf_box(u, v, 0.68, radius, radius, 0.0, cv)
        tube = coverage(sdf, grid, scale)
        cylinder = 0.55 + 0.45 * np.clip(1 - ((v - cv) / radius) ** 2, 0, 1) ** 0.5
        cylinder = cylinder + 0.35 * np.exp(-((v - cv + 0.03) ** 2) / 0.0003)
        opening = coverage(sdf_box(u, v, 0.03, radius * 0.6, radius * 0.5, 0.64, cv), grid, scale)
        color = metal[None, None] * cylinder[..., None]
        color = blend(color, (0.08, 0.08, 0.08), opening)
        rgb = blend(rgb, color, tube)
        alpha = np.maximum(alpha, tube)
        parts.append(tube)
    return _parts_layer(rgb, alpha, "object", rgb.copy(), np.zeros_like(alpha), parts)


def render_plate(grid: Grid, rng: np.random.Generator) -> Layer:
    """Brushed metal plate with four corner holes."""
    center, angle, scale = _pose(rng, free_rotation=False, jitter_deg=15, scale=(1.05, 1.2))
    u, v = to_local(grid, center, angle, scale)
    outline = sdf_box(u, v, 0.6, 0.6, 0.04)
    holes = np.zeros_like(u)
    for su in (-1, 1):
        for sv in (-1, 1):
            holes = np.maximum(holes, coverage(sdf_circle(u, v, 0.06, 0.45 * su, 0.45 * sv), grid, scale))
    alpha = coverage(outline, grid, scale) * (1 - holes)
    color = _metal(rng)
    brushed = 0.85 + 0.2 * _streaks(v, rng, 6, (60.0, 180.0))
    shade = _bevel(outline, 0.05, 0.25) * brushed + 0.15 * _highlight(u, v, -0.3, -0.3, 0.3)
    return Layer((_paint(u.shape, color) * shade[..., None]).astype(np.float32), alpha, "object")


PRODUCTS: dict[str, Product] = {p.name: p for p in (
    Product("canvas", "texture", False, render_canvas),
    Product("plank", "texture", False, render_plank),
    Product("marble", "texture", False, render_marble),
    Product("gear", "object", True, render_gear),
    Product("button", "object", False, render_button),
    Product("battery", "object", True, render_battery),
    Product("circuit", "object", True, render_circuit),
    Product("cookie", "object", False, render_cookie),
    Product("tablets", "object", True, render_tablets),
    Product("fuse", "object", True, render_fuse),
    Product("socket", "object", True, render_socket),
    Product("bracket", "object", True, render_bracket),
    Product("nut", "object", False, render_nut),
    Product("tubes", "object", True, render_tubes),
    Product("plate", "object", False, render_plate),
)}


def get_product(name: str) -> Product:
    """The product called ``name``; ``KeyError`` lists the known products."""
    try:
        return PRODUCTS[name]
    except KeyError:
        raise KeyError(f"unknown synthetic product {name!r}; known: {sorted(PRODUCTS)}") from None
