"""The closing cells of notebooks 00-05 and 10-12, computed from the run's own tables.

Each function takes the tables a notebook has just written (in memory, or read back from its
CSVs in ``results/<profile>/``) and returns Markdown bullet lines. Every number and every
comparative word in them comes from those tables through :mod:`dapo.experiments.verdicts` (one rule for
"clear vs noise": ``|d| >= 0.5`` and ``> 2 std`` over the seeds); the paper's numbers come from
:mod:`dapo.reference`. Explanations that cannot be computed stay in the notebooks' Markdown and
quote no number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from dapo.experiments.verdicts import (
    CLEAR,
    NOISE,
    ONE_SEED,
    RULE,
    Estimate,
    classify,
    compare,
    difference,
    estimate,
    ranking,
    ranking_text,
    tidy,
)


def _paper_value(table: str, dataset: str, method: str, metric: str) -> float | None:
    from dapo.reference import paper_numbers

    rows = paper_numbers(table)
    rows = rows[(rows["dataset"] == dataset) & (rows["method"] == method) & (rows["metric"] == metric)
                & (rows["product"] == "mean") & (rows["defect"] == "")]
    return float(rows["value"].iloc[0]) if len(rows) == 1 else None


def _paper_ranking(table: str, dataset: str, metric: str) -> list[str]:
    """The methods of a reported table on one dataset and metric, highest first."""
    from dapo.reference import paper_numbers

    rows = paper_numbers(table)
    rows = rows[(rows["dataset"] == dataset) & (rows["metric"] == metric) & (rows["product"] == "mean")]
    return list(rows.sort_values("value", ascending=False, kind="stable")["method"])


def _label(dataset: str) -> str:
    from dapo.experiments.tables import world_label

    try:
        return world_label(dataset)
    except ValueError:
        return dataset


def rule_line() -> str:
    return f"Rule for every verdict below: a difference is clear when {RULE}; otherwise it is within noise."


# ----------------------------------------------------------------------------- 01: prompts


def state_separation(similarity: pd.DataFrame, decimals: int = 2) -> list[str]:
    """Notebook 01: the range of each method's defect-state cosine to the normal state (one column per method)."""
    lines = []
    for method in similarity.columns:
        values = similarity[method].astype(float)
        lines.append(f"{method}: defect states at cosine {values.min():.{decimals}f} to {values.max():.{decimals}f} "
                     f"to the normal state (mean {values.mean():.{decimals}f} over {len(values)} types)")
    return lines


# ----------------------------------------------------------------------------- 02: training


def training_lines(summary: pd.DataFrame) -> list[str]:
    """Notebook 02: epochs, steps and the final-epoch losses of each method, read from ``training_summary``."""
    frame = summary.reset_index() if "method" not in summary.columns else summary
    return [f"{r['method']}: epochs {int(r['epochs'])}, optimiser steps {int(r['steps'])}, final-epoch mean loss "
            f"{r['final_epoch_loss']:.3f} (local part {r['final_epoch_local_loss']:.3f}), "
            f"{int(r['learnable_parameters']):,} learnable parameters" for _, r in frame.iterrows()]


# ----------------------------------------------------------------------------- 03: multi-type


def multitype_lines(table1: pd.DataFrame, a: str = "DAPO", b: str = "MultiADS", dataset: str = "test",
                    paper_table: str = "DAPO Table 1") -> list[str]:
    """Notebook 03: per target and Table 1 metric, ``a`` against ``b`` and against the paper's direction."""
    from dapo.experiments.tables import paper_counterpart

    rows = tidy(table1)
    lines = []
    for target in dict.fromkeys(rows[dataset]):
        counterpart = paper_counterpart(target)
        parts = []
        for metric in dict.fromkeys(rows["metric"]):
            pa, pb = (_paper_value(paper_table, counterpart, m, metric) for m in (a, b))
            paper = (pa, pb) if pa is not None and pb is not None else None
            parts.append(compare(rows, metric, a, b, paper=paper, **{dataset: target})["sentence"])
        lines.append(f"**{_label(target)}**: " + "; ".join(parts))
    return lines


