"""Multi-label defect classification (DAPO Eq. 11, Table 11) against scikit-learn."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import precision_recall_fscore_support

from dapo.metrics import MetricUndefinedWarning, MultiLabelEvaluator

TYPES = {"pcb1": ("bent", "melt", "missing", "scratch"), "capsules": ("bubble",)}


def images(product: str, n: int, seed: int, absent: tuple[str, ...] = ()):
    """Probabilities in [0, 1] (some exactly 0.5) and 0/1 targets; a third of the images are normal."""
    rng = np.random.default_rng(seed)
    names = TYPES[product]
    targets = (rng.random((n, len(names))) < 0.4) & (np.arange(n) % 3 != 0)[:, None]
    for name in absent:
        targets[:, names.index(name)] = False
    probs = np.clip(0.35 + 0.3 * targets + rng.normal(0, 0.2, targets.shape), 0, 1)
    probs[rng.random(probs.shape) < 0.1] = 0.5  # on the threshold: not predicted (P > 0.5)
    return probs, targets.astype(np.int64)


def sklearn_scores(targets, probs, threshold, zero_division, average):
    """scikit-learn's macro (or per-type) scores; a one-column indicator would be read as binary
    and averaged over {0, 1}, so one type goes in as 1-D labels with ``labels=[1]``."""
    predicted = probs > threshold
    extra = {}
    if targets.shape[1] == 1:
        targets, predicted, extra = targets[:, 0], predicted[:, 0], {"labels": [1]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's own UndefinedMetricWarning
        return precision_recall_fscore_support(targets, predicted, average=average, zero_division=zero_division,
                                               **extra)[:3]


def filled(absent=("scratch",)):
    data = {"pcb1": images("pcb1", 30, seed=1, absent=absent), "capsules": images("capsules", 24, seed=2)}
    evaluator = MultiLabelEvaluator()
    for product, (probs, targets) in data.items():
        for batch in (slice(0, 10), slice(10, None)):
            evaluator.add(product, TYPES[product], probs[batch], targets[batch])
    return evaluator, data


@pytest.mark.parametrize("zero_division", [0.0, 1.0, np.nan])
@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_per_product_and_per_class_equal_sklearn(zero_division, threshold):
    evaluator, data = filled()
    with pytest.warns(MetricUndefinedWarning, match=r"pcb1/scratch \(recall\)"):
        result = evaluator.compute(threshold, zero_division=zero_division)
    assert list(result.per_product.index) == ["pcb1", "capsules", "mean"]
    per_class = result.per_class.set_index(["product", "class"])
    for product, (probs, targets) in data.items():
        macro = sklearn_scores(targets, probs, threshold, zero_division, "macro")
        np.testing.assert_allclose(result.per_product.loc[product, ["precision", "recall", "f1"]].to_numpy(float),
                                   macro, rtol=0, atol=1e-12)
        per_type = np.array(sklearn_scores(targets, probs, threshold, zero_division, None)).T
        got = per_class.loc[product][["precision", "recall", "f1"]].to_numpy(float)
        np.testing.assert_allclose(got, per_type, rtol=0, atol=1e-12)
        assert per_class.loc[product, "support"].tolist() == targets.sum(axis=0).tolist()
        assert per_class.loc[product, "n_predicted"].tolist() == (probs > threshold).sum(axis=0).tolist()
        assert result.per_product.loc[product, "n_images"] == len(targets)
        assert result.per_product.loc[product, "n_defective"] == targets.any(axis=1).sum()
    products = result.per_product.drop("mean")
    np.testing.assert_allclose(result.per_product.loc["mean", ["precision", "recall", "f1"]].to_numpy(float),
                               products[["precision", "recall", "f1"]].mean().to_numpy(), atol=1e-15)
    assert result.threshold == threshold


def test_normal_images_make_single_type_precision_meaningful():
    # Table 11's Capsules: one defect type, precision below 100 % only through normal images
    probs = np.array([[0.9], [0.8], [0.7], [0.2]])
    targets = np.array([[1], [1], [0], [0]])
    evaluator = MultiLabelEvaluator()
    evaluator.add("capsules", ("bubble",), probs, targets)
    row = evaluator.compute().per_product.loc["capsules"]
    assert row["precision"] == pytest.approx(2 / 3) and row["recall"] == 1.0 and row["f1"] == pytest.approx(0.8)


def test_defect_name_targets_equal_the_matrix():
    probs, targets = images("pcb1", 12, seed=3)
    names = [tuple(np.array(TYPES["pcb1"])[row.astype(bool)]) for row in targets]
    assert () in names  # normal images
    by_matrix, by_names = MultiLabelEvaluator(), MultiLabelEvaluator()
    by_matrix.add("pcb1", TYPES["pcb1"], probs, targets)
    by_names.add("pcb1", TYPES["pcb1"], torch.from_numpy(probs).to(torch.float16).double().numpy(), names)
    by_names_torch = MultiLabelEvaluator()
    by_names_torch.add("pcb1", TYPES["pcb1"], torch.from_numpy(probs).to(torch.float16), names)
    pd.testing.assert_frame_equal(by_names.compute().per_class, by_names_torch.compute().per_class)
    by_names_exact = MultiLabelEvaluator()
    by_names_exact.add("pcb1", TYPES["pcb1"], probs, names)
    matrix_result, names_result = by_matrix.compute(0.4), by_names_exact.compute(0.4)
    for field in ("per_product", "per_class", "firing"):
        pd.testing.assert_frame_equal(getattr(matrix_result, field), getattr(names_result, field))


def test_firing_counts_which_types_fire_for_which_true_types():
    evaluator, data = filled(absent=())
    firing = evaluator.compute(0.5).firing
    probs, targets = data["pcb1"]
    predicted = probs > 0.5
    part = firing[firing["product"] == "pcb1"]
    assert len(part) == (4 + 1) * 4
    for _, row in part.iterrows():
        if row["true"] == "normal":
            rows = ~targets.any(axis=1)
        else:
            rows = targets[:, TYPES["pcb1"].index(row["true"])].astype(bool)
        expected = int(predicted[rows, TYPES["pcb1"].index(row["predicted"])].sum())
        assert row["count"] == expected and row["n_true"] == rows.sum()
        assert row["rate"] == pytest.approx(expected / rows.sum())
    heatmap = part.pivot(index="true", columns="predicted", values="count")
    assert heatmap.shape == (5, 4)


def test_threshold_curve_equals_sklearn_at_each_threshold():
    evaluator, data = filled(absent=())
    thresholds = np.linspace(0.0, 1.0, 11)
    curve = evaluator.threshold_curve(thresholds)
    assert list(curve.columns) == ["product", "threshold", "precision", "recall", "f1"]
    for product, (probs, targets) in data.items():
        part = curve[curve["product"] == product]
        for threshold, row in zip(thresholds, part.itertuples()):
            expected = sklearn_scores(targets, probs, threshold, 0.0, "macro")
            np.testing.assert_allclose((row.precision, row.recall, row.f1), expected, rtol=0, atol=1e-12)
    mean = curve[curve["product"] == "mean"].set_index("threshold")
    by_product = curve[curve["product"] != "mean"].groupby("threshold")[["precision", "recall", "f1"]].mean()
    pd.testing.assert_frame_equal(mean[["precision", "recall", "f1"]], by_product, check_exact=False, atol=1e-15)
    single = evaluator.compute(0.3, zero_division=0.0).per_product.drop("mean")
    at = curve[np.isclose(curve["threshold"], 0.3) & (curve["product"] != "mean")].set_index("product")
    np.testing.assert_allclose(at[["precision", "recall", "f1"]], single[["precision", "recall", "f1"]], atol=1e-12)


def test_input_errors_name_the_problem():
    probs, targets = images("pcb1", 4, seed=4)
    evaluator = MultiLabelEvaluator()
    with pytest.raises(ValueError, match=r"names defect types \['crack'\] that are not in class_names"):
        evaluator.add("pcb1", TYPES["pcb1"], probs, [(), ("crack",), ("melt",), ()])
    with pytest.raises(TypeError, match="bare strings"):
        evaluator.add("pcb1", TYPES["pcb1"], probs, ["melt", "bent", "", ""])
    with pytest.raises(ValueError, match=r"probs must be probabilities in \[0, 1\]"):
        evaluator.add("pcb1", TYPES["pcb1"], probs * 3 - 1, targets)
    with pytest.raises(ValueError, match="probs has NaN or inf values for product 'pcb1' at batch index 2"):
        bad = probs.copy()
        bad[2, 1] = np.nan
        evaluator.add("pcb1", TYPES["pcb1"], bad, targets)
    with pytest.raises(ValueError, match="probs has 4 columns but 3 class names"):
        evaluator.add("pcb1", TYPES["pcb1"][:3], probs, targets[:, :3])
    with pytest.raises(ValueError, match="targets has 3 columns but 4 class names"):
        evaluator.add("pcb1", TYPES["pcb1"], probs, targets[:, :3])
    with pytest.raises(ValueError, match="batch sizes differ: probs has 4, targets has 3"):
        evaluator.add("pcb1", TYPES["pcb1"], probs, targets[:3])
    with pytest.raises(ValueError, match=r"probs must have shape \(N, K\)"):
        evaluator.add("pcb1", TYPES["pcb1"], probs[:, :, None], targets)
    with pytest.raises(ValueError, match="'normal' is reserved"):
        evaluator.add("pcb1", ("normal", *TYPES["pcb1"][:3]), probs, targets)
    with pytest.raises(ValueError, match="duplicates"):
        evaluator.add("pcb1", ("bent", "bent", "melt", "missing"), probs, targets)
    evaluator.add("pcb1", TYPES["pcb1"], probs, targets)
    with pytest.raises(ValueError, match="class_names for product 'pcb1' changed"):
        evaluator.add("pcb1", TYPES["pcb1"][::-1], probs, targets)
    with pytest.raises(ValueError, match="zero_division must be 0, 1 or nan"):
        evaluator.compute(zero_division=0.5)
