"""ROC points and confusion counts at thresholds from BinaryEvaluator, against scikit-learn."""

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

from dapo.metrics import POOLED, BinaryEvaluator, MetricUndefinedWarning, ScoreHistogram

PRODUCTS = np.array(["capsule", "screw", "capsule", "screw", "screw"] * 6)


def dataset(seed: int = 0, quantise: bool = False, size: int = 24):
    """30 images of two products, both with normal and anomalous images; image scores with ties."""
    rng = np.random.default_rng(seed)
    n = len(PRODUCTS)
    maps = ndimage.gaussian_filter(rng.normal(size=(n, size, size)), sigma=(0, 2, 2))
    masks = np.zeros(maps.shape, dtype=bool)
    for index in range(0, n, 3):
        y, x = rng.integers(2, size - 8, 2)
        masks[index, y : y + rng.integers(2, 7), x : x + rng.integers(2, 7)] = True
    maps = np.where(masks, maps + rng.uniform(0.1, 0.5), maps)
    maps = np.round(maps, 1) if quantise else maps
    labels = masks.any(axis=(1, 2))
    scores = np.round(maps.max(axis=(1, 2)) + rng.normal(0, 0.3, n), 1)  # ties
    return scores, labels, maps.astype(np.float32), masks


def filled(seed: int = 0, quantise: bool = False, **kwargs):
    scores, labels, maps, masks = dataset(seed, quantise)
    evaluator = BinaryEvaluator(**kwargs)
    for batch in (slice(0, 7), slice(7, 30)):
        evaluator.add(PRODUCTS[batch].tolist(), scores[batch], labels[batch], maps[batch], masks[batch])
    return evaluator, (scores, labels, maps, masks)


def curve_of(frame, product):
    rows = frame[frame["product"] == product]
    return rows["fpr"].to_numpy(), rows["tpr"].to_numpy(), rows["threshold"].to_numpy()


@pytest.mark.parametrize("drop_intermediate", [True, False])
def test_image_roc_equals_sklearn_per_product_and_pooled(drop_intermediate):
    evaluator, (scores, labels, _, _) = filled()
    frame = evaluator.roc_curve("image", pooled=True, drop_intermediate=drop_intermediate)
    assert list(frame.columns) == ["product", "threshold", "fpr", "tpr"]
    assert list(dict.fromkeys(frame["product"])) == ["capsule", "screw", POOLED]
    for product, rows in (("capsule", PRODUCTS == "capsule"), ("screw", PRODUCTS == "screw"),
                          (POOLED, slice(None))):
        expected = roc_curve(labels[rows], scores[rows], drop_intermediate=drop_intermediate)
        for got, want in zip(curve_of(frame, product), expected):
            np.testing.assert_array_equal(got, want)


def test_image_counts_at_thresholds_equal_sklearn_confusion_matrix():
    evaluator, (scores, labels, _, _) = filled(seed=1)
    thresholds = [-10.0, 0.5, *np.unique(scores)[::3], 10.0]  # includes thresholds equal to tied scores
    frame = evaluator.rates_at(thresholds, "image", pooled=True)
    assert len(frame) == 3 * len(thresholds)
    for product, rows in (("capsule", PRODUCTS == "capsule"), ("screw", PRODUCTS == "screw"),
                          (POOLED, slice(None))):
        part = frame[frame["product"] == product]
        for _, row in part.iterrows():
            tn, fp, fn, tp = confusion_matrix(labels[rows], scores[rows] >= row["threshold"], labels=[0, 1]).ravel()
            assert (row["tn"], row["fp"], row["fn"], row["tp"]) == (tn, fp, fn, tp)
            assert row["tpr"] == tp / (tp + fn) and row["fpr"] == fp / (fp + tn)
        assert (part[["tp_uncertain", "fp_uncertain"]] == 0).all().all()


def sklearn_pixel_curve(maps, masks):
    return roc_curve(masks.ravel(), maps.ravel().astype(np.float64), drop_intermediate=False)


@pytest.mark.parametrize("bins_per_octave", [4096, 64])
def test_pixel_roc_points_lie_on_the_exact_curve(bins_per_octave):
    evaluator, (_, _, maps, masks) = filled(seed=2, bins_per_octave=bins_per_octave, exact_top=256)
    frame = evaluator.roc_curve("pixel", pooled=True, drop_intermediate=False)
    for product, rows in (("capsule", PRODUCTS == "capsule"), (POOLED, slice(None))):
        fpr, tpr, thresholds = sklearn_pixel_curve(maps[rows], masks[rows])
        got_fpr, got_tpr, got_thresholds = curve_of(frame, product)
        assert got_thresholds[0] == np.inf and got_fpr[0] == got_tpr[0] == 0
        # sklearn's point at the lowest of its thresholds >= ours has the same counts (score >= threshold)
        where = np.searchsorted(-thresholds, -got_thresholds[1:], side="right") - 1
        np.testing.assert_allclose(got_fpr[1:], fpr[where], rtol=0, atol=1e-12)
        np.testing.assert_allclose(got_tpr[1:], tpr[where], rtol=0, atol=1e-12)
        assert got_fpr[-1] == got_tpr[-1] == 1
        assert len(got_fpr) < len(fpr)  # fewer points than pixels: bins were used
    got_fpr, got_tpr, _ = curve_of(frame, "capsule")
    area = np.sum(np.diff(got_fpr) * (got_tpr[1:] + got_tpr[:-1]) / 2)  # trapezoids = the histogram AUROC
    rows = PRODUCTS == "capsule"
    assert area == pytest.approx(evaluator.compute().loc["capsule", "pixel_auroc"], abs=1e-12)
    assert abs(area - roc_auc_score(masks[rows].ravel(), maps[rows].ravel())) <= (
        evaluator.error_bounds().loc["capsule", "pixel_auroc"] + 1e-12)


