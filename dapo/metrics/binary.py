"""Binary anomaly detection and segmentation metrics, per product, accumulated batch by batch.

Image level: AUROC, AP, F1-max, exact (equal to scikit-learn). Pixel level: AUROC, AP, F1-max
and AUPRO in both definitions (``pixel_aupro``: exact area to FPR 0.3; ``pixel_aupro_official``:
the 200-threshold variant of the AnomalyCLIP / MultiADS / DAPO scripts; :mod:`dapo.metrics.aupro`)
from streaming histograms (:mod:`dapo.metrics.histogram`). Products are reported in the order
they were first seen, then a ``mean`` row (mean over products where the metric is defined; see
:mod:`dapo.metrics.validation` for the NaN rule and the input conventions).

ROC points and confusion counts at thresholds (:meth:`BinaryEvaluator.roc_curve`,
:meth:`BinaryEvaluator.rates_at`) come from the same data: exact at the image level; at the
pixel level from the histograms, without per-pixel storage (:mod:`dapo.metrics.curves`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from dapo.metrics.aupro import check_max_fpr
from dapo.metrics.curves import count_frame, roc_frame
from dapo.metrics.histogram import DEFAULT_BINS_PER_OCTAVE, DEFAULT_EXACT_TOP, ScoreHistogram, check_bins_per_octave
from dapo.metrics.pixel import PIXEL_METRICS, PixelAccumulator, prepare_maps
from dapo.metrics.ranking import RankedCounts
from dapo.metrics.validation import (
    MaskWarning,
    as_numpy,
    binary_labels,
    check_mask_threshold,
    check_ndim,
    check_real,
    check_same_length,
    finite_range,
    products_for_batch,
    warn_undefined,
)

IMAGE_METRICS = ("image_auroc", "image_ap", "image_f1_max")
BINARY_METRICS = IMAGE_METRICS + PIXEL_METRICS
#: Product name of the curves pooled over every product.
POOLED = "pooled"
LEVELS = ("image", "pixel")


def image_inputs(scores, labels, products: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validated float64 ``(N,)`` image scores (finite) and boolean labels (0/1 or bool)."""
    scores = as_numpy(scores, "image_scores")
    check_real(scores, "image_scores")
    check_ndim(scores, 1, "image_scores", "(N,)")
    labels = binary_labels(labels, "image_labels")
    check_same_length(image_scores=scores, image_labels=labels)
    finite_range(scores, "image_scores", products if products is not None and len(products) == len(scores) else None)
    return scores.astype(np.float64), labels


def image_metrics(scores, labels) -> dict[str, float]:
    """Exact image AUROC, AP and F1-max of ``(N,)`` scores against 0/1 or bool labels (NaN if one class)."""
    ranked = RankedCounts.from_scores(*image_inputs(scores, labels))
    return {"image_auroc": ranked.auroc(), "image_ap": ranked.average_precision(), "image_f1_max": ranked.f1_max()}