def seen_unseen_lines(per_defect: Mapping[str, pd.DataFrame], metric: str = "pixel_auroc") -> list[str]:
    """Notebook 03: per target and method, the mean of ``metric`` over seen and over unseen (``*``) types."""
    lines = []
    for target, table in per_defect.items():
        rows = tidy(table)
        rows = rows[(rows["metric"] == metric) & (rows["defect"] != "normal")]
        for method, group in rows.groupby("method", sort=False):
            unseen = group["defect"].str.endswith("*")
            parts = [f"{name} types {group.loc[mask, 'mean'].mean():.1f} (mean of {int(mask.sum())})"
                     for name, mask in (("seen", ~unseen), ("unseen", unseen)) if mask.any()]
            lines.append(f"{_label(target)}, {method}: {metric} over " + ", ".join(parts))
    return lines


def heldout_backbone_lines(table: pd.DataFrame, held: str = "held-out", default: str = "default") -> list[str]:
    """Notebook 03 (issue 26): per target and method, the unseen types' mean and the unseen - seen gap
    on the backbone pretrained without the target-only types' labels (``held``) against the default
    one, each a :func:`dapo.experiments.verdicts.compare` sentence (independent runs: stds combined)."""
    rows = tidy(table)
    lines = []
    for (test, method), part in rows.groupby(["test", "method"], sort=False):
        sentences = [compare(part, measure, held, default, by="pretraining")["sentence"]
                     for measure in ("unseen", "unseen - seen")]
        lines.append(f"{_label(test)}, {method}: " + "; ".join(sentences))
    return lines


def weakest_types(per_defect: Mapping[str, pd.DataFrame], method: str = "DAPO", metric: str = "pixel_f1",
                  k: int = 3) -> list[str]:
    """Notebook 03: the ``k`` defect types with the lowest ``metric`` for ``method`` on each target."""
    lines = []
    for target, table in per_defect.items():
        rows = tidy(table)
        rows = rows[(rows["metric"] == metric) & (rows["method"] == method) & (rows["defect"] != "normal")]
        worst = rows.sort_values("mean", kind="stable").head(k)
        text = ", ".join(f"{r['defect']} {Estimate(r['mean'], r['std'], int(r['n'])).text()}" for _, r in worst.iterrows())
        lines.append(f"{_label(target)}: {method}'s lowest {metric}: {text}")
    return lines


# ----------------------------------------------------------------------------- 04: binary


def binary_lines(table3: pd.DataFrame, focus: str = "DAPO", paper_table: str = "DAPO Table 3",
                 metrics: Sequence[str] = ("image_auroc", "image_ap", "pixel_auroc", "pixel_aupro_official")) -> list[str]:
    """Notebook 04: per (train, test) and metric, ``focus`` against the strongest other method, with the
    paper's order of the same two methods where Table 3 prints both."""
    from dapo.experiments.tables import PAPER_BINARY_METRICS, paper_counterpart

    back = {ours: theirs for theirs, ours in PAPER_BINARY_METRICS.items()}
    rows = tidy(table3)
    lines = []
    for (train, test), group in rows.groupby(["train", "test"], sort=False):
        parts = []
        for metric in metrics:
            ranked = [name for name, _ in ranking(group, "method", metric=metric)]
            if focus not in ranked or len(ranked) < 2:
                continue
            rival = next(name for name in ranked if name != focus)
            counterpart = paper_counterpart(test)
            paper = None
            if paper_counterpart(train) == "mvtec":
                pa = _paper_value(paper_table, counterpart, focus, back.get(metric, metric))
                pb = _paper_value(paper_table, counterpart, rival, back.get(metric, metric))
                paper = (pa, pb) if pa is not None and pb is not None else None
            position = ranked.index(focus) + 1
            paper_rank = ""
            if paper_counterpart(train) == "mvtec":
                reported = _paper_ranking(paper_table, counterpart, back.get(metric, metric))
                if focus in reported:
                    paper_rank = f"; paper: {focus} ranks {reported.index(focus) + 1} of {len(reported)}"
            parts.append(f"{compare(group, metric, focus, rival, paper=paper)['sentence']} ({focus} ranks "
                         f"{position} of {len(ranked)} here{paper_rank})")
        lines.append(f"**{train} → {_label(test)}**: " + "; ".join(parts))
    return lines


