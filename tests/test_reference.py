"""Checks of the transcribed paper numbers (dapo.reference): schema, ranges, printed means,
product lists, and agreement between tables that print the same number twice.

A disagreement between two printed numbers is allowed only where a row's ``notes`` records it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dapo import reference as ref
from dapo.reference import DATA_DIR, PAPER_LABEL, paper_numbers, paper_table

AUX_FILES = {"tables.csv", "products.csv", "dataset_statistics.csv"}


def _rounding(decimals: pd.Series | int) -> np.ndarray:
    """Half a unit of the last printed digit."""
    return 0.5 * 10.0 ** (-np.asarray(decimals, dtype=float))


@pytest.fixture(scope="module")
def numbers() -> pd.DataFrame:
    return paper_numbers()


@pytest.fixture(scope="module")
def catalogue() -> pd.DataFrame:
    return pd.read_csv(DATA_DIR / "tables.csv", dtype=str, keep_default_na=False)


# --- schema ---------------------------------------------------------------------------------

def test_every_data_file_is_catalogued_and_parses(catalogue):
    on_disk = {p.name for p in DATA_DIR.glob("*.csv")} - AUX_FILES
    assert on_disk == set(catalogue["file"])
    for entry in catalogue.itertuples(index=False):
        raw = pd.read_csv(DATA_DIR / entry.file, dtype=str, keep_default_na=False)
        assert tuple(raw.columns) == ref.SCHEMA, entry.file
        assert set(raw["table"]) == {entry.table}, entry.file
        assert set(raw["source_paper"]) == {entry.source_paper}, entry.file
        assert entry.table.startswith(entry.source_paper + " Table "), entry.table
        assert raw["value"].str.fullmatch(r"[+-]?\d+(\.\d+)?").all(), entry.file


def test_columns_use_the_documented_vocabularies(numbers):
    assert set(numbers["source_paper"]) <= set(ref.SOURCES)
    assert set(numbers["metric"]) <= set(ref.METRICS)
    assert set(numbers["dataset"]) <= set(ref.DATASETS)
    assert set(numbers["train_dataset"]) <= set(ref.DATASETS)
    assert (numbers["method"] != "").all() and (numbers["product"] != "").all()
    assert (numbers["profile"] == PAPER_LABEL).all() and numbers.attrs["label"] == PAPER_LABEL


def test_values_are_percentages(numbers):
    numbers = numbers[numbers["metric"].isin(ref.PERCENT_METRICS)]  # cost tables: tests/test_reference_efficiency.py
    delta = numbers["metric"].str.startswith("delta_")
    assert numbers.loc[~delta, "value"].between(0, 100).all()
    assert numbers.loc[delta, "value"].between(-100, 100).all()


def test_keys_are_unique(numbers):
    assert not numbers.duplicated(list(ref.KEY)).any()


def test_a_bad_file_is_named_in_the_error(tmp_path):
    bad = pd.DataFrame([dict.fromkeys(ref.SCHEMA, "")])
    bad["value"] = "n/a"
    path = tmp_path / "broken.csv"
    bad.to_csv(path, index=False)
    with pytest.raises(ValueError, match="broken.csv"):
        ref._parse_numbers(pd.read_csv(path, dtype=str, keep_default_na=False), path)


# --- printed means --------------------------------------------------------------------------

def test_printed_means_match_the_items(numbers):
    """Every printed mean over products equals the mean of the transcribed products, within rounding."""
    per_item = numbers[(numbers["product"] != "mean") & (numbers["defect"] == "")]
    means = numbers[(numbers["product"] == "mean") & (numbers["defect"] == "")]
    group = ["table", "dataset", "method", "metric"]
    stats = per_item.groupby(group).agg(item_mean=("value", "mean"), item_decimals=("decimals", "min"))
    checked = means.join(stats, on=group, how="inner")
    assert set(checked["table"]) == {f"DAPO Table {i}" for i in (7, 8, 9, 10, 12, 13, 14)}
    tolerance = _rounding(checked["decimals"]) + _rounding(checked["item_decimals"]) + 1e-9
    off = (checked["value"] - checked["item_mean"]).abs() > tolerance
    documented = checked["notes"].str.contains("mean mismatch")
    assert (off == documented).all(), checked.loc[off != documented, group + ["value", "item_mean"]]


def test_mean_rows_match_the_dataset_level_tables(numbers):
    """Table 1 repeats the means of Tables 12-14; Table 3 those of Tables 8 and 10."""
    _assert_agree(numbers, ("DAPO Table 1", {"method": "DAPO"}), ("DAPO Table 12", {}), ["dataset", "product", "metric"],
                  exact=True, expected=6)
    _assert_agree(numbers, ("DAPO Table 1", {"method": "DAPO"}), ("DAPO Table 13", {"defect": ""}),
                  ["dataset", "product", "metric"], exact=True, expected=3)
    _assert_agree(numbers, ("DAPO Table 1", {"method": "DAPO"}), ("DAPO Table 14", {"defect": ""}),
                  ["dataset", "product", "metric"], exact=True, expected=3)
    _assert_agree(numbers, ("DAPO Table 3", {}), ("DAPO Table 8", {"product": "mean"}),
                  ["dataset", "product", "method", "metric"], exact=True, expected=8)
    _assert_agree(numbers, ("DAPO Table 3", {}), ("DAPO Table 10", {"product": "mean"}),
                  ["dataset", "product", "method", "metric"], exact=True, expected=4)


# --- the same number printed twice ----------------------------------------------------------

def _assert_agree(numbers, left, right, on, *, exact=False, expected=None):
    """Matching rows of two tables agree (exactly, or within the rounding of the coarser one),
    unless one of the two rows has a note explaining the disagreement."""
    (table_a, filt_a), (table_b, filt_b) = left, right
    a = numbers[numbers["table"] == table_a]
    b = numbers[numbers["table"] == table_b]
    for column, value in filt_a.items():
        a = a[a[column] == value]
    for column, value in filt_b.items():
        b = b[b[column] == value]
    pairs = a.merge(b, on=on, suffixes=("_a", "_b"))
    assert len(pairs) == (expected if expected is not None else len(pairs)) and len(pairs) > 0, (table_a, table_b)
    if exact:
        tolerance = 1e-9
    else:
        tolerance = np.maximum(_rounding(pairs["decimals_a"]), _rounding(pairs["decimals_b"])) + 1e-9
    off = (pairs["value_a"] - pairs["value_b"]).abs() > tolerance
    noted = (pairs["notes_a"] != "") | (pairs["notes_b"] != "")
    assert not (off & ~noted).any(), pairs.loc[off & ~noted, on + ["value_a", "value_b"]]
    return pairs, off


def test_dapo_quotes_multiads_table1(numbers):
    _assert_agree(numbers, ("DAPO Table 1", {"method": "MultiADS"}), ("MultiADS Table 1", {"train_dataset": "mvtec"}),
                  ["train_dataset", "dataset", "product", "method", "metric"], exact=True, expected=12)


def test_dapo_quotes_multiads_table4(numbers):
    pairs, off = _assert_agree(numbers, ("DAPO Table 3", {}), ("MultiADS Table 4", {}),
                               ["dataset", "product", "method", "metric"], exact=True)
    assert set(pairs["method"]) == {"CLIP-AC", "CoCoOp", "WinCLIP", "AprilGAN", "AnomalyCLIP", "AdaCLIP", "MultiADS"}
    assert len(pairs) == len(paper_numbers("DAPO Table 3").query("method != 'DAPO'"))
    assert off.sum() == 2  # the two documented differences (CLIP-AC VisA, CoCoOp MPDD pixel AUROC)


def test_ablation_rows_repeat_the_main_results(numbers):
    _assert_agree(numbers, ("DAPO Table 7", {"method": "DAPO"}), ("DAPO Table 8", {"dataset": "mpdd"}),
                  ["dataset", "product", "method", "metric"], exact=True, expected=21)
    _assert_agree(numbers, ("DAPO Table 6", {"method": "DAPO"}), ("DAPO Table 3", {"method": "DAPO"}),
                  ["dataset", "product", "method", "metric"], exact=True, expected=4)
    _assert_agree(numbers, ("MultiADS Table 3", {"method": "MultiADS"}), ("MultiADS Table 1", {"train_dataset": "mvtec"}),
                  ["train_dataset", "dataset", "product", "method", "metric"], exact=True, expected=6)
    _assert_agree(numbers, ("MultiADS Table 5", {"method": "MultiADS"}), ("MultiADS Table 4", {}),
                  ["dataset", "product", "method", "metric"], exact=True, expected=8)


def test_table2_rounds_the_defect_wise_appendix_numbers(numbers):
    """DAPO Table 2 (1 decimal) rounds Tables 13-14 (2 decimals) and MultiADS Table 2."""
    on = ["dataset", "defect", "method", "metric"]
    _assert_agree(numbers, ("DAPO Table 2", {"method": "DAPO"}), ("DAPO Table 13", {}), on, expected=8)
    _assert_agree(numbers, ("DAPO Table 2", {"method": "DAPO"}), ("DAPO Table 14", {}), on, expected=8)
    _assert_agree(numbers, ("DAPO Table 2", {"method": "MultiADS"}), ("MultiADS Table 2", {}),
                  on + ["seen"], expected=12)


def test_seen_flags_are_consistent_between_tables(numbers):
    defects = numbers[(numbers["defect"] != "") & numbers["seen"].notna()]
    flags = defects.groupby(["dataset", "defect"])["seen"].nunique()
    assert (flags == 1).all(), flags[flags > 1]


def test_per_defect_rows_use_the_complete_defect_lists(numbers):
    """Tables 13 and 14 list every MPDD and VisA defect; the other per-defect tables pick from them."""
    for dataset, complete in (("mpdd", "DAPO Table 13"), ("visa", "DAPO Table 14")):
        rows = numbers[(numbers["dataset"] == dataset) & (numbers["defect"] != "")]
        vocabulary = set(rows.loc[rows["table"] == complete, "defect"])
        assert "normal" in vocabulary
        assert set(rows["defect"]) <= vocabulary, set(rows["defect"]) - vocabulary


def test_multilabel_f1_is_bounded_by_precision_and_recall(numbers):
    """Macro F1 <= min(2 * min(P, R), (P + R) / 2) holds class by class, hence for the macro averages."""
    wide = paper_numbers("DAPO Table 11").pivot(index=["dataset", "product"], columns="metric", values="value")
    p, r, f1 = wide["multilabel_precision"], wide["multilabel_recall"], wide["multilabel_f1"]
    slack = 0.1
    assert (f1 <= 2 * np.minimum(p, r) + slack).all() and (f1 <= (p + r) / 2 + slack).all()


# --- products and dataset statistics --------------------------------------------------------

def test_per_product_tables_cover_each_dataset(numbers):
    products = ref.paper_products()
    listed = products.groupby("dataset")["product"].apply(set)
    per_product = numbers[~numbers["product"].isin(["mean"])]
    for (table, dataset), group in per_product.groupby(["table", "dataset"]):
        assert set(group["product"]) == listed[dataset], (table, dataset)
    assert not products.duplicated(["dataset", "product"]).any()


def test_product_counts_match_the_dataset_statistics():
    counts = ref.paper_products().groupby("dataset").size()
    stats = ref.dataset_statistics("DAPO").set_index("dataset")["n_products"]
    for dataset, listed_as in (("mvtec", "mvtec"), ("visa", "visa"), ("mpdd", "mpdd"), ("mad", "mad_sim"),
                               ("real_iad", "real_iad")):
        assert counts[listed_as] == stats[dataset], dataset
    mad = ref.paper_products()
    assert set(mad.query("dataset == 'mad_real'")["product"]) < set(mad.query("dataset == 'mad_sim'")["product"])


def test_the_two_dataset_statistics_tables_agree_or_say_why():
    stats = ref.dataset_statistics()
    dapo = stats[stats["source_paper"] == "DAPO"].set_index("dataset")
    multiads = stats[stats["source_paper"] == "MultiADS"].set_index("dataset")
    joined = dapo.merge(multiads, left_index=True, right_index=True, suffixes=("", "_m"))
    assert len(joined) == 5
    assert (joined["n_products"] == joined["n_products_m"]).all()
    differs = (joined["n_normal"] != joined["n_normal_m"]) | (joined["n_anomalous"] != joined["n_anomalous_m"])
    assert (joined.loc[differs, "notes"] != "").all()


# --- API ------------------------------------------------------------------------------------

def test_filters_select_and_reject(numbers):
    sub = paper_numbers("DAPO Table 8", dataset="mpdd", metric=["image_auroc", "image_ap"])
    expected = numbers[(numbers["table"] == "DAPO Table 8") & (numbers["dataset"] == "mpdd")
                       & numbers["metric"].isin(["image_auroc", "image_ap"])]
    assert len(sub) == len(expected) == 14
    assert sub.attrs["label"] == PAPER_LABEL
    with pytest.raises(ValueError, match="VisA"):
        paper_numbers(dataset="VisA")
    with pytest.raises(ValueError, match="Table 99"):
        paper_table("DAPO Table 99")


def test_available_tables_counts_rows(numbers):
    tables = ref.available_tables()
    assert tables.set_index("table")["rows"].to_dict() == numbers.groupby("table").size().to_dict()
    assert (tables["description"] != "").all()


@pytest.mark.parametrize("table", sorted(pd.read_csv(DATA_DIR / "tables.csv")["table"]))
def test_paper_table_holds_every_number_in_printed_order(table, catalogue):
    long = paper_numbers(table)
    layout = catalogue.set_index("table").loc[table]
    index, columns = layout["index"].split(","), layout["columns"].split(",")
    wide = paper_table(table)
    assert wide.attrs["label"] == PAPER_LABEL and PAPER_LABEL in wide.attrs["caption"]
    assert int(wide.notna().sum().sum()) == len(long)
    long = long.assign(seen=long["seen"].map({True: "seen", False: "unseen"}).fillna(""))
    for row in long.itertuples(index=False):
        r = tuple(getattr(row, c) for c in index)
        c = tuple(getattr(row, c) for c in columns)
        assert wide.loc[r if len(r) > 1 else r[0], c if len(c) > 1 else c[0]] == row.value
    first = long.iloc[0]
    first_label = tuple(first[c] for c in index)
    assert wide.index[0] == (first_label if len(first_label) > 1 else first_label[0])


def test_side_by_side_pairs_reproduced_and_paper_numbers():
    reproduced = pd.DataFrame({"dataset": ["visa", "mpdd"], "product": ["mean", "mean"],
                               "metric": ["pixel_auroc", "pixel_auroc"], "value": [50.0, 60.0]})
    out = ref.side_by_side(reproduced, "DAPO Table 1", method="DAPO")
    visa = out[(out["dataset"] == "visa") & (out["metric"] == "pixel_auroc")].iloc[0]
    expected = paper_numbers("DAPO Table 1", method="DAPO", dataset="visa", metric="pixel_auroc")["value"].item()
    assert visa["reproduced"] == 50.0 and visa[PAPER_LABEL] == expected
    assert len(out) == len(paper_numbers("DAPO Table 1", method="DAPO"))
    with pytest.raises(ValueError, match="method"):
        ref.side_by_side(reproduced, "DAPO Table 1")
