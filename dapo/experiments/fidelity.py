"""The fidelity switches of ``docs/FIDELITY.md``, each measured alone against DAPO's defaults (notebook 11).

A *switch* is a setting of :class:`~dapo.methods.dapo.config.DAPOConfig` / :class:`~dapo.methods.recipe.TrainConfig`
fields, e.g. ``{"alpha_decay": 1.0}``. :data:`~dapo.methods.dapo.switches.OFFICIAL_SWITCHES` are the released DAPO code's
values where they differ from the default (the paper's, else the code's); ``EARLIER_CHOICES``
are this project's earlier defaults that the fidelity rule replaced. :func:`evaluate_settings`
trains each setting through :func:`dapo.experiments.sweep.sweep` (one checkpoint folder per setting and seed),
except settings of inference-only fields (:data:`INFERENCE_FIELDS`: training never reads them),
which are evaluated on the default checkpoints with the field changed (:func:`with_config`), so
they cost no training. :func:`effects` turns the tidy results into mean ± std over seeds and the
per-seed (paired) difference to the default, with its own std.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from dapo.methods.dapo.switches import DEFAULT_SWITCHES, EARLIER_CHOICES, OFFICIAL_SWITCHES  # noqa: F401

if TYPE_CHECKING:
    from dapo.experiments.sweep import Evaluation

BASELINE = "default"

#: DAPOConfig fields that only inference reads (the losses never do): binary vocabulary, image
#: score and map smoothing.
INFERENCE_FIELDS = frozenset({"inference_vocabulary", "image_score_global_weight", "map_score",
                              "smoothing_sigma", "global_score"})

#: The metrics of FIDELITY.md's last column: multi-type Table 1 and binary image / pixel AUROC.
FIDELITY_METRICS = ("multitype_auroc", "multitype_ap", "multitype_f1", "image_auroc", "pixel_auroc")


def setting_label(setting: Mapping[str, Any]) -> str:
    """``"default"`` or the setting's checkpoint-folder name (``"alpha_decay=1.0"``)."""
    from dapo.experiments.runs import setting_name

    return setting_name(setting)


def switch_kind(setting: Mapping[str, Any]) -> str:
    """``"official"``, ``"earlier choice"``, ``"default"`` or ``"other"``."""
    setting = dict(setting)
    if not setting:
        return "default"
    if setting in [dict(s) for s in OFFICIAL_SWITCHES]:
        return "official"
    if setting in [dict(s) for s in EARLIER_CHOICES]:
        return "earlier choice"
    return "other"


def inference_only(setting: Mapping[str, Any]) -> bool:
    """Whether every field of a (non-empty) setting is read by inference alone."""
    return bool(setting) and set(setting) <= INFERENCE_FIELDS


