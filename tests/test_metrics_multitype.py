"""Multi-type segmentation metrics against scikit-learn (MultiADS protocol)."""

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from dapo.metrics import MetricUndefinedWarning, MultiTypeEvaluator

CLASSES = ("normal", "crack", "hole", "scratch")


def typed_blobs(n: int, classes_present, size: int = 32, seed: int = 0):
    """``(n, C, H, W)`` float32 class scores (softmax of noisy logits) and ``(n, H, W)`` type masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    type_masks = np.zeros((n, size, size), dtype=np.int64)
    for index in range(n):
        for defect in rng.choice(classes_present, size=rng.integers(0, 3)):
            cy, cx, r = rng.uniform(4, size - 4), rng.uniform(4, size - 4), rng.uniform(2, 6)
            type_masks[index][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = defect
    logits = ndimage.gaussian_filter(rng.normal(size=(n, len(CLASSES), size, size)), sigma=(0, 0, 1.5, 1.5))
    logits += 1.2 * (type_masks[:, None] == np.arange(len(CLASSES))[None, :, None, None])
    probs = np.exp(3 * logits) / np.exp(3 * logits).sum(axis=1, keepdims=True)
    return probs.astype(np.float32), type_masks


def sklearn_per_class(probs, type_masks):
    """Per-class AUROC, AP, F1 of one product as MultiADS computes them (classes with pixels only)."""
    truth = type_masks.ravel()
    scores = probs.transpose(0, 2, 3, 1).reshape(-1, probs.shape[1])
    f1 = f1_score(truth, scores.argmax(axis=1), labels=range(probs.shape[1]), average=None, zero_division=0)
    rows = {}
    for index, name in enumerate(CLASSES):
        if (truth == index).any():
            rows[name] = (roc_auc_score(truth == index, scores[:, index]),
                          average_precision_score(truth == index, scores[:, index]), f1[index])
    return rows


def evaluate(batches, f1_labels="union"):
    evaluator = MultiTypeEvaluator(f1_labels=f1_labels)
    for product, probs, type_masks in batches:
        evaluator.add(product, CLASSES, probs, type_masks)
    return evaluator.compute()


def test_per_class_product_dataset_and_defect_figures_match_sklearn():
    data = {"bottle": typed_blobs(8, [1, 2, 3], seed=1), "zipper": typed_blobs(8, [1, 2, 3], seed=2)}
    result = evaluate([(product, probs[:5], masks[:5]) for product, (probs, masks) in data.items()]
                      + [(product, probs[5:], masks[5:]) for product, (probs, masks) in data.items()])
    per_class = result.per_class.set_index(["product", "class"])
    for product, (probs, masks) in data.items():
        expected = sklearn_per_class(probs, masks)
        assert set(expected) == set(CLASSES)
        for name, (auroc, ap, f1) in expected.items():
            row = per_class.loc[(product, name)]
            assert row["auroc"] == pytest.approx(auroc, abs=1e-3)
            assert row["ap"] == pytest.approx(ap, abs=1e-3)
            assert row["f1"] == pytest.approx(f1, abs=1e-12)
            assert row["n_pixels"] == (masks == CLASSES.index(name)).sum()
        macro = np.mean(list(expected.values()), axis=0)
        truth, predicted = masks.ravel(), probs.argmax(axis=1).ravel()
        assert macro[2] == pytest.approx(f1_score(truth, predicted, average="macro"), abs=1e-12)
        np.testing.assert_allclose(result.per_product.loc[product, ["auroc", "ap", "f1"]], macro, atol=1e-3)
    assert list(result.per_product.index) == ["bottle", "zipper"]
    pd.testing.assert_series_equal(result.summary.loc["mean", ["auroc", "ap", "f1"]],
                                   result.per_product[["auroc", "ap", "f1"]].mean(), check_names=False)
    defect_means = result.per_class.groupby("class")[["auroc", "ap", "f1"]].mean()
    pd.testing.assert_frame_equal(result.per_defect[["auroc", "ap", "f1"]], defect_means.rename_axis("defect"))
    assert (result.per_defect["n_products"] == 2).all() and result.summary.loc["mean", "n_products"] == 2


def test_class_without_pixels_is_nan_warned_and_left_out_of_the_means():
    probs_a, masks_a = typed_blobs(6, [1, 2], seed=3)  # product "cable" never shows a scratch
    probs_b, masks_b = typed_blobs(6, [1, 2, 3], seed=4)
    with pytest.warns(MetricUndefinedWarning, match="cable/scratch"):
        result = evaluate([("cable", probs_a, masks_a), ("screw", probs_b, masks_b)], f1_labels="present")
    row = result.per_class.set_index(["product", "class"]).loc[("cable", "scratch")]
    assert row[["auroc", "ap", "f1"]].isna().all() and row["n_pixels"] == 0
    expected = sklearn_per_class(probs_a, masks_a)
    assert result.per_product.loc["cable", "n_classes"] == 3
    np.testing.assert_allclose(result.per_product.loc["cable", ["auroc", "ap", "f1"]],
                               np.mean(list(expected.values()), axis=0), atol=1e-3)
    assert result.per_defect.loc["scratch", "n_products"] == 1
    assert result.per_defect.loc["scratch", "auroc"] == pytest.approx(
        result.per_class.set_index(["product", "class"]).loc[("screw", "scratch"), "auroc"])


def test_torch_inputs_and_batching_give_the_same_result():
    probs, masks = typed_blobs(6, [1, 2, 3], seed=7)  # every class occurs
    whole = evaluate([("pill", probs, masks)])
    pieces = evaluate([("pill", torch.from_numpy(probs[i : i + 2]), torch.from_numpy(masks[i : i + 2]))
                       for i in range(0, 6, 2)])
    pd.testing.assert_frame_equal(whole.per_class, pieces.per_class)


def test_input_errors_name_the_problem():
    probs, masks = typed_blobs(2, [1], seed=6)
    evaluator = MultiTypeEvaluator()
    shapes = r"type_masks shape \(2, 16, 16\) does not match probs\[:, 0\] shape \(2, 32, 32\)"
    with pytest.raises(ValueError, match=shapes):
        evaluator.add("nut", CLASSES, probs, masks[:, ::2, ::2])
    with pytest.raises(ValueError, match="probs has 4 channels but 3 class names"):
        evaluator.add("nut", CLASSES[:3], probs, masks)
    bad = masks.copy()
    bad[1, 0, 0] = 7
    with pytest.raises(ValueError, match=r"product 'nut' at batch index 1 has class ids \[7\] outside \[0, 4\)"):
        evaluator.add("nut", CLASSES, probs, bad)
    broken = probs.copy()
    broken[1, 2, 3, 3] = np.nan
    with pytest.raises(ValueError, match="probs has NaN or inf values for product 'nut' at batch index 1"):
        evaluator.add("nut", CLASSES, broken, masks)
    evaluator.add("nut", CLASSES, probs, masks)
    with pytest.raises(ValueError, match="class_names for product 'nut' changed"):
        evaluator.add("nut", ("normal", "hole", "crack", "scratch"), probs, masks)
    with pytest.raises(TypeError, match="type_masks must be integers"):
        evaluator.add("nut", CLASSES, probs, masks.astype(np.float32))


def test_argmax_ties_go_to_the_first_class_like_numpy():
    probs, masks = typed_blobs(6, [1, 2, 3], seed=7)
    probs[:, 2] = probs[:, 1]  # classes 1 and 2 tie everywhere: numpy's argmax picks class 1
    result = evaluate([("tile", probs, masks)])
    truth, predicted = masks.ravel(), probs.argmax(axis=1).ravel()
    expected = f1_score(truth, predicted, labels=range(4), average=None, zero_division=0)
    np.testing.assert_allclose(result.per_class["f1"], expected, atol=1e-12)


def test_union_f1_counts_a_predicted_but_absent_class_as_zero_like_sklearn_macro():
    """The official scripts' f1_score(gt, argmax, average="macro"): labels = truth | prediction."""
    probs, masks = typed_blobs(6, [1, 2], seed=3)  # no scratch in the truth ...
    probs[:, 3, :4, :4] = 10.0  # ... but predicted in a corner of every image
    with pytest.warns(MetricUndefinedWarning):
        union = evaluate([("cable", probs, masks)])
        present = evaluate([("cable", probs, masks)], f1_labels="present")
    truth, predicted = masks.ravel(), probs.argmax(axis=1).ravel()
    assert 3 in set(predicted) and 3 not in set(truth)
    assert union.per_product.loc["cable", "f1"] == pytest.approx(f1_score(truth, predicted, average="macro"),
                                                                 abs=1e-12)
    row = union.per_class.set_index(["product", "class"]).loc[("cable", "scratch")]
    assert row["f1"] == 0.0 and np.isnan(row["auroc"])
    assert present.per_product.loc["cable", "f1"] > union.per_product.loc["cable", "f1"]
    with pytest.raises(ValueError, match="f1_labels"):
        MultiTypeEvaluator(f1_labels="all")
