"""One evaluation cache shared by every notebook of a results folder, keyed by what determines a result.

:func:`dapo.experiments.runs.evaluate_methods` reads a binary evaluation back from here instead of
computing it again when the same evaluation of the same model on the same dataset in the same
precision was computed before, by this notebook or another one (notebook 13 re-evaluates the
Table 3 methods that notebook 04 evaluated). An entry's key (:func:`entry_key`) holds:

* the evaluation: the evaluator's qualified name and its result-relevant arguments (``batch_size``,
  ``thresholds``, ...; never ``desc``, ``progress``, ``device`` or ``num_workers``);
* the model (:func:`model_fingerprint`): its class, ``config.to_dict()`` (an inference variant such
  as MultiADS-F shares MultiADS's parameters but not its key), the SHA-256 of every tensor of its
  ``state_dict`` but the frozen backbone's, and ``backbone.describe()`` (the backbone's tensors are
  hashed too when it has no weights file to name them);
* the dataset (:func:`dataset_key`), the evaluation precision resolved for the device, and the
  package's code and version (:func:`code_fingerprint`).

What is cached is chosen by :func:`dapo.experiments.runs.evaluate_methods`: its two binary
evaluators, :func:`~dapo.experiments.runs.evaluate_binary_curves` and
:func:`~dapo.experiments.runs.evaluate_binary`, share one entry (the curves at the default
thresholds, whose ``table`` is the frame ``evaluate_binary`` computes). An entry holds DataFrames,
stored exactly (pickle: dtypes, index and float bits come back as they were). The multi-label and
multi-type evaluators return evaluator objects (streamed scores, not tables): they are not cached,
nor is any other function.

Storage: ``<run.out_dir>/cache/evaluations/<model name>-<key digest>/result.pkl`` (gitignored), written
atomically; ``result.pkl.key.json``, written after it, marks it complete and records its key and hash.
An entry without its key file, with another key, or whose bytes no longer match the hash is
ignored and recomputed with a one-line note; the pickle is read only after its hash matched. A hit
prints ``<desc>: read from the evaluation cache`` where the evaluation's progress bar would be. Each
entry has its own lock (:func:`dapo.engine.checkpoint_store.folder_lock`): a second process asking
for an entry being computed waits, then reads it.

Turn it off with ``DAPO_EVALUATION_CACHE=0`` (or ``evaluate_methods(..., cache=None)``). It is off
under torchrun with several ranks (the ranks evaluate together) and outside a run started by
:func:`dapo.experiments.runs.start_run` unless a folder is given.

:func:`code_fingerprint`, :func:`read_entry` and :func:`write_entry` are shared with the sweeps'
per-checkpoint cache (:func:`dapo.experiments.sweep.cached_evaluation`).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import sys
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dapo.util.paths import shown_path

#: The environment variable that turns the shared cache off (``0``, ``false``, ``no`` or ``off``).
ENVIRONMENT = "DAPO_EVALUATION_CACHE"
FORMAT = "dapo-shared-evaluation-cache/1"
RESULT = "result.pkl"
#: Arguments of an evaluator that cannot change its result (left out of the key).
NOT_IN_KEY = ("desc", "progress", "device", "num_workers", "precision")

#: Source files that cannot change an evaluation's numbers (left out of :func:`code_fingerprint`).
PRESENTATION = tuple(f"experiments/{name}.py" for name in ("plots", "tables", "reporting", "run_notebooks", "parameters",
                                                              "conclusions", "verdicts", "claims", "reproduce")) + ("__main__.py",)


def code_fingerprint() -> str:
    """SHA-256 (16 hex digits) of the package's source and knowledge files, presentation modules and the
    command line aside: any change to the code that computes an evaluation changes it."""
    import dapo

    package = Path(dapo.__file__).parent
    digest = hashlib.sha256()
    files = sorted([*package.rglob("*.py"), *package.glob("data/knowledge/*.yaml")])
    for path in files:
        relative = path.relative_to(package).as_posix()
        if relative.startswith("cli/") or relative in PRESENTATION:
            continue
        digest.update(relative.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def dataset_key(dataset: Any) -> Any:
    """What identifies a dataset's evaluation: its class, root, input size, split, normalisation, a
    hash of its image and mask paths, and a generated world's signature (its seed and size) when the
    root holds one (a dataset without ``records`` gives its ``repr``)."""
    from dapo.synthetic.worlds import MARKER

    records = getattr(dataset, "records", None)
    if records is None:
        return {"class": type(dataset).__name__, "repr": repr(dataset)[:200]}
    paths = hashlib.sha256("\n".join(f"{r.path}|{r.mask_path}|{','.join(r.native)}" for r in records).encode())
    root = str(getattr(dataset, "root", ""))
    marker = Path(root) / MARKER if root else None
    key = {"class": type(dataset).__name__, "root": root,
           "image_size": getattr(dataset, "image_size", None), "split": getattr(dataset, "split", None),
           "vocab_scope": getattr(dataset, "vocab_scope", None),
           "exclude_multi_defect": getattr(dataset, "exclude_multi_defect", None),
           "mean": list(getattr(dataset, "mean", ()) or ()), "std": list(getattr(dataset, "std", ()) or ()),
           "images": len(records), "records_sha256": paths.hexdigest()}
    if marker is not None and marker.is_file():
        key["world"] = hashlib.sha256(marker.read_bytes()).hexdigest()[:16]
    return key


# ----------------------------------------------------------------------------- entries (shared with sweep.py)


def note(path: Path, why: str) -> None:
    """The one-line note of an entry that is not used (its path inside the repository: no machine paths
    in executed notebooks)."""
    print(f"note: evaluation cache {shown_path(path)} {why}: recomputing it", file=sys.stderr)


def _differs(saved: dict, key: dict) -> str:
    fields = [field for field in key if saved.get(field) != key[field]]
    return ", ".join(fields) or "format"


def key_file(path: Path) -> Path:
    """The key file that marks the entry at ``path`` complete."""
    return path.with_name(path.name + ".key.json")


def read_entry(path: Path, key: dict, digest: str) -> tuple[bytes, dict] | None:
    """The bytes of the entry at ``path`` and its key file's content if the key file marks it complete,
    holds ``key`` and the SHA-256 of the bytes under ``digest``; else ``None`` after a one-line note
    saying why (nothing is noted when there is no entry at all)."""
    marker = key_file(path)
    if not path.is_file():
        return None
    if not marker.is_file():
        note(path, "has no key file (an interrupted write, or written by an older dapo)")
        return None
    try:
        saved = json.loads(marker.read_text(encoding="utf-8"))
        complete = isinstance(saved, dict) and isinstance(saved.get("key"), dict) and digest in saved
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        complete = False
    if not complete:
        note(path, f"has an unreadable key file {marker.name}")
        return None
    if saved["key"] != key:
        note(path, f"was produced by another {_differs(saved['key'], key)}")
        return None
    content = path.read_bytes()
    if hashlib.sha256(content).hexdigest() != saved[digest]:
        note(path, "does not match the hash in its key file (changed or partly written)")
        return None
    return content, saved


def write_entry(path: Path, key: dict, write: Callable[[Path], Any], digest: str, **extra: Any) -> None:
    """Write an entry atomically (``write(temporary_path)``), then its key file: ``key``, the entry's
    SHA-256 under ``digest`` and ``extra``."""
    from dapo.util.atomic import atomic_path, write_text

    with atomic_path(path) as temporary:
        write(temporary)
    marker = {"key": key, digest: hashlib.sha256(path.read_bytes()).hexdigest(), **extra}
    write_text(key_file(path), json.dumps(marker, indent=1, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------- the shared cache

_RUN_FOLDER: Path | None = None
_BACKBONE_TENSORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def enabled() -> bool:
    """Whether the shared cache is on (``DAPO_EVALUATION_CACHE`` is unset or not 0/false/no/off)."""
    return os.environ.get(ENVIRONMENT, "1").strip().lower() not in ("0", "false", "no", "off")


def set_run_folder(folder: str | Path | None) -> None:
    """The folder ``cache="auto"`` means from now on (:func:`dapo.experiments.runs.start_run`:
    ``<out_dir>/cache/evaluations``); ``None``: no cache."""
    global _RUN_FOLDER
    _RUN_FOLDER = None if folder is None else Path(folder)


def cache_folder(cache: str | Path | None = "auto") -> Path | None:
    """The folder entries are read from and written to, or ``None`` when the cache is off:
    ``"auto"`` is the current run's folder; a path is that folder; ``None``/``False`` is off."""
    from dapo.engine.distributed import current

    if not enabled() or cache is None or cache is False or current().size > 1:
        return None
    if isinstance(cache, str) and cache == "auto":
        return _RUN_FOLDER
    return Path(cache)


