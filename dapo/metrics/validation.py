"""Input conversion and checks shared by the evaluators, and the rule for undefined metrics.

Rule for undefined metrics (applied by every evaluator in :mod:`dapo.metrics`): a metric that
has no positives or no negatives to rank (a product without anomalous pixels, without normal
images, a defect class that never occurs in a product) is ``NaN``, and one
:class:`MetricUndefinedWarning` names every such case. Means (the ``mean`` row, macro averages,
dataset and defect-wise figures) average over the entries that are defined and are ``NaN`` only
when none is.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import numpy as np


class MetricUndefinedWarning(UserWarning):
    """A metric had nothing to rank (no positives or no negatives) and was set to NaN."""


def as_numpy(array, name: str) -> np.ndarray:
    """``array`` (numpy array, torch tensor or sequence) as a numpy array."""
    if hasattr(array, "detach"):  # torch.Tensor without importing torch
        array = array.detach().cpu().numpy()
    try:
        return np.asarray(array)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} could not be converted to a numpy array: {error}") from error


def check_ndim(array: np.ndarray, ndim: int, name: str, layout: str) -> None:
    """Raise if ``array`` does not have ``ndim`` dimensions (``layout`` names them, e.g. ``(N,H,W)``)."""
    if array.ndim != ndim:
        raise ValueError(f"{name} must have shape {layout}, got shape {tuple(array.shape)}")


def check_same_shape(a: np.ndarray, a_name: str, b: np.ndarray, b_name: str) -> None:
    """Raise naming both shapes when ``a`` and ``b`` differ in shape."""
    if a.shape != b.shape:
        raise ValueError(f"{a_name} shape {tuple(a.shape)} does not match {b_name} shape {tuple(b.shape)}")


def check_finite(values: np.ndarray, name: str, products: Sequence[str]) -> None:
    """Raise naming the first sample (product and index in the batch) holding NaN or inf."""
    if values.size == 0 or (np.isfinite(values.min()) and np.isfinite(values.max())):  # NaN propagates
        return
    per_sample = np.isfinite(values).reshape(len(values), -1).all(axis=1)
    index = int(np.flatnonzero(~per_sample)[0])
    raise ValueError(f"{name} has NaN or inf values for product {products[index]!r} at batch index {index}")


def products_for_batch(products: str | Sequence[str], n: int) -> list[str]:
    """One product name per sample; a single string applies to the whole batch."""
    if isinstance(products, str):
        return [products] * n
    names = [str(p) for p in products]
    if len(names) != n:
        raise ValueError(f"got {len(names)} product names for a batch of {n} samples")
    return names


def warn_undefined(metric: str, where: Iterable[str], reason: str) -> None:
    """One :class:`MetricUndefinedWarning` listing every case where ``metric`` is NaN."""
    cases = list(where)
    if cases:
        warnings.warn(f"{metric} is NaN for {', '.join(cases)}: {reason}", MetricUndefinedWarning, stacklevel=3)
