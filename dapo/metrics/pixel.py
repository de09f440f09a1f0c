"""Streaming pixel-level binary metrics (AUROC, AP, F1-max, both AUPROs) for one product.

Maps are evaluated as given: they are smoothed once, by the predictor
(:func:`dapo.methods.scoring.gaussian_smooth` with ``DAPOConfig.smoothing_sigma``), never here.

Masks follow the soft-mask rule of :mod:`dapo.metrics.validation`: binary (bool, 0/1, integer
0/255) unless ``mask_threshold=t`` is given, which reads ``mask > t`` as anomalous.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dapo.metrics.aupro import (
    check_definition,
    check_max_fpr,
    official_pro_auc,
    pro_auc,
    pro_auc_error_bound,
    region_weights,
)
from dapo.metrics.histogram import DEFAULT_BINS_PER_OCTAVE, DEFAULT_EXACT_TOP, ScoreHistogram
from dapo.metrics.ranking import RankedCounts
from dapo.metrics.validation import as_numpy, binary_masks, check_same_shape, float32_maps, products_for_batch

PIXEL_METRICS = ("pixel_auroc", "pixel_ap", "pixel_f1_max", "pixel_aupro", "pixel_aupro_official")


def prepare_maps(maps, masks, products: str | Sequence[str] | None = None, mask_threshold: float | None = None
                 ) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Validated float32 ``(N,H,W)`` maps, boolean masks (the soft-mask rule, ``mask_threshold``) and
    the maps' min and max.

    ``products`` (one name per map, or one for all) only names the sample in error messages.
    """
    maps = as_numpy(maps, "maps")
    names = None if products is None or maps.ndim == 0 else products_for_batch(products, len(maps))
    maps, low, high = float32_maps(maps, "maps", 3, "(N, H, W)", names)
    masks = binary_masks(masks, "masks", names, mask_threshold)
    check_same_shape(maps, "maps", masks, "masks")
    return maps, masks, low, high


class PixelAccumulator:
    """Histograms of one product's pixels: scores of normal pixels, of anomalous pixels, and of
    anomalous pixels weighted by ``1 / region area`` (AUPRO), plus the score range (official
    AUPRO thresholds). Memory does not grow with images.
    """

    def __init__(self, bins_per_octave: int = DEFAULT_BINS_PER_OCTAVE, max_fpr: float = 0.3,
                 exact_top: int = DEFAULT_EXACT_TOP):
        check_max_fpr(max_fpr)
        self.max_fpr = max_fpr
        self.histogram = ScoreHistogram(bins_per_octave, track_weights=True, exact_top=exact_top)
        self.n_regions = 0
        self.low, self.high = float("inf"), float("-inf")

    def add(self, maps: np.ndarray, masks: np.ndarray, low: float | None = None, high: float | None = None) -> None:
        """Add validated float32 ``(N,H,W)`` maps and boolean masks (see :func:`prepare_maps`).

        ``low`` and ``high`` (the maps' min and max) save a pass when known.
        """
        if maps.size == 0:
            return
        weights, n_regions = region_weights(masks)
        self.histogram.add(maps, masks, weights)
        self.n_regions += n_regions
        self.low = min(self.low, float(maps.min()) if low is None else low)
        self.high = max(self.high, float(maps.max()) if high is None else high)

    def merge(self, other: PixelAccumulator) -> PixelAccumulator:
        """Add ``other``'s pixels (same ``max_fpr``), in place (:meth:`ScoreHistogram.merge`); returns ``self``."""
        if other.max_fpr != self.max_fpr:
            raise ValueError(f"merged pixel accumulators must share max_fpr ({self.max_fpr} vs {other.max_fpr})")
        self.histogram.merge(other.histogram)
        self.n_regions += other.n_regions
        self.low, self.high = min(self.low, other.low), max(self.high, other.high)
        return self

    def ranked(self) -> RankedCounts:
        return self.histogram.ranked()

    def metrics(self) -> dict[str, float]:
        """Pixel AUROC, AP, F1-max and both AUPROs (NaN without anomalous or without normal pixels)."""
        ranked = self.ranked()
        official, _ = official_pro_auc(ranked, self.n_regions, self.low, self.high, self.max_fpr)
        return {
            "pixel_auroc": ranked.auroc(),
            "pixel_ap": ranked.average_precision(),
            "pixel_f1_max": ranked.f1_max(),
            "pixel_aupro": pro_auc(ranked, self.n_regions, self.max_fpr),
            "pixel_aupro_official": official,
        }

    def error_bounds(self) -> dict[str, float]:
        """Largest possible binning error of each histogram metric (see :mod:`dapo.metrics.aupro`)."""
        ranked = self.ranked()
        _, official = official_pro_auc(ranked, self.n_regions, self.low, self.high, self.max_fpr)
        return {
            "pixel_auroc": ranked.auroc_error_bound(),
            "pixel_ap": ranked.average_precision_error_bound(),
            "pixel_aupro": pro_auc_error_bound(ranked, self.n_regions, self.max_fpr),
            "pixel_aupro_official": official,
        }


def _accumulate(maps, masks, bins_per_octave: int, max_fpr: float, mask_threshold: float | None
                ) -> PixelAccumulator:
    maps, masks, low, high = prepare_maps(maps, masks, mask_threshold=mask_threshold)
    accumulator = PixelAccumulator(bins_per_octave, max_fpr)
    accumulator.add(maps, masks, low, high)
    return accumulator


def pixel_metrics(maps, masks, *, bins_per_octave: int = DEFAULT_BINS_PER_OCTAVE, max_fpr: float = 0.3,
                  mask_threshold: float | None = None) -> dict[str, float]:
    """One-shot pixel AUROC, AP, F1-max and both AUPROs of ``(N,H,W)`` maps against ``(N,H,W)`` masks.

    Masks are binary (bool, 0/1, integer 0/255); soft masks need ``mask_threshold`` (``mask > t``
    is anomalous), else they are an error naming their values.

    Same machinery as :class:`~dapo.metrics.binary.BinaryEvaluator` (binned; see
    :mod:`dapo.metrics.histogram` for the error bound). Undefined metrics are NaN, without warning.
    """
    return _accumulate(maps, masks, bins_per_octave, max_fpr, mask_threshold).metrics()


def aupro(maps, masks, *, definition: str = "exact", max_fpr: float = 0.3,
          bins_per_octave: int = DEFAULT_BINS_PER_OCTAVE, mask_threshold: float | None = None) -> float:
    """One-shot AUPRO of ``(N,H,W)`` maps: ``definition="exact"`` or ``"official"`` (:mod:`dapo.metrics.aupro`);
    masks as in :func:`pixel_metrics`."""
    check_definition(definition)
    metrics = _accumulate(maps, masks, bins_per_octave, max_fpr, mask_threshold).metrics()
    return metrics["pixel_aupro" if definition == "exact" else "pixel_aupro_official"]
