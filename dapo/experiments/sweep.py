"""Sweeps: train every (setting, seed) once, evaluate chosen epochs, return one tidy table.

``sweep(cfg, "dapo", run_dir, grid={"lam": [1, 4, 16]}, seeds=[0, 1, 2], evaluate=binary_on(targets))``
trains each setting and seed through :func:`dapo.experiments.runs.train_or_load` (one checkpoint
folder per setting, seed and training length, named by the setting; a folder holding another
configuration is refused, never silently reused; nothing written is rewritten), so an interrupted
sweep resumes where it stopped. A setting equal to the method's defaults shares the ``default``
folder with the notebooks' headline runs; each epoch is read from whichever folder of the
setting holds it (:func:`dapo.experiments.runs.find_checkpoint`).
Evaluations are cached beside each checkpoint (:func:`cached_evaluation`): a CSV and, written
after it, a key file that marks it complete and records what produced it (the dapo version and a
hash of its source, the evaluation's name and datasets, the checkpoint's bytes, the backbone and
the precision). An entry without its key file (an interrupted write), with another key, or whose
CSV no longer matches the hash in its key file is ignored and recomputed, with a one-line note
(:mod:`dapo.experiments.evaluation_cache` holds these helpers, shared with the notebooks' cache).
The result has one row per (setting, seed, epoch, dataset, metric),
and per value of any further key an evaluation returns (``binary_on(..., per_product=True)``: ``product``).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from dapo.experiments.evaluation_cache import (  # noqa: F401 (dataset_key, code_fingerprint: re-exported)
    PRESENTATION,
    code_fingerprint,
    dataset_key,
    note,
    read_entry,
    write_entry,
)
from dapo.experiments.runs import evaluate_binary, evaluate_multitype, find_checkpoint, non_default, train_or_load
from dapo.util.progress import tqdm

TIDY_COLUMNS = ("seed", "epoch", "dataset", "metric", "value")
#: Further key columns an evaluation may return beside ``dataset``, kept in this order.
EXTRA_KEYS = ("product",)


def grid_settings(grid: Mapping[str, Sequence] | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The settings of a grid: a dict of field -> values is expanded as a Cartesian product; a list
    of dicts is taken as given (for settings that move together, e.g. text and vision depth)."""
    if isinstance(grid, Mapping):
        keys = list(grid)
        axes = []
        for key in keys:
            values = list(grid[key]) if hasattr(grid[key], "__iter__") and not isinstance(grid[key], (str, bytes)) else []
            if not values:
                raise ValueError(f"grid[{key!r}]={grid[key]!r}: expected a non-empty list of values")
            axes.append(values)
        if not keys:
            raise ValueError("the sweep grid is empty")
        return [dict(zip(keys, values)) for values in itertools.product(*axes)]
    if isinstance(grid, (str, bytes)) or not all(isinstance(setting, Mapping) for setting in grid):
        raise ValueError(f"grid={grid!r}: expected a dict of field -> values or a list of dicts of fields")
    settings = [dict(setting) for setting in grid]
    if not settings:
        raise ValueError("the sweep grid is empty")
    return settings


class Evaluation:
    """A named evaluation of a model: ``fn(model) -> DataFrame`` with columns dataset, metric, value
    (and optionally the keys of :data:`EXTRA_KEYS`, e.g. ``product``).

    ``name`` and ``key`` (a JSON-ready description of what is evaluated, e.g. the datasets'
    roots, sizes and image lists; :func:`dataset_key`) key the cache: an entry made with another
    name or key is recomputed. Change ``name`` (e.g. a version suffix) when ``fn`` changes in a
    way the package's source hash cannot see.
    """

    def __init__(self, name: str, fn: Callable[[Any], pd.DataFrame], key: Any = None) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"Evaluation name={name!r}: expected a non-empty string (it names the cache)")
        if not callable(fn):
            raise TypeError(f"Evaluation fn={fn!r}: expected a callable fn(model) -> DataFrame")
        self.name, self.fn, self.key = name, fn, key

    def __call__(self, model) -> pd.DataFrame:
        frame = self.fn(model)
        missing = {"dataset", "metric", "value"} - set(frame.columns)
        if missing:
            raise ValueError(f"evaluation {self.name!r} returned no {sorted(missing)} columns")
        return frame[["dataset", *(key for key in EXTRA_KEYS if key in frame.columns), "metric", "value"]]


def _check_datasets(datasets: Any) -> None:
    if not isinstance(datasets, Mapping) or not datasets or not all(isinstance(k, str) for k in datasets):
        raise ValueError(f"datasets={datasets!r}: expected a non-empty dict of dataset name -> opened dataset, "
                         f"e.g. {{'visa': open_profile_dataset(cfg, 'visa')}}")