def smoke_subset(settings: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The settings a smoke run keeps: the first trained one and the first inference-only one."""
    trained = [dict(s) for s in settings if not inference_only(s)][:1]
    inferred = [dict(s) for s in settings if inference_only(s)][:1]
    return trained + inferred


def with_config(model, **overrides):
    """A copy of a trained model with config fields changed and the same learned weights.

    The copy shares the frozen backbone. Learned tensors the new config has no place for are
    dropped (``vision_depth=0`` removes the vision deep tokens: the sequence then carries no
    extra tokens at all); a learned tensor the new config needs but the model lacks raises.
    """
    from dapo.methods.dapo.model import DAPO

    rebuilt = DAPO(model.backbone, model.config.with_overrides(**overrides))
    trained = {name: p for name, p in model.state_dict().items() if not name.startswith("backbone.")}
    wanted = {name for name in rebuilt.state_dict() if not name.startswith("backbone.")}
    missing = sorted(wanted - set(trained))
    if missing:
        raise ValueError(f"with_config({overrides}): the trained model has no {missing}")
    for name in wanted:
        if rebuilt.state_dict()[name].shape != trained[name].shape:
            raise ValueError(f"with_config({overrides}): {name} has shape {tuple(trained[name].shape)} in the "
                             f"trained model, {tuple(rebuilt.state_dict()[name].shape)} in the new one")
    rebuilt.load_state_dict({name: trained[name] for name in wanted}, strict=False)
    return rebuilt.to(model.device).eval()


def table1_evaluation(datasets: Mapping[str, Any], *, device: str = "auto", name: str = "table1+binary/1"
                      ) -> Evaluation:
    """Multi-type Table 1 metrics (:func:`dapo.experiments.sweep.multitype_on`) and binary image / pixel
    metrics (:func:`dapo.experiments.sweep.binary_on`) on every dataset, as one cached evaluation (its cache
    name carries the dataset names, so evaluations on other targets are never confused)."""
    from dapo.experiments.sweep import Evaluation, binary_on, multitype_on

    multitype, binary = multitype_on(datasets, device=device), binary_on(datasets, device=device)
    return Evaluation(f"{name}-{'+'.join(datasets)}",
                      lambda model: pd.concat([multitype.fn(model), binary.fn(model)], ignore_index=True))


def evaluate_variant(cfg, method: str, run_dir: str | Path, *, seed: int, variant: str,
                     transform: Callable[[Any], Any], evaluate: Evaluation, backbone, device: str = "auto",
                     precision: str = "auto", epoch: int | None = None, overrides: Mapping[str, Any] | None = None
                     ) -> pd.DataFrame:
    """Evaluate ``transform(model)`` for the trained ``method`` (default setting unless
    ``overrides``) at ``epoch`` (default the profile's), cached beside its checkpoint under
    ``<evaluation>@<variant>``. Returns ``seed, epoch, dataset, metric, value`` rows."""
    from dapo.experiments.runs import find_checkpoint, non_default, train_or_load
    from dapo.experiments.sweep import Evaluation, cached_evaluation

    overrides = non_default(method, dict(overrides or {}))
    model, history = train_or_load(cfg, method, run_dir, seed=seed, epochs=epoch, backbone=backbone, device=device,
                                   precision=precision, progress=False, **overrides)
    if history is None:
        raise ValueError(f"{method} is training-free: it has no checkpoint to evaluate a variant of")
    trained = int(history["epoch"].max())
    path = find_checkpoint(run_dir, method, seed, overrides, trained)
    named = Evaluation(f"{evaluate.name}@{variant}", evaluate.fn, evaluate.key)
    return cached_evaluation(named, path, transform(model)).assign(seed=seed, epoch=trained)


def evaluate_settings(cfg, method: str, run_dir: str | Path, *, settings: Sequence[Mapping[str, Any]],
                      seeds: Sequence[int], evaluate: Evaluation, backbone, device: str = "auto",
                      precision: str = "auto", progress: bool = True) -> pd.DataFrame:
    """The default and every setting of ``settings`` for every seed: a tidy table with columns
    ``setting, kind, seed, epoch, dataset, metric, value`` (``setting`` = :func:`setting_label`).

    Trained settings go through :func:`dapo.experiments.sweep.sweep`; inference-only ones
    (:func:`inference_only`) are evaluated on the default checkpoints with the field changed.
    """
    from dapo.experiments.sweep import sweep

    frames = []
    for setting in [{}, *[dict(s) for s in settings if dict(s)]]:
        label, kind = setting_label(setting), switch_kind(setting)
        if inference_only(setting):
            frame = pd.concat([evaluate_variant(cfg, method, run_dir, seed=seed, variant=label, evaluate=evaluate,
                                                transform=lambda model, s=setting: with_config(model, **s),
                                                backbone=backbone, device=device, precision=precision)
                               for seed in seeds], ignore_index=True)
        else:
            frame = sweep(cfg, method, run_dir, grid=[setting], seeds=seeds, evaluate=evaluate, backbone=backbone,
                          device=device, precision=precision, progress=progress)
            frame = frame.drop(columns=list(setting))
        frames.append(frame.assign(setting=label, kind=kind))
    table = pd.concat(frames, ignore_index=True)
    return table[["setting", "kind", "seed", "epoch", "dataset", "metric", "value"]]


def evaluate_preset(cfg, method: str, run_dir: str | Path, *, seeds: Sequence[int], evaluate: Evaluation,
                    backbone, device: str = "auto", precision: str = "auto", progress: bool = True) -> pd.DataFrame:
    """A whole preset (e.g. ``dapo_official``) in the layout of :func:`evaluate_settings`
    (``setting = "preset <method>"``, ``kind = "preset"``)."""
    from dapo.experiments.sweep import sweep

    frame = sweep(cfg, method, run_dir, grid=[{}], seeds=seeds, evaluate=evaluate, backbone=backbone, device=device,
                  precision=precision, progress=progress)
    frame = frame.assign(setting=f"preset {method}", kind="preset")
    return frame[["setting", "kind", "seed", "epoch", "dataset", "metric", "value"]]


def effects(tidy: pd.DataFrame, *, baseline: str = BASELINE, metrics: Sequence[str] | None = FIDELITY_METRICS,
            scale: float = 100.0) -> pd.DataFrame:
    """Mean and std over seeds of every (setting, dataset, metric), and the difference to
    ``baseline`` computed seed by seed (paired: the same seed's default run), its mean and std.

    Columns: ``setting, kind, dataset, metric, mean, std, n, delta, delta_std`` (values times
    ``scale``: percent by default; std with ddof 1, NaN for one seed). A setting evaluated on
    seeds the baseline lacks gets NaN differences for them.
    """
    if baseline not in set(tidy["setting"]):
        raise ValueError(f"no rows of the baseline setting {baseline!r}; settings: {sorted(set(tidy['setting']))}")
    rows = tidy if metrics is None else tidy[tidy["metric"].isin(metrics)]
    keys = ["seed", "dataset", "metric"]
    base = rows[rows["setting"] == baseline][[*keys, "value"]].rename(columns={"value": "base"})
    if base.duplicated(keys).any():
        raise ValueError("the baseline has several rows per (seed, dataset, metric): pass one epoch only")
    merged = rows.merge(base, on=keys, how="left")
    merged = merged.assign(value=merged["value"] * scale, delta=(merged["value"] - merged["base"]) * scale)
    grouped = merged.groupby(["setting", "kind", "dataset", "metric"], sort=False)
    return grouped.agg(mean=("value", "mean"), std=("value", "std"), n=("value", "count"),
                       delta=("delta", "mean"), delta_std=("delta", "std")).reset_index()


def effects_view(table: pd.DataFrame, decimals: int = 1, baseline: str = BASELINE) -> pd.DataFrame:
    """One row per setting (columns ``setting``, ``kind``), one column per (dataset, metric):
    ``"mean ± std (Δ ± std)"`` (no Δ for the ``baseline`` setting)."""
    def cell(row) -> str:
        value = f"{row['mean']:.{decimals}f}" + ("" if pd.isna(row["std"]) else f" ± {row['std']:.{decimals}f}")
        if row["setting"] == baseline or pd.isna(row["delta"]):
            return value
        delta = f"{row['delta']:+.{decimals}f}" + ("" if pd.isna(row["delta_std"]) else f" ± {row['delta_std']:.{decimals}f}")
        return f"{value} (Δ {delta})"

    frame = table.assign(cell=table.apply(cell, axis=1), column=table["dataset"] + " " + table["metric"])
    view = frame.pivot_table(index=["setting", "kind"], columns="column", values="cell", aggfunc="first", sort=False)
    view.columns.name = None
    return view.reset_index()