def aupro_lines(table3: pd.DataFrame, exact: str = "pixel_aupro", official: str = "pixel_aupro_official") -> list[str]:
    """Notebook 04: how far the two AUPRO definitions differ, and whether they rank the methods alike."""
    rows = tidy(table3)
    wide = rows.pivot_table(index=["train", "test", "method"], columns="metric", values="mean", sort=False)
    gap = (wide[exact] - wide[official]).abs()
    lines = [f"exact minus official AUPRO: {gap.min():.1f} to {gap.max():.1f} points over the "
             f"{len(gap)} (direction, target, method) rows"]
    for (train, test), group in wide.groupby(level=["train", "test"], sort=False):
        by_exact = list(group[exact].sort_values(ascending=False, kind="stable").index.get_level_values("method"))
        by_official = list(group[official].sort_values(ascending=False, kind="stable").index.get_level_values("method"))
        if by_exact == by_official:
            lines.append(f"{train} → {_label(test)}: both definitions rank the methods alike ({' > '.join(by_exact)})")
        else:
            moved = [f"{m} {by_exact.index(m) + 1} vs {by_official.index(m) + 1}" for m in by_exact
                     if by_exact.index(m) != by_official.index(m)]
            lines.append(f"{train} → {_label(test)}: the rankings differ (position by exact vs official AUPRO: "
                         f"{', '.join(moved)})")
    return lines


# ----------------------------------------------------------------------------- 05: multi-label


def multilabel_lines(table11: pd.DataFrame, high_recall: float = 90.0, low_precision: float = 30.0,
                     paper_table: str = "DAPO Table 11") -> list[str]:
    """Notebook 05: the dataset means, the share of products with high recall and low precision (the paper's
    pattern) here and in the paper, and the methods whose rows do not vary over the seeds."""
    from dapo.experiments.tables import paper_counterpart
    from dapo.reference import paper_numbers

    rows = tidy(table11)
    lines = []
    for (dataset, method), group in rows.groupby(["dataset", "method"], sort=False):
        mean = group[group["product"] == "mean"]
        parts = [f"{m} {estimate(mean, metric=m)}" for m in ("precision", "recall", "f1") if (mean["metric"] == m).any()]
        products = group[group["product"] != "mean"].pivot_table(index="product", columns="metric", values="mean")
        pattern = ((products["recall"] > high_recall) & (products["precision"] < low_precision)).sum()
        lines.append(f"{_label(dataset)}, {method}: mean over products {', '.join(parts)}; recall > {high_recall:g} "
                     f"with precision < {low_precision:g} in {pattern} of {len(products)} products")
    paper = paper_numbers(paper_table).pivot_table(index=["dataset", "product", "method"], columns="metric",
                                                  values="value")
    for dataset in dict.fromkeys(rows["dataset"].map(paper_counterpart)):
        part = paper.xs(dataset, level="dataset") if dataset in paper.index.get_level_values("dataset") else None
        if part is None:
            continue
        hits = ((part["multilabel_recall"] > high_recall) & (part["multilabel_precision"] < low_precision)).sum()
        lines.append(f"paper (reported), {dataset}: recall > {high_recall:g} with precision < {low_precision:g} in "
                     f"{hits} of {len(part)} products")
    for method, group in rows.groupby("method", sort=False):
        if group["n"].min() > 1 and (group["std"].fillna(1.0).abs().max() == 0.0):
            lines.append(f"{method}: std 0.0 over {int(group['n'].min())} seeds on every row, i.e. its multi-label "
                         f"predictions do not depend on the training seed")
    return lines


