"""The checkpoint store: where a trained configuration lives, and the rule that nothing in it is rewritten.

Checkpoints are immutable. Once ``epoch_NNN.safetensors`` exists, no notebook, sweep, command or
API call rewrites or deletes it; a folder only grows, by exact resume (:func:`dapo.engine.train.train`).
One folder holds one training length, so a request for another length never has to rewrite one:

``<run_dir>/checkpoints/<method>/<setting>/seed<k>``, where ``<setting>`` names the non-default
fields (:func:`setting_name`) and ``epochs=N`` when the training length differs from the
profile's (``checkpoints/dapo/default/seed0`` holds the headline 2-epoch run,
``checkpoints/dapo/epochs=3/seed0`` a 3-epoch one).

Any epoch of a setting and seed is read from whichever of its folders holds it (a 3-epoch
training's epoch 2 is the 2-epoch training's: data order is seeded per epoch and no schedule
depends on the length; ``tests/test_checkpoint_store.py`` checks it), and a new folder starts
from a copy of the longest shorter training that still has its optimiser state (exact resume),
else from scratch. Both give the same weights, so results do not depend on which notebook ran
first. :func:`folder_lock` makes concurrent runs of one folder safe: the second waits, then
finds the epoch the first wrote.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dapo.util.paths import shown_path

DEFAULT_SETTING = "default"
MAX_SETTING_NAME = 96
LOCK_FILE = ".lock"
_EPOCHS = re.compile(r"(?:^|,)epochs=(\d+)(?:,|$)")


def setting_name(overrides: Mapping[str, Any]) -> str:
    """Folder name of a setting: ``default``, or ``key=value`` pairs sorted by key (``lam=8,n_ctx=2``);
    a name longer than 96 characters keeps its start and ends in a hash of the whole setting."""
    if not overrides:
        return DEFAULT_SETTING
    parts = []
    for key in sorted(overrides):
        value = overrides[key]
        text = "-".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        parts.append(f"{key}={re.sub(r'[^A-Za-z0-9._-]+', '_', text)}")
    name = ",".join(parts)
    if len(name) <= MAX_SETTING_NAME:
        return name
    digest = hashlib.sha256(json.dumps(dict(overrides), sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"{name[:MAX_SETTING_NAME - 18]}~{digest}"


def checkpoint_dir(run_dir: str | Path, method: str, seed: int = 0, overrides: Mapping[str, Any] | None = None,
                   epochs: int | None = None) -> Path:
    """``run_dir/checkpoints/<method>/<setting>/seed<k>``: one folder per trained configuration and
    training length (``epochs``: ``None`` for the profile's length, else part of the setting's name)."""
    setting = dict(overrides or {})
    if epochs is not None:
        setting["epochs"] = int(epochs)
    return Path(run_dir) / "checkpoints" / method / setting_name(setting) / f"seed{seed}"


def sibling_folders(run_dir: str | Path, method: str, seed: int, overrides: Mapping[str, Any] | None,
                    ) -> list[tuple[int | None, Path]]:
    """Every existing folder of the same method, setting and seed, whatever its training length:
    ``(epochs, folder)`` with ``None`` for the profile's length, shortest named length first."""
    overrides = {k: v for k, v in (overrides or {}).items() if k != "epochs"}
    found = []
    default = checkpoint_dir(run_dir, method, seed, overrides)
    if default.is_dir():
        found.append((None, default))
    method_dir = Path(run_dir) / "checkpoints" / method
    for setting in sorted(method_dir.iterdir()) if method_dir.is_dir() else []:
        match = _EPOCHS.search(setting.name)
        if match:
            epochs = int(match.group(1))
            folder = checkpoint_dir(run_dir, method, seed, overrides, epochs)
            if folder.parent == setting and folder.is_dir():
                found.append((epochs, folder))
    return sorted(found, key=lambda item: -1 if item[0] is None else item[0])


# ----------------------------------------------------------------------------- locks

_HELD: dict[Path, int] = {}


@contextmanager
def folder_lock(folder: str | Path, *, wait: bool = True, activity: str = "training") -> Iterator[None]:
    """Hold ``folder``'s lock (``.lock``, ``flock``) for the duration: one trainer per folder.

    ``wait``: block until the other process is done (saying so once), else raise
    :class:`FolderBusyError` naming the folder. Re-entrant within one process; under torchrun
    only rank 0 takes it (the ranks of one data-parallel training share the folder). ``activity``
    names what the holder does in the messages (the evaluation cache's entries: ``"evaluating"``).
    """
    from dapo.engine.distributed import current

    folder = Path(folder).resolve()
    if not current().main:  # under torchrun rank 0 holds it for the ranks that train with it
        yield
        return
    if folder in _HELD:
        _HELD[folder] += 1
        try:
            yield
        finally:
            _HELD[folder] -= 1
        return
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_FILE, "a+")  # noqa: SIM115 (held across the yield)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise FolderBusyError(f"another process is {activity} in {folder} (it holds {folder / LOCK_FILE}); "
                                      f"wait for it to finish, or train into another folder") from None
            print(f"[dapo] waiting: another process is {activity} in {shown_path(folder)}", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        _HELD[folder] = 1
        try:
            yield
        finally:
            del _HELD[folder]
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()


class FolderBusyError(RuntimeError):
    """Another process holds a checkpoint folder's lock."""


# ----------------------------------------------------------------------------- seeding a new folder


def seed_folder(folder: Path, source: Path, epoch: int, state_file: Path, loss_csv: str) -> None:
    """Let ``folder`` resume exactly from ``source``'s epoch ``epoch``: copy that epoch's optimiser
    state and loss rows, then the epoch files 1..``epoch`` it lacks (files it has are never
    rewritten; the last epoch file, copied last, completes the copy). ``source`` is only read."""
    import pandas as pd

    from dapo.engine.checkpoint import list_checkpoints
    from dapo.util.atomic import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    rows = pd.read_csv(source / loss_csv)
    with atomic_path(folder / loss_csv) as temporary:
        rows[rows["epoch"] <= epoch].to_csv(temporary, index=False)
    with atomic_path(folder / state_file.name) as temporary:
        shutil.copyfile(state_file, temporary)
    for checkpoint in list_checkpoints(source):
        target = folder / checkpoint.path.name
        if checkpoint.epoch <= epoch and not target.exists():
            with atomic_path(target) as temporary:
                shutil.copyfile(checkpoint.path, temporary)
