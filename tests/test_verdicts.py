"""The one rule for "clear vs noise", the sentences built on it, and the paper-beside-run frames."""

import numpy as np
import pandas as pd
import pytest

from dapo.experiments import verdicts as v
from dapo.experiments.tables import beside_paper, beside_view, summarise


def test_rule_needs_both_size_and_two_std():
    assert v.classify(0.64, 0.22) == v.CLEAR          # notebook 11: local_reduction=sum
    assert v.classify(-0.68, 0.09) == v.CLEAR
    assert v.classify(0.4, 0.01) == v.NOISE           # below the 0.5-point floor
    assert v.classify(1.0, 0.5) == v.NOISE            # exactly 2 std is not more than 2 std
    assert v.classify(1.0, 0.49) == v.CLEAR
    assert v.classify(3.0, float("nan")) == v.ONE_SEED
    with pytest.raises(ValueError, match="cannot classify"):
        v.classify(float("nan"), 1.0)


def test_difference_of_independent_runs_adds_variances():
    d = v.difference(v.Estimate(84.0, 3.0, 3), v.Estimate(80.0, 4.0, 3))
    assert d.mean == pytest.approx(4.0) and d.std == pytest.approx(5.0)
    assert v.difference(v.Estimate(1, 3, 3), v.Estimate(0, 4, 3), paired_std=0.1).std == 0.1
    assert v.Estimate(84.21, 0.167, 3).text() == "84.2 ± 0.2"
    assert v.Estimate(88.9, float("nan"), 1).text() == "88.9"


def test_against_paper_needs_a_clear_difference_of_the_same_sign():
    assert v.against_paper(v.Estimate(5.0, 1.0, 3), paper_diff=2.0) == v.REPRODUCED
    assert v.against_paper(v.Estimate(-5.0, 1.0, 3), paper_diff=2.0) == v.OPPOSITE
    assert v.against_paper(v.Estimate(5.0, 4.8, 3), paper_diff=2.0) == v.NOT_TOLD
    assert v.against_paper(v.Estimate(5.0, float("nan"), 1), paper_diff=2.0) == v.UNJUDGED


def _table():
    rows = [{"test": d, "method": m, "seed_index": s, "metric": "pixel_auroc", "value": base + s * spread}
            for d in ("synthetic_target", "synthetic_mpdd")
            for m, base, spread in (("DAPO", 84.0, 0.2), ("MultiADS", 79.0, 5.0))
            for s in range(3)]
    return summarise(pd.DataFrame(rows), ["test", "method"])


def test_tidy_reads_summaries_and_their_csv(tmp_path):
    wide = _table()
    tidy = v.tidy(wide)
    assert set(tidy.columns) == {"test", "method", "metric", "mean", "std", "n"}
    path = tmp_path / "t.csv"
    flat = wide.copy()
    flat.columns = [" / ".join(p for p in c if p) for c in flat.columns]
    flat.assign(profile="synthetic", seed=0, backbone="x").to_csv(path)
    again = v.tidy(path)
    pd.testing.assert_frame_equal(tidy.reset_index(drop=True), again[tidy.columns].reset_index(drop=True),
                                  check_dtype=False)
    assert v.estimate(tidy, method="DAPO", test="synthetic_target", metric="pixel_auroc").mean == pytest.approx(84.2)


def test_sentences_name_the_leader_and_the_verdict():
    tidy = v.tidy(_table())
    sentence = v.leader_sentence(tidy, "pixel_auroc", test="synthetic_target")
    assert sentence.startswith("pixel_auroc: DAPO leads with 84.2 ± 0.2, ahead of MultiADS (84.0 ± 5.0)")
    assert sentence.endswith("within noise")
    result = v.compare(tidy, "pixel_auroc", "DAPO", "MultiADS", paper=(88.9, 93.6), test="synthetic_target")
    assert result["verdict"] == v.NOISE and result["paper"] == v.NOT_TOLD
    assert "MultiADS ahead" in result["sentence"]                   # the paper's leader
    assert v.ranking_text(tidy, "pixel_auroc", test="synthetic_mpdd").startswith("DAPO 84.2 ± 0.2 > MultiADS")


