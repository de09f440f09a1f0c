"""Tidy ROC points and threshold counts from :class:`~dapo.metrics.ranking.RankedCounts`.

Convention (``sklearn.metrics.roc_curve``, and the official DAPO ``test.py``, which labels an
image anomalous when ``score >= 0.5``): a sample is predicted anomalous when its score is
``>= threshold``. DAPO appendix Fig. 4 (ROC curves, confusion matrices at 0.5) and Fig. 10 (TPR
and FPR against the threshold) are drawn from these tables.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from dapo.metrics.ranking import RankedCounts
from dapo.metrics.validation import as_numpy, check_real, finite_range, warn_undefined

ROC_COLUMNS = ("product", "threshold", "fpr", "tpr")
COUNT_COLUMNS = ("product", "threshold", "tp", "fp", "fn", "tn", "tpr", "fpr", "tp_uncertain", "fp_uncertain")


def _warn_one_class(ranked: Mapping[str, RankedCounts], what: str) -> None:
    warn_undefined(f"{what} TPR or FPR", [name for name, counts in ranked.items() if not counts.defined],
                   "needs both normal and anomalous samples")


def roc_frame(ranked: Mapping[str, RankedCounts], *, drop_intermediate: bool = True, what: str = "") -> pd.DataFrame:
    """One ROC curve per entry of ``ranked`` (product name -> counts), stacked: :data:`ROC_COLUMNS`."""
    _warn_one_class(ranked, what)
    frames = []
    for product, counts in ranked.items():
        fpr, tpr, thresholds = counts.roc_points(drop_intermediate)
        frames.append(pd.DataFrame({"product": product, "threshold": thresholds, "fpr": fpr, "tpr": tpr}))
    if not frames:
        return pd.DataFrame(columns=list(ROC_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def check_thresholds(thresholds) -> np.ndarray:
    """Finite thresholds as a float64 vector (a single number is one threshold)."""
    values = as_numpy(thresholds, "thresholds")
    check_real(values, "thresholds")
    values = values.astype(np.float64).reshape(-1)
    finite_range(values, "thresholds")
    return values


def count_frame(ranked: Mapping[str, RankedCounts], thresholds, *, what: str = "") -> pd.DataFrame:
    """Confusion counts and rates at each threshold for each entry of ``ranked``: :data:`COUNT_COLUMNS`.

    ``tp``/``fp`` count samples with score ``>= threshold``; ``tp_uncertain``/``fp_uncertain``
    are the positives/negatives of a histogram bin containing the threshold, counted as below
    it (0 for exact groups, so always 0 at the image level): the exact ``tp`` lies in
    ``[tp, tp + tp_uncertain]``. ``tpr``/``fpr`` are NaN without positives/negatives.
    """
    values = check_thresholds(thresholds)
    _warn_one_class(ranked, what)
    frames = []
    for product, counts in ranked.items():
        above = counts.counts_above(values)
        tp, fp = above["pos"].astype(np.int64), above["neg"].astype(np.int64)
        n_pos, n_neg = int(counts.n_pos), int(counts.n_neg)
        with np.errstate(divide="ignore", invalid="ignore"):
            tpr = tp / n_pos if n_pos else np.full(tp.shape, np.nan)
            fpr = fp / n_neg if n_neg else np.full(fp.shape, np.nan)
        frames.append(pd.DataFrame({
            "product": product, "threshold": values, "tp": tp, "fp": fp, "fn": n_pos - tp, "tn": n_neg - fp,
            "tpr": tpr, "fpr": fpr, "tp_uncertain": above["pos_uncertain"].astype(np.int64),
            "fp_uncertain": above["neg_uncertain"].astype(np.int64)}))
    if not frames:
        return pd.DataFrame(columns=list(COUNT_COLUMNS))
    return pd.concat(frames, ignore_index=True)
