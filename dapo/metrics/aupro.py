"""Per-region overlap (PRO) curve pieces: region weights and the normalised area up to a max FPR.

Definition (Bergmann et al., MVTec AD): at threshold ``t`` a pixel is predicted anomalous when
its score is ``>= t``. ``PRO(t)`` is the mean, over every connected region of every ground-truth
mask of the product, of the fraction of the region's pixels predicted anomalous; ``FPR(t)`` is
the fraction of all normal pixels predicted anomalous. AUPRO is the area under ``PRO(FPR)`` from
0 to ``max_fpr`` (0.3), the curve linearly interpolated at ``max_fpr``, divided by ``max_fpr``.

Because ``PRO(t) = (1/R) * sum over region pixels p of [s_p >= t] / area(region(p))``, the whole
curve is a weighted survival function: each anomalous pixel enters one histogram with weight
``1 / area`` of its region, next to the histogram of normal pixels. Regions are labelled once
per image (8-connectivity, as the MVTec reference and ``skimage.measure.label``) and every
threshold's overlap comes out of one pass, instead of a connected-region loop per threshold.

AnomalyCLIP/MultiADS evaluation scripts use 200 equally spaced thresholds and rescale the FPRs
found below 0.3 to [0, 1]; with a fine threshold grid both agree with this definition
(``benchmarks/bench_metrics.py`` measures the difference).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from dapo.metrics.ranking import RankedCounts

#: 8-connectivity for connected ground-truth regions.
REGION_STRUCTURE = np.ones((3, 3), dtype=bool)


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


def pro_auc(ranked: RankedCounts, n_regions: int, max_fpr: float = 0.3) -> float:
    """Normalised area under the PRO curve up to ``max_fpr``; NaN without regions or normal pixels.

    ``ranked.pos_weight`` must hold the per-group sums of :func:`region_weights`.
    """
    check_max_fpr(max_fpr)
    if ranked.pos_weight is None:
        raise ValueError("pro_auc needs RankedCounts with pos_weight (region weights)")
    if n_regions == 0 or ranked.n_neg == 0:
        return float("nan")
    fpr = np.concatenate([[0.0], np.cumsum(ranked.neg) / ranked.n_neg])
    pro = np.concatenate([[0.0], np.cumsum(ranked.pos_weight) / n_regions])
    inside = int(np.searchsorted(fpr, max_fpr, side="right"))  # fpr[:inside] <= max_fpr
    x, y = fpr[:inside], pro[:inside]
    if inside < fpr.size and x[-1] < max_fpr:
        y_end = np.interp(max_fpr, fpr[inside - 1 : inside + 1], pro[inside - 1 : inside + 1])
        x, y = np.append(x, max_fpr), np.append(y, y_end)
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1])) / (2.0 * max_fpr))
