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
    order = stats.index.droplevel(metric).unique()  # unstack sorts by level codes: keep first appearance
    wide = stats[["mean", "std"]].unstack(metric).reindex(order)
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


#: :func:`seen_unseen_table`'s measures: the mean over a seed's seen types, over its unseen types, and their gap.
SEEN_UNSEEN = ("seen", "unseen", "unseen - seen")


def seen_unseen_table(results: Mapping[str, Mapping[str, Mapping[str, Sequence[MultiTypeResult]]]],
                      seen: Mapping[str, Mapping[str, bool]], metric: str = "pixel_auroc") -> pd.DataFrame:
    """Table 2's seen and unseen rows condensed, per backbone pretraining: for every seed, ``metric``
    (%) averaged over the defect types the training world has (seen) and over those it lacks
    (unseen, ``seen[test][defect]`` False), and their gap; mean/std over the seeds.

    ``results``: ``{pretraining: {test: {method: [result per seed]}}}`` (e.g. ``"default"`` and
    ``"held-out"``: the compact backbone pretrained with or without the target-only types' labels,
    issue 26). Rows ``(pretraining, test, method)``; columns ``(measure, "mean" | "std")`` of
    :data:`SEEN_UNSEEN`, and ``n_seeds``."""
    rows = []
    for pretraining, by_test in results.items():
        for test, by_method in by_test.items():
            for method, per_seed in by_method.items():
                for seed_index, result in enumerate(per_seed):
                    values = _percent(result.per_defect)[metric].drop("normal", errors="ignore")
                    unseen = np.array([not seen[test].get(d, True) for d in values.index])
                    if not unseen.any() or unseen.all():
                        raise ValueError(f"{test}: seen_unseen_table needs seen and unseen defect types; "
                                         f"unseen here: {list(values.index[unseen])}")
                    means = {"seen": values[~unseen].mean(), "unseen": values[unseen].mean()}
                    means["unseen - seen"] = means["unseen"] - means["seen"]
                    rows += [{"pretraining": pretraining, "test": test, "method": method, "measure": measure,
                              "value": value, "seed_index": seed_index} for measure, value in means.items()]
    return summarise(pd.DataFrame(rows), ["pretraining", "test", "method"], metric="measure")


# ----------------------------------------------------------------------------- binary and multi-label

#: Table 3 columns (%). The papers' AUPRO comes from the authors' 200-threshold recipe (the official
#: ``metrics.py``), i.e. ``pixel_aupro_official``; ``pixel_aupro`` is the exact area to FPR 0.3.
BINARY_COLUMNS = ("image_auroc", "image_ap", "pixel_auroc", "pixel_aupro_official", "pixel_aupro")
#: Tables 8-10 columns (%), in the paper's order (pixel AUROC, AUPRO, image AUROC, AP, F1-max).
PER_PRODUCT_BINARY_COLUMNS = ("pixel_auroc", "pixel_aupro_official", "pixel_aupro", "image_auroc", "image_ap",
                              "image_f1_max")
#: Reference metric names (``dapo.reference``) -> our column names.
PAPER_BINARY_METRICS = {"pixel_aupro": "pixel_aupro_official", "image_f1": "image_f1_max"}
MULTILABEL_COLUMNS = ("precision", "recall", "f1")
PAPER_BINARY_PER_PRODUCT = ("DAPO Table 8", "DAPO Table 9", "DAPO Table 10")


def paper_counterpart(dataset: str) -> str:
    """The paper dataset a dataset stands for: itself (``visa``), or a synthetic world's layout
    (``synthetic_target`` -> ``visa``, ``synthetic_mpdd`` -> ``mpdd``, ``synthetic_source`` -> ``mvtec``)."""
    from dapo.reference import DATASETS
    from dapo.synthetic.worlds import WORLDS

    if dataset in DATASETS:
        return dataset
    if dataset in WORLDS:
        return WORLDS[dataset].layout
    raise ValueError(f"{dataset!r} is neither a paper dataset {list(DATASETS)} nor a synthetic world {list(WORLDS)}")


def _binary_table(result) -> pd.DataFrame:
    """The product x metric table of a :class:`dapo.experiments.runs.BinaryEvaluation` or of ``evaluate_binary``."""
    return getattr(result, "table", result)


