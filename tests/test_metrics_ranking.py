"""Ranking machinery: exact tie groups and the streaming histogram against scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from dapo.metrics.histogram import ScoreHistogram, float_order_keys
from dapo.metrics.ranking import RankedCounts


def sklearn_f1_max(labels, scores):
    precision, recall, _ = precision_recall_curve(labels, scores)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision),
                   where=precision + recall > 0)
    return f1.max()


def sklearn_metrics(labels, scores):
    return roc_auc_score(labels, scores), average_precision_score(labels, scores), sklearn_f1_max(labels, scores)


def scores_and_labels(kind: str, n: int = 60_000, seed: int = 0):
    """float32 scores of several shapes (all rank-based metrics should agree with sklearn)."""
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.05
    if kind == "uniform":
        scores = rng.random(n) * 0.7 + 0.3 * labels * rng.random(n)
    elif kind == "logits":  # negative and positive, wide range
        scores = rng.normal(0, 3, n) + 2.0 * labels
    elif kind == "near_zero":  # spans many octaves below 1
        scores = np.exp(-rng.exponential(8, n) + 3 * labels)
    elif kind == "saturating":  # probabilities piling up just below 1 for positives and some negatives
        scores = 1 / (1 + np.exp(-20 * (rng.normal(0, 1, n) + 2.5 * labels - 1.5)))
    elif kind == "quantised":  # heavy ties
        scores = np.round(rng.random(n) + 0.4 * labels, 2)
    else:
        raise ValueError(kind)
    return scores.astype(np.float32), labels


def test_float_order_keys_sort_like_the_values():
    rng = np.random.default_rng(1)
    special = np.array([0.0, -0.0, 1e-45, -1e-45, 1e-38, -3.4e38, 3.4e38, 1.0, -1.0, 0.5], dtype=np.float32)
    values = np.concatenate([special, (rng.normal(size=2000) * 10.0 ** rng.integers(-30, 30, 2000)).astype(np.float32)])
    keys = float_order_keys(values)
    assert keys.dtype == np.uint32
    order = np.argsort(keys, kind="stable")
    assert np.all(np.diff(values[order].astype(np.float64)) >= 0)
    assert keys[0] == keys[1]  # -0.0 and +0.0 are the same score
    distinct_values, distinct_keys = np.unique(values).size, np.unique(keys).size
    assert distinct_values == distinct_keys


@pytest.mark.parametrize("kind", ["uniform", "logits", "quantised"])
def test_exact_tie_groups_equal_sklearn(kind):
    scores, labels = scores_and_labels(kind, n=5000)
    ranked = RankedCounts.from_scores(scores, labels)
    expected = sklearn_metrics(labels, scores)
    got = ranked.auroc(), ranked.average_precision(), ranked.f1_max()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_hand_worked_ranking():
    # scores 0.9(+) 0.8(-) 0.5(+) 0.5(-) 0.1(-): (+,-) pairs won 1+1+1 + 0+0.5+1 of 6
    ranked = RankedCounts.from_scores([0.9, 0.8, 0.5, 0.5, 0.1], [1, 0, 1, 0, 0])
    assert ranked.auroc() == pytest.approx(4.5 / 6)
    assert ranked.average_precision() == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 4)
    assert ranked.f1_max() == pytest.approx(2 / 3)  # threshold 0.9: P=1, R=1/2; threshold 0.5: P=1/2, R=1


def test_undefined_metrics_are_nan():
    only_negatives = RankedCounts.from_scores([0.1, 0.2], [0, 0])
    assert np.isnan(only_negatives.auroc()) and np.isnan(only_negatives.average_precision())
    assert np.isnan(only_negatives.f1_max()) and np.isnan(only_negatives.auroc_error_bound())


@pytest.mark.parametrize("exact_top", [0, 4096, 65536])
@pytest.mark.parametrize("kind", ["uniform", "logits", "near_zero", "saturating", "quantised"])
def test_histogram_matches_sklearn_within_its_bound(kind, exact_top):
    scores, labels = scores_and_labels(kind)
    histogram = ScoreHistogram(exact_top=exact_top)
    for batch in np.array_split(np.arange(scores.size), 7):
        histogram.add(scores[batch], labels[batch])
    ranked = histogram.ranked()
    auroc, ap, f1 = sklearn_metrics(labels, scores)
    assert abs(ranked.auroc() - auroc) <= ranked.auroc_error_bound() + 1e-12
    assert abs(ranked.average_precision() - ap) <= ranked.average_precision_error_bound() + 1e-12
    if exact_top or kind != "saturating":  # saturated maps need the exact top (bins are too wide below 1)
        assert abs(ranked.auroc() - auroc) < 1e-3
        assert abs(ranked.average_precision() - ap) < 1e-3
        assert abs(ranked.f1_max() - f1) < 1e-3


def test_histogram_is_exact_for_few_distinct_values():
    scores, labels = scores_and_labels("quantised")
    histogram = ScoreHistogram()
    histogram.add(scores, labels)
    ranked = histogram.ranked()
    np.testing.assert_allclose((ranked.auroc(), ranked.average_precision(), ranked.f1_max()),
                               sklearn_metrics(labels, scores), rtol=0, atol=1e-12)


def test_histogram_does_not_depend_on_batching():
    scores, labels = scores_and_labels("logits")
    whole, pieces = ScoreHistogram(exact_top=1000), ScoreHistogram(exact_top=1000)
    whole.add(scores, labels)
    for batch in np.array_split(np.arange(scores.size), 23):
        pieces.add(scores[batch], labels[batch])
    a, b = whole.ranked(), pieces.ranked()
    np.testing.assert_array_equal(a.pos, b.pos)
    np.testing.assert_array_equal(a.neg, b.neg)


def test_histogram_memory_does_not_grow_with_data():
    rng = np.random.default_rng(3)
    histogram = ScoreHistogram(exact_top=1024)

    def add_batch():
        scores = (0.5 + 0.5 * rng.random(50_000)).astype(np.float32)  # one octave
        histogram.add(scores, rng.random(50_000) < 0.1)
        histogram.ranked()  # merges buffered exact candidates

    add_batch()
    after_one = histogram.nbytes
    for _ in range(20):
        add_batch()
    assert histogram.nbytes <= after_one + 1024 * 24  # only the exact store may fill up to its capacity
    assert histogram.ranked().n_pos + histogram.ranked().n_neg == 21 * 50_000


def test_histogram_weights_and_argument_checks():
    histogram = ScoreHistogram(track_weights=True, exact_top=0)
    histogram.add(np.array([0.1, 0.9, 0.8], np.float32), np.array([False, True, True]), np.array([0.5, 0.25]))
    ranked = histogram.ranked()
    np.testing.assert_allclose(ranked.pos_weight, [0.5, 0.25, 0.0])
    with pytest.raises(ValueError, match="pos_weights"):
        histogram.add(np.array([0.1], np.float32), np.array([True]))
    with pytest.raises(ValueError, match="2 pos_weights for 1 positives"):
        histogram.add(np.array([0.1], np.float32), np.array([True]), np.array([1.0, 1.0]))
    with pytest.raises(ValueError, match="bins_per_octave"):
        ScoreHistogram(bins_per_octave=1000)
    with pytest.raises(ValueError, match="3 scores but 2 labels"):
        ScoreHistogram().add(np.zeros(3, np.float32), np.zeros(2, bool))
