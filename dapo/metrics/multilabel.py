"""Image-level multi-label defect classification (DAPO appendix 11.6, Eq. 11, Table 11).

Per image and defect type ``k`` of the product, ``P(D_k) = sigmoid(sim(z_x, z_Dk) - sim(z_x, z_N))``
(``Prediction.defect_probs``); type ``k`` is predicted when ``P(D_k) > threshold`` (0.5 in the
paper: "A defect D_k is predicted if P(D_k) > 0.5"). Per product and type: precision, recall and
F1 from the image counts ``tp, fp, fn``; the product figure is the macro average over the
product's defect types (``class_names``), as ``sklearn.metrics.precision_recall_fscore_support(
average="macro")``: macro F1 is the mean of the per-type F1, not the F1 of macro precision and
recall (Table 11 agrees: Tubes P 84.5, R 51.6, F1 43.9). The dataset row is the mean over products.
A product with one defect type gets that type's figures (scikit-learn given a one-column
indicator would read it as binary and average over {0, 1}; here the classes are always the types).

Choices, where the paper is silent and the official code has no multi-label evaluation
(its ``test.py``, ``test_multi_defect.py``, ``metrics.py`` and notebooks compute none):

* normal images count, as images with no true type: add them with all-zero targets. Table 11
  needs them: VisA Capsules has one defect type (bubble) in every anomalous image, so without
  normal images its precision could only be 100 % or undefined, yet it is 88.1 %;
* ``zero_division`` (a type never predicted has no precision; a type absent from the product's
  images has no recall; both give no F1) defaults to 0, scikit-learn's default, which a script
  calling it would have used; ``np.nan`` leaves such values out of the macro averages (also as
  scikit-learn). Cases where it applies are listed in one :class:`MetricUndefinedWarning`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dapo.metrics.curves import check_thresholds
from dapo.metrics.validation import (
    MetricUndefinedWarning,
    as_numpy,
    binary_labels,
    check_same_length,
    real_array,
)

MULTILABEL_METRICS = ("precision", "recall", "f1")
#: Row name, in :attr:`MultiLabelResult.firing`, of the images without any true defect type.
NORMAL_ROW = "normal"


@dataclass(frozen=True)
class MultiLabelResult:
    """Tidy tables of a multi-label evaluation at one threshold (floats in [0, 1], unrounded).

    per_product: index ``product`` then a final ``mean`` row (mean over products; its counts are
        sums); macro ``precision``, ``recall``, ``f1``, and ``n_images``, ``n_defective``
        (images with at least one true type), ``n_classes``.
    per_class: one row per (product, class): ``precision``, ``recall``, ``f1``, ``support``
        (images with the type), ``n_predicted`` (images where it fires), ``tp``, ``fp``, ``fn``.
    firing: one row per (product, true type or ``normal``, predicted type): ``count`` of images
        with that true type in which the predicted type fires, ``n_true`` images with the true
        type, ``rate = count / n_true``; ``pivot(index="true", columns="predicted")`` per
        product gives a heatmap.
    threshold, zero_division: the settings used.
    """

    per_product: pd.DataFrame
    per_class: pd.DataFrame
    firing: pd.DataFrame
    threshold: float
    zero_division: float


def _divide(numerator: np.ndarray, denominator: np.ndarray, zero_division: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), zero_division)


def _scores(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, zero_division: float) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 (= 2TP / (2TP + FP + FN)) with scikit-learn's zero_division rule."""
    return {"precision": _divide(tp, tp + fp, zero_division), "recall": _divide(tp, tp + fn, zero_division),
            "f1": _divide(2 * tp, 2 * tp + fp + fn, zero_division)}