def binary_summary(results: Mapping[str, Mapping[str, Sequence]], train_dataset: str, source: str) -> pd.DataFrame:
    """Table 3 layout: one row per (source, train, test, method), image AUROC / AP and pixel AUROC /
    AUPRO (both definitions) of the dataset mean (%), mean and std over the seeds.
    ``results``: ``{dataset: {method: [evaluation per seed]}}``."""
    rows = []
    for dataset, by_method in results.items():
        for method, per_seed in by_method.items():
            for seed_index, result in enumerate(per_seed):
                mean = _binary_table(result).loc["mean"]
                rows += [{"source": source, "train": train_dataset, "test": dataset, "method": method,
                          "seed_index": seed_index, "metric": metric, "value": 100.0 * float(mean[metric])}
                         for metric in BINARY_COLUMNS]
    return summarise(pd.DataFrame(rows), ["source", "train", "test", "method"])


def _paper_wide(table: str | Sequence[str], index: Sequence[str], columns: Sequence[str],
                rename: Mapping[str, str], **filters) -> pd.DataFrame:
    from dapo.reference import PAPER_LABEL, paper_numbers

    numbers = paper_numbers(table, **filters).copy()
    numbers["metric"] = numbers["metric"].replace(dict(rename))
    wide = numbers.pivot_table(index=list(index), columns="metric", values="value", sort=False)
    wide = wide.reindex(columns=list(columns))
    wide.columns.name = None
    return pd.concat({PAPER_LABEL: wide}, names=["source"])


def paper_binary_summary(datasets: Sequence[str] | None = None) -> pd.DataFrame:
    """DAPO Table 3 as reported (means only), in the layout of :func:`binary_summary`; ``datasets``
    (paper names, e.g. ``["visa", "mpdd", "mvtec"]``) selects those of its columns that the table
    reports (VisA, MPDD, Real-IAD; none gives an empty table). Its AUPRO is shown as
    ``pixel_aupro_official`` (the definition it was computed with)."""
    from dapo.reference import paper_numbers

    if datasets is not None:
        reported = set(paper_numbers("DAPO Table 3")["dataset"])
        datasets = list(dict.fromkeys(d for d in datasets if d in reported))
        if not datasets:
            index = pd.MultiIndex.from_tuples([], names=["source", "train", "test", "method"])
            return pd.DataFrame(columns=list(BINARY_COLUMNS), index=index, dtype=float)
    wide = _paper_wide("DAPO Table 3", ["train_dataset", "dataset", "method"], BINARY_COLUMNS, PAPER_BINARY_METRICS,
                       dataset=datasets)
    return wide.rename_axis(["source", "train", "test", "method"])


def per_product_binary(results: Mapping[str, Sequence]) -> pd.DataFrame:
    """Tables 8-10 layout: (product, method) rows, mean/std over seeds of pixel AUROC / AUPRO and
    image AUROC / AP / F1-max (%), with the dataset mean as product ``mean``.
    ``results``: ``{method: [evaluation per seed]}``."""
    frames = {method: [_binary_table(r)[list(PER_PRODUCT_BINARY_COLUMNS)] * 100.0 for r in per_seed]
              for method, per_seed in results.items()}
    return summarise(_tidy(frames, "product"), ["product", "method"])


def paper_per_product_binary(dataset: str, *, missing_ok: bool = False) -> pd.DataFrame | None:
    """DAPO's per-product binary results on a paper dataset as reported (Tables 8-10), in the layout
    of :func:`per_product_binary` (means only; the paper prints DAPO alone). A dataset the tables
    do not report (MVTec-AD) raises ``ValueError``, or gives ``None`` with ``missing_ok``."""
    from dapo.reference import paper_numbers

    tables = [t for t in PAPER_BINARY_PER_PRODUCT if dataset in set(paper_numbers(t)["dataset"])]
    if not tables:
        if missing_ok:
            return None
        raise ValueError(f"DAPO Tables 8-10 report no products of {dataset!r}")
    return _paper_wide(tables, ["product", "method"], PER_PRODUCT_BINARY_COLUMNS, PAPER_BINARY_METRICS,
                       dataset=dataset)


def multilabel_summary(results: Mapping[str, Mapping[str, Sequence]]) -> pd.DataFrame:
    """Table 11 layout: (dataset, product, method) rows, macro precision / recall / F1 (%) of Eq. 11
    at the evaluation's threshold, mean and std over seeds, each dataset's mean over products
    as product ``mean``. ``results``: ``{dataset: {method: [MultiLabelResult per seed]}}``."""
    rows = []
    for dataset, by_method in results.items():
        for method, per_seed in by_method.items():
            for seed_index, result in enumerate(per_seed):
                table = result.per_product[list(MULTILABEL_COLUMNS)] * 100.0
                rows += [{"dataset": dataset, "product": product, "method": method, "seed_index": seed_index,
                          "metric": metric, "value": float(value)}
                         for product, values in table.iterrows() for metric, value in values.items()]
    return summarise(pd.DataFrame(rows), ["dataset", "product", "method"])


