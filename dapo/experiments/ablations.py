"""The paper's ablations (Figs. 5-8, Tables 6-7) on top of :func:`dapo.experiments.sweep.sweep`.

Grids over the prefix depth N_d are given as fractions of each encoder's depth and turned
into layer counts from the loaded backbone (:func:`depth_settings`: 8 vision / 4 text layers
on the compact synthetic CLIP, 24 / 12 on ViT-L/14), full depth written as ``None`` so that
it shares the checkpoint of the default DAPO. :func:`ablation_table` turns a tidy sweep into
the committed layout (one row per setting, seed, epoch and dataset; metrics in percent);
:func:`verdicts` and :func:`paired_difference` compute what the notebooks' closing cells
print against the paper's claims, so no conclusion is written before the numbers exist; both
judge a difference by the one rule of :mod:`dapo.experiments.verdicts` (clear when ``|d| >= 0.5`` and
``> 2 std``, else within noise).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

#: Fig. 5 / Fig. 6 / Fig. 7 metrics: pixel AUROC and AUPRO (the authors' recipe), image AUROC and AP.
FIGURE_METRICS = ("pixel_auroc", "pixel_aupro_official", "image_auroc", "image_ap")
#: Table 6 columns: image and pixel AUROC, and the APs whose change the table prints.
AGGREGATION_METRICS = ("image_auroc", "pixel_auroc", "image_ap", "pixel_ap")
#: Table 7 columns (image level, per product of the MPDD-style target).
TABLE7_METRICS = ("image_auroc", "image_ap", "image_f1_max")
DEPTH_FIELDS = ("vision_depth", "text_depth")


def encoder_depths(backbone) -> dict[str, int]:
    """``{"vision_depth": n_vision_layers, "text_depth": n_text_layers}`` of a loaded backbone."""
    return {"vision_depth": len(backbone.vision_blocks), "text_depth": len(backbone.text_blocks)}


def layers_at(fraction: float, n_layers: int) -> int:
    """The layer count at ``fraction`` of an ``n_layers`` encoder (rounded half up; at least 1 for a
    positive fraction): 0.25 of 24 -> 6, 0.25 of 4 -> 1, 0 -> 0 (no deep tokens)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"depth fraction {fraction} is not in [0, 1]")
    return 0 if fraction == 0 else max(1, int(np.floor(fraction * n_layers + 0.5)))


def depth_settings(backbone, fractions: Sequence[float], *, fields: Sequence[str] = DEPTH_FIELDS,
                   **fixed: Any) -> list[dict[str, Any]]:
    """Sweep settings with ``fields`` at each fraction of their encoder's depth (full depth as
    ``None``, DAPO's default, so the default checkpoint is shared), plus ``fixed`` fields
    (e.g. ``tuning="naive"``). Fractions that give the same layers are kept once."""
    unknown = sorted(set(fields) - set(DEPTH_FIELDS))
    if unknown:
        raise ValueError(f"unknown depth fields {unknown}; known: {list(DEPTH_FIELDS)}")
    depths = encoder_depths(backbone)
    settings: list[dict[str, Any]] = []
    for fraction in fractions:
        setting = {}
        for field in fields:
            layers = layers_at(float(fraction), depths[field])
            setting[field] = None if layers == depths[field] else layers
        setting.update(fixed)
        if setting not in settings:
            settings.append(setting)
    return settings


def resolve_depths(table: pd.DataFrame, backbone) -> pd.DataFrame:
    """``None`` (every layer) in the depth columns of a sweep table replaced by the layer count."""
    table = table.copy()
    for field, layers in encoder_depths(backbone).items():
        if field in table.columns:
            table[field] = table[field].apply(lambda v, layers=layers: layers if v is None or (isinstance(v, float) and np.isnan(v))
                                              else int(v)).astype(int)
    return table


