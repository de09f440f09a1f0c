"""Multi-type anomaly segmentation metrics (the MultiADS protocol used by DAPO Tables 1, 12-14).

Per product, the classes are the product's class names (index 0 = normal, then its defect
types). For each class ``c`` and each pixel: one-vs-rest AUROC and AP of the score
``probs[:, c]`` against ``type_mask == c``, and F1 of the per-pixel argmax (``2TP / (2TP + FP + FN)``
from the confusion matrix). Product figures are macro averages over its classes; the dataset
figure is the mean over products; the defect-wise figure of a class is the mean over products
of that class's per-product value. The normal class takes part like any other, as in the
MultiADS evaluation (``label_binarize`` over all classes, ``average="macro"``).

NaN rule (see :mod:`dapo.metrics.validation`): a class with no pixel of that type in a product
has no positives (and a class covering every pixel has no negatives), so its AUROC and AP are
NaN for that product (one warning lists them) and it is left out of that product's macro
averages and of the defect-wise mean. Its F1 follows ``f1_labels``: ``"union"`` (default, as
the official evaluation scripts' ``sklearn.metrics.f1_score(average="macro")``, whose labels
are every class in the truth or the prediction) gives a class that is predicted but absent
F1 = 0, counted in the macro F1; ``"present"`` leaves it out like AUROC and AP. On
datasets whose per-product vocabulary lists only defects that occur, this equals the MultiADS
scripts; with a dataset-wide vocabulary it restricts each product to its own defect types.
Pixels predicted as such an absent class still count as misses (FN) of their true class.

AUROC and AP use the streaming histograms of :mod:`dapo.metrics.histogram` (error bound
there); F1 is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dapo.metrics.histogram import DEFAULT_BINS_PER_OCTAVE, ScoreHistogram, check_bins_per_octave
from dapo.metrics.validation import (
    as_numpy,
    check_ndim,
    check_same_shape,
    float32_maps,
    warn_undefined,
)

MULTITYPE_METRICS = ("auroc", "ap", "f1")


@dataclass(frozen=True)
class MultiTypeResult:
    """Tidy tables of a multi-type evaluation (floats in [0, 1], unrounded).

    per_product: index ``product``; macro ``auroc``, ``ap``, ``f1`` over the product's classes
        with positives, and ``n_classes`` (how many were averaged).
    per_class: one row per (product, class): ``product``, ``class``, ``auroc``, ``ap``, ``f1``,
        ``n_pixels`` (ground-truth pixels of that class).
    per_defect: index ``defect`` (class name, including the normal class); mean over products
        of the per-class values, and ``n_products`` (products where the class is defined).
    summary: one row ``mean``: the dataset figure (mean over products of ``per_product``) and
        ``n_products``.
    """

    per_product: pd.DataFrame
    per_class: pd.DataFrame
    per_defect: pd.DataFrame
    summary: pd.DataFrame


def _argmax_over_classes(probs: np.ndarray) -> np.ndarray:
    """``probs.argmax(axis=1)`` (first maximum wins) by a running maximum: a few times faster."""
    best = probs[:, 0].copy()
    predicted = np.zeros(best.shape, dtype=np.int64)
    for index in range(1, probs.shape[1]):
        better = probs[:, index] > best
        predicted[better] = index
        np.maximum(best, probs[:, index], out=best)
    return predicted


class _ProductAccumulator:
    """One product's per-class histograms and argmax confusion matrix."""

    def __init__(self, class_names: tuple[str, ...], bins_per_octave: int):
        self.class_names = class_names
        self.histograms = [ScoreHistogram(bins_per_octave) for _ in class_names]
        self.confusion = np.zeros((len(class_names), len(class_names)), dtype=np.int64)  # [true, predicted]

    def add(self, probs: np.ndarray, type_masks: np.ndarray) -> None:
        n_classes = len(self.class_names)
        for index, histogram in enumerate(self.histograms):
            histogram.add(probs[:, index], type_masks == index)
        predicted = _argmax_over_classes(probs)
        pairs = type_masks.astype(np.int64).ravel() * n_classes + predicted.ravel()
        self.confusion += np.bincount(pairs, minlength=n_classes**2).reshape(n_classes, n_classes)

    def merge(self, other: _ProductAccumulator) -> None:
        for mine, theirs in zip(self.histograms, other.histograms):
            mine.merge(theirs)
        self.confusion += other.confusion

    def per_class(self, f1_labels: str = "union") -> list[dict]:
        true_positives = np.diag(self.confusion).astype(np.float64)
        actual = self.confusion.sum(axis=1)
        predicted = self.confusion.sum(axis=0)
        total = actual.sum()
        rows = []
        for index, (name, histogram) in enumerate(zip(self.class_names, self.histograms)):
            ranked = histogram.ranked()
            if f1_labels == "union":
                defined = actual[index] + predicted[index] > 0
            else:
                defined = 0 < actual[index] < total  # same rule as the ranking metrics
            f1 = 2 * true_positives[index] / (actual[index] + predicted[index]) if defined else float("nan")
            rows.append({"class": name, "auroc": ranked.auroc(), "ap": ranked.average_precision(),
                         "f1": f1, "n_pixels": int(actual[index])})
        return rows


