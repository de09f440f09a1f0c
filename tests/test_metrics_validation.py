"""Input conventions shared by every metrics entry point: dtypes, labels, masks, NaN, shapes."""

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from dapo.metrics import (
    BinaryEvaluator,
    MultiLabelEvaluator,
    MultiTypeEvaluator,
    aupro,
    image_metrics,
    pixel_metrics,
)


def small_maps(n: int = 6, size: int = 16, seed: int = 0):
    """float32 maps whose values are exact in bfloat16 (8 significant bits), boolean masks."""
    rng = np.random.default_rng(seed)
    maps = ndimage.gaussian_filter(rng.normal(size=(n, size, size)), sigma=(0, 1.5, 1.5))
    masks = np.zeros((n, size, size), dtype=bool)
    masks[::2, 4:9, 5:11] = True
    maps = np.where(masks, maps + 0.4, maps)
    maps = torch.from_numpy(maps).to(torch.bfloat16).float().numpy()  # representable in every float dtype
    return maps, masks


def image_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.arange(40) % 3 == 0
    scores = torch.from_numpy(np.round(rng.normal(size=40) + labels, 1)).to(torch.bfloat16).float().numpy()
    return scores, labels


def evaluate(scores, labels, maps, masks, **kwargs):
    evaluator = BinaryEvaluator(**kwargs)
    evaluator.add("pcb", scores, labels, maps, masks)
    return evaluator.compute()


SCORE_TYPES = {
    "numpy float16": lambda a: a.astype(np.float16),
    "numpy float32": lambda a: a.astype(np.float32),
    "numpy float64": lambda a: a.astype(np.float64),
    "torch bfloat16": lambda a: torch.from_numpy(a).to(torch.bfloat16),
    "torch float16": lambda a: torch.from_numpy(a).to(torch.float16),
    "torch float32": lambda a: torch.from_numpy(a.astype(np.float32)),
    "torch float64": lambda a: torch.from_numpy(a.astype(np.float64)),
}
LABEL_TYPES = {
    "bool": lambda a: a,
    "int64": lambda a: a.astype(np.int64),
    "uint8": lambda a: a.astype(np.uint8),
    "float 0/1": lambda a: a.astype(np.float32),
    "torch bool": lambda a: torch.from_numpy(a),
    "torch int": lambda a: torch.from_numpy(a.astype(np.int64)),
    "torch bfloat16 0/1": lambda a: torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16),
}