# ----------------------------------------------------------------------------- 10: topology


def topology_lines(measures: pd.DataFrame, focus: str = "DAPO", pair: tuple[str, str] = ("AnomalyCLIP", "zero-shot CLIP"),
                   metrics: Sequence[str] = ("silhouette", "knn_purity", "alignment", "normal_auroc",
                                             "text_cos_normal", "text_cos_defects")) -> list[str]:
    """Notebook 10: per target the ranking of each measure, and ``pair``'s patch-only measures side by side."""
    rows = tidy(measures)
    lines = []
    for dataset, group in rows.groupby("dataset", sort=False):
        parts = [f"{m}: {ranking_text(group, m, decimals=3)}" for m in metrics if (group["metric"] == m).any()]
        lines.append(f"**{_label(dataset)}** (highest first) " + "; ".join(parts))
        a, b = pair
        if {a, b} <= set(group["method"]):
            same = [f"{m} {estimate(group, method=a, metric=m).text(3)} vs {estimate(group, method=b, metric=m).text(3)}"
                    for m in ("silhouette", "knn_purity")]
            lines.append(f"{_label(dataset)}: {a} vs {b} on the patch-only measures: {', '.join(same)}")
    return lines


# ----------------------------------------------------------------------------- 11 and 12: paired effects


def _effect_text(row, decimals: int = 1) -> str:
    delta = Estimate(row["delta"], row["delta_std"], int(row["n"])).text(decimals, signed=True)
    return f"{_label(row['dataset'])} {row['metric']} {delta}"


def effect_lines(effects: pd.DataFrame, baseline: str = "default", decimals: int = 1) -> list[str]:
    """Notebooks 11/12: per setting, its clear effects (``Δ ± std`` paired by seed) and whether the rest is noise."""
    lines = []
    frame = effects[effects["setting"] != baseline].dropna(subset=["delta"])
    for setting, group in frame.groupby("setting", sort=False):
        verdicts = [classify(d, s) for d, s in zip(group["delta"], group["delta_std"])]
        clear = [_effect_text(r, decimals) for (_, r), v in zip(group.iterrows(), verdicts) if v == CLEAR]
        n_noise = sum(v == NOISE for v in verdicts)
        if all(v == ONE_SEED for v in verdicts):
            shown = "; ".join(_effect_text(r, decimals) for _, r in group.iterrows())
            lines.append(f"`{setting}`: one seed, no spread to judge ({shown})")
        elif clear:
            lines.append(f"`{setting}`: clear: {'; '.join(clear)}; {n_noise} of {len(group)} (target, metric) pairs "
                         f"within noise")
        else:
            lines.append(f"`{setting}`: all {len(group)} (target, metric) pairs within noise")
    return lines


def paired_lead_lines(effects: pd.DataFrame, a: str, b: str, metrics: Sequence[str], decimals: int = 1) -> list[str]:
    """Notebook 12 (b): setting ``a`` against setting ``b`` of an effects table per target and metric
    (independent runs: std of the difference from both stds)."""
    lines = []
    for (dataset, metric), group in effects[effects["metric"].isin(metrics)].groupby(["dataset", "metric"], sort=False):
        rows = {r["setting"]: Estimate(r["mean"], r["std"], int(r["n"])) for _, r in group.iterrows()}
        if a not in rows or b not in rows:
            continue
        diff = difference(rows[a], rows[b])
        verdict = classify(diff.mean, diff.std)
        word = (f"{a} ahead" if diff.mean > 0 else f"{b} ahead") if verdict == CLEAR else verdict
        lines.append(f"{_label(dataset)} {metric}: {a} {rows[a].text(decimals)} vs {b} {rows[b].text(decimals)}, "
                     f"{diff.text(decimals, signed=True)} ({word})")
    return lines


