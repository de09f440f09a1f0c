"""Binary anomaly detection and segmentation metrics, per product, accumulated batch by batch.

Image level: AUROC, AP, F1-max, exact (equal to scikit-learn). Pixel level: AUROC, AP, F1-max
and AUPRO from streaming histograms (:mod:`dapo.metrics.histogram`, :mod:`dapo.metrics.aupro`).
Products are reported in the order they were first seen, then a ``mean`` row (mean over
products where the metric is defined; see :mod:`dapo.metrics.validation` for the NaN rule).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from dapo.metrics.pixel import PIXEL_METRICS, PixelAccumulator, prepare_maps
from dapo.metrics.aupro import check_max_fpr
from dapo.metrics.histogram import DEFAULT_BINS_PER_OCTAVE, check_bins_per_octave
from dapo.metrics.ranking import RankedCounts
from dapo.metrics.validation import (
    as_numpy,
    check_finite,
    check_ndim,
    products_for_batch,
    warn_undefined,
)

IMAGE_METRICS = ("image_auroc", "image_ap", "image_f1_max")
BINARY_METRICS = IMAGE_METRICS + PIXEL_METRICS


def image_metrics(scores, labels) -> dict[str, float]:
    """Exact image AUROC, AP and F1-max of ``scores`` against 0/1 ``labels`` (NaN if one class)."""
    ranked = RankedCounts.from_scores(as_numpy(scores, "image_scores"), as_numpy(labels, "image_labels"))
    return {"image_auroc": ranked.auroc(), "image_ap": ranked.average_precision(), "image_f1_max": ranked.f1_max()}


class BinaryEvaluator:
    """Streaming per-product binary metrics.

    Parameters
    ----------
    bins_per_octave:
        Resolution of the pixel-score histograms (power of two; see :mod:`dapo.metrics.histogram`).
    pro_max_fpr:
        FPR limit of the AUPRO integral (0.3 in the paper).
    smoothing_sigma:
        Gaussian sigma applied to every map before pixel metrics; ``None`` (default) for none.
        The paper profile uses :data:`dapo.metrics.smoothing.PAPER_SMOOTHING_SIGMA`.

    Memory: per product, the pixel histograms (bounded by the range of scores, not the number
    of images) and the image scores (one float per image).
    """

    def __init__(
        self,
        *,
        bins_per_octave: int = DEFAULT_BINS_PER_OCTAVE,
        pro_max_fpr: float = 0.3,
        smoothing_sigma: float | None = None,
    ):
        check_bins_per_octave(bins_per_octave)
        check_max_fpr(pro_max_fpr)
        self.bins_per_octave = bins_per_octave
        self.pro_max_fpr = pro_max_fpr
        self.smoothing_sigma = smoothing_sigma
        self._pixels: dict[str, PixelAccumulator] = {}
        self._image_scores: dict[str, list[np.ndarray]] = {}
        self._image_labels: dict[str, list[np.ndarray]] = {}

    def add(self, products: str | Sequence[str], image_scores, image_labels, maps, masks) -> None:
        """Add a batch: ``N`` product names (or one for all), ``(N,)`` image scores and 0/1 labels,
        ``(N,H,W)`` anomaly maps and ``(N,H,W)`` masks (bool, or numbers where ``> 0.5`` is
        anomalous); numpy arrays or torch tensors.
        """
        scores = as_numpy(image_scores, "image_scores").astype(np.float64).reshape(-1)
        labels = as_numpy(image_labels, "image_labels").reshape(-1)
        maps_array = as_numpy(maps, "maps")
        check_ndim(maps_array, 3, "maps", "(N, H, W)")
        names = products_for_batch(products, len(maps_array))
        if not len(scores) == len(labels) == len(names):
            raise ValueError(
                f"batch sizes differ: {len(names)} maps, {len(scores)} image_scores, {len(labels)} image_labels"
            )
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(f"image_labels must be 0 or 1, got values {np.unique(labels).tolist()}")
        check_finite(scores, "image_scores", names)
        maps_array, masks_array = prepare_maps(maps_array, masks, names, self.smoothing_sigma)
        for product in dict.fromkeys(names):
            rows = np.array([name == product for name in names])
            if product not in self._pixels:
                self._pixels[product] = PixelAccumulator(self.bins_per_octave, self.pro_max_fpr)
                self._image_scores[product], self._image_labels[product] = [], []
            everyone = rows.all()
            self._pixels[product].add(maps_array if everyone else maps_array[rows],
                                      masks_array if everyone else masks_array[rows])
            self._image_scores[product].append(scores[rows])
            self._image_labels[product].append(labels[rows].astype(bool))

    @property
    def products(self) -> list[str]:
        return list(self._pixels)

    def compute(self) -> pd.DataFrame:
        """Product x metric table (floats in [0, 1], unrounded) with a final ``mean`` row."""
        rows = {}
        for product, pixels in self._pixels.items():
            image = image_metrics(np.concatenate(self._image_scores[product]),
                                  np.concatenate(self._image_labels[product]))
            rows[product] = {**image, **pixels.metrics()}
        table = pd.DataFrame.from_dict(rows, orient="index", columns=list(BINARY_METRICS))
        table.index.name = "product"
        for group, reason in (
            (IMAGE_METRICS, "needs both normal and anomalous images"),
            (PIXEL_METRICS, "needs both normal and anomalous pixels"),
        ):
            warn_undefined(", ".join(group), table.index[table[group[0]].isna()], reason)
        table.loc["mean"] = table.mean(axis=0, skipna=True)
        return table

    def error_bounds(self) -> pd.DataFrame:
        """Per product, the largest possible binning error of pixel AUROC and AP (:mod:`dapo.metrics.ranking`)."""
        bounds = {}
        for product, pixels in self._pixels.items():
            ranked = pixels.ranked()
            bounds[product] = {"pixel_auroc": ranked.auroc_error_bound(),
                               "pixel_ap": ranked.average_precision_error_bound()}
        return pd.DataFrame.from_dict(bounds, orient="index").rename_axis("product")
