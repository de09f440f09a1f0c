"""Per-region overlap (PRO): region weights and two AUPRO definitions, both from one histogram.

``PRO(t)`` is the mean, over every connected region of every ground-truth mask of the product,
of the fraction of the region's pixels predicted anomalous at threshold ``t``; ``FPR(t)`` is the
fraction of all normal pixels predicted anomalous. Because
``PRO(t) = (1/R) * sum over region pixels p of [s_p above t] / area(region(p))``, the curve is a
weighted survival function: each anomalous pixel enters the histogram with weight
``1 / area`` of its region, next to the normal pixels. Regions are labelled once per image
(8-connectivity, as the MVTec reference and ``skimage.measure.label``'s default).

``"exact"`` (:func:`pro_auc`, the default; Bergmann et al., MVTec AD): every distinct score is
a threshold (``score >= t``); the area under ``PRO(FPR)`` from 0 to ``max_fpr`` (0.3), the
curve linearly interpolated at ``max_fpr``, divided by ``max_fpr``.

``"official"`` (:func:`official_pro_auc`): the ``cal_pro_score`` of the evaluation scripts that
AnomalyCLIP, MultiADS and DAPO share (``metrics.py``): 200 thresholds
``min + i * (max - min) / 200``, ``i = 0..199``, over the product's map scores (float64 here; the
scripts' ``np.arange`` in the maps' dtype can differ in the last bits, which only matters for
scores lying exactly on a threshold), a pixel anomalous when ``score > t``; keep the points
with ``FPR < max_fpr``, rescale their FPRs to [0, 1] by min-max, trapezoidal area
(``sklearn.metrics.auc``). NaN when fewer than two points are kept or they share one FPR.

Error (the histogram bins, :mod:`dapo.metrics.histogram`): scores inside one bin are tied for
``"exact"``; the true curve inside each tie group lies in the box spanned by its end points, so
the area moves by at most ``sum of box areas / 2 / max_fpr`` (:func:`pro_auc_error_bound`). For
``"official"`` a threshold inside a bin takes the bin's fraction above it (uniform inside the
bin); each FPR and PRO point is then off by at most the bin's share ``e_x``, ``e_y``, and the
area by at most ``e_y + 4 e_x / span`` (``span``: the kept FPR range), maximised over the
selections ``FPR < max_fpr`` that the point errors allow (:func:`official_pro_auc`). Both
bounds are 0 when every score lies in the exact top of the histogram.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from dapo.metrics.ranking import RankedCounts

#: 8-connectivity for connected ground-truth regions.
REGION_STRUCTURE = np.ones((3, 3), dtype=bool)
#: The two AUPRO definitions, by name.
AUPRO_DEFINITIONS = ("exact", "official")
#: Number of equally spaced thresholds of the official evaluation scripts.
OFFICIAL_THRESHOLDS = 200


def region_weights(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """``1 / area`` of the connected region holding each anomalous pixel.

    Parameters
    ----------
    masks:
        Boolean ``(N, H, W)`` ground-truth masks.

    Returns
    -------
    weights, n_regions:
        float64 weights of the anomalous pixels in flattened (C) order, i.e. aligned with
        ``masks.ravel()[masks.ravel()]``, and the number of regions over all images.
    """
    weights = []
    n_regions = 0
    for mask in masks:
        if not mask.any():
            continue
        labels, count = ndimage.label(mask, structure=REGION_STRUCTURE)
        inside = labels[mask]
        weights.append(1.0 / np.bincount(inside)[inside])
        n_regions += count
    return (np.concatenate(weights) if weights else np.zeros(0)), n_regions


def check_max_fpr(max_fpr: float) -> None:
    """Raise unless the FPR limit of the AUPRO integral is in (0, 1]."""
    if not 0.0 < max_fpr <= 1.0:
        raise ValueError(f"max_fpr (AUPRO FPR limit) must be in (0, 1], got {max_fpr}")


def check_definition(definition: str) -> None:
    """Raise unless ``definition`` names an AUPRO definition."""
    if definition not in AUPRO_DEFINITIONS:
        raise ValueError(f"AUPRO definition must be one of {AUPRO_DEFINITIONS}, got {definition!r}")


def _pro_curve(ranked: RankedCounts, n_regions: int) -> tuple[np.ndarray, np.ndarray]:
    if ranked.pos_weight is None:
        raise ValueError("AUPRO needs RankedCounts with pos_weight (region weights)")
    fpr = np.concatenate([[0.0], np.cumsum(ranked.neg) / ranked.n_neg])
    pro = np.concatenate([[0.0], np.cumsum(ranked.pos_weight) / n_regions])
    return fpr, pro


def pro_auc(ranked: RankedCounts, n_regions: int, max_fpr: float = 0.3) -> float:
    """``"exact"`` AUPRO: normalised area under PRO(FPR) up to ``max_fpr``; NaN without regions or normal pixels.

    ``ranked.pos_weight`` must hold the per-group sums of :func:`region_weights`.
    """
    check_max_fpr(max_fpr)
    if n_regions == 0 or ranked.n_neg == 0:
        return float("nan")
    fpr, pro = _pro_curve(ranked, n_regions)
    inside = int(np.searchsorted(fpr, max_fpr, side="right"))  # fpr[:inside] <= max_fpr
    x, y = fpr[:inside], pro[:inside]
    if inside < fpr.size and x[-1] < max_fpr:
        y_end = np.interp(max_fpr, fpr[inside - 1 : inside + 1], pro[inside - 1 : inside + 1])
        x, y = np.append(x, max_fpr), np.append(y, y_end)
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1])) / (2.0 * max_fpr))


def pro_auc_error_bound(ranked: RankedCounts, n_regions: int, max_fpr: float = 0.3) -> float:
    """Largest change of :func:`pro_auc` over all orderings of scores inside each group."""
    check_max_fpr(max_fpr)
    if n_regions == 0 or ranked.n_neg == 0:
        return float("nan")
    fpr, pro = _pro_curve(ranked, n_regions)
    starts = fpr[:-1] < max_fpr
    return float(np.sum((np.diff(fpr) * np.diff(pro))[starts]) / (2.0 * max_fpr))


def official_thresholds(low: float, high: float, n: int = OFFICIAL_THRESHOLDS) -> np.ndarray:
    """The official scripts' thresholds ``low + i * (high - low) / n``, ``i = 0..n-1`` (float64)."""
    return low + np.arange(n) * ((high - low) / n)


