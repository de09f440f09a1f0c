"""Input conversion and checks shared by every evaluator, and the rule for undefined metrics.

Input conventions (the same in every entry point of :mod:`dapo.metrics`):

* scores, maps and probabilities: numpy arrays of bool, int or float (float16/32/64), or torch
  tensors of any of those dtypes (bfloat16 and other dtypes numpy lacks are upcast to float32);
  NaN and inf are errors that name the argument (and the product and batch index);
* labels (image labels, multi-label targets): bool, or numbers equal to 0 or 1; anything else
  is an error listing the offending values (:func:`binary_labels`);
* masks (the soft-mask rule, :func:`binary_masks`): binary by default: bool, numbers equal to
  0 or 1, or an integer array of 0 and 255 (an 8-bit mask image as read). Any other values (soft
  masks, grey levels) are an error naming them, unless the caller chooses a threshold with
  ``mask_threshold=t`` (``pixel_metrics``, ``aupro``, ``BinaryEvaluator``): then ``mask > t`` is
  anomalous, and a mask that holds nonzero values none of which exceeds ``t`` is stated with a
  :class:`MaskWarning` (it counts as wholly normal). :class:`~dapo.metrics.BinaryEvaluator` also
  warns when an image labelled anomalous has a mask without an anomalous pixel, or one labelled
  normal has anomalous pixels (its pixels count by the mask, not the label).

Rule for undefined metrics: a metric that has no positives or no negatives to rank (a product
without anomalous pixels, without normal images, a defect class that never occurs in a
product) is ``NaN``, and one :class:`MetricUndefinedWarning` names every such case. Means
(the ``mean`` row, macro averages, dataset and defect-wise figures) average over the entries
that are defined and are ``NaN`` only when none is.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import numpy as np

_REAL_KINDS = "biuf"  # bool, signed and unsigned integers, floats
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class MetricUndefinedWarning(UserWarning):
    """A metric had nothing to rank (no positives or no negatives) and was set to NaN."""


class MaskWarning(UserWarning):
    """Masks and labels disagree, or a threshold left a mask that holds values without an anomalous pixel."""


def as_numpy(array, name: str) -> np.ndarray:
    """``array`` (numpy array, torch tensor or sequence) as a numpy array.

    Torch tensors are detached and moved to the CPU; floating dtypes numpy cannot hold
    (bfloat16, float8) are upcast to float32 first.
    """
    if hasattr(array, "detach"):  # torch.Tensor without importing torch
        array = array.detach().cpu()
        try:
            return array.numpy()
        except TypeError:
            if not array.is_floating_point():
                raise TypeError(f"{name} has torch dtype {array.dtype}, which numpy cannot hold") from None
            return array.float().numpy()
    try:
        return np.asarray(array)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} could not be converted to a numpy array: {error}") from error


def check_real(array: np.ndarray, name: str) -> None:
    """Raise unless ``array`` holds bool, integer or float numbers."""
    if array.dtype.kind not in _REAL_KINDS:
        raise TypeError(f"{name} must hold numbers (bool, int or float), got dtype {array.dtype}")


def check_ndim(array: np.ndarray, ndim: int, name: str, layout: str) -> None:
    """Raise if ``array`` does not have ``ndim`` dimensions (``layout`` names them, e.g. ``(N,H,W)``)."""
    if array.ndim != ndim:
        raise ValueError(f"{name} must have shape {layout}, got shape {tuple(array.shape)}")


def check_same_shape(a: np.ndarray, a_name: str, b: np.ndarray, b_name: str) -> None:
    """Raise naming both shapes when ``a`` and ``b`` differ in shape."""
    if a.shape != b.shape:
        raise ValueError(f"{a_name} shape {tuple(a.shape)} does not match {b_name} shape {tuple(b.shape)}")


def check_same_length(**arrays) -> None:
    """Raise naming every argument and its length unless all have the same first dimension."""
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name} has {length}" for name, length in lengths.items())
        raise ValueError(f"batch sizes differ: {listed}")


def _where(products: Sequence[str] | None, index: int) -> str:
    if products is None:
        return f"at index {index}"
    return f"for product {products[index]!r} at batch index {index}"


def finite_range(values: np.ndarray, name: str, products: Sequence[str] | None = None) -> tuple[float, float]:
    """``(min, max)`` of ``values``; raise naming the first sample holding NaN or inf.

    ``products`` (one name per sample along the first axis) only names the sample in the
    message; without it the message gives the index. Empty input gives ``(inf, -inf)``.
    """
    if values.size == 0:
        return float("inf"), float("-inf")
    low, high = values.min(), values.max()
    if np.isfinite(low) and np.isfinite(high):  # NaN propagates through min and max
        return float(low), float(high)
    per_sample = np.isfinite(values).reshape(len(values), -1).all(axis=1)
    index = int(np.flatnonzero(~per_sample)[0])
    raise ValueError(f"{name} has NaN or inf values {_where(products, index)}")


def real_array(array, name: str, ndim: int, layout: str, products: Sequence[str] | None = None) -> np.ndarray:
    """``array`` as a finite numeric numpy array with ``ndim`` dimensions (dtype kept)."""
    values = as_numpy(array, name)
    check_real(values, name)
    check_ndim(values, ndim, name, layout)
    finite_range(values, name, products)
    return values


def float32_maps(array, name: str, ndim: int, layout: str, products: Sequence[str] | None = None
                 ) -> tuple[np.ndarray, float, float]:
    """Finite scores as float32 (the histograms' resolution), with their min and max.

    Values beyond the float32 range (possible in float64 input) are an error, not inf.
    """
    values = as_numpy(array, name)
    check_real(values, name)
    check_ndim(values, ndim, name, layout)
    low, high = finite_range(values, name, products)
    if values.dtype == np.float32:
        return values, low, high
    if values.dtype.kind == "f" and max(-low, high) > _FLOAT32_MAX:
        raise ValueError(f"{name} has values beyond the float32 range (min {low:g}, max {high:g})")
    values = values.astype(np.float32)
    if values.size:
        low, high = float(values.min()), float(values.max())  # after rounding to float32
    return values, low, high


def binary_labels(array, name: str, ndim: int = 1, layout: str = "(N,)") -> np.ndarray:
    """Boolean labels from bool or 0/1 numbers; anything else is an error listing the values."""
    values = as_numpy(array, name)
    check_real(values, name)
    check_ndim(values, ndim, name, layout)
    if values.dtype == bool:
        return values
    wrong = ~np.isin(values, (0, 1))  # NaN is not in (0, 1)
    if wrong.any():
        shown = np.unique(values[wrong])
        listed = ", ".join(str(v) for v in shown[:10].tolist()) + (", ..." if shown.size > 10 else "")
        raise ValueError(f"{name} must be 0/1 or bool, got values [{listed}]")
    return values.astype(bool)


def check_mask_threshold(threshold) -> float | None:
    """``mask_threshold``: ``None`` (masks must be binary) or a finite number."""
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.number)) or not np.isfinite(threshold):
        raise ValueError(f"mask_threshold={threshold!r}: expected None (binary masks) or a finite number, e.g. 0.5")
    return float(threshold)


def _listed(values: np.ndarray) -> str:
    shown = np.unique(values)
    return ", ".join(f"{v:g}" for v in shown[:6].tolist()) + (", ..." if shown.size > 6 else "")


def binary_masks(array, name: str, products: Sequence[str] | None = None, threshold: float | None = None
                 ) -> np.ndarray:
    """Boolean ``(N, H, W)`` masks by the soft-mask rule of the module docstring.

    ``threshold`` ``None``: bool, 0/1, or integer 0/255 masks; other values are an error naming
    them. A number: ``mask > threshold`` is anomalous, with a :class:`MaskWarning` for masks that
    hold nonzero values but none above it.
    """
    threshold = check_mask_threshold(threshold)
    values = as_numpy(array, name)
    check_real(values, name)
    check_ndim(values, 3, name, "(N, H, W)")
    if values.dtype == bool:
        return values
    low, _ = finite_range(values, name, products)
    if low < 0:
        index = int(np.flatnonzero((values < 0).reshape(len(values), -1).any(axis=1))[0])
        raise ValueError(f"{name} has negative values (min {low:g}) {_where(products, index)}; "
                         "masks are bool, 0/1 or 0/255")
    if threshold is None:
        if values.dtype.kind in "iu" and not np.isin(values, (0, 1)).all() and np.isin(values, (0, 255)).all():
            return values > 0  # an 8-bit mask image: 0 and 255
        wrong = ~np.isin(values, (0, 1))
        if wrong.any():
            index = int(np.flatnonzero(wrong.any(axis=(1, 2)))[0])
            raise ValueError(f"{name} are not binary: values [{_listed(values[wrong])}] {_where(products, index)}; "
                             f"masks must be bool, 0/1 or (integer) 0/255. For soft masks choose the rule: "
                             f"mask_threshold=0.5 reads mask > 0.5 as anomalous")
        return values.astype(bool)
    masks = values > threshold
    faint = (values > 0).any(axis=(1, 2)) & ~masks.any(axis=(1, 2))
    if faint.any():
        index = int(np.flatnonzero(faint)[0])
        peak = float(values[index].max())
        more = f" and {int(faint.sum()) - 1} more" if faint.sum() > 1 else ""
        warnings.warn(f"{name} {_where(products, index)}{more} hold nonzero values (up to {peak:g}) but none above "
                      f"mask_threshold={threshold:g}: these samples count as wholly normal", MaskWarning, stacklevel=4)
    return masks


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
