"""Binary and multi-label figures: ROC curves with the chance diagonal, confusion matrices,
threshold curves and the firing heatmap (shape contracts and the numbers they show)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from dapo.experiments import plots  # noqa: E402
from dapo.metrics import BinaryEvaluator  # noqa: E402

THRESHOLDS = [i / 10 for i in range(11)]


def _evaluation(seed: int):
    """ROC points and rates of a small evaluator (pooled over two products), with the raw scores."""
    rng = np.random.default_rng(seed)
    labels = rng.random(40) < 0.5
    scores = np.clip(rng.normal(0.5 + 0.2 * labels, 0.2), 0, 1).round(2)  # ties included
    maps = np.repeat(scores[:, None, None], 4, 1).repeat(4, 2)
    masks = np.zeros_like(maps)
    masks[labels, :2, :2] = 1
    evaluator = BinaryEvaluator()
    evaluator.add(["a"] * 20 + ["b"] * 20, scores, labels, maps, masks)
    return evaluator.roc_curve("image", pooled=True), evaluator.rates_at(THRESHOLDS, "image", pooled=True), \
        (scores, labels)


def test_roc_curves_draw_every_seed_and_the_chance_line_with_the_areas_in_the_legend():
    runs = {"DAPO": [_evaluation(0), _evaluation(1)], "AnomalyCLIP": [_evaluation(2)]}
    fig = plots.roc_curves({m: [roc for roc, _, _ in r] for m, r in runs.items()}, title="t")
    ax = fig.axes[0]
    assert len(ax.lines) == 2 + 1 + 1
    diagonal = ax.lines[-1]
    np.testing.assert_array_equal(diagonal.get_xdata(), [0, 1])
    np.testing.assert_array_equal(diagonal.get_ydata(), [0, 1])
    aurocs = [roc_auc_score(labels, scores) for _, _, (scores, labels) in runs["DAPO"]]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0] == f"DAPO (AUC {np.mean(aurocs):.3f} ± {np.std(aurocs, ddof=1):.3f})"
    assert legend[1] == f"AnomalyCLIP (AUC {roc_auc_score(*runs['AnomalyCLIP'][0][2][::-1]):.3f})"
    assert legend[2].startswith("chance")
    with pytest.raises(ValueError, match="no curve points for product 'c'"):
        plots.roc_curves({"DAPO": [runs["DAPO"][0][0]]}, product="c")


def test_confusion_matrices_show_the_counts_at_the_threshold():
    runs = [_evaluation(0), _evaluation(1)]
    fig = plots.confusion_matrices({"DAPO": [rates for _, rates, _ in runs], "AnomalyCLIP": [runs[0][1]]})
    assert len(fig.axes) == 2
    counts = []
    for scores, labels in (r[2] for r in runs):
        predicted = scores >= 0.5
        counts.append([[(~predicted & ~labels).sum(), (predicted & ~labels).sum()],
                       [(~predicted & labels).sum(), (predicted & labels).sum()]])
    counts = np.array(counts, dtype=float)
    texts = [t.get_text() for t in fig.axes[0].texts]
    expected = [f"{counts[:, i, j].mean():.1f} ± {counts[:, i, j].std(ddof=1):.1f}" for i in range(2) for j in range(2)]
    assert texts == expected
    assert [t.get_text() for t in fig.axes[1].texts] == [f"{v:.0f}" for v in counts[0].ravel()]
    with pytest.raises(ValueError, match="expected one row at threshold 0.55"):
        plots.confusion_matrices({"DAPO": [runs[0][1]]}, threshold=0.55)
    fig = plots.confusion_matrices({"x": [{"tp": 1, "fp": 2, "fn": 3, "tn": 4}]})
    assert [t.get_text() for t in fig.axes[0].texts] == ["4", "2", "3", "1"]


def test_threshold_curves_plot_the_mean_over_seeds_per_panel():
    runs = [_evaluation(0), _evaluation(1)]
    per_seed = [rates for _, rates, _ in runs]
    fig = plots.threshold_curves({"DAPO": per_seed, "AnomalyCLIP": per_seed[:1]})
    assert len(fig.axes) == 2 and [len(ax.lines) for ax in fig.axes] == [3, 3]  # TPR, FPR, the mark at 0.5
    np.testing.assert_array_equal(fig.axes[0].lines[-1].get_xdata(), [0.5, 0.5])
    tpr = fig.axes[0].lines[0]
    pooled = [r[r["product"] == "pooled"] for r in per_seed]
    np.testing.assert_allclose(tpr.get_xdata(), THRESHOLDS)
    np.testing.assert_allclose(tpr.get_ydata(), np.mean([p["tpr"] for p in pooled], axis=0))
    assert len(fig.axes[0].collections) == 2 and len(fig.axes[1].collections) == 0  # std bands need seeds
    curve = pd.DataFrame({"threshold": [0.1, 0.5], "precision": [0.2, 0.6], "recall": [0.9, 0.5]})
    fig = plots.threshold_curves({"DAPO": [curve]}, columns=("precision", "recall"), product=None, mark=None)
    assert len(fig.axes[0].lines) == 2
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["precision", "recall"]
    with pytest.raises(ValueError, match="different thresholds"):
        plots.threshold_curves({"DAPO": [curve, curve.iloc[:1]]}, columns=("precision",), product=None)


def test_multilabel_heatmap_leaves_impossible_pairs_blank():
    share = pd.DataFrame([[75.0, np.nan], [10.0, 50.0], [0.0, 5.0]], index=["crack", "rust", "normal"],
                         columns=["crack", "rust"])
    fig = plots.multilabel_heatmap(share, title="t")
    assert len(fig.axes) == 2  # heatmap and colour bar
    assert sorted(t.get_text() for t in fig.axes[0].texts) == sorted(["75", "10", "50", "0", "5"])
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["crack", "rust", "normal"]
