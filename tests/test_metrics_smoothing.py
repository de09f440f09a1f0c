"""The one Gaussian smoothing of anomaly maps (dapo.methods.scoring.gaussian_smooth) against scipy."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from dapo.methods.scoring import gaussian_smooth


def scipy_smooth(maps: np.ndarray, sigma: float) -> np.ndarray:
    """AnomalyCLIP's test.py: scipy's gaussian_filter on each 2-D map (mode 'reflect', truncate 4)."""
    flat = maps.reshape(-1, *maps.shape[-2:])
    return np.stack([gaussian_filter(m, sigma=sigma, mode="reflect", truncate=4.0) for m in flat]).reshape(maps.shape)


@pytest.mark.parametrize("shape, sigma", [
    ((2, 20, 24), 2.0),
    ((3, 37, 29), 4.0),   # the paper profile's sigma
    ((2, 5, 7), 4.0),     # map smaller than the kernel radius (16): reflections repeat
    ((1, 1, 1), 4.0),
    ((2, 1, 9), 1.5),
    ((2, 3, 2, 6), 0.7),  # any leading dimensions
    ((4, 4), 0.2),        # one 2-D map, radius 1
])
def test_equals_scipy_reflect_per_map(shape, sigma):
    rng = np.random.default_rng(sum(shape))
    maps = rng.random(shape)
    got = gaussian_smooth(torch.from_numpy(maps), sigma)
    assert got.dtype == torch.float64 and got.shape == maps.shape
    np.testing.assert_allclose(got.numpy(), scipy_smooth(maps, sigma), rtol=0, atol=1e-12)
    got32 = gaussian_smooth(torch.from_numpy(maps.astype(np.float32)), sigma)
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), scipy_smooth(maps, sigma), rtol=0, atol=1e-5)


def test_borders_are_reflect_not_mirror():
    maps = np.zeros((1, 9, 9))
    maps[0, 0, 0] = 1.0  # a corner impulse: the two border rules differ most here
    got = gaussian_smooth(torch.from_numpy(maps), 2.0).numpy()
    np.testing.assert_allclose(got, gaussian_filter(maps[0], 2.0, mode="reflect")[None], atol=1e-12)
    assert np.abs(got[0] - gaussian_filter(maps[0], 2.0, mode="mirror")).max() > 1e-3


def test_half_precision_maps_are_smoothed_in_float32():
    maps = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(1))
    for dtype in (torch.bfloat16, torch.float16):
        got = gaussian_smooth(maps.to(dtype), 4.0)
        assert got.dtype == dtype
        expected = scipy_smooth(maps.to(dtype).double().numpy(), 4.0)
        np.testing.assert_allclose(got.double().numpy(), expected, atol=1e-2)


def test_zero_sigma_returns_the_maps_and_bad_input_raises():
    maps = torch.rand(2, 8, 8)
    assert gaussian_smooth(maps, 0.0) is maps
    with pytest.raises(ValueError, match="smoothing sigma must be >= 0, got -1"):
        gaussian_smooth(maps, -1.0)
    with pytest.raises(ValueError, match=r"maps must have shape \(..., H, W\), got shape \(8,\)"):
        gaussian_smooth(torch.rand(8), 1.0)


def test_metrics_have_no_second_smoothing():
    import dapo.metrics as metrics
    from dapo.metrics import BinaryEvaluator

    assert not hasattr(metrics, "PAPER_SMOOTHING_SIGMA") and not hasattr(metrics, "gaussian_smooth")
    with pytest.raises(TypeError):
        BinaryEvaluator(smoothing_sigma=4.0)