def summary_lines(table: pd.DataFrame, by: Sequence[str], metrics: Sequence[str], decimals: int = 1,
                  scale: float = 1.0) -> list[str]:
    """One line per group of ``by`` with ``metric mean ± std`` of each of ``metrics`` (a summarise table)."""
    rows = tidy(table)
    lines = []
    for key, group in rows.groupby(list(by), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        parts = []
        for metric in metrics:
            if (group["metric"] == metric).any():
                e = estimate(group, metric=metric)
                parts.append(f"{metric} {Estimate(e.mean * scale, e.std * scale, e.n).text(decimals)}")
        lines.append(", ".join(_label(k) if k in _known_datasets() else str(k) for k in key) + ": " + ", ".join(parts))
    return lines


def _known_datasets() -> set[str]:
    from dapo.synthetic.worlds import WORLDS

    return set(WORLDS)


def epoch_lines(epochs: pd.DataFrame, a: str = "DAPO", b: str = "MultiADS",
                metrics: Sequence[str] = ("multitype_auroc", "multitype_ap", "multitype_f1")) -> list[str]:
    """Notebook 12 (d): each method's metrics from the first to the last evaluated epoch, and ``a`` vs ``b``
    at every epoch."""
    rows = tidy(epochs)
    first, last = rows["epoch"].min(), rows["epoch"].max()
    lines = []
    for (method, dataset), group in rows[rows["metric"].isin(metrics)].groupby(["method", "dataset"], sort=False):
        parts = [f"{m} {estimate(group, metric=m, epoch=first).text()} → {estimate(group, metric=m, epoch=last).text()}"
                 for m in metrics]
        lines.append(f"{method}, {_label(dataset)}, epoch {first} → {last}: {', '.join(parts)}")
    for epoch in sorted(set(rows["epoch"])):
        for dataset in dict.fromkeys(rows["dataset"]):
            part = rows[(rows["epoch"] == epoch) & (rows["dataset"] == dataset)]
            sentences = [compare(part, m, a, b)["sentence"] for m in metrics]
            lines.append(f"epoch {epoch}, {_label(dataset)}: " + "; ".join(sentences))
    return lines


__all__ = ["aupro_lines", "binary_lines", "config_frame", "multi_defect_lines", "seen_counts", "effect_lines", "epoch_lines", "heldout_backbone_lines", "multilabel_lines", "multitype_lines",
           "paired_lead_lines", "rule_line", "seen_unseen_lines", "state_separation", "summary_lines",
           "topology_lines", "training_lines", "weakest_types"]


# ----------------------------------------------------------------------------- 00 and 02: data and configuration

MULTI_DEFECT_WORDS = {
    "exclude": "training images with several defect types are left out (MultiADS protocol)",
    "as_class": "training images with several defect types are kept, with their own class (as the official DAPO "
                "training data list does)",
}


def multi_defect_lines(training: pd.DataFrame) -> list[str]:
    """Notebook 02: what each method's printed ``multi_defect`` setting does (one column per method)."""
    if "multi_defect" not in training.index:
        raise ValueError("the training table has no multi_defect row")
    return [f"{method}: `multi_defect={value}`: {MULTI_DEFECT_WORDS.get(value, 'see TrainConfig.multi_defect')}"
            for method, value in training.loc["multi_defect"].items()]


def config_frame(configs: Mapping[str, Mapping]) -> pd.DataFrame:
    """Configs side by side as strings, ``None`` printed as ``None`` (not NaN): one column per method."""
    return pd.DataFrame({label: {k: "None" if v is None else str(v) for k, v in cfg.items()}
                         for label, cfg in configs.items()})


def seen_counts(seen: pd.DataFrame) -> list[str]:
    """Notebook 00: per target, how many defect types the training world has (seen) and how many it lacks."""
    lines = []
    for target, group in seen.groupby("target", sort=False):
        flags = group["seen_in_training"].astype(bool)
        lines.append(f"{_label(target)}: {int(flags.sum())} seen ({', '.join(group.loc[flags, 'defect'])}), "
                     f"{int((~flags).sum())} unseen ({', '.join(group.loc[~flags, 'defect'])})")
    return lines
