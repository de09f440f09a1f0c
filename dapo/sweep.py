"""Sweeps: train every (setting, seed) once, evaluate chosen epochs, return one tidy table.

``sweep(cfg, "dapo", run_dir, grid={"lam": [1, 4, 16]}, seeds=[0, 1, 2], evaluate=binary_on(targets))``
trains each setting and seed through :func:`dapo.experiments.train_or_load` (one checkpoint
folder per setting and seed, named by the setting; a folder holding another configuration is
refused, never silently reused), so an interrupted sweep resumes where it stopped. A setting
equal to the method's defaults shares the ``default`` folder with the notebooks' headline runs.
Evaluations are cached beside each checkpoint, keyed by the evaluation's name and the
checkpoint's content hash. The result has one row per (setting, seed, epoch, dataset, metric),
and per value of any further key an evaluation returns (``binary_on(..., per_product=True)``: ``product``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from dapo.experiments import checkpoint_dir, evaluate_binary, evaluate_multitype, non_default, train_or_load
from dapo.progress import tqdm

TIDY_COLUMNS = ("seed", "epoch", "dataset", "metric", "value")
#: Further key columns an evaluation may return beside ``dataset``, kept in this order.
EXTRA_KEYS = ("product",)


def grid_settings(grid: Mapping[str, Sequence] | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The settings of a grid: a dict of field -> values is expanded as a Cartesian product; a list
    of dicts is taken as given (for settings that move together, e.g. text and vision depth)."""
    if isinstance(grid, Mapping):
        keys = list(grid)
        return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
    settings = [dict(setting) for setting in grid]
    if not settings:
        raise ValueError("the sweep grid is empty")
    return settings


class Evaluation:
    """A named evaluation of a model: ``fn(model) -> DataFrame`` with columns dataset, metric, value
    (and optionally the keys of :data:`EXTRA_KEYS`, e.g. ``product``).

    ``name`` keys the cache; change it (e.g. a version suffix) when the evaluation changes.
    """

    def __init__(self, name: str, fn: Callable[[Any], pd.DataFrame]) -> None:
        self.name, self.fn = name, fn

    def __call__(self, model) -> pd.DataFrame:
        frame = self.fn(model)
        missing = {"dataset", "metric", "value"} - set(frame.columns)
        if missing:
            raise ValueError(f"evaluation {self.name!r} returned no {sorted(missing)} columns")
        return frame[["dataset", *(key for key in EXTRA_KEYS if key in frame.columns), "metric", "value"]]


def binary_on(datasets: Mapping[str, Any], *, device: str = "auto", per_product: bool = False,
              name: str | None = None) -> Evaluation:
    """Dataset-mean binary metrics (image AUROC/AP/F1-max, pixel AUROC/AP/F1-max/AUPRO) on each dataset;
    ``per_product``: every product's too, in a ``product`` column (the dataset mean as ``"mean"``)."""
    def fn(model) -> pd.DataFrame:
        rows = []
        for dataset_name, dataset in datasets.items():
            table = evaluate_binary(model, dataset, device=device, progress=False)
            for product in (table.index if per_product else ["mean"]):
                key = {"dataset": dataset_name, **({"product": str(product)} if per_product else {})}
                rows += [{**key, "metric": metric, "value": float(value)}
                         for metric, value in table.loc[product].items()]
        return pd.DataFrame(rows)
    return Evaluation(name or ("binary_products/1" if per_product else "binary/1"), fn)


def multitype_on(datasets: Mapping[str, Any], *, device: str = "auto", name: str = "multitype/1") -> Evaluation:
    """Dataset-level multi-type pixel AUROC / AP / F1 (macro) on each dataset."""
    def fn(model) -> pd.DataFrame:
        rows = []
        for dataset_name, dataset in datasets.items():
            summary = evaluate_multitype(model, dataset, device=device, progress=False).summary
            rows += [{"dataset": dataset_name, "metric": f"multitype_{metric}", "value": float(summary[metric].iloc[0])}
                     for metric in ("auroc", "ap", "f1")]
        return pd.DataFrame(rows)
    return Evaluation(name, fn)


def _cached(evaluation: Evaluation, checkpoint: Path, model) -> pd.DataFrame:
    """``evaluation(model)``, stored beside ``checkpoint`` under its name, the checkpoint's hash and
    the precision ``"auto"`` means now (an fp32 run never reads a bf16 run's numbers)."""
    from dapo.backbone import file_sha256
    from dapo.precision import resolve_precision

    safe = evaluation.name.replace("/", "_")
    precision = resolve_precision("auto", model.device)
    path = (checkpoint.parent / "evaluations" /
            f"{safe}-{checkpoint.stem}-{precision}-{file_sha256(checkpoint)[:12]}.csv")
    if path.is_file():
        return pd.read_csv(path)
    from dapo.atomic import atomic_path

    frame = evaluation(model)
    with atomic_path(path) as temporary:
        frame.to_csv(temporary, index=False)
    return frame


def sweep(cfg, method: str, run_dir: str | Path, *, grid, seeds: Sequence[int], evaluate: Evaluation,
          epochs: int | None = None, eval_epochs: Sequence[int] | None = None, backbone=None,
          device: str = "auto", precision: str = "auto", progress: bool = True) -> pd.DataFrame:
    """Train and evaluate ``method`` for every setting of ``grid`` and every seed.

    ``epochs`` (default: the profile's) is trained; ``eval_epochs`` (default: only the last)
    are evaluated from their own checkpoints. Returns a tidy DataFrame: the grid's fields, then
    ``seed, epoch, dataset, metric, value``.
    """
    from dapo.checkpoint import epoch_path, load_trained
    from dapo.experiments import load_profile_backbone

    settings = grid_settings(grid)
    fields = list(dict.fromkeys(key for setting in settings for key in setting))
    backbone = backbone or load_profile_backbone(cfg, device)
    train_epochs = max(eval_epochs) if eval_epochs else (epochs or cfg.epochs)
    frames = []
    bar = tqdm(total=len(settings) * len(seeds), desc=f"{method} sweep", disable=not progress)
    for setting in settings:
        overrides = non_default(method, setting)
        for seed in seeds:
            bar.set_postfix_str(", ".join(f"{k}={v}" for k, v in setting.items()) + f", seed={seed}")
            model, history = train_or_load(cfg, method, run_dir, seed=seed, epochs=train_epochs, backbone=backbone,
                                           device=device, precision=precision, progress=False, **overrides)
            if history is None:
                raise ValueError(f"{method} is training-free: there is nothing to sweep")
            trained = int(history["epoch"].max())
            folder = checkpoint_dir(run_dir, method, seed, overrides)
            for epoch in eval_epochs or [trained]:
                path = epoch_path(folder, epoch)
                evaluated = model if epoch == trained else load_trained(path, backbone)
                frame = _cached(evaluate, path, evaluated).assign(seed=seed, epoch=epoch)
                for key in fields:
                    frame[key] = [setting.get(key)] * len(frame)
                frames.append(frame)
            bar.update()
    bar.close()
    table = pd.concat(frames, ignore_index=True)
    extra = [key for key in EXTRA_KEYS if key in table.columns]
    return table[[*fields, "seed", "epoch", "dataset", *extra, "metric", "value"]]


def mean_std(table: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Mean, standard deviation (ddof 1) and count over seeds of a tidy table, grouped by ``by``."""
    grouped = table.groupby(list(by), sort=False, dropna=False)["value"]
    return grouped.agg(mean="mean", std="std", n="count").reset_index()
