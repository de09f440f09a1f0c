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

Curves and thresholds
---------------------
With the score range of each group (``lower``, ``upper``: equal for exact groups, a bin's
float32 range for histogram bins), :meth:`RankedCounts.roc_points` gives ROC points at each
group's lowest possible score (points *on* the exact curve: every score of a group and above
is ``>=`` it, every score below is not) and :meth:`RankedCounts.counts_above` the positives and
negatives with a score ``>= t`` (or ``> t``) at any ``t``, exact unless ``t`` falls inside a
bin, whose counts are then reported as uncertain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RankedCounts:
    """Positive and negative counts per group of tied scores, groups in descending score order.

    ``pos_weight`` optionally carries a per-group sum of weights over positives (AUPRO uses
    ``1 / region area``). ``lower`` and ``upper`` optionally carry the lowest and highest score
    a group can hold (float64; equal for groups of tied scores), needed for thresholds.
    """

    pos: np.ndarray
    neg: np.ndarray
    pos_weight: np.ndarray | None = None
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None

    @classmethod
    def from_scores(cls, scores, labels) -> RankedCounts:
        """Exact grouping of equal scores (compared as float64)."""
        scores = np.asarray(scores, dtype=np.float64).ravel()
        labels = np.asarray(labels).ravel().astype(bool)
        if scores.shape != labels.shape:
            raise ValueError(f"scores shape {scores.shape} does not match labels shape {labels.shape}")
        values, group = np.unique(scores, return_inverse=True)
        pos = np.bincount(group, weights=labels, minlength=values.size)
        neg = np.bincount(group, minlength=values.size) - pos
        values = values[::-1]
        return cls(pos[::-1], neg[::-1].astype(np.float64), lower=values, upper=values)

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

    def _require_scores(self) -> tuple[np.ndarray, np.ndarray]:
        if self.lower is None or self.upper is None:
            raise ValueError("these RankedCounts carry no group score ranges (lower, upper)")
        return self.lower, self.upper

    def roc_points(self, drop_intermediate: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(fpr, tpr, thresholds)`` like ``sklearn.metrics.roc_curve`` (``score >= threshold``).

        The first point is ``(0, 0)`` at threshold ``inf``; then one point per group at its
        lowest score. ``drop_intermediate`` drops points on straight segments (scikit-learn's
        rule: keep the ends and points where the second difference of FP or TP is non-zero).
        A rate without positives (or without negatives) is NaN.
        """
        lower, _ = self._require_scores()
        tp, fp = self._cumulative()
        thresholds = lower
        if drop_intermediate and tp.size > 2:
            keep = np.r_[True, np.logical_or(np.diff(fp, 2), np.diff(tp, 2)), True]
            tp, fp, thresholds = tp[keep], fp[keep], thresholds[keep]
        tp, fp, thresholds = np.r_[0.0, tp], np.r_[0.0, fp], np.r_[np.inf, thresholds]
        with np.errstate(divide="ignore", invalid="ignore"):
            fpr = fp / self.n_neg if self.n_neg > 0 else np.full(fp.shape, np.nan)
            tpr = tp / self.n_pos if self.n_pos > 0 else np.full(tp.shape, np.nan)
        return fpr, tpr, thresholds

    def counts_above(self, thresholds, *, strict: bool = False, weighted: bool = False,
                     interpolate: bool = False) -> dict[str, np.ndarray]:
        """Positives and negatives with a score ``>= t`` (``> t`` if ``strict``) for each ``t``.

        Returns float64 arrays ``pos``, ``neg`` (and ``pos_weight`` if ``weighted``) counting the
        groups entirely above ``t``, and ``pos_uncertain``, ``neg_uncertain``
        (``pos_weight_uncertain``) holding the counts of the one group whose score range
        contains ``t`` (always 0 for exact groups): the exact count lies in
        ``[pos, pos + pos_uncertain]``. With ``interpolate``, that group adds the fraction of
        its score range above ``t`` to ``pos``/``neg`` (scores assumed uniform inside it); the
        error is then at most the uncertain count.
        """
        lower, upper = self._require_scores()
        t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
        if np.isnan(t).any():
            raise ValueError("thresholds must not be NaN")
        ascending = lower[::-1]
        side = "right" if strict else "left"  # groups with lower > t (strict) or lower >= t
        n_above = lower.size - np.searchsorted(ascending, t, side=side)
        columns = {"pos": self.pos, "neg": self.neg}
        if weighted:
            if self.pos_weight is None:
                raise ValueError("weighted counts need RankedCounts with pos_weight")
            columns["pos_weight"] = self.pos_weight
        if lower.size == 0:
            zeros = np.zeros(t.shape)
            return {key: zeros.copy() for name in columns for key in (name, f"{name}_uncertain")}
        nxt = np.minimum(n_above, lower.size - 1)  # the highest group not entirely above t
        inside = (n_above < lower.size) & ((upper[nxt] > t) if strict else (upper[nxt] >= t))
        fraction = np.zeros(t.shape)
        if interpolate:
            width = upper[nxt] - lower[nxt]
            with np.errstate(divide="ignore", invalid="ignore"):
                fraction = np.clip(np.where(inside & (width > 0), (upper[nxt] - t) / width, 0.0), 0.0, 1.0)
        out = {}
        for name, counts in columns.items():
            cumulative = np.r_[0.0, np.cumsum(counts, dtype=np.float64)]
            uncertain = np.where(inside, counts[nxt], 0.0)
            out[name] = cumulative[n_above] + fraction * uncertain
            out[f"{name}_uncertain"] = uncertain
        return out