def _macro(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean that leaves NaN out (scikit-learn's macro average with ``zero_division=np.nan``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice": all NaN gives NaN
        return np.nanmean(values, axis=axis)


def check_zero_division(zero_division: float) -> float:
    value = float(zero_division)
    if not (np.isnan(value) or value in (0.0, 1.0)):
        raise ValueError(f"zero_division must be 0, 1 or nan (as scikit-learn), got {zero_division}")
    return value


class _ProductImages:
    """One product's probabilities and boolean targets (one row per image; small)."""

    def __init__(self, class_names: tuple[str, ...]):
        self.class_names = class_names
        self.probs: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate(self.probs), np.concatenate(self.targets)


def _is_name_lists(targets) -> bool:
    """True for a list/tuple whose entries are all collections of strings (empty ones included)."""
    return isinstance(targets, (list, tuple)) and all(
        isinstance(entry, (list, tuple, set, frozenset)) and all(isinstance(name, str) for name in entry)
        for entry in targets)


def _target_matrix(targets, class_names: tuple[str, ...], product: str) -> np.ndarray:
    """``(N, K)`` boolean targets from a 0/1 matrix or from one collection of defect names per image."""
    if _is_name_lists(targets):
        column = {name: index for index, name in enumerate(class_names)}
        matrix = np.zeros((len(targets), len(class_names)), dtype=bool)
        for row, entry in enumerate(targets):
            unknown = sorted(set(entry) - set(column))
            if unknown:
                raise ValueError(f"targets[{row}] of product {product!r} names defect types {unknown} "
                                 f"that are not in class_names {list(class_names)}")
            matrix[row, [column[name] for name in entry]] = True
        return matrix
    if isinstance(targets, (list, tuple)) and any(isinstance(entry, str) for entry in targets):
        raise TypeError("targets must be an (N, K) 0/1 array or one tuple of defect names per image, "
                        "got a sequence with bare strings (write ('scratch',) for one name)")
    return binary_labels(targets, "targets", 2, "(N, K)")


class MultiLabelEvaluator:
    """Image-level multi-label precision / recall / F1 per product (see the module docstring)."""

    def __init__(self) -> None:
        self._products: dict[str, _ProductImages] = {}

    @property
    def products(self) -> list[str]:
        return list(self._products)

    def add(self, product: str, class_names: Sequence[str], probs, targets) -> None:
        """Add a batch of one product.

        Parameters
        ----------
        product:
            Product name.
        class_names:
            The ``K`` defect types of the product (the columns of ``probs``; no ``normal``);
            the same in every batch of a product.
        probs:
            ``(N, K)`` probabilities in [0, 1] (``Prediction.defect_probs``).
        targets:
            ``(N, K)`` 0/1 or bool, or one collection of defect names per image (the samples'
            ``defects``; ``()`` for a normal image).
        """
        names = tuple(str(name) for name in class_names)
        if not names:
            raise ValueError(f"class_names of product {product!r} is empty")
        if len(set(names)) != len(names):
            raise ValueError(f"class_names of product {product!r} has duplicates: {list(names)}")
        if NORMAL_ROW in names:
            raise ValueError(f"class_names are the K defect types; {NORMAL_ROW!r} is reserved for images "
                             f"without defects, got {list(names)}")
        probs = as_numpy(probs, "probs")
        probs = real_array(probs, "probs", 2, "(N, K)", [product] * len(probs) if probs.ndim else None)
        if probs.shape[1] != len(names):
            raise ValueError(f"probs has {probs.shape[1]} columns but {len(names)} class names {list(names)}")
        if probs.size and (probs.min() < 0 or probs.max() > 1):
            raise ValueError(f"probs must be probabilities in [0, 1] (Eq. 11: sigmoid outputs), got values in "
                             f"[{probs.min():g}, {probs.max():g}] for product {product!r}")
        matrix = _target_matrix(targets, names, product)
        check_same_length(probs=probs, targets=matrix)
        if matrix.shape[1] != len(names):
            raise ValueError(f"targets has {matrix.shape[1]} columns but {len(names)} class names {list(names)}")
        images = self._products.setdefault(product, _ProductImages(names))
        if images.class_names != names:
            raise ValueError(f"class_names for product {product!r} changed from {list(images.class_names)} "
                             f"to {list(names)}")
        images.probs.append(probs.astype(np.float64))
        images.targets.append(matrix)

    def merge(self, other: MultiLabelEvaluator) -> MultiLabelEvaluator:
        """Add ``other``'s images after this evaluator's, in place; returns ``self`` (the per-image
        rows are concatenated, so the result equals one evaluator given every batch)."""
        for product, theirs in other._products.items():
            mine = self._products.setdefault(product, _ProductImages(theirs.class_names))
            if mine.class_names != theirs.class_names:
                raise ValueError(f"class_names for product {product!r} differ between merged evaluators: "
                                 f"{list(mine.class_names)} vs {list(theirs.class_names)}")
            mine.probs += theirs.probs
            mine.targets += theirs.targets
        return self

    def compute(self, threshold: float = 0.5, *, zero_division: float = 0.0) -> MultiLabelResult:
        """The tables at ``threshold`` (a type fires when ``probs > threshold``)."""
        (threshold,) = check_thresholds(threshold)
        zero_division = check_zero_division(zero_division)
        per_class, per_product, firing, undefined = [], {}, [], []
        for product, images in self._products.items():
            probs, targets = images.arrays()
            predicted = probs > threshold
            tp = (predicted & targets).sum(axis=0)
            fp = (predicted & ~targets).sum(axis=0)
            fn = (~predicted & targets).sum(axis=0)
            scores = _scores(tp, fp, fn, zero_division)
            for index, name in enumerate(images.class_names):
                per_class.append({"product": product, "class": name,
                                  **{metric: float(scores[metric][index]) for metric in MULTILABEL_METRICS},
                                  "support": int(tp[index] + fn[index]), "n_predicted": int(tp[index] + fp[index]),
                                  "tp": int(tp[index]), "fp": int(fp[index]), "fn": int(fn[index])})
                undefined += [f"{product}/{name} ({what})" for what, count in
                              (("precision", tp[index] + fp[index]), ("recall", tp[index] + fn[index])) if count == 0]
            per_product[product] = {**{metric: float(_macro(scores[metric])) for metric in MULTILABEL_METRICS},
                                    "n_images": len(targets), "n_defective": int(targets.any(axis=1).sum()),
                                    "n_classes": len(images.class_names)}
            truth = np.vstack([targets.T, ~targets.any(axis=1)]).astype(np.int64)  # (K + 1, N)
            counts = truth @ predicted.astype(np.int64)
            n_true = truth.sum(axis=1)
            for row, true_name in enumerate((*images.class_names, NORMAL_ROW)):
                for column, predicted_name in enumerate(images.class_names):
                    firing.append({"product": product, "true": true_name, "predicted": predicted_name,
                                   "count": int(counts[row, column]), "n_true": int(n_true[row]),
                                   "rate": counts[row, column] / n_true[row] if n_true[row] else float("nan")})
        if undefined:
            warnings.warn(f"precision/recall undefined (set to zero_division={zero_division}) for "
                          f"{', '.join(undefined)}", MetricUndefinedWarning, stacklevel=2)
        columns = [*MULTILABEL_METRICS, "n_images", "n_defective", "n_classes"]
        table = pd.DataFrame.from_dict(per_product, orient="index", columns=columns).rename_axis("product")
        if len(table):
            mean = {**table[list(MULTILABEL_METRICS)].mean(skipna=True).to_dict(),
                    **table[columns[3:]].sum().to_dict()}
            table.loc["mean"] = pd.Series(mean)
            table[columns[3:]] = table[columns[3:]].astype(np.int64)
        return MultiLabelResult(
            table,
            pd.DataFrame(per_class, columns=["product", "class", *MULTILABEL_METRICS, "support", "n_predicted",
                                             "tp", "fp", "fn"]),
            pd.DataFrame(firing, columns=["product", "true", "predicted", "count", "n_true", "rate"]),
            float(threshold), zero_division)

    def threshold_curve(self, thresholds, *, zero_division: float = 0.0) -> pd.DataFrame:
        """Macro precision, recall, F1 per product at each threshold (tidy), plus ``mean`` rows over products."""
        values = check_thresholds(thresholds)
        zero_division = check_zero_division(zero_division)
        frames = []
        for product, images in self._products.items():
            probs, targets = images.arrays()
            predicted = probs[None] > values[:, None, None]  # (T, N, K)
            tp = (predicted & targets).sum(axis=1)
            fp = (predicted & ~targets).sum(axis=1)
            fn = (~predicted & targets).sum(axis=1)
            scores = _scores(tp, fp, fn, zero_division)
            frames.append(pd.DataFrame({"product": product, "threshold": values,
                                        **{metric: _macro(scores[metric]) for metric in MULTILABEL_METRICS}}))
        if not frames:
            return pd.DataFrame(columns=["product", "threshold", *MULTILABEL_METRICS])
        curve = pd.concat(frames, ignore_index=True)
        mean = curve.groupby("threshold", sort=False)[list(MULTILABEL_METRICS)].mean().reset_index()
        mean.insert(0, "product", "mean")
        return pd.concat([curve, mean], ignore_index=True)
