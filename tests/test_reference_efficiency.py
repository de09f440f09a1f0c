"""The cost tables of FAPrompt (appendix C.1, Table 3) and ViP²-CLIP (Table 3) as data: every
printed number, exactly as printed, read through :mod:`dapo.reference`'s loader."""

from __future__ import annotations

import pandas as pd
import pytest

from dapo import reference as ref
from dapo.reference import PAPER_LABEL, paper_numbers, paper_table

FAPROMPT = "FAPrompt Table 3"
VIP2 = "ViP²-CLIP Table 3"

# (parameters, training ms, its ±, inference ms, its ±) as printed (/work/shared/papers/003_*.txt, l. 131-138)
FAPROMPT_PRINTED = {
    "WinCLIP": ("0", "0", None, "227.5", "0.7"),
    "AnoVL": ("0", "0", None, "171.4", "0.5"),
    "APRIL-GAN": ("3148800", "368.7", "0.5", "47.9", "0.1"),
    "CoOp": ("9216", "643.8", "1.1", "89.9", "0.7"),
    "CoCoOp": ("83760", "737.4", "3.6", "93.8", "0.7"),
    "AnomalyCLIP": ("5555200", "914.1", "0.9", "124.2", "0.9"),
    "FAPrompt": ("9612256", "1354.1", "1.7", "214.7", "0.8"),
}
# (training h, inference ms, its ±, GPU GB, parameters M) as printed (/work/shared/papers/004_*.txt, l. 184-190)
VIP2_PRINTED = {
    "AnomalyCLIP": ("1.02", "90.72", "0.16", "2.75", "5.56"),
    "AdaCLIP": ("2.24", "134.20", "0.39", "3.17", "10.67"),
    "AA-CLIP": ("0.93", "19.17", "0.23", "2.87", "12.58"),
    "FAPrompt": ("5.62", "439.74", "0.024", "2.07", "9.61"),
    "ViP²-CLIP": ("0.54", "48.69", "0.19", "2.21", "4.15"),
}


def _printed(table: str, columns: tuple[str, ...], printed: dict) -> dict:
    return {(method, metric): text for method, row in printed.items() for metric, text in zip(columns, row)
            if text is not None}


@pytest.mark.parametrize("table, columns, printed", [
    (FAPROMPT, ("parameters", "train_ms_per_batch", "train_ms_per_batch_pm", "inference_ms_per_image",
                "inference_ms_per_image_pm"), FAPROMPT_PRINTED),
    (VIP2, ("train_hours", "inference_ms_per_image", "inference_ms_per_image_pm", "gpu_memory_gb", "parameters_m"),
     VIP2_PRINTED),
])
def test_every_number_is_stored_exactly_as_printed(table, columns, printed):
    expected = _printed(table, columns, printed)
    rows = paper_numbers(table)
    stored = {(r.method, r.metric): (r.value, r.decimals) for r in rows.itertuples(index=False)}
    assert set(stored) == set(expected)
    for key, text in expected.items():
        decimals = len(text.split(".")[1]) if "." in text else 0
        assert stored[key] == (float(text), decimals), key
    assert list(dict.fromkeys(rows["method"])) == list(printed)  # the printed row order
    assert rows.attrs["label"] == PAPER_LABEL and (rows["profile"] == PAPER_LABEL).all()


def test_cost_metrics_are_a_closed_vocabulary_apart_from_the_percentages():
    numbers = paper_numbers()
    cost = numbers[numbers["table"].isin([FAPROMPT, VIP2])]
    assert set(cost["metric"]) == set(ref.EFFICIENCY_METRICS)
    assert set(numbers["metric"]) <= set(ref.METRICS) == set(ref.PERCENT_METRICS) | set(ref.EFFICIENCY_METRICS)
    assert not set(ref.PERCENT_METRICS) & set(ref.EFFICIENCY_METRICS)
    assert (cost["value"] >= 0).all() and (cost["task"] == "efficiency").all()
    assert set(numbers.loc[~numbers["table"].isin([FAPROMPT, VIP2]), "metric"]) <= set(ref.PERCENT_METRICS)
    assert {"FAPrompt", "ViP²-CLIP"} <= set(ref.SOURCES)


def test_the_two_papers_agree_where_they_print_the_same_count():
    """Both tables give AnomalyCLIP's and FAPrompt's trainable parameters: ViP²-CLIP's millions round FAPrompt's counts."""
    counts = paper_numbers(FAPROMPT, metric="parameters").set_index("method")["value"]
    millions = paper_numbers(VIP2, metric="parameters_m").set_index("method")["value"]
    shared = sorted(set(counts.index) & set(millions.index))
    assert shared == ["AnomalyCLIP", "FAPrompt"]
    for method in shared:
        assert round(counts[method] / 1e6, 2) == millions[method], method


def test_pivoted_layout_and_filters():
    wide = paper_table(FAPROMPT)
    assert list(wide.index) == list(FAPROMPT_PRINTED)
    assert wide.loc["FAPrompt", "parameters"] == 9612256
    assert pd.isna(wide.loc["WinCLIP", "train_ms_per_batch_pm"])  # no ± printed for a training-free 0
    assert paper_table(VIP2).loc["ViP²-CLIP", "gpu_memory_gb"] == 2.21
    assert len(paper_numbers(source="ViP²-CLIP", table=VIP2)) == 25
    with pytest.raises(ValueError, match="ViP2-CLIP"):
        paper_numbers(source="ViP2-CLIP")