@pytest.mark.parametrize("kind", list(SCORE_TYPES))
def test_every_float_dtype_gives_the_same_metrics(kind):
    scores, labels = image_data()
    maps, masks = small_maps()
    convert = SCORE_TYPES[kind]
    expected = evaluate(scores[:6], labels[:6], maps, masks)
    pd.testing.assert_frame_equal(evaluate(convert(scores[:6]), labels[:6], convert(maps), masks), expected)
    assert image_metrics(convert(scores), labels) == image_metrics(scores, labels)
    assert pixel_metrics(convert(maps), masks) == pixel_metrics(maps, masks)
    assert aupro(convert(maps), masks) == aupro(maps, masks)
    assert image_metrics(scores, labels)["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


@pytest.mark.parametrize("kind", list(LABEL_TYPES))
def test_every_label_dtype_gives_the_same_metrics(kind):
    scores, labels = image_data()
    maps, masks = small_maps()
    convert = LABEL_TYPES[kind]
    expected = evaluate(scores[:6], labels[:6], maps, masks)
    pd.testing.assert_frame_equal(evaluate(scores[:6], convert(labels[:6]), maps, convert(masks)), expected)
    assert image_metrics(scores, convert(labels)) == image_metrics(scores, labels)
    assert pixel_metrics(maps, convert(masks)) == pixel_metrics(maps, masks)


def test_integer_and_bool_scores_are_accepted():
    labels = np.array([0, 0, 1, 1, 0, 1])
    scores = np.array([1, 2, 3, 3, 0, 5])
    expected = roc_auc_score(labels, scores)
    assert image_metrics(scores, labels)["image_auroc"] == pytest.approx(expected)
    assert image_metrics(torch.from_numpy(scores), labels)["image_auroc"] == pytest.approx(expected)
    assert image_metrics(scores > 2, labels)["image_auroc"] == pytest.approx(roc_auc_score(labels, scores > 2))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_image_scores_are_errors_everywhere(bad):
    scores, labels = image_data()
    scores[7] = bad
    with pytest.raises(ValueError, match="image_scores has NaN or inf values at index 7"):
        image_metrics(scores, labels)
    maps, masks = small_maps(n=3)
    with pytest.raises(ValueError, match="image_scores has NaN or inf values for product 'b' at batch index 1"):
        BinaryEvaluator().add(["a", "b", "c"], [0.1, bad, 0.3], [0, 1, 0], maps, masks)
    with pytest.raises(ValueError, match="image_scores has NaN or inf"):
        image_metrics(torch.tensor(scores).to(torch.bfloat16), labels)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_maps_are_errors_in_the_one_shot_functions(bad):
    maps, masks = small_maps(n=3)
    maps[1, 2, 2] = bad
    for function in (pixel_metrics, aupro):
        with pytest.raises(ValueError, match="maps has NaN or inf values at index 1"):
            function(maps, masks)
        with pytest.raises(ValueError, match="maps has NaN or inf values at index 1"):
            function(torch.from_numpy(maps).to(torch.bfloat16), masks)


def test_float64_maps_beyond_float32_are_errors_not_infinities():
    maps, masks = small_maps(n=2)
    huge = maps.astype(np.float64)
    huge[0, 0, 0] = 1e300
    with pytest.raises(ValueError, match="maps has values beyond the float32 range"):
        pixel_metrics(huge, masks)


LABEL_ENTRY_POINTS = {
    "image_metrics": lambda labels: image_metrics(np.linspace(0, 1, len(labels)), labels),
    "BinaryEvaluator": lambda labels: BinaryEvaluator().add(
        "x", np.linspace(0, 1, len(labels)), labels, np.zeros((len(labels), 4, 4)), np.zeros((len(labels), 4, 4))),
}


@pytest.mark.parametrize("entry", list(LABEL_ENTRY_POINTS))
@pytest.mark.parametrize("labels, shown", [([0, 1, 2, 1], r"\[2\]"), ([0, -1, 1, 5], r"\[-1, 5\]"),
                                           ([0.0, 0.5, 1.0, 1.0], r"\[0.5\]"),
                                           ([0.0, np.nan, 1.0, 1.0], r"\[nan\]")])
def test_labels_must_be_zero_one_or_bool_in_every_entry_point(entry, labels, shown):
    with pytest.raises(ValueError, match=r"image_labels must be 0/1 or bool, got values " + shown):
        LABEL_ENTRY_POINTS[entry](np.array(labels))


def test_multilabel_targets_follow_the_same_label_rule():
    probs = np.full((3, 2), 0.7)
    with pytest.raises(ValueError, match=r"targets must be 0/1 or bool, got values \[2\]"):
        MultiLabelEvaluator().add("pcb1", ("bent", "melt"), probs, np.array([[0, 1], [2, 0], [1, 1]]))
    evaluator = MultiLabelEvaluator()
    evaluator.add("pcb1", ("bent", "melt"), probs, torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]))
    assert evaluator.compute().per_class["support"].tolist() == [2, 2]


def test_0_255_masks_are_binary_and_soft_masks_need_a_threshold():
    maps, masks = small_maps()
    expected = pixel_metrics(maps, masks)
    assert pixel_metrics(maps, masks.astype(np.uint8) * 255) == expected
    soft = np.where(masks, 0.75, 0.5).astype(np.float32)  # 0.5 itself is normal
    with pytest.raises(ValueError, match=r"masks are not binary: values \[0.5, 0.75\]"):
        pixel_metrics(maps, soft)
    assert pixel_metrics(maps, soft, mask_threshold=0.5) == expected
    assert pixel_metrics(maps, torch.from_numpy(soft).to(torch.bfloat16), mask_threshold=0.5) == expected
    scores = maps.max(axis=(1, 2))
    pd.testing.assert_frame_equal(evaluate(scores, masks.any(axis=(1, 2)), maps, soft, mask_threshold=0.5),
                                  evaluate(scores, masks.any(axis=(1, 2)), maps, masks))


