"""Notebook 13: ViP²-CLIP's Table 1 (industrial zero-shot comparison) for the project's comparison systems.

*The seed systems* (:func:`seed_systems`) are the registered methods that the project's papers compare:
every row of DAPO's Table 3 that :mod:`dapo.methods` implements (``Method.table3``), and FAPrompt,
ViP²-CLIP and AA-CLIP (ViP²-CLIP Table 1's columns outside DAPO's Table 3) where registered under the
names of :data:`OTHER_SYSTEMS`. The table's layout (ViP²-CLIP Table 1): per test dataset, image
AUROC / AP / F1-max and pixel AUROC / PRO / F1-max (:data:`METRICS`; PRO as the release computes it,
200 thresholds to FPR 0.3: ``pixel_aupro_official``), the dataset mean over products, and an AVERAGE
over the test datasets (``test == "mean"``). Values in percent, mean and std over the seeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from dapo.experiments.tables import summarise

TABLE = "ViP²-CLIP Table 1"
#: ViP²-CLIP Table 1's columns (its method names, as stored in ``dapo.reference``), in its order.
VIP2CLIP_COLUMNS = ("WinCLIP", "APRIL-GAN", "AnomalyCLIP", "AdaCLIP", "AA-CLIP", "FAPrompt", "ViP²-CLIP")
#: DAPO Table 3 row names that ViP²-CLIP Table 1 prints under another name.
TABLE3_TO_VIP2CLIP = {"AprilGAN": "APRIL-GAN"}
#: Seed systems outside DAPO's Table 3: ViP²-CLIP Table 1 column -> registered method name (issue 33).
OTHER_SYSTEMS = {"AA-CLIP": "aaclip", "FAPrompt": "faprompt", "ViP²-CLIP": "vip2clip"}
#: The table's metrics (our names), in its order: image AUROC / AP / F1-max, pixel AUROC / PRO / F1-max.
METRICS = ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_aupro_official", "pixel_f1_max")
#: Reference metric names (``dapo.reference``) -> ours, for this table.
PAPER_METRICS = {"image_f1": "image_f1_max", "pixel_aupro": "pixel_aupro_official"}
LEVELS = {"Image-level (AUROC, AP, F1-max)": METRICS[:3], "Pixel-level (AUROC, PRO, F1-max)": METRICS[3:]}
AVERAGE = "mean"
#: Panel titles the shared labels (:func:`dapo.experiments.plots.metric_label`) lack.
LABELS = {"image_f1_max": "image F1-max", "pixel_f1_max": "pixel F1-max", "pixel_aupro_official": "pixel PRO (200 thresholds)"}


def seed_systems() -> dict[str, str]:
    """``{label: registered method name}`` of every registered seed system (module docstring), labelled
    with ViP²-CLIP's name where its Table 1 prints the method (DAPO's Table 3 name otherwise); ViP²-CLIP's
    columns first in its order, then the other Table 3 rows in DAPO's order."""
    from dapo.methods import available, table3_methods

    systems = {TABLE3_TO_VIP2CLIP.get(row, row): name for row, name in table3_methods().items()}
    registered = set(available())
    systems.update({label: name for label, name in OTHER_SYSTEMS.items() if name in registered})
    first = [label for label in VIP2CLIP_COLUMNS if label in systems]
    return {label: systems[label] for label in [*first, *(s for s in systems if s not in first)]}


def paper_datasets() -> list[str]:
    """The datasets of ViP²-CLIP Table 1 (reference keys), in its order, without the AVERAGE row."""
    from dapo.reference import paper_numbers

    return [d for d in dict.fromkeys(paper_numbers(TABLE)["dataset"]) if d != AVERAGE]


def missing_loaders() -> list[str]:
    """The datasets of ViP²-CLIP Table 1 that :func:`dapo.data.open_dataset` cannot open (no loader)."""
    from dapo.data.registry import openable_datasets

    return [d for d in paper_datasets() if d not in openable_datasets()]