def rescaled_area(fpr: np.ndarray, pro: np.ndarray) -> float:
    """Trapezoidal area of PRO over the FPRs min-max rescaled to [0, 1] (points in threshold order).

    NaN for fewer than two points or a zero FPR span (where the official scripts fail).
    """
    if fpr.size < 2 or not fpr.max() > fpr.min():
        return float("nan")
    x = (fpr - fpr.min()) / (fpr.max() - fpr.min())
    return float(abs(np.sum(np.diff(x) * (pro[1:] + pro[:-1])) / 2.0))  # FPR is monotone: |trapezoid|


def official_pro_auc(ranked: RankedCounts, n_regions: int, low: float, high: float,
                     max_fpr: float = 0.3, n_thresholds: int = OFFICIAL_THRESHOLDS) -> tuple[float, float]:
    """``"official"`` AUPRO and its error bound (module docstring) from the histogram's groups.

    ``low`` and ``high`` are the lowest and highest map score of the product; ``ranked`` must
    carry ``pos_weight`` (region weights) and the group score ranges. NaN (and NaN bound)
    without regions, normal pixels, score spread, or two kept points.
    """
    check_max_fpr(max_fpr)
    nan = float("nan")
    if n_regions == 0 or ranked.n_neg == 0 or not high > low:
        return nan, nan
    counts = ranked.counts_above(official_thresholds(low, high, n_thresholds), strict=True, weighted=True,
                                 interpolate=True)
    fpr, fpr_error = counts["neg"] / ranked.n_neg, counts["neg_uncertain"] / ranked.n_neg
    pro, pro_error = counts["pos_weight"] / n_regions, counts["pos_weight_uncertain"] / n_regions
    start = int(np.count_nonzero(fpr >= max_fpr))  # FPR never rises with the threshold: kept = [start:]
    value = rescaled_area(fpr[start:], pro[start:])
    if np.isnan(value):
        return nan, nan
    ambiguous = np.flatnonzero((fpr - fpr_error < max_fpr) & (fpr + fpr_error >= max_fpr))
    candidates = {start} | (set(range(int(ambiguous[0]), int(ambiguous[-1]) + 2)) if ambiguous.size else set())
    bound = 0.0
    for first in candidates:
        other = rescaled_area(fpr[first:], pro[first:])
        span = fpr[first:].max() - fpr[first:].min() if fpr.size > first else 0.0
        if np.isnan(other) or not span > 0:
            return value, float("inf")
        e_x, e_y = fpr_error[first:].max(), pro_error[first:].max()
        bound = max(bound, abs(other - value) + e_y + 4.0 * e_x / span)
    return value, float(bound)
