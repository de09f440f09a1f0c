"""Notebook 13's helpers (dapo.experiments.seed_systems): which systems, which datasets, the Table 1
summary with its AVERAGE, the paper beside it, and the computed closing lines."""

from __future__ import annotations

from dataclasses import replace

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from dapo.data.registry import openable_datasets  # noqa: E402
from dapo.experiments import seed_systems as ss  # noqa: E402
from dapo.methods import registry  # noqa: E402
from dapo.reference import paper_numbers  # noqa: E402


def evaluation(rng, products=("a", "b")) -> pd.DataFrame:
    """An evaluator-style table: products x metrics in [0, 1] with their mean row."""
    table = pd.DataFrame(rng.uniform(0.3, 1.0, (len(products), len(ss.METRICS))), columns=list(ss.METRICS),
                         index=list(products))
    table.loc["mean"] = table.mean()
    return table


@pytest.fixture()
def directions():
    rng = np.random.default_rng(0)
    forward = {test: {m: [evaluation(rng) for _ in range(3)] for m in ("AnomalyCLIP", "DAPO")}
               for test in ("synthetic_target", "synthetic_mpdd")}
    forward["synthetic_target"]["CLIP-AC"] = [evaluation(rng)]  # training-free: one evaluation
    forward["synthetic_mpdd"]["CLIP-AC"] = [evaluation(rng)]
    reverse = {"synthetic_source": {m: [evaluation(rng) for _ in range(3)] for m in ("AnomalyCLIP", "DAPO")}}
    reverse["synthetic_source"]["CLIP-AC"] = [evaluation(rng)]
    return {"synthetic_source": forward, "synthetic_target": reverse}


def test_seed_systems_follow_the_registry(monkeypatch):
    base = registry.METHODS["anomalyclip"]
    monkeypatch.setitem(registry.METHODS, "aprilgan_fake", replace(base, name="aprilgan_fake", table3="AprilGAN"))
    monkeypatch.setitem(registry.METHODS, "faprompt", replace(base, name="faprompt", table3=None))
    systems = ss.seed_systems()
    others = {name for name in ("faprompt", "vip2clip", "aaclip") if name in registry.METHODS}
    assert set(systems.values()) == set(registry.table3_methods().values()) | others
    assert systems["APRIL-GAN"] == "aprilgan_fake" and "AprilGAN" not in systems
    labels = list(systems)
    in_table = [label for label in labels if label in ss.VIP2CLIP_COLUMNS]
    assert labels[:len(in_table)] == [c for c in ss.VIP2CLIP_COLUMNS if c in in_table]  # ViP²-CLIP's order first
    assert "dapo_naive" not in systems.values()  # presets outside both tables are not seed systems


def test_datasets_of_the_table_and_missing_loaders():
    assert ss.paper_datasets() == ["mvtec", "visa", "mpdd", "ksdd", "btad", "dagm", "dtd_synthetic"]
    assert set(ss.missing_loaders()) == set(ss.paper_datasets()) - set(openable_datasets())
    assert not {"mvtec", "visa", "mpdd"} & set(ss.missing_loaders())
    kept, dropped = ss.table_targets(["synthetic_target", "mad_sim", "synthetic_mpdd", "real_iad"])
    assert kept == ["synthetic_target", "synthetic_mpdd"] and dropped == ["mad_sim", "real_iad"]
    with pytest.raises(ValueError, match="target_datasets"):
        ss.table_targets(["mad_sim"])


def test_summary_holds_seed_statistics_and_the_average(directions):
    table = ss.table1_summary(directions, "reproduced")
    assert list(table.columns.get_level_values(0).unique()) == [*ss.METRICS, "n_seeds"]
    row = table.loc[("reproduced", "synthetic_source", "synthetic_mpdd", "DAPO")]
    values = [100 * e.loc["mean", "pixel_f1_max"] for e in directions["synthetic_source"]["synthetic_mpdd"]["DAPO"]]
    assert row[("pixel_f1_max", "mean")] == pytest.approx(np.mean(values))
    assert row[("pixel_f1_max", "std")] == pytest.approx(np.std(values, ddof=1))
    # the AVERAGE: seed by seed over the three (train, test) rows, then mean and std over the seeds
    per_seed = [np.mean([100 * directions[tr][te]["DAPO"][i].loc["mean", "image_ap"]
                         for tr, by in directions.items() for te in by]) for i in range(3)]
    average = table.loc[("reproduced", "mean", "mean", "DAPO")]
    assert average[("image_ap", "mean")] == pytest.approx(np.mean(per_seed))
    assert average[("image_ap", "std")] == pytest.approx(np.std(per_seed, ddof=1))
    assert table.loc[("reproduced", "mean", "mean", "CLIP-AC"), ("n_seeds", "")] == 1
    view = ss.table1_view(table)
    assert view.shape == (8, 3) and view.index.get_level_values("datasets")[3] == "AVERAGE"
    assert view.iloc[0, 0].startswith("(") and view.iloc[0, 0].count(",") == 2