def table_targets(targets: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(kept, dropped)``: the test datasets whose paper counterpart is a dataset of ViP²-CLIP Table 1,
    and the others (MAD, Real-IAD: the table does not report them)."""
    from dapo.experiments.tables import paper_counterpart

    datasets = set(paper_datasets())
    kept = [t for t in targets if paper_counterpart(t) in datasets]
    if not kept:
        raise ValueError(f"none of the test datasets {list(targets)} stands for a dataset of {TABLE} "
                         f"{sorted(datasets)}: pass target_datasets naming one (e.g. ['visa', 'mpdd'])")
    return kept, [t for t in targets if t not in kept]


def _rows(directions: Mapping[str, Mapping[str, Mapping[str, Sequence]]], source: str) -> pd.DataFrame:
    rows = []
    for train, by_dataset in directions.items():
        for test, by_method in by_dataset.items():
            for method, per_seed in by_method.items():
                for seed_index, result in enumerate(per_seed):
                    mean = getattr(result, "table", result).loc["mean"]
                    rows += [{"source": source, "train": train, "test": test, "method": method,
                              "seed_index": seed_index, "metric": metric, "value": 100.0 * float(mean[metric])}
                             for metric in METRICS]
    return pd.DataFrame(rows)


def table1_summary(directions: Mapping[str, Mapping[str, Mapping[str, Sequence]]], source: str) -> pd.DataFrame:
    """ViP²-CLIP Table 1 layout: one row per (source, train, test, method) with :data:`METRICS` (dataset
    means, %), mean and std over the seeds, then per method the AVERAGE over every (train, test) row
    (``train == test == "mean"``; averaged seed by seed, then mean ± std over the seeds).
    ``directions``: ``{train: {test: {method: [evaluation per seed]}}}`` (:func:`evaluate_methods`)."""
    rows = _rows(directions, source)
    average = (rows.groupby(["source", "method", "seed_index", "metric"], sort=False)["value"].mean().reset_index()
               .assign(train=AVERAGE, test=AVERAGE))
    return summarise(pd.concat([rows, average], ignore_index=True), ["source", "train", "test", "method"])


def table1_view(summary: pd.DataFrame, decimals: int = 1) -> pd.DataFrame:
    """The paper's look: rows (level, train → test), columns the methods, cells ``(AUROC, AP, F1)`` of the
    seed means (the spread is in the saved table)."""
    from dapo.experiments.verdicts import tidy

    rows = tidy(summary)
    rows["row"] = [f"{_world(tr)} → {_world(te)}" if te != AVERAGE else "AVERAGE" for tr, te in
                   zip(rows["train"], rows["test"])]
    blocks = {}
    for level, metrics in LEVELS.items():
        part = rows[rows["metric"].isin(metrics)]
        cells = part.groupby(["row", "method"], sort=False)["mean"].apply(
            lambda values: "(" + ", ".join("n/a" if np.isnan(v) else f"{v:.{decimals}f}" for v in values) + ")")
        blocks[level] = cells.unstack("method").reindex(index=list(dict.fromkeys(part["row"])),
                                                        columns=list(dict.fromkeys(part["method"])))
    return pd.concat(blocks, names=["level", "datasets"])


def _world(dataset: str) -> str:
    from dapo.experiments.tables import world_label

    return world_label(dataset)


def beside_table1(summary: pd.DataFrame) -> pd.DataFrame:
    """This run's per-dataset rows beside ViP²-CLIP Table 1 (:func:`dapo.experiments.tables.beside_paper`)."""
    from dapo.experiments.tables import beside_paper

    per_dataset = summary[summary.index.get_level_values("test") != AVERAGE]
    return beside_paper(per_dataset, TABLE, rename=PAPER_METRICS)


def paper_average(datasets: Sequence[str]) -> pd.DataFrame:
    """ViP²-CLIP Table 1's methods averaged over ``datasets`` (paper keys; e.g. the counterparts of this
    run's test worlds), beside its printed AVERAGE over all seven: rows method, columns
    ``(metric, "these datasets" | "printed AVERAGE")``."""
    from dapo.reference import paper_numbers

    numbers = paper_numbers(TABLE).assign(metric=lambda f: f["metric"].replace(PAPER_METRICS))
    unknown = sorted(set(datasets) - set(paper_datasets()))
    if unknown:
        raise ValueError(f"{TABLE} reports no {unknown}; it reports {paper_datasets()}")
    mean = numbers[numbers["dataset"].isin(datasets)].groupby(["method", "metric"], sort=False)["value"].mean()
    printed = numbers[numbers["dataset"] == AVERAGE].set_index(["method", "metric"])["value"]
    wide = pd.concat({"these datasets": mean, "printed AVERAGE": printed}, axis=1).unstack("metric")
    wide = wide.swaplevel(0, 1, axis=1).reindex(columns=pd.MultiIndex.from_product(
        [list(METRICS), ["these datasets", "printed AVERAGE"]]))
    return wide.reindex(index=list(VIP2CLIP_COLUMNS))


# ----------------------------------------------------------------------------- figure


def dot_plot(summary: pd.DataFrame, *, title: str = ""):
    """One panel per metric: each method's value per test row (mean over seeds, ± std bars), the AVERAGE
    as a black bar, and ViP²-CLIP's reported value on the same paper dataset as a hollow marker."""
    import matplotlib.pyplot as plt

    from dapo.experiments.plots import metric_label
    from dapo.experiments.tables import paper_counterpart
    from dapo.experiments.verdicts import tidy
    from dapo.reference import paper_numbers

    rows = tidy(summary)
    methods = list(dict.fromkeys(rows["method"]))
    tests = [t for t in dict.fromkeys(rows["test"]) if t != AVERAGE]
    paper = paper_numbers(TABLE).assign(metric=lambda f: f["metric"].replace(PAPER_METRICS))
    paper = paper.set_index(["dataset", "method", "metric"])["value"]
    fig, axes = plt.subplots(2, 3, figsize=(3.6 * 3 + 2.6, 3.0 * 2 + 0.6), squeeze=False, sharex=True)
    markers = "osD^v<>"
    colours = plt.get_cmap("tab10").colors
    x = np.arange(len(methods))
    for ax, metric in zip(axes.ravel(), METRICS):
        part = rows[rows["metric"] == metric]
        for k, test in enumerate(tests):
            here = part[part["test"] == test].set_index("method").reindex(methods)
            offset = (k - (len(tests) - 1) / 2) * 0.15
            ax.errorbar(x + offset, here["mean"], yerr=here["std"].fillna(0.0), fmt=markers[k % len(markers)],
                        color=colours[k % len(colours)], ms=4, capsize=2, label=_world(test))
            reported = [paper.get((paper_counterpart(test), m, metric), np.nan) for m in methods]
            ax.scatter(x + offset, reported, facecolors="none", edgecolors=colours[k % len(colours)],
                       marker=markers[k % len(markers)], s=36, zorder=5)
        average = part[part["test"] == AVERAGE].set_index("method").reindex(methods)
        ax.scatter(x, average["mean"], marker="_", color="k", s=200, zorder=6, label="AVERAGE (this run)")
        ax.set_xticks(x)
        ax.set_xticklabels(methods, rotation=45, ha="right", fontsize=7)
        ax.set_title(LABELS.get(metric, metric_label(metric)), fontsize=9)
        ax.set_ylabel("%", fontsize=8)
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    handles.append(plt.Line2D([], [], marker="o", ls="", mfc="none", mec="k"))
    labels.append("hollow: paper (reported)")
    fig.legend(handles, labels, loc="center right", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.78, 1))
    return fig


