"""Table 2's seen and unseen rows per backbone pretraining (issue 26: the compact backbone with and
without the target-only types' labels), and the sentences read from it, on a hand-worked example."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from dapo.experiments.conclusions import heldout_backbone_lines
from dapo.experiments.tables import seen_unseen_table
from dapo.metrics.multitype import MultiTypeResult

SEEN = {"t": {"scratch": True, "hole": True, "burnt": False}}


def result(scratch: float, hole: float, burnt: float) -> MultiTypeResult:
    per_defect = pd.DataFrame({"auroc": [0.9, scratch, hole, burnt], "ap": 0.5, "f1": 0.5, "n_products": 1},
                              index=pd.Index(["normal", "scratch", "hole", "burnt"], name="defect"))
    return MultiTypeResult(per_product=None, per_class=None, per_defect=per_defect, summary=None)


@pytest.fixture
def table() -> pd.DataFrame:
    return seen_unseen_table({
        "default": {"t": {"DAPO": [result(0.8, 0.6, 0.5), result(0.9, 0.7, 0.7)]}},
        "held-out": {"t": {"DAPO": [result(0.8, 0.6, 0.3), result(0.9, 0.7, 0.4)]}},
    }, SEEN)


def test_per_seed_means_over_seen_and_unseen_types_then_over_seeds(table):
    row = table.loc[("default", "t", "DAPO")]
    # seed 0: seen (80 + 60) / 2 = 70, unseen 50; seed 1: seen 80, unseen 70 (normal is no defect type)
    assert row[("seen", "mean")] == pytest.approx(75.0) and row[("seen", "std")] == pytest.approx(math.sqrt(50))
    assert row[("unseen", "mean")] == pytest.approx(60.0) and row[("unseen", "std")] == pytest.approx(math.sqrt(200))
    assert row[("unseen - seen", "mean")] == pytest.approx(-15.0)
    held = table.loc[("held-out", "t", "DAPO")]
    assert held[("unseen", "mean")] == pytest.approx(35.0) and held[("unseen - seen", "std")] == pytest.approx(0.0)
    assert list(table.index.names) == ["pretraining", "test", "method"] and (table["n_seeds"] == 2).all()


def test_the_sentences_compare_held_out_with_default_by_the_shared_rule(table):
    (line,) = heldout_backbone_lines(table)
    unseen, gap = line.split("; ")
    # -25.0 with std sqrt(50 + 200) = 15.8: not > 2 std, within noise
    assert unseen.endswith("unseen: held-out 35.0 ± 7.1 vs default 60.0 ± 14.1, difference -25.0 ± 15.8 (within noise)")
    # -40 vs -15: -25.0 ± 7.1, clear
    assert gap == "unseen - seen: held-out -40.0 ± 0.0 vs default -15.0 ± 7.1, difference -25.0 ± 7.1 (default ahead)"


def test_a_target_without_unseen_types_is_refused_by_name():
    with pytest.raises(ValueError, match="t: seen_unseen_table needs seen and unseen"):
        seen_unseen_table({"default": {"t": {"DAPO": [result(0.8, 0.6, 0.5)]}}},
                          {"t": {"scratch": True, "hole": True, "burnt": True}})