def _tensors_sha256(tensors: Mapping[str, Any]) -> str:
    import torch

    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_fingerprint(model) -> dict:
    """What identifies a model's predictions: class, config, non-backbone tensors, backbone."""
    backbone = getattr(model, "backbone", None)
    state = {name: tensor for name, tensor in model.state_dict().items() if not name.startswith("backbone.")}
    described = backbone.describe() if hasattr(backbone, "describe") else None
    fingerprint = {"class": f"{type(model).__module__}.{type(model).__qualname__}",
                   "config": model.config.to_dict(), "tensors_sha256": _tensors_sha256(state),
                   "backbone": described}
    if backbone is not None and not (described or {}).get("weights_sha256"):  # no weights file names them
        if backbone not in _BACKBONE_TENSORS:
            _BACKBONE_TENSORS[backbone] = _tensors_sha256(backbone.state_dict())
        fingerprint["backbone_tensors_sha256"] = _BACKBONE_TENSORS[backbone]
    return json.loads(json.dumps(fingerprint, default=str))  # as the key file will hold it


def entry_key(evaluation: str, arguments: Mapping[str, Any], model_key: dict, dataset, precision: str) -> dict:
    """The key of an entry (module docstring): ``evaluation`` (the evaluator's qualified name) and its
    result-relevant ``arguments`` (those of :data:`NOT_IN_KEY` are dropped), the model's
    :func:`model_fingerprint`, the dataset, the resolved ``precision``, the code and the version."""
    import dapo

    arguments = {k: v for k, v in arguments.items() if k not in NOT_IN_KEY}
    return json.loads(json.dumps(
        {"format": FORMAT, "dapo": dapo.__version__, "code": code_fingerprint(), "evaluation": evaluation,
         "arguments": arguments, "model": model_key, "dataset": dataset_key(dataset), "precision": precision},
        sort_keys=True, default=repr))


