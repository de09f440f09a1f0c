"""Paper-style tables from evaluation results (values in percent, as the papers print them).

Comparisons are over several training seeds: results come in as ``{method: [result per seed]}``
and every table holds the mean and the standard deviation (ddof 1) over the seeds, with a
``"85.1 ± 0.4"`` view for display (:func:`pm_view`). Reproduced numbers and the paper's reported
numbers are kept in separate, labelled rows (``source``): the synthetic profile's datasets are
not the paper's, so nothing is joined across profiles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from dapo.metrics.multitype import MultiTypeResult

METRIC_COLUMNS = {"auroc": "pixel_auroc", "ap": "pixel_ap", "f1": "pixel_f1"}
STATISTICS = ("mean", "std")


def summarise(tidy: pd.DataFrame, keys: Sequence[str], metric: str = "metric", value: str = "value") -> pd.DataFrame:
    """Mean and std over the rows sharing ``keys`` + ``metric`` (the seeds): a wide table indexed by
    ``keys`` with columns ``(metric, "mean" | "std")``, metrics in order of appearance, and ``n_seeds``."""
    grouped = tidy.groupby([*keys, metric], sort=False)[value]
    stats = grouped.agg(["mean", "std", "count"])
    wide = stats[["mean", "std"]].unstack(metric)
    wide.columns = wide.columns.swaplevel(0, 1)
    metrics = list(dict.fromkeys(tidy[metric]))
    wide = wide.reindex(columns=pd.MultiIndex.from_product([metrics, STATISTICS]))
    wide[("n_seeds", "")] = stats["count"].groupby(level=list(range(len(keys))), sort=False).min()
    wide.columns.names = [metric, "statistic"]
    return wide


def pm_view(wide: pd.DataFrame, decimals: int = 1) -> pd.DataFrame:
    """``"mean ± std"`` strings of a :func:`summarise` table (std omitted for a single seed)."""
    metrics = [m for m in dict.fromkeys(wide.columns.get_level_values(0)) if m != "n_seeds"]
    view = pd.DataFrame(index=wide.index)
    for metric in metrics:
        mean, std = wide[(metric, "mean")], wide[(metric, "std")]
        view[metric] = [_pm(m, s, decimals) for m, s in zip(mean, std)]
    if ("n_seeds", "") in wide.columns:
        view["seeds"] = wide[("n_seeds", "")].astype(int)
    return view


def _pm(mean: float, std: float, decimals: int) -> str:
    if np.isnan(mean):
        return "n/a"
    return f"{mean:.{decimals}f}" if np.isnan(std) else f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def _percent(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[list(METRIC_COLUMNS)].rename(columns=METRIC_COLUMNS) * 100.0


def _tidy(frames: Mapping[str, Sequence[pd.DataFrame]], index_name: str) -> pd.DataFrame:
    """``{method: [frame per seed]}`` (rows = index_name, columns = metrics) -> tidy rows."""
    rows = []
    for method, per_seed in frames.items():
        for seed_index, frame in enumerate(per_seed):
            long = frame.rename_axis(index_name).reset_index().melt(id_vars=index_name, var_name="metric")
            rows.append(long.assign(method=method, seed_index=seed_index))
    return pd.concat(rows, ignore_index=True)


def multitype_summary(results: Mapping[str, Mapping[str, Sequence[MultiTypeResult]]], train_dataset: str,
                      source: str) -> pd.DataFrame:
    """Table 1 layout: one row per (train, test, method), pixel AUROC / AP / F1 (macro, %),
    mean and std over the seeds. ``results``: ``{dataset: {method: [result per seed]}}``."""
    rows = []
    for dataset, by_method in results.items():
        for method, per_seed in by_method.items():
            for seed_index, result in enumerate(per_seed):
                for metric, value in _percent(result.summary).iloc[0].items():
                    rows.append({"source": source, "train": train_dataset, "test": dataset, "method": method,
                                 "seed_index": seed_index, "metric": metric, "value": value})
    return summarise(pd.DataFrame(rows), ["source", "train", "test", "method"])


def paper_multitype_summary() -> pd.DataFrame:
    """DAPO Table 1 as reported, in the layout of :func:`multitype_summary` (means only)."""
    from dapo.reference import PAPER_LABEL, paper_numbers

    numbers = paper_numbers("DAPO Table 1")
    wide = numbers.pivot_table(index=["train_dataset", "dataset", "method"], columns="metric", values="value",
                               sort=False)
    wide.index = wide.index.set_names(["train", "test", "method"])
    wide = wide[list(METRIC_COLUMNS.values())]
    return pd.concat({PAPER_LABEL: wide}, names=["source"])


def per_product(results: Mapping[str, Sequence[MultiTypeResult]]) -> pd.DataFrame:
    """Tables 12-14 layout: (product, method) rows, mean/std over seeds of macro AUROC / AP / F1 (%),
    with the dataset mean as product ``mean``."""
    frames = {}
    for method, per_seed in results.items():
        frames[method] = []
        for result in per_seed:
            table = _percent(result.per_product)
            table.loc["mean"] = _percent(result.summary).iloc[0]
            frames[method].append(table)
    return summarise(_tidy(frames, "product"), ["product", "method"])


def per_defect(results: Mapping[str, Sequence[MultiTypeResult]], seen: Mapping[str, bool] | None = None
               ) -> pd.DataFrame:
    """Table 2 layout: (defect, method) rows, mean/std over seeds; unseen types (w.r.t. training)
    get a ``*``."""
    seen = dict(seen or {})
    frames = {method: [_percent(r.per_defect) for r in per_seed] for method, per_seed in results.items()}
    table = summarise(_tidy(frames, "defect"), ["defect", "method"])
    names = table.index.get_level_values("defect")
    marked = [name if name == "normal" or seen.get(name, True) else f"{name}*" for name in names]
    table.index = pd.MultiIndex.from_arrays([marked, table.index.get_level_values("method")],
                                            names=["defect", "method"])
    return table
