"""Streaming, exact-to-a-bound evaluation metrics for binary, multi-type and multi-label anomaly tasks.

* :class:`BinaryEvaluator` – per product: image AUROC/AP/F1-max (exact), pixel AUROC/AP/F1-max
  and AUPRO in two definitions (``pixel_aupro``: exact area to FPR 0.3; ``pixel_aupro_official``:
  the 200-threshold variant of the AnomalyCLIP/MultiADS/DAPO scripts) from streaming histograms
  (memory independent of the number of images); ROC points and confusion counts at thresholds,
  image and pixel level, per product and pooled.
* :class:`MultiTypeEvaluator` – MultiADS/DAPO multi-type protocol: per-class one-vs-rest pixel
  AUROC and AP, F1 of the argmax; macro per product, mean over products, defect-wise means.
* :class:`MultiLabelEvaluator` – image-level multi-label defect classification (DAPO Eq. 11,
  Table 11): macro precision / recall / F1 per product, per type, co-firing counts, threshold curves.
* One-shot functions :func:`image_metrics`, :func:`pixel_metrics`, :func:`aupro`.

Input conventions (dtypes, labels 0/1 or bool, NaN/inf rejected), the soft-mask rule (masks are
binary, bool, 0/1 or integer 0/255, unless ``mask_threshold=t`` reads ``mask > t`` as anomalous)
and the NaN rule for undefined metrics: :mod:`dapo.metrics.validation`. Binning: :mod:`dapo.metrics.histogram`;
error bounds: :mod:`dapo.metrics.ranking`, :mod:`dapo.metrics.aupro`. Maps are evaluated as
given: they are smoothed once, by the predictor (``DAPOConfig.smoothing_sigma``).
"""

from dapo.metrics.aupro import AUPRO_DEFINITIONS
from dapo.metrics.binary import BINARY_METRICS, POOLED, BinaryEvaluator, image_metrics
from dapo.metrics.histogram import DEFAULT_BINS_PER_OCTAVE, ScoreHistogram
from dapo.metrics.multilabel import MultiLabelEvaluator, MultiLabelResult
from dapo.metrics.multitype import MultiTypeEvaluator, MultiTypeResult
from dapo.metrics.pixel import aupro, pixel_metrics
from dapo.metrics.ranking import RankedCounts
from dapo.metrics.validation import MaskWarning, MetricUndefinedWarning

__all__ = [
    "AUPRO_DEFINITIONS",
    "BINARY_METRICS",
    "DEFAULT_BINS_PER_OCTAVE",
    "POOLED",
    "BinaryEvaluator",
    "MaskWarning",
    "MetricUndefinedWarning",
    "MultiLabelEvaluator",
    "MultiLabelResult",
    "MultiTypeEvaluator",
    "MultiTypeResult",
    "RankedCounts",
    "ScoreHistogram",
    "aupro",
    "image_metrics",
    "pixel_metrics",
]