def entry_path(folder: Path, key: dict) -> Path:
    """``<folder>/<model name>-<key digest>/result.pkl``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(key["model"]["config"].get("name") or "model"))[:40]
    return folder / f"{name}-{digest}" / RESULT


def _read(path: Path, key: dict, parts: tuple[str, ...]) -> dict | None:
    import pandas as pd

    found = read_entry(path, key, "sha256")
    if found is None:
        return None
    try:
        frames = pickle.loads(found[0])  # noqa: S301 (our own entry, whose hash its key file holds)
    except Exception as error:  # noqa: BLE001 (any unreadable entry is recomputed)
        note(path, f"cannot be read ({type(error).__name__})")
        return None
    if not (isinstance(frames, dict) and tuple(frames) == parts
            and all(isinstance(frame, pd.DataFrame) for frame in frames.values())):
        note(path, f"does not hold the DataFrames {', '.join(parts)}")
        return None
    return frames


def cached(folder: Path, key: dict, compute: Callable[[], dict], parts: tuple[str, ...], *,
           announce: str | None = None) -> dict:
    """The DataFrames ``parts`` (a dict, in that order) of the entry ``key`` in ``folder``: read back when
    complete and intact, else ``compute()``d and written, under the entry's lock (a second process
    waits, then reads). ``announce``: the line printed (stderr) when the entry is read back."""
    from dapo.engine.checkpoint_store import folder_lock

    path = entry_path(folder, key)
    with folder_lock(path.parent, activity="evaluating"):
        frames = _read(path, key, parts)
        if frames is not None:
            if announce:
                print(announce, file=sys.stderr, flush=True)
            return frames
        frames = compute()
        if tuple(frames) != parts:
            raise ValueError(f"an evaluation for the cache returned {tuple(frames)}, expected the DataFrames {parts}")
        write_entry(path, key, lambda temporary: temporary.write_bytes(pickle.dumps(frames, protocol=5)), "sha256")
    return frames
