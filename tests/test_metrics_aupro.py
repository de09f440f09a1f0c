"""The two AUPRO definitions against direct threshold loops over connected regions."""

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import auc

from dapo.metrics import AUPRO_DEFINITIONS, BinaryEvaluator, aupro, pixel_metrics
from dapo.metrics.pixel import PixelAccumulator, prepare_maps


def random_maps(n: int = 5, size: int = 20, seed: int = 0, decimals: int | None = None):
    """Noisy float32 maps, masks of 1-3 rectangles on the even images (regions touching diagonally too)."""
    rng = np.random.default_rng(seed)
    maps = ndimage.gaussian_filter(rng.normal(size=(n, size, size)), sigma=(0, 1.0, 1.0))
    masks = np.zeros(maps.shape, dtype=bool)
    for index in range(0, n, 2):
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(0, size - 5, 2)
            masks[index, y : y + rng.integers(1, 6), x : x + rng.integers(1, 6)] = True
    maps = np.where(masks, maps + rng.uniform(0.05, 0.4), maps)
    if decimals is not None:
        maps = np.round(maps, decimals)
    return maps.astype(np.float32), masks


def regions_of(masks):
    """(image index, boolean region) for every 8-connected region (skimage.measure.label's default)."""
    regions = []
    for index, mask in enumerate(masks):
        labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [(index, labels == region) for region in range(1, count + 1)]
    return regions


def official_reference(maps, masks, max_fpr=0.3, steps=200):
    """The official scripts' recipe written out: 200 thresholds from min to max, score > t,
    keep FPR < max_fpr, min-max rescale the FPRs, trapezoidal area."""
    regions = regions_of(masks)
    low, high = float(maps.min()), float(maps.max())
    fprs, pros = [], []
    for step in range(steps):
        predicted = maps > low + step * ((high - low) / steps)
        fprs.append(np.logical_and(predicted, ~masks).sum() / (~masks).sum())
        pros.append(np.mean([predicted[index][region].sum() / region.sum() for index, region in regions]))
    fprs, pros = np.array(fprs), np.array(pros)
    keep = fprs < max_fpr
    x = (fprs[keep] - fprs[keep].min()) / (fprs[keep].max() - fprs[keep].min())
    return auc(x, pros[keep])  # sklearn's trapezoid, as the scripts


def exact_reference(maps, masks, max_fpr=0.3):
    """Every distinct score a threshold (score >= t), area up to max_fpr (interpolated), / max_fpr."""
    regions = regions_of(masks)
    fprs, pros = [0.0], [0.0]
    for threshold in np.unique(maps)[::-1]:
        predicted = maps >= threshold
        fprs.append((predicted & ~masks).sum() / (~masks).sum())
        pros.append(np.mean([predicted[index][region].mean() for index, region in regions]))
    fprs, pros = np.array(fprs), np.array(pros)
    pro_end = np.interp(max_fpr, fprs, pros)
    inside = fprs <= max_fpr
    x, y = np.append(fprs[inside], max_fpr), np.append(pros[inside], pro_end)
    return auc(x, y) / max_fpr


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("decimals", [None, 1])
def test_official_aupro_equals_the_threshold_loop(seed, decimals):
    maps, masks = random_maps(seed=seed, decimals=decimals)
    expected = official_reference(maps, masks)
    assert aupro(maps, masks, definition="official") == pytest.approx(expected, abs=1e-12)
    assert pixel_metrics(maps, masks)["pixel_aupro_official"] == pytest.approx(expected, abs=1e-12)
    assert aupro(maps, masks, definition="official", max_fpr=0.1) == pytest.approx(
        official_reference(maps, masks, max_fpr=0.1), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 3])
def test_exact_aupro_equals_the_all_thresholds_loop(seed):
    maps, masks = random_maps(seed=seed, decimals=2)
    assert aupro(maps, masks) == pytest.approx(exact_reference(maps, masks), abs=1e-12)
    assert aupro(maps, masks, definition="exact") == aupro(maps, masks)


def test_the_two_definitions_differ():
    maps, masks = random_maps(seed=4)
    exact, official = aupro(maps, masks), aupro(maps, masks, definition="official")
    assert abs(exact - official) > 1e-3  # rescaling and the 200-point grid change the number


@pytest.mark.parametrize("bins_per_octave", [64, 4096])
def test_binned_histograms_stay_within_their_bounds(bins_per_octave):
    maps, masks = random_maps(n=8, size=32, seed=5)
    maps, masks, low, high = prepare_maps(maps, masks)
    accumulator = PixelAccumulator(bins_per_octave, exact_top=0)  # bins only
    for batch in (slice(0, 3), slice(3, 8)):
        accumulator.add(maps[batch], masks[batch])
    got, bounds = accumulator.metrics(), accumulator.error_bounds()
    assert accumulator.low == low and accumulator.high == high
    official, exact = official_reference(maps, masks), exact_reference(maps, masks)
    assert abs(got["pixel_aupro_official"] - official) <= bounds["pixel_aupro_official"]
    assert abs(got["pixel_aupro"] - exact) <= bounds["pixel_aupro"]
    assert bounds["pixel_aupro_official"] > 0 and bounds["pixel_aupro"] > 0
    if bins_per_octave == 4096:
        assert bounds["pixel_aupro_official"] < 0.05 and bounds["pixel_aupro"] < 1e-3


def test_evaluator_reports_both_columns_and_zero_bounds_when_exact():
    maps, masks = random_maps(n=6, seed=6)
    evaluator = BinaryEvaluator()
    evaluator.add("bottle", maps.max(axis=(1, 2)), masks.any(axis=(1, 2)), maps, masks)
    row, bounds = evaluator.compute().loc["bottle"], evaluator.error_bounds().loc["bottle"]
    assert row["pixel_aupro"] == pytest.approx(exact_reference(maps, masks), abs=1e-12)
    assert row["pixel_aupro_official"] == pytest.approx(official_reference(maps, masks), abs=1e-12)
    assert bounds["pixel_aupro_official"] == 0.0  # all pixels in the exact top


def test_official_aupro_undefined_cases():
    maps, masks = random_maps(seed=7)
    constant = np.full(maps.shape, 0.3, dtype=np.float32)
    assert np.isnan(aupro(constant, masks, definition="official"))  # no score spread: the scripts divide by 0
    assert np.isnan(aupro(maps, np.zeros_like(masks), definition="official"))  # no regions
    assert not np.isnan(aupro(constant, masks))  # the exact definition is a straight line here
    evaluator = BinaryEvaluator()
    evaluator.add("grid", [0.1, 0.9], [0, 1], constant[:2], masks[:2])
    with pytest.warns(UserWarning, match="pixel_aupro_official is NaN for grid"):
        evaluator.compute()


def test_definition_is_checked():
    maps, masks = random_maps()
    assert AUPRO_DEFINITIONS == ("exact", "official")
    with pytest.raises(ValueError, match=r"AUPRO definition must be one of \('exact', 'official'\), got 'mvtec'"):
        aupro(maps, masks, definition="mvtec")