def binary_on(datasets: Mapping[str, Any], *, device: str = "auto", per_product: bool = False,
              name: str | None = None) -> Evaluation:
    """Dataset-mean binary metrics (image AUROC/AP/F1-max, pixel AUROC/AP/F1-max/AUPRO) on each dataset;
    ``per_product``: every product's too, in a ``product`` column (the dataset mean as ``"mean"``)."""
    _check_datasets(datasets)

    def fn(model) -> pd.DataFrame:
        rows = []
        for dataset_name, dataset in datasets.items():
            table = evaluate_binary(model, dataset, device=device, progress=False)
            for product in (table.index if per_product else ["mean"]):
                key = {"dataset": dataset_name, **({"product": str(product)} if per_product else {})}
                rows += [{**key, "metric": metric, "value": float(value)}
                         for metric, value in table.loc[product].items()]
        return pd.DataFrame(rows)
    return Evaluation(name or ("binary_products/1" if per_product else "binary/1"), fn,
                      {name: dataset_key(dataset) for name, dataset in datasets.items()})


def multitype_on(datasets: Mapping[str, Any], *, device: str = "auto", name: str = "multitype/1") -> Evaluation:
    """Dataset-level multi-type pixel AUROC / AP / F1 (macro) on each dataset."""
    _check_datasets(datasets)

    def fn(model) -> pd.DataFrame:
        rows = []
        for dataset_name, dataset in datasets.items():
            summary = evaluate_multitype(model, dataset, device=device, progress=False).summary
            rows += [{"dataset": dataset_name, "metric": f"multitype_{metric}", "value": float(summary[metric].iloc[0])}
                     for metric in ("auroc", "ap", "f1")]
        return pd.DataFrame(rows)
    return Evaluation(name, fn, {name: dataset_key(dataset) for name, dataset in datasets.items()})


CACHE_FORMAT = "dapo-evaluation-cache/2"


def cache_key(evaluation: Evaluation, checkpoint: Path, model, precision: str) -> dict:
    """What produced an evaluation: code, evaluation, checkpoint bytes, backbone and precision."""
    import dapo
    from dapo.clip.backbone import file_sha256

    backbone = getattr(model, "backbone", None)
    return {"format": CACHE_FORMAT, "dapo": dapo.__version__, "code": code_fingerprint(),
            "evaluation": evaluation.name,
            "evaluation_key": hashlib.sha256(json.dumps(evaluation.key, sort_keys=True, default=str).encode()
                                             ).hexdigest()[:16],
            "checkpoint_sha256": file_sha256(checkpoint),
            "backbone": backbone.describe() if hasattr(backbone, "describe") else None, "precision": precision}


def read_cached(path: Path, key: dict) -> pd.DataFrame | None:
    """The cached table at ``path`` if its key file marks it complete, matches ``key`` and its hash; else
    ``None`` after a one-line note saying why (nothing is noted when there is no entry at all)."""
    found = read_entry(path, key, "csv_sha256")
    if found is None:
        return None
    content, saved = found
    try:
        frame = pd.read_csv(io.BytesIO(content))
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as error:
        note(path, f"cannot be read as CSV ({type(error).__name__})")
        return None
    if not {"dataset", "metric", "value"} <= set(frame.columns) or len(frame) != saved.get("rows", len(frame)):
        note(path, "lacks the columns dataset, metric, value or rows its key file counts")
        return None
    return frame


def cached_evaluation(evaluation: Evaluation, checkpoint: Path, model) -> pd.DataFrame:
    """``evaluation(model)``, cached beside ``checkpoint`` (module docstring): read back only when its
    key file says it is complete and was produced by the same code, evaluation, checkpoint bytes,
    backbone and precision (``"auto"`` resolved now: an fp32 run never reads a bf16 run's numbers).

    Trusts its caller (:func:`sweep`, :mod:`dapo.experiments.fidelity`): ``model`` must be the model of ``checkpoint``.
    """
    from dapo.util.precision import resolve_precision

    safe = evaluation.name.replace("/", "_")
    precision = resolve_precision("auto", model.device)
    key = cache_key(evaluation, checkpoint, model, precision)
    path = (checkpoint.parent / "evaluations" /
            f"{safe}-{checkpoint.stem}-{precision}-{key['checkpoint_sha256'][:12]}.csv")
    cached = read_cached(path, key)
    if cached is not None:
        return cached
    frame = evaluation(model)
    write_entry(path, key, lambda temporary: frame.to_csv(temporary, index=False), "csv_sha256", rows=len(frame))
    return frame