def paper_multilabel_summary(datasets: Sequence[str] | None = None) -> pd.DataFrame:
    """DAPO Table 11 as reported (no mean row is printed), in the layout of :func:`multilabel_summary`."""
    rename = {f"multilabel_{m}": m for m in MULTILABEL_COLUMNS}
    return _paper_wide("DAPO Table 11", ["dataset", "product", "method"], MULTILABEL_COLUMNS, rename,
                       dataset=datasets)


def multilabel_firing(per_seed: Sequence) -> pd.DataFrame:
    """Which predicted types fire for which true types over a dataset: rows the true types (and
    ``normal``), columns the predicted types, each cell the share (%) of images with the true type
    in which the predicted type fires, pooled over the products that have both types, then the
    mean over seeds (NaN where no product has both). ``per_seed``: one MultiLabelResult per seed."""
    shares = []
    for result in per_seed:
        pooled = result.firing.groupby(["true", "predicted"], sort=False)[["count", "n_true"]].sum()
        shares.append(100.0 * pooled["count"] / pooled["n_true"].where(pooled["n_true"] > 0))
    share = pd.concat(shares, axis=1).mean(axis=1)
    wide = share.unstack("predicted")
    predicted = sorted(wide.columns)
    true = [name for name in sorted(wide.index) if name != "normal"] + (["normal"] if "normal" in wide.index else [])
    return wide.reindex(index=true, columns=predicted)


# ----------------------------------------------------------------------------- paper beside reproduced

#: How the papers name the datasets a world stands for (written on every side-by-side frame).
PAPER_NAMES = {"mvtec": "MVTec-AD", "visa": "VisA", "mpdd": "MPDD", "mad_sim": "MAD-Sim", "mad_real": "MAD-Real",
               "real_iad": "Real-IAD"}
REPRODUCED_COLUMN = "this run (mean ± std)"


def world_label(dataset: str) -> str:
    """``"synthetic_target ~ VisA"`` for a synthetic world, the paper's name for a paper dataset."""
    counterpart = paper_counterpart(dataset)
    name = PAPER_NAMES.get(counterpart, counterpart)
    return name if dataset == counterpart else f"{dataset} ~ {name}"


