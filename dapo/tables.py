"""Paper-style tables from evaluation results (values in percent, as the papers print them).

Reproduced numbers and the paper's reported numbers are kept in separate, labelled rows
(``source``): the synthetic profile's datasets are not the paper's, so nothing is joined
across profiles.
"""

from __future__ import annotations

from typing import Mapping

import pandas as pd

from dapo.metrics.multitype import MultiTypeResult

METRIC_COLUMNS = {"auroc": "pixel_auroc", "ap": "pixel_ap", "f1": "pixel_f1"}


def _percent(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[list(METRIC_COLUMNS)].rename(columns=METRIC_COLUMNS) * 100.0


def multitype_summary(results: Mapping[str, Mapping[str, MultiTypeResult]], train_dataset: str,
                      source: str) -> pd.DataFrame:
    """Table 1 layout: one row per (train, test, method), pixel AUROC / AP / F1 (macro, %)."""
    rows = []
    for dataset, by_method in results.items():
        for method, result in by_method.items():
            values = _percent(result.summary).iloc[0].to_dict()
            rows.append({"source": source, "train": train_dataset, "test": dataset, "method": method, **values})
    return pd.DataFrame(rows).set_index(["source", "train", "test", "method"])


def paper_multitype_summary() -> pd.DataFrame:
    """DAPO Table 1 as reported, in the layout of :func:`multitype_summary`."""
    from dapo.reference import PAPER_LABEL, paper_numbers

    numbers = paper_numbers("DAPO Table 1")
    wide = numbers.pivot_table(index=["train_dataset", "dataset", "method"], columns="metric", values="value",
                               sort=False)
    wide.index = wide.index.set_names(["train", "test", "method"])
    wide = wide[list(METRIC_COLUMNS.values())]
    return pd.concat({PAPER_LABEL: wide}, names=["source"])


def per_product(results: Mapping[str, MultiTypeResult]) -> pd.DataFrame:
    """Tables 12-14 layout: product x (method, metric), with the dataset mean as the last row."""
    frames = {}
    for method, result in results.items():
        table = _percent(result.per_product)
        table.loc["mean"] = _percent(result.summary).iloc[0]
        frames[method] = table
    return pd.concat(frames, axis=1, names=["method", "metric"])


def per_defect(results: Mapping[str, MultiTypeResult], seen: Mapping[str, bool] | None = None) -> pd.DataFrame:
    """Table 2 layout: defect type x (method, metric); unseen types (w.r.t. training) get a ``*``."""
    seen = dict(seen or {})
    frames = {method: _percent(result.per_defect) for method, result in results.items()}
    table = pd.concat(frames, axis=1, names=["method", "metric"])
    table.index = [name if name == "normal" or seen.get(name, True) else f"{name}*" for name in table.index]
    table.index.name = "defect"
    return table
