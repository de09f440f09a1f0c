"""Streaming pixel-level binary metrics (AUROC, AP, F1-max, AUPRO) for one product."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dapo.metrics.aupro import check_max_fpr, pro_auc, region_weights
from dapo.metrics.histogram import DEFAULT_BINS_PER_OCTAVE, ScoreHistogram
from dapo.metrics.ranking import RankedCounts
from dapo.metrics.smoothing import gaussian_smooth
from dapo.metrics.validation import as_numpy, check_finite, check_ndim, check_same_shape, products_for_batch

PIXEL_METRICS = ("pixel_auroc", "pixel_ap", "pixel_f1_max", "pixel_aupro")


def prepare_maps(
    maps, masks, products: str | Sequence[str], smoothing_sigma: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Validated float32 ``(N,H,W)`` maps (smoothed if asked) and boolean masks (``mask > 0.5``).

    ``products`` (one name per map, or one for all) only names the sample in error messages.
    """
    maps = as_numpy(maps, "maps")
    masks = as_numpy(masks, "masks")
    check_ndim(maps, 3, "maps", "(N, H, W)")
    check_same_shape(maps, "maps", masks, "masks")
    check_finite(maps, "maps", products_for_batch(products, len(maps)))
    masks = masks if masks.dtype == bool else masks > 0.5
    return gaussian_smooth(maps.astype(np.float32, copy=False), smoothing_sigma), masks


class PixelAccumulator:
    """Histograms of one product's pixels: scores of normal pixels, of anomalous pixels, and of
    anomalous pixels weighted by ``1 / region area`` (AUPRO). Memory does not grow with images.
    """

    def __init__(self, bins_per_octave: int = DEFAULT_BINS_PER_OCTAVE, max_fpr: float = 0.3):
        check_max_fpr(max_fpr)
        self.max_fpr = max_fpr
        self.histogram = ScoreHistogram(bins_per_octave, track_weights=True)
        self.n_regions = 0

    def add(self, maps: np.ndarray, masks: np.ndarray) -> None:
        """Add validated float32 ``(N,H,W)`` maps and boolean masks (see :func:`prepare_maps`)."""
        weights, n_regions = region_weights(masks)
        self.histogram.add(maps, masks, weights)
        self.n_regions += n_regions

    def ranked(self) -> RankedCounts:
        return self.histogram.ranked()

    def metrics(self) -> dict[str, float]:
        """Pixel AUROC, AP, F1-max and AUPRO (NaN without anomalous or without normal pixels)."""
        ranked = self.ranked()
        return {
            "pixel_auroc": ranked.auroc(),
            "pixel_ap": ranked.average_precision(),
            "pixel_f1_max": ranked.f1_max(),
            "pixel_aupro": pro_auc(ranked, self.n_regions, self.max_fpr),
        }


def _accumulate(maps, masks, bins_per_octave: int, max_fpr: float, smoothing_sigma: float | None) -> PixelAccumulator:
    maps, masks = prepare_maps(maps, masks, "<input>", smoothing_sigma)
    accumulator = PixelAccumulator(bins_per_octave, max_fpr)
    accumulator.add(maps, masks)
    return accumulator


def pixel_metrics(
    maps,
    masks,
    *,
    bins_per_octave: int = DEFAULT_BINS_PER_OCTAVE,
    max_fpr: float = 0.3,
    smoothing_sigma: float | None = None,
) -> dict[str, float]:
    """One-shot pixel AUROC, AP, F1-max and AUPRO of ``(N,H,W)`` maps against ``(N,H,W)`` masks.

    Same machinery as :class:`~dapo.metrics.binary.BinaryEvaluator` (binned; see
    :mod:`dapo.metrics.histogram` for the error bound). Undefined metrics are NaN, without warning.
    """
    return _accumulate(maps, masks, bins_per_octave, max_fpr, smoothing_sigma).metrics()


def aupro(
    maps,
    masks,
    *,
    max_fpr: float = 0.3,
    bins_per_octave: int = DEFAULT_BINS_PER_OCTAVE,
    smoothing_sigma: float | None = None,
) -> float:
    """One-shot AUPRO (per-region overlap up to ``max_fpr``, normalised) of ``(N,H,W)`` maps."""
    return _accumulate(maps, masks, bins_per_octave, max_fpr, smoothing_sigma).metrics()["pixel_aupro"]