def beside_paper(ours: pd.DataFrame, table: str, *, dataset: str = "test", keys: Sequence[str] = ("method",),
                 rename: Mapping[str, str] | None = None, paper_mean: bool = False, **filters) -> pd.DataFrame:
    """This run's numbers and the paper's in one tidy frame, matched on the paper dataset each test
    dataset stands for (:func:`paper_counterpart`), ``keys`` and the metric.

    ``ours``: a :func:`summarise` frame (or its CSV read back) whose ``dataset`` level/column names the
    test dataset. ``table``: a reference table (``"DAPO Table 1"``); ``rename``: reference metric
    names -> ours (default :data:`PAPER_BINARY_METRICS` and the multi-label ones); ``filters`` go to
    :func:`dapo.reference.paper_numbers`. A ``defect`` key drops the ``*`` of unseen types before
    matching. ``paper_mean``: where the paper prints products only, its ``mean`` row is the mean over
    its printed products (say so where it is shown). Columns: ``world`` (``"synthetic_target ~
    VisA"``), ``keys``, ``metric``, ``mean``, ``std``, ``n`` (this run; NaN where it lacks the row),
    ``paper`` (NaN where the paper lacks it). ``attrs["caption"]`` states the mapping.
    """
    from dapo.experiments.verdicts import tidy
    from dapo.reference import PAPER_LABEL, paper_numbers

    rows = tidy(ours)
    keys = list(keys)
    missing = [c for c in (dataset, *keys) if c not in rows.columns]
    if missing:
        raise ValueError(f"this run's table lacks {missing} (it has {list(rows.columns)}); pass dataset=/keys=")
    rows = rows.assign(paper_dataset=rows[dataset].map(paper_counterpart), world=rows[dataset].map(world_label))
    if "defect" in keys:
        rows["defect"] = rows["defect"].str.rstrip("*")
    names = {**PAPER_BINARY_METRICS, **{f"multilabel_{m}": m for m in MULTILABEL_COLUMNS}, **(rename or {})}
    wanted = sorted(set(rows["paper_dataset"]))
    numbers = paper_numbers(table, **filters)
    numbers = numbers[numbers["dataset"].isin(wanted)].copy()
    numbers["metric"] = numbers["metric"].replace(names)
    if "defect" in keys:  # per-defect rows only; otherwise the rows that are not per defect
        numbers = numbers[numbers["defect"] != ""]
    else:
        numbers = numbers[numbers["defect"] == ""]
    if "product" not in keys and (numbers["product"] == "mean").any():
        numbers = numbers[numbers["product"] == "mean"]
    if paper_mean and "product" in keys and not (numbers["product"] == "mean").any() and not numbers.empty:
        group = [c for c in ("dataset", *keys, "metric") if c != "product"]
        means = numbers.groupby(group, sort=False)["value"].mean().reset_index().assign(product="mean")
        numbers = pd.concat([numbers, means], ignore_index=True)
        paper_mean = "the paper's 'mean' is the mean over its printed products (it prints none). "
    else:
        paper_mean = ""
    paper = numbers.rename(columns={"dataset": "paper_dataset", "value": "paper"})
    on = ["paper_dataset", *keys, "metric"]
    if paper.duplicated(on).any():
        raise ValueError(f"{table}: several paper numbers per {on}; add filters (method=..., product=...)")
    merged = rows.merge(paper[[*on, "paper"]], on=on, how="left")
    merged = merged[merged["metric"].isin(set(paper["metric"]))] if not paper.empty else merged.iloc[0:0]
    out = merged[["world", *keys, "metric", "mean", "std", "n", "paper"]].reset_index(drop=True)
    mapping = "; ".join(sorted({world_label(d) for d in rows[dataset]}))
    out.attrs["label"] = PAPER_LABEL
    out.attrs["caption"] = (f"this run beside {table} ({PAPER_LABEL}); worlds stand for paper datasets: {mapping}. "
                            f"{paper_mean}Not comparable number by number: generated data, compact backbone.")
    return out


def beside_view(frame: pd.DataFrame, decimals: int = 1) -> pd.DataFrame:
    """A :func:`beside_paper` frame for display: rows (world, keys...), columns (metric, this run | paper)."""
    from dapo.reference import PAPER_LABEL

    keys = [c for c in frame.columns if c not in ("metric", "mean", "std", "n", "paper")]
    shown = frame.assign(**{REPRODUCED_COLUMN: [_pm(m, s, decimals) for m, s in zip(frame["mean"], frame["std"])],
                            PAPER_LABEL: [("" if np.isnan(p) else f"{p:.{max(decimals, 1)}f}") for p in frame["paper"]]})
    wide = shown.set_index([*keys, "metric"])[[REPRODUCED_COLUMN, PAPER_LABEL]].unstack("metric")
    wide = wide.swaplevel(0, 1, axis=1)
    metrics = list(dict.fromkeys(frame["metric"]))
    wide = wide.reindex(columns=pd.MultiIndex.from_product([metrics, [REPRODUCED_COLUMN, PAPER_LABEL]]))
    wide = wide.reindex(index=pd.MultiIndex.from_frame(frame[keys].drop_duplicates()))
    wide.attrs["caption"] = frame.attrs.get("caption", "")
    return wide

#: DAPO's per-defect (and per-product) multi-type tables by paper dataset.
PAPER_PER_DEFECT = {"visa": "DAPO Table 14", "mpdd": "DAPO Table 13"}


def renamed_level(table: pd.DataFrame, level: str, names: Mapping[str, str], to: str = "method") -> pd.DataFrame:
    """A summary table with index level ``level`` renamed ``to`` and its values mapped by ``names``
    (e.g. the ablation's ``aggregation`` values to the paper's method rows, for :func:`beside_paper`)."""
    if level not in table.index.names:
        raise ValueError(f"the table has no index level {level!r}; it has {list(table.index.names)}")
    frame = table.rename(index={k: v for k, v in names.items()}, level=level)
    return frame.rename_axis(index={level: to})


#: The paper's method rows of Tables 6 and 7 for the ablations' settings.
TABLE6_METHODS = {"mean": "DAPO", "attention": "DAPO (attention aggregation)"}
TABLE7_METHODS = {"progressive": "DAPO", "naive": "DAPO w/o progressive"}