def test_verdict_column_and_clear_effects():
    diffs = pd.DataFrame({"mean": [3.0, 0.3, -2.0, 1.0], "std": [1.0, 0.01, 0.5, np.nan]})
    assert v.verdict_column(diffs, a="attention", b="mean") == [
        "attention ahead", "within noise", "mean ahead", "one seed: no spread to judge"]
    effects = pd.DataFrame({"setting": ["default", "x", "y"], "delta": [0.0, 0.64, 0.3], "delta_std": [0, 0.22, 0.1]})
    judged = v.clear_effects(effects, exclude=["default"])
    assert list(judged["verdict"]) == [v.CLEAR, v.NOISE]


def test_beside_paper_puts_reported_numbers_on_the_world_they_stand_for():
    frame = beside_paper(_table(), "DAPO Table 1")
    assert "synthetic_target ~ VisA" in frame.attrs["caption"] and "synthetic_mpdd ~ MPDD" in frame.attrs["caption"]
    row = frame[(frame["world"] == "synthetic_target ~ VisA") & (frame["method"] == "MultiADS")].iloc[0]
    assert row["paper"] == 93.6 and row["mean"] == pytest.approx(84.0)    # DAPO Table 1, VisA, MultiADS
    assert frame[frame["world"] == "synthetic_mpdd ~ MPDD"]["paper"].notna().all()
    view = beside_view(frame)
    assert view.loc[("synthetic_target ~ VisA", "DAPO"), ("pixel_auroc", "paper (reported)")] == "88.9"


def test_beside_paper_per_defect_strips_the_unseen_mark():
    rows = [{"test": "synthetic_target", "defect": d, "method": "DAPO", "seed_index": s, "metric": "pixel_auroc",
             "value": 50.0 + s} for d in ("bent", "burnt*") for s in range(2)]
    frame = beside_paper(summarise(pd.DataFrame(rows), ["test", "defect", "method"]), "DAPO Table 14",
                         keys=("defect", "method"))
    assert set(frame["defect"]) == {"bent", "burnt"} and frame["paper"].notna().all()


def test_beside_paper_refuses_a_table_without_the_keys():
    with pytest.raises(ValueError, match="lacks"):
        beside_paper(_table(), "DAPO Table 14", keys=("defect", "method"))


def test_ablation_settings_map_to_the_papers_method_rows():
    from dapo.experiments.tables import TABLE6_METHODS, renamed_level

    rows = [{"dataset": d, "aggregation": a, "seed": s, "metric": "image_auroc", "value": 80.0 + s}
            for d in ("synthetic_target", "synthetic_mpdd") for a in ("mean", "attention") for s in range(2)]
    summary = summarise(pd.DataFrame(rows), ["dataset", "aggregation"])
    frame = beside_paper(renamed_level(summary, "aggregation", TABLE6_METHODS), "DAPO Table 6", dataset="dataset")
    row = frame[(frame["world"] == "synthetic_target ~ VisA") & (frame["method"] == "DAPO (attention aggregation)")]
    assert row["paper"].tolist() == [79.9]                     # DAPO Table 6, VisA, attention, image AUROC
    with pytest.raises(ValueError, match="no index level"):
        renamed_level(summary, "tuning", TABLE6_METHODS)


def test_effect_lines_list_clear_effects_and_say_when_one_seed_cannot_judge():
    from dapo.experiments.conclusions import effect_lines

    effects = pd.DataFrame({"setting": ["default", "x", "x", "y"], "kind": "k",
                            "dataset": "synthetic_target", "metric": ["m1", "m1", "m2", "m1"],
                            "mean": 1.0, "std": 0.1, "n": [3, 3, 3, 1],
                            "delta": [0.0, 0.64, 0.3, 2.0], "delta_std": [0.0, 0.22, 0.1, float("nan")]})
    lines = effect_lines(effects)
    assert lines[0] == "`x`: clear: synthetic_target ~ VisA m1 +0.6 ± 0.2; 1 of 2 (target, metric) pairs within noise"
    assert lines[1].startswith("`y`: one seed, no spread to judge")