# ----------------------------------------------------------------------------- closing cell


def _paper_value(dataset: str, method: str, metric: str) -> float | None:
    from dapo.reference import paper_numbers

    rows = paper_numbers(TABLE).assign(metric=lambda f: f["metric"].replace(PAPER_METRICS))
    rows = rows[(rows["dataset"] == dataset) & (rows["method"] == method) & (rows["metric"] == metric)]
    return float(rows["value"].iloc[0]) if len(rows) == 1 else None


def _paper_on(datasets: Sequence[str], method: str, metric: str) -> float | None:
    """The paper's value of ``method`` averaged over ``datasets`` (None if one is missing)."""
    values = [_paper_value(d, method, metric) for d in datasets]
    return None if any(v is None for v in values) else float(np.mean(values))


def best_lines(summary: pd.DataFrame, decimals: int = 1) -> list[str]:
    """Per test row (and the AVERAGE) and metric: the leader here (by the verdict rule, against the
    runner-up) and the paper's leader among the same methods on the paper dataset(s) the row stands
    for; where they differ, the paper's leader against ours here, read against the paper's direction."""
    from dapo.experiments.tables import paper_counterpart
    from dapo.experiments.verdicts import compare, leader_sentence, tidy

    rows = tidy(summary)
    tests = [t for t in dict.fromkeys(rows["test"]) if t != AVERAGE]
    counterparts = [paper_counterpart(t) for t in tests]
    lines = []
    for test in [*tests, AVERAGE]:
        group = rows[rows["test"] == test]
        datasets = counterparts if test == AVERAGE else [paper_counterpart(test)]
        where = ("AVERAGE over " + ", ".join(_world(t) for t in tests)) if test == AVERAGE else _world(test)
        parts = []
        for metric in METRICS:
            sentence = leader_sentence(group, metric, decimals=decimals)
            ours = group[group["metric"] == metric].dropna(subset=["mean"])
            reported = {m: _paper_on(datasets, m, metric) for m in ours["method"]}
            reported = {m: v for m, v in reported.items() if v is not None}
            if len(reported) < 2:
                printed = ", ".join(reported) or "none"
                parts.append(f"{sentence}; the paper prints too few of these systems to rank them ({printed})")
                continue
            paper_best = max(reported, key=reported.get)
            here_best = ours.sort_values("mean", ascending=False, kind="stable")["method"].iloc[0]
            if paper_best == here_best:
                parts.append(f"{sentence}; paper: {paper_best} leads too ({reported[paper_best]:.1f})")
            elif here_best in reported:
                reading = compare(group, metric, paper_best, here_best,
                                  paper=(reported[paper_best], reported[here_best]))
                parts.append(f"{sentence}; paper: {paper_best} leads ({reported[paper_best]:.1f}); "
                             f"{reading['sentence']}")
            else:
                parts.append(f"{sentence}; paper (its methods only): {paper_best} leads "
                             f"({reported[paper_best]:.1f}), {here_best} is not in the paper's table")
        lines.append(f"**{where}**: " + "; ".join(parts))
    return lines


