"""What a run trained, loaded and evaluated: for its stamps, the seeds aggregated and the precisions
trained in; for :mod:`dapo.experiments.timings`, where its time went.

:func:`dapo.experiments.runs.start_run` clears it; :func:`dapo.experiments.runs.train_or_load` records each
trained method's checkpoint; :class:`dapo.experiments.runs.Run` stamps every table and figure with it,
so a table of three seeds says ``seeds=0,1,2`` and a table whose models were trained in fp32 and
evaluated in bf16 says both. Each training (trained or loaded) and each evaluation (computed or read
from the evaluation cache) is also recorded with its wall time (:func:`record_work`).
"""

from __future__ import annotations

import functools
import inspect
import json
import time
from pathlib import Path

_MODELS: dict[tuple[str, int], str] = {}
_WORK: list[dict] = []
_TIMING = [0]  # depth of timed evaluations in progress: an evaluation inside another is not counted twice

#: What :func:`record_work` accepts: kind -> outcomes.
OUTCOMES = {"training": ("trained", "loaded"), "evaluation": ("computed", "cached")}


def reset() -> None:
    """A new run: nothing trained, loaded or evaluated yet."""
    _MODELS.clear()
    _WORK.clear()


def record_work(kind: str, key: str, outcome: str, seconds: float) -> None:
    """Note one training (``key``: its checkpoint, relative to the run's folder) or evaluation
    (``key``: the evaluator and what it evaluated), whether it was done or reused, and its wall time."""
    if outcome not in OUTCOMES.get(kind, ()):
        raise ValueError(f"record_work: kind {kind!r} with outcome {outcome!r}; expected one of {OUTCOMES}")
    _WORK.append({"kind": kind, "key": key, "outcome": outcome, "seconds": round(float(seconds), 3)})


def work() -> list[dict]:
    """The trainings and evaluations recorded since :func:`reset`, in order."""
    return [dict(entry) for entry in _WORK]


def timed_evaluation(evaluate):
    """Decorate an evaluator whose ``desc`` names what it evaluates: its wall time is recorded as a
    computed evaluation (when it returns, and not when it runs inside another timed evaluation)."""
    default = inspect.signature(evaluate).parameters["desc"].default

    @functools.wraps(evaluate)
    def timed(*args, **kwargs):
        _TIMING[0] += 1
        start = time.perf_counter()
        try:
            result = evaluate(*args, **kwargs)
        finally:
            _TIMING[0] -= 1
        if not _TIMING[0]:
            record_work("evaluation", f"{evaluate.__name__}: {kwargs.get('desc', default)}", "computed",
                        time.perf_counter() - start)
        return result
    return timed


def trained_precision(checkpoint: str | Path) -> str:
    """The precision a checkpoint was trained in: its recipe's, resolved (older files recorded
    ``auto`` there and the resolved one in the folder's ``config.json``), else ``unknown``."""
    from dapo.engine.checkpoint import read_metadata

    training = read_metadata(checkpoint)["training"]
    precision = training.precision if training is not None else "auto"
    if precision == "auto":
        config = Path(checkpoint).parent / "config.json"
        try:
            precision = json.loads(config.read_text()).get("precision_resolved", "unknown")
        except (OSError, ValueError):
            precision = "unknown"
    return precision


def record_model(method: str, seed: int, checkpoint: str | Path | None) -> None:
    """Note that the run uses ``method`` trained with ``seed`` (its checkpoint tells the precision)."""
    _MODELS[method, int(seed)] = trained_precision(checkpoint) if checkpoint is not None else "unknown"


def seeds() -> tuple[int, ...]:
    """The training seeds of every model the run used, sorted (empty before any)."""
    return tuple(sorted({seed for _, seed in _MODELS}))


def training_precisions() -> tuple[str, ...]:
    """The precisions the run's models were trained in, sorted (empty before any)."""
    return tuple(sorted(set(_MODELS.values())))