def test_pixel_roc_of_quantised_maps_equals_sklearn():
    evaluator, (_, _, maps, masks) = filled(seed=3, quantise=True)
    frame = evaluator.roc_curve("pixel")
    rows = PRODUCTS == "screw"
    expected = roc_curve(masks[rows].ravel(), maps[rows].ravel().astype(np.float64))
    for got, want in zip(curve_of(frame, "screw"), expected):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_pixel_counts_at_thresholds_bracket_the_exact_counts():
    evaluator, (_, _, maps, masks) = filled(seed=4, bins_per_octave=64, exact_top=256)  # thresholds inside bins
    thresholds = np.r_[0.5, 0.25, 0.0, np.linspace(-0.4, 0.6, 37)]
    frame = evaluator.rates_at(thresholds, "pixel", pooled=True)
    for product, rows in (("capsule", PRODUCTS == "capsule"), ("screw", PRODUCTS == "screw"),
                          (POOLED, slice(None))):
        scores, truth = maps[rows].ravel(), masks[rows].ravel()
        part = frame[frame["product"] == product]
        for _, row in part.iterrows():
            tn, fp, fn, tp = confusion_matrix(truth, scores >= row["threshold"], labels=[0, 1]).ravel()
            assert row["tp"] <= tp <= row["tp"] + row["tp_uncertain"]
            assert row["fp"] <= fp <= row["fp"] + row["fp_uncertain"]
            assert row["tp"] + row["fn"] == tp + fn and row["fp"] + row["tn"] == fp + tn
        edges = part[part["threshold"].isin([0.5, 0.25, 0.0])]  # bin edges: exact
        assert (edges[["tp_uncertain", "fp_uncertain"]] == 0).all().all()
        for _, row in edges.iterrows():
            tn, fp, fn, tp = confusion_matrix(truth, scores >= row["threshold"], labels=[0, 1]).ravel()
            assert (row["tn"], row["fp"], row["fn"], row["tp"]) == (tn, fp, fn, tp)
    assert (frame["tp_uncertain"] > 0).any()  # the bracket is exercised


def test_pooled_histogram_counts_every_score():
    rng = np.random.default_rng(5)
    histograms, scores, labels = [], [], []
    for exact_top in (64, 64, 64):
        values, truth = rng.normal(size=5000).astype(np.float32), rng.random(5000) < 0.2
        histogram = ScoreHistogram(exact_top=exact_top)
        histogram.add(values, truth)
        histograms.append(histogram)
        scores.append(values)
        labels.append(truth)
    pooled = ScoreHistogram.pooled(histograms).ranked()
    scores, labels = np.concatenate(scores), np.concatenate(labels)
    assert pooled.n_pos == labels.sum() and pooled.n_neg == (~labels).sum()
    assert abs(pooled.auroc() - roc_auc_score(labels, scores)) <= pooled.auroc_error_bound() + 1e-12
    with pytest.raises(ValueError, match="bins_per_octave"):
        ScoreHistogram.pooled([ScoreHistogram(64), ScoreHistogram(128)])


def test_one_class_products_warn_and_have_nan_rates():
    scores, labels, maps, masks = dataset(seed=6)
    evaluator = BinaryEvaluator()
    evaluator.add("mixed", scores, labels, maps, masks)
    evaluator.add("good", scores[~labels], labels[~labels], maps[~labels], masks[~labels])
    with pytest.warns(MetricUndefinedWarning, match="image TPR or FPR is NaN for good"):
        frame = evaluator.rates_at(0.5)
    assert frame.set_index("product").loc["good", "tpr"] != frame.set_index("product").loc["good", "tpr"]  # NaN
    with pytest.warns(MetricUndefinedWarning, match="pixel TPR or FPR is NaN for good"):
        curve = evaluator.roc_curve("pixel")
    assert curve[curve["product"] == "good"]["tpr"].isna().all()


def test_argument_errors():
    evaluator, _ = filled()
    with pytest.raises(ValueError, match="level must be one of"):
        evaluator.roc_curve("region")
    with pytest.raises(ValueError, match="thresholds has NaN or inf"):
        evaluator.rates_at([0.5, np.nan])
    named = BinaryEvaluator()
    named.add(POOLED, [0.1, 0.9], [0, 1], np.zeros((2, 4, 4)), np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="a product is named 'pooled'"):
        named.roc_curve(pooled=True)
