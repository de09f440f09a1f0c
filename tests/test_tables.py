"""Paper-style tables over seeds: mean and std against numpy, the ± view, the layouts."""

import numpy as np
import pandas as pd
import pytest

from dapo.experiments.tables import multitype_summary, per_defect, per_product, pm_view, summarise
from dapo.metrics.multitype import MultiTypeResult


def _result(auroc: float, ap: float, f1: float) -> MultiTypeResult:
    per_product_frame = pd.DataFrame({"auroc": [auroc, auroc - 0.1], "ap": [ap, ap], "f1": [f1, f1],
                                      "n_classes": [3, 3]}, index=pd.Index(["a", "b"], name="product"))
    summary = per_product_frame[["auroc", "ap", "f1"]].mean().to_frame("mean").T
    per_defect_frame = pd.DataFrame({"auroc": [auroc], "ap": [ap], "f1": [f1], "n_products": [2]},
                                    index=pd.Index(["rust"], name="defect"))
    return MultiTypeResult(per_product_frame, pd.DataFrame(), per_defect_frame, summary)


def test_summarise_gives_mean_and_sample_std_per_key():
    tidy = pd.DataFrame({"method": ["A"] * 3 + ["B"] * 3, "metric": ["m"] * 6, "value": [1, 2, 4, 5, 5, 5]})
    wide = summarise(tidy, ["method"])
    assert wide.loc["A", ("m", "mean")] == pytest.approx(7 / 3)
    assert wide.loc["A", ("m", "std")] == pytest.approx(np.std([1, 2, 4], ddof=1))
    assert wide.loc["B", ("m", "std")] == 0.0 and (wide[("n_seeds", "")] == 3).all()
    assert pm_view(wide).loc["A", "m"] == f"{7 / 3:.1f} ± {np.std([1, 2, 4], ddof=1):.1f}"


def test_a_single_seed_shows_no_std_and_undefined_values_say_so():
    tidy = pd.DataFrame({"method": ["A", "B"], "metric": ["m", "m"], "value": [0.5, np.nan]})
    view = pm_view(summarise(tidy, ["method"]), decimals=2)
    assert view.loc["A", "m"] == "0.50" and view.loc["B", "m"] == "n/a"


def test_table1_per_product_and_per_defect_layouts_over_seeds():
    results = {"target": {"DAPO": [_result(0.8, 0.3, 0.2), _result(0.9, 0.5, 0.4)]}}
    table = multitype_summary(results, "source", "reproduced (synthetic)")
    row = table.loc[("reproduced (synthetic)", "source", "target", "DAPO")]
    assert row[("pixel_auroc", "mean")] == pytest.approx(80.0)  # mean of the two seeds' dataset means (75, 85)
    assert row[("pixel_ap", "std")] == pytest.approx(np.std([30.0, 50.0], ddof=1))
    products = per_product(results["target"])
    assert list(products.index.get_level_values("product")) == ["a", "b", "mean"]
    assert products.loc[("b", "DAPO"), ("pixel_auroc", "mean")] == pytest.approx(75.0)
    defects = per_defect(results["target"], seen={"rust": False})
    assert list(defects.index.get_level_values("defect")) == ["rust*"]
