"""Ablation helpers: depth grids scaled to the backbone, the committed table layout, best epochs,
paired differences, Table 6's signed AP change, the verdicts the closing cells print, the figure."""

from types import SimpleNamespace

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")

from dapo.experiments import ablations  # noqa: E402
from dapo.experiments.ablations import (  # noqa: E402
    ablation_summary,
    ablation_table,
    aggregation_table,
    depth_settings,
    layers_at,
    mark_best_epochs,
    paired_difference,
    resolve_depths,
    smoke_values,
    target_like,
    verdicts,
)


def backbone(vision: int, text: int):
    return SimpleNamespace(vision_blocks=[None] * vision, text_blocks=[None] * text)


def test_depth_grids_scale_with_the_backbone_and_full_depth_is_the_default():
    compact, vit_l = backbone(8, 4), backbone(24, 12)
    assert depth_settings(compact, [0.25, 0.5, 1.0]) == [
        {"vision_depth": 2, "text_depth": 1}, {"vision_depth": 4, "text_depth": 2},
        {"vision_depth": None, "text_depth": None}]
    assert depth_settings(vit_l, [0.25, 0.5, 1.0], tuning="naive") == [
        {"vision_depth": 6, "text_depth": 3, "tuning": "naive"},
        {"vision_depth": 12, "text_depth": 6, "tuning": "naive"},
        {"vision_depth": None, "text_depth": None, "tuning": "naive"}]
    # text only: vision keeps its default (all layers); 0 = no text deep tokens; duplicates kept once
    assert depth_settings(compact, [0.0, 0.1, 0.2, 1.0], fields=("text_depth",)) == [
        {"text_depth": 0}, {"text_depth": 1}, {"text_depth": None}]
    assert layers_at(0.01, 24) == 1 and layers_at(0.75, 12) == 9
    with pytest.raises(ValueError, match="not in \\[0, 1\\]"):
        layers_at(1.5, 4)
    with pytest.raises(ValueError, match="unknown depth fields"):
        depth_settings(compact, [1.0], fields=("vision",))


def test_full_depth_settings_share_the_default_checkpoint_folder():
    from dapo.experiments.runs import non_default, setting_name

    full, naive_half = depth_settings(backbone(8, 4), [1.0]) + depth_settings(backbone(8, 4), [0.5], tuning="naive")
    assert setting_name(non_default("dapo", full)) == "default"
    assert setting_name(non_default("dapo", naive_half)) == "text_depth=2,tuning=naive,vision_depth=4"


def test_resolve_depths_writes_the_layer_counts():
    table = pd.DataFrame({"vision_depth": [None, 4], "text_depth": [None, 2], "value": [1.0, 2.0]})
    resolved = resolve_depths(table, backbone(8, 4))
    assert resolved["vision_depth"].tolist() == [8, 4] and resolved["text_depth"].tolist() == [4, 2]


def tidy_sweep(field="lam", values=(1.0, 4.0), seeds=(0, 1, 2), epochs=(2,), datasets=("a", "b")):
    rng = np.random.default_rng(0)
    rows = []
    for v in values:
        for s in seeds:
            for e in epochs:
                for d in datasets:
                    for m in ("pixel_auroc", "pixel_aupro_official", "image_auroc", "image_ap", "pixel_ap"):
                        rows.append({field: v, "seed": s, "epoch": e, "dataset": d, "metric": m,
                                     "value": float(rng.uniform(0.5, 1.0))})
    return pd.DataFrame(rows)


def test_ablation_table_has_one_row_per_setting_seed_and_dataset_in_percent():
    tidy = tidy_sweep()
    table = ablation_table(tidy, ["lam"])
    assert list(table.columns) == ["lam", "seed", "epoch", "dataset", *ablations.FIGURE_METRICS]
    assert len(table) == 2 * 3 * 2 and not table.duplicated(["lam", "seed", "dataset"]).any()
    row = table[(table["lam"] == 4.0) & (table["seed"] == 1) & (table["dataset"] == "b")].iloc[0]
    source = tidy[(tidy["lam"] == 4.0) & (tidy["seed"] == 1) & (tidy["dataset"] == "b")
                  & (tidy["metric"] == "image_ap")]
    assert row["image_ap"] == pytest.approx(source["value"].iloc[0] * 100)
    with pytest.raises(ValueError, match="no metric"):
        ablation_table(tidy, ["lam"], ["image_f1_max"])
    summary = ablation_summary(table, ["lam", "dataset"])
    group = table[(table["lam"] == 1.0) & (table["dataset"] == "a")]["image_auroc"]
    assert summary.loc[(1.0, "a"), ("image_auroc", "mean")] == pytest.approx(group.mean())
    assert summary.loc[(1.0, "a"), ("image_auroc", "std")] == pytest.approx(group.std(ddof=1))
    assert (summary[("n_seeds", "")] == 3).all()


