"""What a run trained or loaded, for its stamps: the seeds aggregated and the precisions trained in.

:func:`dapo.experiments.runs.start_run` clears it; :func:`dapo.experiments.runs.train_or_load` records each
trained method's checkpoint; :class:`dapo.experiments.runs.Run` stamps every table and figure with it,
so a table of three seeds says ``seeds=0,1,2`` and a table whose models were trained in fp32 and
evaluated in bf16 says both.
"""

from __future__ import annotations

import json
from pathlib import Path

_MODELS: dict[tuple[str, int], str] = {}


def reset() -> None:
    """A new run: nothing trained or loaded yet."""
    _MODELS.clear()


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