@pytest.mark.parametrize("bad, message", [(-1.0, r"masks has negative values \(min -1\) at index 2"),
                                          (np.nan, "masks has NaN or inf values at index 2")])
def test_negative_or_nan_masks_are_errors(bad, message):
    maps, masks = small_maps(n=3)
    masks = masks.astype(np.float32)
    masks[2, 0, 0] = bad
    for function in (pixel_metrics, aupro):
        with pytest.raises(ValueError, match=message):
            function(maps, masks)
    with pytest.raises(ValueError, match=message.replace("at index 2", "for product 'z' at batch index 2")):
        BinaryEvaluator().add(["x", "y", "z"], [0.1, 0.2, 0.3], [0, 1, 0], maps, masks)


def test_empty_inputs_are_undefined_not_errors():
    assert all(np.isnan(value) for value in image_metrics([], []).values())
    empty_maps = np.zeros((0, 8, 8), dtype=np.float32)
    assert all(np.isnan(value) for value in pixel_metrics(empty_maps, empty_maps).values())
    evaluator = BinaryEvaluator()
    evaluator.add([], np.zeros(0), np.zeros(0), empty_maps, empty_maps)
    assert evaluator.products == []


def test_length_and_shape_errors_name_the_arguments():
    maps, masks = small_maps(n=3)
    with pytest.raises(ValueError, match="batch sizes differ: image_scores has 3, image_labels has 2"):
        image_metrics([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="batch sizes differ: image_scores has 2, image_labels has 2, maps has 3"):
        BinaryEvaluator().add("x", [0.1, 0.2], [0, 1], maps, masks)
    with pytest.raises(ValueError, match=r"image_scores must have shape \(N,\), got shape \(3, 1\)"):
        image_metrics(np.zeros((3, 1)), [0, 1, 0])
    with pytest.raises(ValueError, match=r"image_scores must have shape \(N,\), got shape \(\)"):
        image_metrics(np.float32(0.3), [1])
    with pytest.raises(ValueError, match=r"image_labels must have shape \(N,\), got shape \(3, 1\)"):
        image_metrics([0.1, 0.2, 0.3], np.zeros((3, 1)))
    with pytest.raises(ValueError, match=r"maps must have shape \(N, H, W\), got shape \(16, 16\)"):
        pixel_metrics(maps[0], masks[0])
    with pytest.raises(ValueError, match="got 2 product names for a batch of 3 samples"):
        BinaryEvaluator().add(["x", "y"], [0.1, 0.2, 0.3], [0, 1, 0], maps, masks)


def test_non_numeric_inputs_are_type_errors():
    with pytest.raises(TypeError, match="image_scores must hold numbers"):
        image_metrics(["high", "low"], [1, 0])
    with pytest.raises(TypeError, match="image_labels must hold numbers"):
        image_metrics([0.1, 0.9], ["normal", "anomalous"])
    with pytest.raises(TypeError, match="maps must hold numbers"):
        pixel_metrics(np.full((1, 2, 2), 1 + 1j), np.zeros((1, 2, 2)))


def test_multitype_accepts_bfloat16_probabilities():
    rng = np.random.default_rng(5)
    type_masks = rng.integers(0, 3, size=(2, 8, 8))
    probs = torch.softmax(torch.from_numpy(rng.normal(size=(2, 3, 8, 8))), dim=1).to(torch.bfloat16)
    exact, low = MultiTypeEvaluator(), MultiTypeEvaluator()
    exact.add("nut", ("normal", "hole", "crack"), probs.float().numpy(), type_masks)
    low.add("nut", ("normal", "hole", "crack"), probs, torch.from_numpy(type_masks))
    pd.testing.assert_frame_equal(exact.compute().per_class, low.compute().per_class)
