"""Binary metrics: image level, pixel level, AUPRO, the streaming evaluator and its edge cases."""

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from dapo.metrics import (
    BINARY_METRICS,
    BinaryEvaluator,
    MetricUndefinedWarning,
    aupro,
    image_metrics,
    pixel_metrics,
)


def blob_maps(n: int, size: int = 40, seed: int = 0, anomalous_every: int = 2):
    """Smooth float32 maps and boolean masks; every ``anomalous_every``-th image has 1-3 blobs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    masks = np.zeros((n, size, size), dtype=bool)
    maps = ndimage.gaussian_filter(rng.normal(size=(n, size, size)), sigma=(0, 2, 2))
    for index in range(0, n, anomalous_every):
        for _ in range(rng.integers(1, 4)):
            cy, cx, ry, rx = rng.uniform(5, size - 5), rng.uniform(5, size - 5), *rng.uniform(1.5, 6, 2)
            masks[index] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        maps[index] += 0.3 * ndimage.gaussian_filter(masks[index].astype(float), 1.5) / 0.5
    return maps.astype(np.float32), masks


def sklearn_f1_max(labels, scores):
    precision, recall, _ = precision_recall_curve(labels, scores)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision),
                   where=precision + recall > 0)
    return f1.max()


def reference_aupro(maps, masks, max_fpr=0.3):
    """float64 AUPRO at every distinct threshold, region by region (slow, tiny inputs only)."""
    regions = []
    for index, mask in enumerate(masks):
        labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [(index, labels == region) for region in range(1, count + 1)]
    fprs, pros = [0.0], [0.0]
    for threshold in np.unique(maps.astype(np.float64))[::-1]:
        predicted = maps >= threshold
        fprs.append((predicted & ~masks).sum() / (~masks).sum())
        pros.append(np.mean([predicted[index][region].mean() for index, region in regions]))
    fprs, pros = np.array(fprs), np.array(pros)
    inside = int(np.sum(fprs <= max_fpr))  # fprs never decrease
    x, y = fprs[:inside], pros[:inside]
    if inside < fprs.size:  # close the curve at max_fpr by linear interpolation
        t = (max_fpr - fprs[inside - 1]) / (fprs[inside] - fprs[inside - 1])
        x, y = np.append(x, max_fpr), np.append(y, pros[inside - 1] + t * (pros[inside] - pros[inside - 1]))
    return np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2) / max_fpr


def test_image_metrics_equal_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.random(300) < 0.4
    scores = np.round(rng.normal(size=300) + labels, 1)  # ties included
    got = image_metrics(scores, labels)
    assert got["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert got["image_ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert got["image_f1_max"] == pytest.approx(sklearn_f1_max(labels, scores), abs=1e-12)


def test_pixel_metrics_on_blob_maps_match_sklearn():
    maps, masks = blob_maps(12)
    got = pixel_metrics(maps, masks)
    labels, scores = masks.ravel(), maps.ravel()
    assert got["pixel_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-3)
    assert got["pixel_ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-3)
    assert got["pixel_f1_max"] == pytest.approx(sklearn_f1_max(labels, scores), abs=1e-3)
    assert 0.6 < got["pixel_auroc"] < 1.0  # the blobs are detectable but not trivially


def test_pixel_metrics_of_constant_and_tied_maps():
    _, masks = blob_maps(6)
    constant = np.full(masks.shape, 0.25, dtype=np.float32)
    prevalence = masks.mean()
    got = pixel_metrics(constant, masks)
    assert got["pixel_auroc"] == 0.5
    assert got["pixel_ap"] == pytest.approx(prevalence)
    assert got["pixel_f1_max"] == pytest.approx(2 * prevalence / (1 + prevalence))
    assert got["pixel_aupro"] == pytest.approx(0.15)  # one tie group: straight line (0,0)-(1,1), 0.5 * 0.3 / 0.3
    tied = np.round(blob_maps(6)[0], 1)
    got = pixel_metrics(tied, masks)
    assert got["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), tied.ravel()), abs=1e-12)
    assert got["pixel_ap"] == pytest.approx(average_precision_score(masks.ravel(), tied.ravel()), abs=1e-12)


def test_aupro_hand_worked_example():
    # one region of two pixels (0.9, 0.5) and four normal pixels (0.8, 0.3, 0.2, 0.1):
    # PRO(FPR) = 0.5 on [0, 0.25], 1 on [0.25, ...] -> area to 0.3 = 0.125 + 0.05, to 1 = 0.875
    maps = np.array([[[0.9, 0.5, 0.8], [0.3, 0.2, 0.1]]], dtype=np.float32)
    masks = np.array([[[1, 1, 0], [0, 0, 0]]], dtype=bool)
    assert aupro(maps, masks) == pytest.approx(0.175 / 0.3)
    assert aupro(maps, masks, max_fpr=1.0) == pytest.approx(0.875)


@pytest.mark.parametrize("max_fpr", [0.3, 0.05, 1.0])
def test_aupro_matches_float64_reference(max_fpr):
    maps, masks = blob_maps(6, size=24, seed=4)
    assert aupro(maps, masks, max_fpr=max_fpr) == pytest.approx(reference_aupro(maps, masks, max_fpr), abs=1e-3)


def test_evaluator_mixed_batches_give_per_product_rows_and_mean():
    maps, masks = blob_maps(16, seed=1)
    products = ["screw", "screw", "cable", "cable"] * 4  # both products get normal and anomalous images
    scores = maps.reshape(16, -1).max(axis=1)
    labels = masks.reshape(16, -1).any(axis=1)
    evaluator = BinaryEvaluator()
    for batch in (slice(0, 5), slice(5, 16)):
        evaluator.add(products[batch], torch.from_numpy(scores[batch]), torch.from_numpy(labels[batch]),
                      torch.from_numpy(maps[batch]), torch.from_numpy(masks[batch]).float())
    table = evaluator.compute()
    assert list(table.columns) == list(BINARY_METRICS)
    assert list(table.index) == ["screw", "cable", "mean"] and table.index.name == "product"
    pd.testing.assert_series_equal(table.loc["mean"], table.drop("mean").mean(), check_names=False)
    for product in ("screw", "cable"):
        rows = np.array(products) == product
        expected = {**image_metrics(scores[rows], labels[rows]), **pixel_metrics(maps[rows], masks[rows])}
        assert table.loc[product].to_dict() == pytest.approx(expected, abs=1e-12)
    assert ((table.to_numpy() >= 0) & (table.to_numpy() <= 1)).all()


def test_evaluator_does_not_depend_on_batching():
    maps, masks = blob_maps(10, seed=2)
    scores, labels = maps.reshape(10, -1).mean(axis=1), masks.reshape(10, -1).any(axis=1)
    one, many = BinaryEvaluator(), BinaryEvaluator()
    one.add("pill", scores, labels, maps, masks)
    for index in range(10):
        many.add("pill", scores[index : index + 1], labels[index : index + 1], maps[index : index + 1],
                 masks[index : index + 1])
    pd.testing.assert_frame_equal(one.compute(), many.compute())


def test_all_normal_product_is_nan_with_warning_and_skipped_by_the_mean():
    maps, masks = blob_maps(8, seed=3)
    evaluator = BinaryEvaluator()
    evaluator.add("good", maps[:4].max(axis=(1, 2)), masks[:4].any(axis=(1, 2)), maps[:4], masks[:4])
    evaluator.add("all_normal", maps[4:].mean(axis=(1, 2)), [0, 0, 0, 0], maps[4:], np.zeros_like(masks[4:]))
    with pytest.warns(MetricUndefinedWarning, match="all_normal") as caught:
        table = evaluator.compute()
    assert len(caught) == 2  # one warning for image metrics, one for pixel metrics
    assert table.loc["all_normal"].isna().all()
    pd.testing.assert_series_equal(table.loc["mean"], table.loc["good"], check_names=False)


def test_product_without_normal_images_has_nan_image_metrics_only():
    maps, masks = blob_maps(4, seed=5, anomalous_every=1)
    evaluator = BinaryEvaluator()
    evaluator.add("broken", maps.max(axis=(1, 2)), [1, 1, 1, 1], maps, masks)
    with pytest.warns(MetricUndefinedWarning, match="normal and anomalous images"):
        row = evaluator.compute().loc["broken"]
    assert row[["image_auroc", "image_ap", "image_f1_max"]].isna().all()
    assert row[["pixel_auroc", "pixel_ap", "pixel_f1_max", "pixel_aupro"]].notna().all()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_map_names_the_sample(bad):
    maps, masks = blob_maps(3)
    maps[2, 5, 5] = bad
    with pytest.raises(ValueError, match=r"maps has NaN or inf values for product 'wood' at batch index 2"):
        BinaryEvaluator().add(["carpet", "carpet", "wood"], [0.1, 0.2, 0.3], [0, 1, 0], maps, masks)


def test_size_mismatch_names_both_shapes():
    maps, masks = blob_maps(2, size=16)
    with pytest.raises(ValueError, match=r"maps shape \(2, 16, 16\) does not match masks shape \(2, 8, 8\)"):
        BinaryEvaluator().add("tile", [0.1, 0.2], [0, 1], maps, masks[:, ::2, ::2])
    with pytest.raises(ValueError, match=r"maps must have shape \(N, H, W\)"):
        BinaryEvaluator().add("tile", [0.1, 0.2], [0, 1], maps[:, None], masks[:, None])


def test_error_bounds_cover_the_difference_to_sklearn():
    maps, masks = blob_maps(12, seed=7)
    evaluator = BinaryEvaluator()
    evaluator.add("hazelnut", maps.max(axis=(1, 2)), masks.any(axis=(1, 2)), maps, masks)
    table, bounds = evaluator.compute(), evaluator.error_bounds()
    assert abs(table.loc["hazelnut", "pixel_auroc"] - roc_auc_score(masks.ravel(), maps.ravel())) <= (
        bounds.loc["hazelnut", "pixel_auroc"] + 1e-12)
    assert abs(table.loc["hazelnut", "pixel_ap"] - average_precision_score(masks.ravel(), maps.ravel())) <= (
        bounds.loc["hazelnut", "pixel_ap"] + 1e-12)