#: ViP²-CLIP's quantitative claims on Table 1 (Sec. 5.2): (a, b, metric) whose AVERAGE difference it states.
CLAIMS = (("ViP²-CLIP", "FAPrompt", "pixel_aupro_official"), ("ViP²-CLIP", "FAPrompt", "pixel_f1_max"))


def claim_lines(summary: pd.DataFrame, decimals: int = 1) -> list[str]:
    """ViP²-CLIP's stated AVERAGE differences (:data:`CLAIMS`) read against this run's AVERAGE row (the
    paper's printed AVERAGE over its seven datasets is the reference direction), or why they cannot be."""
    from dapo.experiments.verdicts import compare, tidy

    rows = tidy(summary)
    average = rows[rows["test"] == AVERAGE]
    here = set(average["method"])
    lines = []
    for a, b, metric in CLAIMS:
        pa, pb = _paper_value(AVERAGE, a, metric), _paper_value(AVERAGE, b, metric)
        missing = [m for m in (a, b) if m not in here]
        if missing:
            lines.append(f"paper: {a} {pa:.1f} vs {b} {pb:.1f} on {metric} (AVERAGE, +{pa - pb:.1f}); not judged "
                         f"here: {', '.join(missing)} not registered in dapo.methods")
            continue
        lines.append(compare(average, metric, a, b, decimals=decimals, paper=(pa, pb))["sentence"])
    return lines