def test_best_epoch_is_the_highest_seed_mean_per_group():
    table = pd.DataFrame({"init": ["clip"] * 4 + ["random"] * 4, "seed": [0, 1] * 4, "dataset": "a",
                          "epoch": [1, 1, 2, 2] * 2, "image_auroc": [80, 90, 86, 86, 50, 60, 70, 40]})
    marked = mark_best_epochs(table, ["init", "dataset"])
    assert set(marked.loc[marked["best_epoch"] & (marked["init"] == "clip"), "epoch"]) == {2}  # 86 > 85
    assert set(marked.loc[marked["best_epoch"] & (marked["init"] == "random"), "epoch"]) == {1}  # 55 = 55: earlier
    assert marked["best_epoch"].sum() == 4
    with pytest.raises(ValueError, match="best epoch by 'image_ap'"):
        mark_best_epochs(table, ["init"], select="image_ap")


def test_paired_difference_pairs_by_seed():
    table = pd.DataFrame({"tuning": ["progressive"] * 3 + ["naive"] * 3, "seed": [0, 1, 2] * 2, "epoch": 2,
                          "vision_depth": 8, "image_ap": [80.0, 82.0, 84.0, 79.0, 83.0, 81.0]})
    effect = paired_difference(table, "tuning", "progressive", "naive", ["vision_depth"], ["image_ap"])
    deltas = np.array([1.0, -1.0, 3.0])
    assert effect.loc[0, "mean"] == pytest.approx(deltas.mean())
    assert effect.loc[0, "std"] == pytest.approx(deltas.std(ddof=1))
    assert effect.loc[0, "n"] == 3 and effect.loc[0, "ahead"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="no seed was evaluated with both"):
        paired_difference(table, "tuning", "progressive", "sideways", ["vision_depth"], ["image_ap"])


def test_table6_delta_ap_is_signed_as_the_paper_prints_it():
    tidy = tidy_sweep("aggregation", ("mean", "attention"))
    table = aggregation_table(tidy)
    key = ["seed", "epoch", "dataset"]
    base = table[table["aggregation"] == "mean"].set_index(key)
    other = table[table["aggregation"] == "attention"].set_index(key)
    expected = (base[["image_ap", "pixel_ap"]].mean(axis=1) - other[["image_ap", "pixel_ap"]].mean(axis=1))
    np.testing.assert_allclose(base["delta_ap"], expected)
    np.testing.assert_allclose(other["delta_ap"], -expected)


def test_verdicts_find_best_worst_default_gap_and_trend():
    table = pd.DataFrame({"n_ctx": [1, 1, 5, 5, 16, 16], "seed": [0, 1] * 3, "epoch": 2, "dataset": "a",
                          "image_auroc": [90.0, 92.0, 86.0, 88.0, 80.0, 82.0]})
    summary = ablation_summary(table, ["n_ctx", "dataset"])
    verdict = verdicts(summary, "n_ctx", default=5).iloc[0]
    assert verdict["best n_ctx"] == 1 and verdict["worst n_ctx"] == 16 and verdict["default"] == pytest.approx(87.0)
    assert verdict["default gap / std"] == pytest.approx(4.0 / np.sqrt(2.0))
    assert verdict["spearman"] == pytest.approx(-1.0)


def test_smoke_values_and_the_mpdd_style_target():
    assert smoke_values([1.0, 4.0, 16.0], 4.0) == [4.0, 1.0]
    assert smoke_values([4.0], 4.0) == [4.0]
    assert target_like(["synthetic_target", "synthetic_mpdd"]) == "synthetic_mpdd"
    assert target_like(["visa", "mpdd"]) == "mpdd"
    with pytest.raises(ValueError, match="no target dataset stands for 'mpdd'"):
        target_like(["synthetic_target"])


def test_sweep_lines_draws_one_panel_per_dataset_and_metric_with_error_bars():
    from dapo.experiments.plots import sweep_lines

    table = ablation_table(tidy_sweep("lam", (1.0, 4.0, 16.0)), ["lam"])
    fig = sweep_lines(table, "lam", ["image_auroc", "image_ap"], logx=True)
    assert len(fig.axes) == 4
    ax = fig.axes[0]
    means = table[table["dataset"] == "a"].groupby("lam")["image_auroc"].mean()
    np.testing.assert_allclose(ax.lines[0].get_ydata(), means.to_numpy())
    assert ax.collections, "the std over seeds must be drawn as error bars"
    categorical = sweep_lines(ablation_table(tidy_sweep("aggregation", ("mean", "attention")), ["aggregation"]),
                              "aggregation", ["image_auroc"], hue=None)
    assert [t.get_text() for t in categorical.axes[0].get_xticklabels()] == ["mean", "attention"]
    with pytest.raises(ValueError, match="no column"):
        sweep_lines(table, "n_ctx", ["image_auroc"])