def percent(tidy: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """The rows of ``metrics`` (in that order; default all) with values in percent (``delta_*`` kept)."""
    if metrics is not None:
        missing = sorted(set(metrics) - set(tidy["metric"]))
        if missing:
            raise ValueError(f"the sweep table has no metric(s) {missing}; it has {sorted(set(tidy['metric']))}")
        tidy = tidy[tidy["metric"].isin(metrics)]
    return tidy.assign(value=tidy["value"] * 100.0)


def ablation_table(tidy: pd.DataFrame, fields: Sequence[str], metrics: Sequence[str] = FIGURE_METRICS) -> pd.DataFrame:
    """The committed layout: one row per (``fields``..., seed, epoch, dataset[, product]), one column
    per metric in percent, rows in the sweep's order."""
    keys = [*fields, "seed", "epoch", "dataset", *(["product"] if "product" in tidy.columns else [])]
    long = percent(tidy, metrics)
    if long.duplicated([*keys, "metric"]).any():
        raise ValueError(f"several values per {keys} and metric: the sweep table repeats a setting")
    order = pd.MultiIndex.from_frame(long[keys].drop_duplicates())
    wide = long.set_index([*keys, "metric"])["value"].unstack("metric").reindex(order)
    wide = wide.reindex(columns=list(metrics)).reset_index()
    wide.columns.name = None
    return wide


def ablation_summary(table: pd.DataFrame, keys: Sequence[str], metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean and std over the seeds (:func:`dapo.experiments.tables.summarise`) of an :func:`ablation_table`'s
    metric columns (default: every column that is not a key), grouped by ``keys``."""
    from dapo.experiments.tables import summarise

    key_columns = {"seed", "epoch", "dataset", "product", "best_epoch", *keys}
    metrics = list(metrics or [c for c in table.columns if c not in key_columns])
    long = table.melt(id_vars=[c for c in table.columns if c not in metrics], value_vars=metrics, var_name="metric")
    return summarise(long, list(keys))


def smoke_values(values: Sequence[Any], default: Any) -> list[Any]:
    """A smoke run's grid: the default and the first other value of ``values`` (plumbing only)."""
    others = [v for v in values if v != default]
    return [default, *others[:1]]


def mark_best_epochs(table: pd.DataFrame, by: Sequence[str], select: str = "image_auroc") -> pd.DataFrame:
    """An :func:`ablation_table` with a ``best_epoch`` column: True on the rows of the epoch whose
    seed-mean ``select`` is highest within each group of ``by`` (Fig. 6 reports each
    initialisation's best epoch; ties go to the earlier epoch)."""
    if select not in table.columns:
        raise ValueError(f"cannot pick the best epoch by {select!r}: the table has {list(table.columns)}")
    means = table.groupby([*by, "epoch"], sort=False, dropna=False)[select].mean().reset_index()
    means = means.sort_values([*by, "epoch"], kind="stable")
    best = means.loc[means.groupby(list(by), sort=False, dropna=False)[select].idxmax(), [*by, "epoch"]]
    marked = table.merge(best.assign(best_epoch=True), on=[*by, "epoch"], how="left")
    marked["best_epoch"] = marked["best_epoch"].fillna(False).astype(bool)
    return marked


def paired_difference(table: pd.DataFrame, field: str, a: Any, b: Any, by: Sequence[str],
                      metrics: Sequence[str]) -> pd.DataFrame:
    """``a - b`` of ``field`` in an :func:`ablation_table`, paired by seed and epoch within each group
    of ``by``: per group and metric the mean, std (ddof 1), number of pairs and the share of pairs
    in which ``a`` is ahead, and ``verdict`` (:func:`dapo.experiments.verdicts.verdict_column`: ``"<a> ahead"``,
    ``"<b> ahead"``, ``"within noise"``)."""
    from dapo.experiments.verdicts import verdict_column

    keys = [*by, "seed", "epoch"]
    left = table[table[field] == a].set_index(keys)[list(metrics)]
    right = table[table[field] == b].set_index(keys)[list(metrics)]
    diff = (left - right).dropna(how="all")
    if diff.empty:
        raise ValueError(f"no seed was evaluated with both {field}={a!r} and {field}={b!r}")
    long = diff.reset_index().melt(id_vars=keys, value_vars=list(metrics), var_name="metric", value_name="delta")
    grouped = long.groupby([*by, "metric"], sort=False, dropna=False)["delta"]
    out = grouped.agg(mean="mean", std="std", n="count", ahead=lambda d: float((d > 0).mean())).reset_index()
    out["verdict"] = verdict_column(out, a=str(a), b=str(b))
    return out


def verdicts(summary: pd.DataFrame, field: str, *, default: Any = None) -> pd.DataFrame:
    """Per (dataset, metric) of a :func:`ablation_summary` table indexed by (``field``, dataset): the
    best and worst setting with their means, the default's mean and its gap to the best in units
    of the best setting's std, ``default vs best`` (:func:`dapo.experiments.verdicts.classify` of the gap with the
    std of two independent runs), and the rank correlation (Spearman) of setting and mean where the
    setting is numeric (negative: larger values do worse)."""
    from dapo.experiments.verdicts import Estimate, classify, difference

    metrics = [m for m in dict.fromkeys(summary.columns.get_level_values(0)) if m != "n_seeds"]
    rows = []
    frame = summary.reset_index()
    for dataset, group in frame.groupby("dataset", sort=False):
        for metric in metrics:
            means = pd.Series(group[(metric, "mean")].to_numpy(), index=group[field].to_numpy())
            stds = pd.Series(group[(metric, "std")].to_numpy(), index=group[field].to_numpy())
            best, worst = means.idxmax(), means.idxmin()
            row = {"dataset": dataset, "metric": metric, f"best {field}": best, "best": means[best],
                   f"worst {field}": worst, "worst": means[worst]}
            if default is not None and default in means.index:
                spread = stds[best] if np.isfinite(stds[best]) and stds[best] > 0 else np.nan
                row.update({"default": means[default], "default gap / std": (means[best] - means[default]) / spread})
                gap = difference(Estimate(means[best], stds[best], 2), Estimate(means[default], stds[default], 2))
                row["default vs best"] = "default is best" if best == default else classify(gap.mean, gap.std)
            numeric = pd.to_numeric(pd.Series(means.index), errors="coerce")
            if numeric.notna().all() and len(means) > 2:
                row["spearman"] = float(pd.Series(numeric.to_numpy()).corr(pd.Series(means.to_numpy()),
                                                                             method="spearman"))
            rows.append(row)
    return pd.DataFrame(rows)


def target_like(target_datasets: Sequence[str], paper_dataset: str = "mpdd") -> str:
    """The target that stands for ``paper_dataset`` (``mpdd`` itself, or the synthetic MPDD-style world)."""
    from dapo.experiments.tables import paper_counterpart

    for name in target_datasets:
        if paper_counterpart(name) == paper_dataset:
            return name
    raise ValueError(f"no target dataset stands for {paper_dataset!r} among {list(target_datasets)}: "
                     f"add it to target_datasets")


def aggregation_table(tidy: pd.DataFrame, *, baseline: str = "mean") -> pd.DataFrame:
    """Table 6 rows per (aggregation, seed, dataset): image / pixel AUROC and AP (%) and ``delta_ap``,
    the change of the mean of image and pixel AP against the other aggregation, paired by seed,
    signed as the paper prints it (the baseline's row: baseline minus the other; the other's row:
    the other minus the baseline)."""
    table = ablation_table(tidy, ["aggregation"], AGGREGATION_METRICS)
    table["mean_ap"] = table[["image_ap", "pixel_ap"]].mean(axis=1)
    keys = ["seed", "epoch", "dataset"]
    base = table[table["aggregation"] == baseline].set_index(keys)["mean_ap"]
    others = table[table["aggregation"] != baseline]
    if others.empty or base.empty:
        raise ValueError(f"Table 6 needs the baseline aggregation {baseline!r} and another one")
    other = others.set_index(keys)["mean_ap"]
    joined = table.join((base - other).rename("delta"), on=keys)
    sign = np.where(joined["aggregation"] == baseline, 1.0, -1.0)
    table["delta_ap"] = sign * joined["delta"].to_numpy()
    return table.drop(columns="mean_ap")