def check_sweep_arguments(*, seeds, evaluate, epochs, eval_epochs) -> None:
    """The user's values of :func:`sweep`, checked as the notebooks' parameters are (naming the parameter)."""
    from dapo.experiments.parameters import ParameterError, epoch_list, integer, seed_list

    seed_list("seeds", seeds)
    integer(minimum=1, optional=True)("epochs", epochs)
    if eval_epochs is not None:
        epoch_list("eval_epochs", eval_epochs)
    if not isinstance(evaluate, Evaluation):
        raise ParameterError(f"evaluate={evaluate!r}: expected an Evaluation (binary_on(...), multitype_on(...) or "
                             f"Evaluation(name, fn))")


def sweep(cfg, method: str, run_dir: str | Path, *, grid, seeds: Sequence[int], evaluate: Evaluation,
          epochs: int | None = None, eval_epochs: Sequence[int] | None = None, backbone=None,
          device: str = "auto", precision: str = "auto", progress: bool = True,
          shard: bool | None = None) -> pd.DataFrame:
    """Train and evaluate ``method`` for every setting of ``grid`` and every seed.

    ``epochs`` (default: the profile's) is trained; ``eval_epochs`` (default: only the last)
    are evaluated from their own checkpoints. Returns a tidy DataFrame: the grid's fields, then
    ``seed, epoch, dataset, metric, value``.

    Under torchrun, ``shard`` (default: whenever several ranks are joined) spreads the (setting,
    seed) jobs over the ranks round robin (:func:`dapo.engine.distributed.my_jobs`); each rank runs its
    jobs alone on its own device and every rank returns the whole table, equal to the
    sequential one. A lost rank's jobs are rerun on restart from the checkpoint and evaluation
    caches. ``shard=False`` runs every job data-parallel over all ranks instead.
    """
    from contextlib import nullcontext

    from dapo.engine import distributed
    from dapo.engine.checkpoint import load_trained
    from dapo.experiments.runs import load_profile_backbone
    from dapo.util.precision import resolve_device

    check_sweep_arguments(seeds=seeds, evaluate=evaluate, epochs=epochs, eval_epochs=eval_epochs)
    settings = grid_settings(grid)
    fields = list(dict.fromkeys(key for setting in settings for key in setting))
    shard = distributed.current().size > 1 if shard is None else shard
    if shard:
        device = str(distributed.rank_device(resolve_device(device), distributed.current()))
    backbone = backbone or load_profile_backbone(cfg, device)
    train_epochs = max(eval_epochs) if eval_epochs else (epochs or cfg.epochs)
    jobs = [(setting, seed) for setting in settings for seed in seeds]
    mine = distributed.my_jobs(len(jobs)) if shard else range(len(jobs))
    frames: dict[int, list[pd.DataFrame]] = {}
    bar = tqdm(total=len(mine), desc=f"{method} sweep", disable=not progress)
    for index in mine:
        setting, seed = jobs[index]
        overrides = non_default(method, setting)
        frames[index] = []
        with distributed.alone() if shard else nullcontext():
            bar.set_postfix_str(", ".join(f"{k}={v}" for k, v in setting.items()) + f", seed={seed}")
            model, history = train_or_load(cfg, method, run_dir, seed=seed, epochs=train_epochs, backbone=backbone,
                                           device=device, precision=precision, progress=False, **overrides)
            if history is None:
                raise ValueError(f"{method} is training-free: there is nothing to sweep")
            trained = int(history["epoch"].max())
            for epoch in eval_epochs or [trained]:
                path = find_checkpoint(run_dir, method, seed, overrides, epoch)
                evaluated = model if epoch == trained else load_trained(path, backbone)
                frame = cached_evaluation(evaluate, path, evaluated).assign(seed=seed, epoch=epoch)
                for key in fields:
                    frame[key] = [setting.get(key)] * len(frame)
                frames[index].append(frame)
            bar.update()
    bar.close()
    if shard:
        frames = {index: part for shares in distributed.all_gather(frames) for index, part in shares.items()}
    table = pd.concat([frame for index in sorted(frames) for frame in frames[index]], ignore_index=True)
    extra = [key for key in EXTRA_KEYS if key in table.columns]
    return table[[*fields, "seed", "epoch", "dataset", *extra, "metric", "value"]]


def mean_std(table: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Mean, standard deviation (ddof 1) and count over seeds of a tidy table, grouped by ``by``."""
    grouped = table.groupby(list(by), sort=False, dropna=False)["value"]
    return grouped.agg(mean="mean", std="std", n="count").reset_index()