class BinaryEvaluator:
    """Streaming per-product binary metrics.

    Parameters
    ----------
    bins_per_octave:
        Resolution of the pixel-score histograms (power of two; see :mod:`dapo.metrics.histogram`).
    pro_max_fpr:
        FPR limit of both AUPRO definitions (0.3 in the paper).
    exact_top:
        How many of the highest distinct pixel scores each product's histogram counts exactly
        (:mod:`dapo.metrics.histogram`; 0: bins only).
    mask_threshold:
        ``None`` (default): masks must be binary (bool, 0/1, integer 0/255); a number ``t``: soft
        masks, ``mask > t`` is anomalous (the soft-mask rule of :mod:`dapo.metrics.validation`).

    An image labelled anomalous whose mask has no anomalous pixel, or one labelled normal whose
    mask has some, is stated once per product with a :class:`~dapo.metrics.validation.MaskWarning`
    (pixels count by their mask).

    Maps are evaluated as given (smoothing belongs to the predictor). Memory: per product, the
    pixel histograms (bounded by the range of scores, not the number of images) and the image
    scores (one float per image).
    """

    def __init__(self, *, bins_per_octave: int = DEFAULT_BINS_PER_OCTAVE, pro_max_fpr: float = 0.3,
                 exact_top: int = DEFAULT_EXACT_TOP, mask_threshold: float | None = None):
        self.mask_threshold = check_mask_threshold(mask_threshold)
        check_bins_per_octave(bins_per_octave)
        check_max_fpr(pro_max_fpr)
        if exact_top < 0:
            raise ValueError(f"exact_top must be >= 0, got {exact_top}")
        self.bins_per_octave = bins_per_octave
        self.pro_max_fpr = pro_max_fpr
        self.exact_top = exact_top
        self._pixels: dict[str, PixelAccumulator] = {}
        self._image_scores: dict[str, list[np.ndarray]] = {}
        self._image_labels: dict[str, list[np.ndarray]] = {}
        self._mask_label_warned: set[tuple[str, bool]] = set()

    def add(self, products: str | Sequence[str], image_scores, image_labels, maps, masks) -> None:
        """Add a batch: ``N`` product names (or one for all), ``(N,)`` image scores and 0/1 or bool
        labels, ``(N,H,W)`` anomaly maps and ``(N,H,W)`` masks (binary, or soft with the evaluator's
        ``mask_threshold``); numpy arrays or torch tensors of any float, int or bool dtype. An empty
        batch is ignored.
        """
        maps_array, masks_array, low, high = prepare_maps(maps, masks, products, self.mask_threshold)
        names = products_for_batch(products, len(maps_array))
        scores, labels = image_inputs(image_scores, image_labels, names)
        check_same_length(image_scores=scores, image_labels=labels, maps=maps_array)
        self._check_masks_match_labels(names, labels, masks_array)
        for product in dict.fromkeys(names):
            rows = np.array([name == product for name in names])
            if product not in self._pixels:
                self._pixels[product] = PixelAccumulator(self.bins_per_octave, self.pro_max_fpr, self.exact_top)
                self._image_scores[product], self._image_labels[product] = [], []
            if rows.all():
                self._pixels[product].add(maps_array, masks_array, low, high)
            else:
                self._pixels[product].add(maps_array[rows], masks_array[rows])
            self._image_scores[product].append(scores[rows])
            self._image_labels[product].append(labels[rows])

    def _check_masks_match_labels(self, names: list[str], labels: np.ndarray, masks: np.ndarray) -> None:
        """State (once per product and kind) an anomalous image with an empty mask, a normal one with a mask."""
        marked = masks.any(axis=(1, 2))
        rule = "binary masks" if self.mask_threshold is None else f"mask > {self.mask_threshold:g}"
        for anomalous, wrong, what in ((True, labels & ~marked, f"has no anomalous pixel ({rule})"),
                                       (False, ~labels & marked, f"marks {{n}} pixels anomalous ({rule})")):
            for index in np.flatnonzero(wrong):
                if (names[index], anomalous) in self._mask_label_warned:
                    continue
                self._mask_label_warned.add((names[index], anomalous))
                said = what.format(n=int(masks[index].sum()))
                warnings.warn(f"product {names[index]!r}, batch index {index}: an image labelled "
                              f"{'anomalous' if anomalous else 'normal'} whose mask {said}; its pixels count by "
                              f"the mask in the pixel metrics (further cases of this product are not stated)",
                              MaskWarning, stacklevel=3)

    @property
    def products(self) -> list[str]:
        return list(self._pixels)

    def merge(self, other: BinaryEvaluator) -> BinaryEvaluator:
        """Add ``other``'s batches (same settings) after this evaluator's, in place; returns ``self``.

        The result computes the metrics of one evaluator given this one's batches, then
        ``other``'s (:mod:`dapo.engine.distributed` merges the ranks' evaluators in rank order):
        products keep their first-seen order, image scores are concatenated, pixel histograms
        merged (:meth:`dapo.metrics.histogram.ScoreHistogram.merge`).
        """
        mine = (self.bins_per_octave, self.pro_max_fpr, self.exact_top, self.mask_threshold)
        theirs = (other.bins_per_octave, other.pro_max_fpr, other.exact_top, other.mask_threshold)
        if mine != theirs:
            raise ValueError(f"merged BinaryEvaluators must share (bins_per_octave, pro_max_fpr, exact_top, "
                             f"mask_threshold): {mine} vs {theirs}")
        self._mask_label_warned |= other._mask_label_warned
        for product, pixels in other._pixels.items():
            if product not in self._pixels:
                self._pixels[product] = PixelAccumulator(self.bins_per_octave, self.pro_max_fpr, self.exact_top)
                self._image_scores[product], self._image_labels[product] = [], []
            self._pixels[product].merge(pixels)
            self._image_scores[product] += other._image_scores[product]
            self._image_labels[product] += other._image_labels[product]
        return self

    def compute(self) -> pd.DataFrame:
        """Product x metric table (floats in [0, 1], unrounded) with a final ``mean`` row."""
        rows = {}
        for product, pixels in self._pixels.items():
            rows[product] = {**self._image_ranked(product, metrics=True), **pixels.metrics()}
        table = pd.DataFrame.from_dict(rows, orient="index", columns=list(BINARY_METRICS))
        table.index.name = "product"
        for group, reason in (
            (IMAGE_METRICS, "needs both normal and anomalous images"),
            (PIXEL_METRICS[:4], "needs both normal and anomalous pixels"),
        ):
            warn_undefined(", ".join(group), table.index[table[group[0]].isna()], reason)
        official = table["pixel_aupro_official"].isna() & table["pixel_aupro"].notna()
        warn_undefined("pixel_aupro_official", table.index[official],
                       "fewer than two of its 200 thresholds have FPR < pro_max_fpr (or one score only)")
        table.loc["mean"] = table.mean(axis=0, skipna=True)
        return table

    def error_bounds(self) -> pd.DataFrame:
        """Per product, the largest possible binning error of each pixel metric computed from histograms.

        ``pixel_auroc``, ``pixel_ap``: :mod:`dapo.metrics.ranking`; ``pixel_aupro``,
        ``pixel_aupro_official``: :mod:`dapo.metrics.aupro`.
        """
        bounds = {product: pixels.error_bounds() for product, pixels in self._pixels.items()}
        return pd.DataFrame.from_dict(bounds, orient="index").rename_axis("product")

    def _image_ranked(self, product: str, metrics: bool = False):
        scores = np.concatenate(self._image_scores[product])
        labels = np.concatenate(self._image_labels[product])
        if metrics:
            return image_metrics(scores, labels)
        return RankedCounts.from_scores(scores, labels)

    def _ranked(self, level: str, pooled: bool) -> dict[str, RankedCounts]:
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        if pooled and POOLED in self._pixels:
            raise ValueError(f"a product is named {POOLED!r}; the pooled curve would take its name")
        if level == "image":
            ranked = {product: self._image_ranked(product) for product in self._pixels}
            if pooled and self._pixels:
                ranked[POOLED] = RankedCounts.from_scores(
                    np.concatenate([s for product in self._pixels for s in self._image_scores[product]]),
                    np.concatenate([s for product in self._pixels for s in self._image_labels[product]]))
            return ranked
        ranked = {product: pixels.ranked() for product, pixels in self._pixels.items()}
        if pooled and self._pixels:
            ranked[POOLED] = ScoreHistogram.pooled([pixels.histogram for pixels in self._pixels.values()]).ranked()
        return ranked

    def roc_curve(self, level: str = "image", *, pooled: bool = False, drop_intermediate: bool = True) -> pd.DataFrame:
        """ROC points per product (columns ``product, threshold, fpr, tpr``), as ``sklearn.metrics.roc_curve``.

        ``level="image"``: exact. ``level="pixel"``: one point per histogram group, each exactly
        on the pixel ROC curve (thresholds at bin edges; between two points the curve is
        unknown only inside one bin). ``pooled`` adds the curve over all products, named
        :data:`POOLED`. ``drop_intermediate`` drops collinear points like scikit-learn.
        """
        return roc_frame(self._ranked(level, pooled), drop_intermediate=drop_intermediate, what=level)

    def rates_at(self, thresholds, level: str = "image", *, pooled: bool = False) -> pd.DataFrame:
        """Confusion counts (``tp, fp, fn, tn``), TPR and FPR per product at each threshold (``score >= t``).

        E.g. ``rates_at(0.5)`` for the confusion matrices of DAPO Fig. 4 or
        ``rates_at(np.linspace(0, 1, 101))`` for Fig. 10. At the pixel level a threshold inside a
        histogram bin counts that bin as below it and reports its counts in ``tp_uncertain`` and
        ``fp_uncertain`` (thresholds with few mantissa bits, such as 0.5, are bin edges: exact).
        """
        return count_frame(self._ranked(level, pooled), thresholds, what=level)
