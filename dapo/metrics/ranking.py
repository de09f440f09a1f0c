"""Ranking metrics (AUROC, AP, F1-max) from tie-grouped counts, and their tie error bounds.

Every ranking metric in :mod:`dapo.metrics` is computed from :class:`RankedCounts`: the number
of positives and negatives in each group of tied scores, groups in descending score order.

* :meth:`RankedCounts.from_scores` groups exactly equal scores (float64), so the metrics equal
  scikit-learn's ``roc_auc_score``, ``average_precision_score`` and the F1-max of
  ``precision_recall_curve`` up to float rounding (image-level metrics use this).
* :class:`dapo.metrics.histogram.ScoreHistogram` streams pixel scores and groups each bin as
  if its scores were tied.

Error bounds
------------
Treating a group as tied only reorders scores *inside* it. Over every ordering inside the
groups (:meth:`RankedCounts.auroc_error_bound`, :meth:`RankedCounts.average_precision_error_bound`)::

    |AUROC_grouped - AUROC_exact| <= 1/2 * sum_g pos_g * neg_g / (P * N)
    |AP_grouped - AP_exact|       <= sum_g (pos_g / P) * (hi_g - lo_g)   over groups with neg_g > 0

with ``hi_g = (TP_g + pos_g) / (TP_g + pos_g + FP_g)`` and
``lo_g = (TP_g + 1) / (TP_g + 1 + FP_g + neg_g)`` the extreme precisions a positive inside group
``g`` can have (``TP_g, FP_g``: counts above the group). For exact groups (true ties) the
bounds measure the ties, not an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RankedCounts:
    """Positive and negative counts per group of tied scores, groups in descending score order.

    ``pos_weight`` optionally carries a per-group sum of weights over positives (AUPRO uses
    ``1 / region area``).
    """

    pos: np.ndarray
    neg: np.ndarray
    pos_weight: np.ndarray | None = None

    @classmethod
    def from_scores(cls, scores, labels) -> RankedCounts:
        """Exact grouping of equal scores (compared as float64)."""
        scores = np.asarray(scores, dtype=np.float64).ravel()
        labels = np.asarray(labels).ravel().astype(bool)
        if scores.shape != labels.shape:
            raise ValueError(f"scores shape {scores.shape} does not match labels shape {labels.shape}")
        _, group = np.unique(scores, return_inverse=True)
        n_groups = int(group.max()) + 1 if group.size else 0
        pos = np.bincount(group, weights=labels, minlength=n_groups)
        neg = np.bincount(group, minlength=n_groups) - pos
        return cls(pos[::-1], neg[::-1].astype(np.float64))

    @property
    def n_pos(self) -> float:
        return float(self.pos.sum())

    @property
    def n_neg(self) -> float:
        return float(self.neg.sum())

    @property
    def defined(self) -> bool:
        """True when there is at least one positive and one negative to rank."""
        return self.n_pos > 0 and self.n_neg > 0

    def _cumulative(self) -> tuple[np.ndarray, np.ndarray]:
        return np.cumsum(self.pos, dtype=np.float64), np.cumsum(self.neg, dtype=np.float64)

    def auroc(self) -> float:
        """Area under the ROC curve (ties count one half); NaN when undefined."""
        if not self.defined:
            return float("nan")
        tp, _ = self._cumulative()
        above = tp - self.pos  # positives ranked strictly above each group
        return float(np.dot(self.neg, above + 0.5 * self.pos) / (self.n_pos * self.n_neg))

    def average_precision(self) -> float:
        """scikit-learn's average precision: sum over thresholds of recall step x precision."""
        if not self.defined:
            return float("nan")
        tp, fp = self._cumulative()
        hit = self.pos > 0
        return float(np.dot(self.pos[hit], tp[hit] / (tp[hit] + fp[hit])) / self.n_pos)

    def f1_max(self) -> float:
        """Best F1 = 2TP / (2TP + FP + FN) over all thresholds; NaN when undefined."""
        if not self.defined:
            return float("nan")
        tp, fp = self._cumulative()
        return float(np.max(2.0 * tp / (self.n_pos + tp + fp)))

    def auroc_error_bound(self) -> float:
        """Largest change of :meth:`auroc` over all orderings of scores inside each group."""
        if not self.defined:
            return float("nan")
        return float(0.5 * np.dot(self.pos, self.neg) / (self.n_pos * self.n_neg))

    def average_precision_error_bound(self) -> float:
        """Largest change of :meth:`average_precision` over all orderings inside each group."""
        if not self.defined:
            return float("nan")
        tp, fp = self._cumulative()
        tp_above, fp_above = tp - self.pos, fp - self.neg
        mixed = (self.pos > 0) & (self.neg > 0)
        hi = tp[mixed] / (tp[mixed] + fp_above[mixed])
        lo = (tp_above[mixed] + 1.0) / (tp_above[mixed] + 1.0 + fp[mixed])
        return float(np.dot(self.pos[mixed], hi - lo) / self.n_pos)