def test_beside_pairs_each_world_with_its_paper_dataset(directions):
    beside = ss.beside_table1(ss.table1_summary(directions, "reproduced"))
    assert "mean" not in set(beside["world"])
    row = beside[(beside["world"] == "synthetic_target ~ VisA") & (beside["method"] == "AnomalyCLIP")
                 & (beside["metric"] == "pixel_aupro_official")]
    printed = paper_numbers(ss.TABLE, dataset="visa", method="AnomalyCLIP", metric="pixel_aupro")["value"].item()
    assert row["paper"].item() == printed
    mvtec = beside[(beside["world"] == "synthetic_source ~ MVTec-AD") & (beside["method"] == "AnomalyCLIP")
                   & (beside["metric"] == "image_f1_max")]
    assert mvtec["paper"].item() == paper_numbers(ss.TABLE, dataset="mvtec", method="AnomalyCLIP",
                                                  metric="image_f1")["value"].item()
    assert beside.loc[beside["method"] == "DAPO", "paper"].isna().all()  # not in ViP²-CLIP's table


def test_paper_average_over_chosen_datasets():
    wide = ss.paper_average(["visa", "mpdd"])
    expected = paper_numbers(ss.TABLE, dataset=["visa", "mpdd"], method="FAPrompt", metric="pixel_auroc")["value"].mean()
    assert wide.loc["FAPrompt", ("pixel_auroc", "these datasets")] == pytest.approx(expected)
    printed = paper_numbers(ss.TABLE, dataset="mean", method="FAPrompt", metric="pixel_auroc")["value"].item()
    assert wide.loc["FAPrompt", ("pixel_auroc", "printed AVERAGE")] == printed
    with pytest.raises(ValueError, match="mad_sim"):
        ss.paper_average(["mad_sim"])


def _summary(values: dict[str, list[float]], test: str = "synthetic_target") -> pd.DataFrame:
    """A summary with one test row (and the AVERAGE = the same numbers) and every metric = ``values``."""
    rows = [{"source": "s", "train": tr, "test": te, "method": m, "seed_index": i, "metric": metric, "value": v}
            for tr, te in (("synthetic_source", test), ("mean", "mean")) for m, vs in values.items()
            for i, v in enumerate(vs) for metric in ss.METRICS]
    return ss.summarise(pd.DataFrame(rows), ["source", "train", "test", "method"])


def test_closing_lines_read_the_leader_against_the_paper():
    table = _summary({"AnomalyCLIP": [60.0, 61.0, 59.0], "APRIL-GAN": [80.0, 81.0, 79.0]})
    lines = ss.best_lines(table)
    assert len(lines) == 2 and lines[0].startswith("**synthetic_target ~ VisA**")
    pixel_aupro = lines[0].split("; pixel_aupro_official", 1)[1].split("; pixel_f1_max", 1)[0]
    # APRIL-GAN leads clearly here; the paper's VisA PRO has AnomalyCLIP ahead
    paper = {m: paper_numbers(ss.TABLE, dataset="visa", method=m, metric="pixel_aupro")["value"].item()
             for m in ("AnomalyCLIP", "APRIL-GAN")}
    assert paper["AnomalyCLIP"] > paper["APRIL-GAN"]
    assert "APRIL-GAN leads" in pixel_aupro and "not reproduced (opposite)" in pixel_aupro


def test_claims_are_judged_only_for_registered_systems():
    missing = ss.claim_lines(_summary({"DAPO": [1.0, 2.0, 3.0], "AnomalyCLIP": [2.0, 3.0, 4.0]}))
    assert all("not judged here" in line and "FAPrompt" in line for line in missing)
    judged = ss.claim_lines(_summary({"ViP²-CLIP": [70.0, 71.0, 70.5], "FAPrompt": [60.0, 61.0, 60.5]}))
    assert all(line.endswith("**reproduced**") for line in judged)


def test_dot_plot_draws_one_panel_per_metric(directions):
    fig = ss.dot_plot(ss.table1_summary(directions, "reproduced"), title="t")
    assert len(fig.axes) == len(ss.METRICS)
    assert [ax.get_title() for ax in fig.axes][3] == "pixel AUROC"
