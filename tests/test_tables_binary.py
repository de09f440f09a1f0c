"""Binary (Table 3, Tables 8-10) and multi-label (Table 11) tables: layouts, mean ± std over seeds,
the paper's numbers in the same layout, and the firing heatmap data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import precision_recall_fscore_support

from dapo.experiments.tables import (
    BINARY_COLUMNS,
    MULTILABEL_COLUMNS,
    PER_PRODUCT_BINARY_COLUMNS,
    binary_summary,
    multilabel_firing,
    multilabel_summary,
    paper_binary_summary,
    paper_counterpart,
    paper_multilabel_summary,
    paper_per_product_binary,
    per_product_binary,
    pm_view,
)
from dapo.metrics import BINARY_METRICS, MetricUndefinedWarning, MultiLabelEvaluator
from dapo.reference import PAPER_LABEL, paper_numbers


def _binary_table(rng) -> pd.DataFrame:
    """An evaluator-style table: products x BINARY_METRICS in [0, 1] and a mean row."""
    table = pd.DataFrame(rng.uniform(0.4, 1.0, (2, len(BINARY_METRICS))), columns=list(BINARY_METRICS),
                         index=pd.Index(["bolt", "gear"], name="product"))
    table.loc["mean"] = table.mean()
    return table


def test_table3_layout_is_the_mean_and_std_over_seeds_of_the_dataset_means():
    rng = np.random.default_rng(0)
    seeds = {"DAPO": [_binary_table(rng) for _ in range(3)], "CLIP-AC": [_binary_table(rng)]}
    table = binary_summary({"target": seeds}, "source", "reproduced")
    assert list(table.index) == [("reproduced", "source", "target", "DAPO"), ("reproduced", "source", "target", "CLIP-AC")]
    assert list(dict.fromkeys(table.columns.get_level_values(0))) == [*BINARY_COLUMNS, "n_seeds"]
    means = [100 * t.loc["mean", "pixel_aupro_official"] for t in seeds["DAPO"]]
    row = table.loc[("reproduced", "source", "target", "DAPO")]
    assert row[("pixel_aupro_official", "mean")] == pytest.approx(np.mean(means))
    assert row[("pixel_aupro_official", "std")] == pytest.approx(np.std(means, ddof=1))
    assert pm_view(table)["seeds"].tolist() == [3, 1]
    assert pm_view(table).iloc[1]["image_auroc"] == f"{100 * seeds['CLIP-AC'][0].loc['mean', 'image_auroc']:.1f}"


def test_paper_table3_puts_its_aupro_under_the_official_definition():
    paper = paper_binary_summary(["visa", "mpdd"])
    assert set(paper.index.get_level_values("source")) == {PAPER_LABEL}
    assert set(paper.index.get_level_values("test")) == {"visa", "mpdd"}
    reported = paper_numbers("DAPO Table 3", dataset="mpdd", method="DAPO").set_index("metric")["value"]
    row = paper.loc[(PAPER_LABEL, "mvtec", "mpdd", "DAPO")]
    assert row["pixel_aupro_official"] == reported["pixel_aupro"] and row["image_ap"] == reported["image_ap"]
    assert paper["pixel_aupro"].isna().all() and list(paper.columns) == list(BINARY_COLUMNS)
    assert set(paper_binary_summary(["mvtec", "visa"]).index.get_level_values("test")) == {"visa"}
    assert paper_binary_summary(["mvtec"]).empty  # Table 3 has no MVTec-AD column


def test_per_product_layout_keeps_products_in_order_and_the_mean_last():
    rng = np.random.default_rng(1)
    per_seed = [_binary_table(rng) for _ in range(2)]
    table = per_product_binary({"DAPO": per_seed, "MultiADS": per_seed[:1]})
    assert list(dict.fromkeys(table.index.get_level_values("product"))) == ["bolt", "gear", "mean"]
    assert list(dict.fromkeys(table.columns.get_level_values(0))) == [*PER_PRODUCT_BINARY_COLUMNS, "n_seeds"]
    values = [100 * t.loc["gear", "image_f1_max"] for t in per_seed]
    assert table.loc[("gear", "DAPO"), ("image_f1_max", "mean")] == pytest.approx(np.mean(values))
    assert np.isnan(table.loc[("gear", "MultiADS"), ("image_f1_max", "std")])


def test_paper_per_product_tables_8_to_10():
    paper = paper_per_product_binary("mpdd")
    reported = paper_numbers("DAPO Table 8", dataset="mpdd")
    assert list(paper.index.get_level_values("product")) == list(dict.fromkeys(reported["product"]))
    f1 = reported[(reported["product"] == "tubes") & (reported["metric"] == "image_f1")]["value"].item()
    assert paper.loc[(PAPER_LABEL, "tubes", "DAPO"), "image_f1_max"] == f1
    assert len(paper_per_product_binary("real_iad")) == len(set(paper_numbers("DAPO Table 10")["product"]))
    with pytest.raises(ValueError, match="report no products of 'mvtec'"):
        paper_per_product_binary("mvtec")
    assert paper_per_product_binary("mvtec", missing_ok=True) is None


def _multilabel(seed: int):
    """A MultiLabelEvaluator result on random data, and the arrays for the sklearn reference."""
    rng = np.random.default_rng(seed)
    arrays, evaluator = {}, MultiLabelEvaluator()
    for product, names in (("bolt", ("crack", "rust")), ("gear", ("crack", "hole", "rust"))):
        probs = rng.random((12, len(names)))
        targets = rng.random((12, len(names))) < 0.4
        evaluator.add(product, names, probs, targets)
        arrays[product] = (probs, targets)
    return evaluator.compute(0.5), arrays


def test_table11_layout_matches_sklearn_macro_scores_over_seeds():
    results = [_multilabel(seed) for seed in (0, 1)]
    table = multilabel_summary({"target": {"DAPO": [r for r, _ in results]}})
    assert list(dict.fromkeys(table.index.get_level_values("product"))) == ["bolt", "gear", "mean"]
    assert list(dict.fromkeys(table.columns.get_level_values(0))) == [*MULTILABEL_COLUMNS, "n_seeds"]
    reference = []
    for _, arrays in results:
        probs, targets = arrays["gear"]
        p, r, f, _ = precision_recall_fscore_support(targets, probs > 0.5, average="macro", zero_division=0)
        reference.append(100 * np.array([p, r, f]))
    reference = np.array(reference)
    row = table.loc[("target", "gear", "DAPO")]
    np.testing.assert_allclose([row[(m, "mean")] for m in MULTILABEL_COLUMNS], reference.mean(axis=0))
    np.testing.assert_allclose([row[(m, "std")] for m in MULTILABEL_COLUMNS], reference.std(axis=0, ddof=1))


def test_rows_keep_their_order_of_appearance_across_datasets():
    from dataclasses import replace

    second = _multilabel(1)[0]
    second = replace(second, per_product=second.per_product.rename(index={"bolt": "nut", "gear": "plate"}))
    results = {"t": {"DAPO": [_multilabel(0)[0]]}, "m": {"DAPO": [second]}}
    table = multilabel_summary(results)
    assert list(table.index.get_level_values("product")) == ["bolt", "gear", "mean", "nut", "plate", "mean"]


def test_paper_table11_layout():
    paper = paper_multilabel_summary()
    assert list(paper.columns) == list(MULTILABEL_COLUMNS)
    reported = paper_numbers("DAPO Table 11", product="capsules", metric="multilabel_recall")["value"].item()
    assert paper.loc[(PAPER_LABEL, "visa", "capsules", "DAPO"), "recall"] == reported


def test_firing_shares_pool_the_products_that_have_both_types():
    evaluator = MultiLabelEvaluator()
    # bolt: 2 crack images; crack fires in both, rust in one. gear: 2 crack images; crack fires in one.
    evaluator.add("bolt", ("crack", "rust"), [[0.9, 0.9], [0.9, 0.1], [0.1, 0.1]], [("crack",), ("crack",), ()])
    evaluator.add("gear", ("crack", "hole"), [[0.9, 0.1], [0.1, 0.9], [0.1, 0.1]], [("crack",), ("crack",), ("hole",)])
    with pytest.warns(MetricUndefinedWarning, match="bolt/rust"):  # no bolt image shows rust
        result = evaluator.compute(0.5)
    share = multilabel_firing([result, result])
    assert list(share.index) == ["crack", "hole", "rust", "normal"] and list(share.columns) == ["crack", "hole", "rust"]
    assert share.loc["crack", "crack"] == pytest.approx(100 * 3 / 4)  # 3 of the 4 crack images of both products
    assert share.loc["crack", "rust"] == pytest.approx(100 * 1 / 2)   # only bolt has rust
    assert share.loc["crack", "hole"] == pytest.approx(100 * 1 / 2)   # only gear has hole
    assert np.isnan(share.loc["rust", "hole"])                        # no product has both
    assert share.loc["normal", "crack"] == 0.0


def test_paper_counterparts_of_the_synthetic_worlds():
    assert [paper_counterpart(n) for n in ("synthetic_source", "synthetic_target", "synthetic_mpdd", "visa")] == \
           ["mvtec", "visa", "mpdd", "visa"]
    with pytest.raises(ValueError, match="neither a paper dataset"):
        paper_counterpart("imagenet")
