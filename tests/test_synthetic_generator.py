"""The synthetic generator: drawing primitives, products, defect signatures, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from dapo.synthetic.defects import DEFECTS, Scene
from dapo.synthetic.generator import STYLES, applicable_defects, generate_image, make_rng
from dapo.synthetic.products import PRODUCTS
from dapo.synthetic.raster import coverage, make_grid, sdf_box, sdf_circle, sdf_polyline, stroke, value_noise

SIZE = 64


def test_circle_coverage_integrates_to_its_area():
    grid = make_grid(128)
    radius = 0.4
    area_pixels = coverage(sdf_circle(grid.x, grid.y, radius), grid).sum()
    expected = np.pi * (radius / grid.pixel) ** 2
    assert area_pixels == pytest.approx(expected, rel=0.01)


def test_rounded_box_sdf_matches_hand_values():
    u = np.array([0.0, 0.5, 0.7, 0.0], np.float32)
    v = np.array([0.0, 0.0, 0.0, 0.4], np.float32)
    # box of half sizes 0.5 x 0.3, no rounding: centre -0.3 (nearest edge in v), edge 0, outside 0.2 / 0.1
    assert np.allclose(sdf_box(u, v, 0.5, 0.3), [-0.3, 0.0, 0.2, 0.1], atol=1e-6)


def test_polyline_distance_matches_brute_force():
    rng = np.random.default_rng(0)
    points = rng.uniform(-1, 1, size=(5, 2)).astype(np.float32)
    u, v = rng.uniform(-1, 1, size=(2, 200)).astype(np.float32)
    samples = np.linspace(0, 1, 4001)[:, None]
    dense = np.concatenate([a + samples * (b - a) for a, b in zip(points[:-1], points[1:])])
    brute = np.hypot(u[:, None] - dense[None, :, 0], v[:, None] - dense[None, :, 1]).min(1)
    assert np.allclose(sdf_polyline(u, v, points), brute, atol=2e-3)


def test_stroke_width_in_pixels():
    grid = make_grid(128)
    horizontal = np.array([[-0.5, 0.0], [0.5, 0.0]], np.float32)
    cov = stroke(grid, horizontal, width=4 * grid.pixel)
    assert cov[:, 64].sum() == pytest.approx(4.0, abs=0.05)
    assert cov[:, 5].sum() == 0.0


def test_value_noise_is_seeded_and_bounded():
    a = value_noise(np.random.default_rng(3), 32, 4)
    b = value_noise(np.random.default_rng(3), 32, 4)
    assert np.array_equal(a, b) and a.min() >= 0.0 and a.max() <= 1.0 and a.std() > 0.05


@pytest.mark.parametrize("product", sorted(PRODUCTS))
def test_products_render_a_visible_layer(product):
    spec = PRODUCTS[product]
    layer = spec.render(make_grid(SIZE), make_rng(0, product))
    assert layer.rgb.shape == (SIZE, SIZE, 3) and layer.alpha.shape == (SIZE, SIZE)
    assert layer.rgb.dtype == np.float32
    covered = (layer.alpha > 0.5).mean()
    assert (covered == 1.0) if spec.kind == "texture" else (0.1 < covered < 0.95)
    assert (layer.n_parts > 0) == spec.has_parts


def test_generate_image_is_deterministic_and_seed_sensitive():
    a = generate_image("gear", ("scratch", "rust"), make_rng(1, "x"), size=SIZE)
    b = generate_image("gear", ("scratch", "rust"), make_rng(1, "x"), size=SIZE)
    c = generate_image("gear", ("scratch", "rust"), make_rng(2, "x"), size=SIZE)
    assert np.array_equal(a.image, b.image) and all(np.array_equal(a.masks[k], b.masks[k]) for k in a.masks)
    assert not np.array_equal(a.image, c.image)
    assert a.image.dtype == np.uint8 and a.image.shape == (SIZE, SIZE, 3)


def test_normal_image_has_no_masks():
    image = generate_image("cookie", (), make_rng(0), size=SIZE)
    assert image.is_normal and image.masks == {} and image.defects == ()


def test_defects_come_back_in_drawing_order_with_masks():
    image = generate_image("circuit", ("thread", "missing"), make_rng(0), size=SIZE)
    assert image.defects == ("missing", "thread")  # missing is drawn first, thread lies on top
    assert set(image.masks) == {"missing", "thread"}
    assert all(m.dtype == bool and m.any() for m in image.masks.values())


def test_at_least_twelve_defect_types_and_missing_needs_parts():
    assert len(DEFECTS) >= 12
    assert "missing" not in applicable_defects("canvas")
    assert "missing" in applicable_defects("tablets")
    with pytest.raises(ValueError, match="removable parts"):
        generate_image("canvas", ("missing",), make_rng(0), size=SIZE)


@pytest.mark.parametrize("bad, error", [(("rust", "rust"), ValueError), (("stain",), KeyError)])
def test_bad_defect_lists_are_refused(bad, error):
    with pytest.raises(error):
        generate_image("plate", bad, make_rng(0), size=SIZE)


def test_unknown_product_and_style_are_named():
    with pytest.raises(KeyError, match="teapot"):
        generate_image("teapot", (), make_rng(0))
    with pytest.raises(KeyError, match="styles|style"):
        generate_image("plate", (), make_rng(0), style="noir")


def _defect_change(product: str, defect: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels the defect changed in the product layer, and the mask it reported."""
    grid = make_grid(128)
    layer = PRODUCTS[product].render(grid, make_rng(seed, product))
    before_rgb, before_alpha = layer.rgb.copy(), layer.alpha.copy()
    scene = Scene(grid, layer, np.zeros((128, 128), bool))
    mask = DEFECTS[defect].draw(scene, make_rng(seed, defect), 0.8)
    change = np.abs(layer.rgb - before_rgb).sum(-1) * np.maximum(layer.alpha, before_alpha)
    change = change + 3 * np.abs(layer.alpha - before_alpha)
    for _color, cov in scene.overlays:
        change = change + cov
    return change > 0.15, mask


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_each_defect_changes_pixels_inside_its_mask(defect):
    product = "battery" if defect == "missing" else "plate"
    changed, mask = _defect_change(product, defect, seed=3)
    assert mask.dtype == bool and 6 <= mask.sum() < 0.25 * mask.size
    assert changed.sum() >= 5, "the defect must be visible"
    assert (changed & mask).sum() >= 0.85 * changed.sum(), "visible changes lie inside the mask"


@pytest.mark.parametrize("style", sorted(STYLES))
def test_backdrop_brightness_follows_the_style(style):
    low, high = STYLES[style].backdrop_value
    for k in range(4):
        image = generate_image("nut", (), make_rng(k), size=SIZE, style=style).image
        corner = image[:3, :3].mean() / 255.0  # the nut never reaches the corners
        assert 0.5 * low <= corner <= 1.35 * high + 0.05
