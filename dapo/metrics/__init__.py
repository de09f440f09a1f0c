"""Streaming, exact-to-a-bound evaluation metrics for binary and multi-type anomaly segmentation.

* :class:`BinaryEvaluator` – per product: image AUROC/AP/F1-max (exact), pixel AUROC/AP/F1-max
  and AUPRO (streaming histograms, memory independent of the number of images).
* :class:`MultiTypeEvaluator` – MultiADS/DAPO multi-type protocol: per-class one-vs-rest pixel
  AUROC and AP, F1 of the argmax; macro per product, mean over products, defect-wise means.
* One-shot functions :func:`image_metrics`, :func:`pixel_metrics`, :func:`aupro`.

Undefined metrics are NaN with a :class:`MetricUndefinedWarning`; means skip them
(:mod:`dapo.metrics.validation`). Binning: :mod:`dapo.metrics.histogram`; error bounds:
:mod:`dapo.metrics.ranking`.
"""

from dapo.metrics.binary import BINARY_METRICS, BinaryEvaluator, image_metrics
from dapo.metrics.multitype import MultiTypeEvaluator, MultiTypeResult
from dapo.metrics.pixel import aupro, pixel_metrics
from dapo.metrics.histogram import DEFAULT_BINS_PER_OCTAVE, ScoreHistogram
from dapo.metrics.ranking import RankedCounts
from dapo.metrics.smoothing import PAPER_SMOOTHING_SIGMA, gaussian_smooth
from dapo.metrics.validation import MetricUndefinedWarning

__all__ = [
    "BINARY_METRICS",
    "DEFAULT_BINS_PER_OCTAVE",
    "PAPER_SMOOTHING_SIGMA",
    "BinaryEvaluator",
    "MetricUndefinedWarning",
    "MultiTypeEvaluator",
    "MultiTypeResult",
    "RankedCounts",
    "ScoreHistogram",
    "aupro",
    "gaussian_smooth",
    "image_metrics",
    "pixel_metrics",
]