class MultiTypeEvaluator:
    """Streaming multi-type segmentation metrics (see the module docstring for the protocol).

    Parameters
    ----------
    bins_per_octave:
        Resolution of the per-class score histograms (see :mod:`dapo.metrics.histogram`).
    f1_labels:
        Which classes enter the macro F1: ``"union"`` of truth and prediction (the official
        scripts') or ``"present"`` in the truth (see the module docstring).
    """

    def __init__(self, *, bins_per_octave: int = DEFAULT_BINS_PER_OCTAVE, f1_labels: str = "union"):
        check_bins_per_octave(bins_per_octave)
        if f1_labels not in ("union", "present"):
            raise ValueError(f"f1_labels={f1_labels!r}: expected 'union' or 'present'")
        self.bins_per_octave = bins_per_octave
        self.f1_labels = f1_labels
        self._products: dict[str, _ProductAccumulator] = {}

    def add(self, product: str, class_names: Sequence[str], probs, type_masks) -> None:
        """Add a batch of one product.

        Parameters
        ----------
        product:
            Product name.
        class_names:
            ``C`` class names, index 0 = normal; must be the same in every batch of a product.
        probs:
            ``(N, C, H, W)`` per-class scores (e.g. the summed stage probabilities).
        type_masks:
            ``(N, H, W)`` integer ground truth, values in ``[0, C)``.
        """
        names = tuple(str(name) for name in class_names)
        probs = as_numpy(probs, "probs")
        probs, _, _ = float32_maps(probs, "probs", 4, "(N, C, H, W)", [product] * len(probs) if probs.ndim else None)
        type_masks = as_numpy(type_masks, "type_masks")
        check_ndim(type_masks, 3, "type_masks", "(N, H, W)")
        if probs.shape[1] != len(names):
            raise ValueError(f"probs has {probs.shape[1]} channels but {len(names)} class names {list(names)}")
        check_same_shape(type_masks, "type_masks", probs[:, 0], "probs[:, 0]")
        if not np.issubdtype(type_masks.dtype, np.integer):
            raise TypeError(f"type_masks must be integers, got dtype {type_masks.dtype}")
        outside = (type_masks < 0) | (type_masks >= len(names))
        if outside.any():
            index = int(np.flatnonzero(outside.reshape(len(type_masks), -1).any(axis=1))[0])
            raise ValueError(
                f"type_masks of product {product!r} at batch index {index} has class ids "
                f"{np.unique(type_masks[index][outside[index]]).tolist()} outside [0, {len(names)})"
            )
        accumulator = self._products.setdefault(product, _ProductAccumulator(names, self.bins_per_octave))
        if accumulator.class_names != names:
            raise ValueError(
                f"class_names for product {product!r} changed from {list(accumulator.class_names)} to {list(names)}"
            )
        accumulator.add(probs, type_masks)

    def merge(self, other: MultiTypeEvaluator) -> MultiTypeEvaluator:
        """Add ``other``'s batches (same settings) after this evaluator's, in place; returns ``self``.

        Histograms and confusion matrices add (:meth:`dapo.metrics.histogram.ScoreHistogram.merge`):
        the result computes exactly the tables of one evaluator given every batch.
        """
        if (other.bins_per_octave, other.f1_labels) != (self.bins_per_octave, self.f1_labels):
            raise ValueError("merged MultiTypeEvaluators must share bins_per_octave and f1_labels")
        for product, theirs in other._products.items():
            mine = self._products.setdefault(product, _ProductAccumulator(theirs.class_names, self.bins_per_octave))
            if mine.class_names != theirs.class_names:
                raise ValueError(f"class_names for product {product!r} differ between merged evaluators: "
                                 f"{list(mine.class_names)} vs {list(theirs.class_names)}")
            mine.merge(theirs)
        return self

    def compute(self) -> MultiTypeResult:
        """The four tidy tables; warns once about every (product, class) without positives."""
        per_class = pd.DataFrame(
            [{"product": product, **row} for product, acc in self._products.items()
             for row in acc.per_class(self.f1_labels)],
            columns=["product", "class", *MULTITYPE_METRICS, "n_pixels"],
        )
        undefined = per_class[per_class["auroc"].isna()]
        warn_undefined(
            ", ".join(MULTITYPE_METRICS),
            (f"{product}/{name}" for product, name in zip(undefined["product"], undefined["class"])),
            "no ground-truth pixel (or only such pixels) of the class in that product; left out of the means",
        )
        grouped = per_class.groupby("product", sort=False)
        per_product = grouped[list(MULTITYPE_METRICS)].mean()
        per_product["n_classes"] = grouped["auroc"].count()
        per_product = per_product.reindex(list(self._products)).rename_axis("product")
        by_defect = per_class.groupby("class", sort=True)
        per_defect = by_defect[list(MULTITYPE_METRICS)].mean()
        per_defect["n_products"] = by_defect["auroc"].count()
        per_defect = per_defect.rename_axis("defect")
        summary = per_product[list(MULTITYPE_METRICS)].mean().to_frame("mean").T
        summary["n_products"] = int(per_product["auroc"].notna().sum())
        return MultiTypeResult(per_product, per_class, per_defect, summary)
