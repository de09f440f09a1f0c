"""Atomic file writes: a file is either its old content or its complete new content, never half.

Every writer of checkpoints, optimiser states, loss histories, tables, figures and the command
line's outputs goes through :func:`atomic_path`: write to a temporary file in the same folder,
then ``os.replace`` it onto the target (atomic on POSIX and Windows), so an interruption leaves
no truncated file behind. :func:`update_text` adds a lock for files that several processes
read, change and write back (``provenance.json`` under ``make reproduce -j 2``).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(handle)
    temporary = Path(temporary)
    try:
        yield temporary
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text)
    return Path(path)


def update_text(path: str | os.PathLike, change: Callable[[str | None], str]) -> Path:
    """Write ``change(old text or None)`` to ``path`` atomically, holding an exclusive lock
    (``.<name>.lock`` beside it) from the read to the write, so that two processes updating one file
    at once both keep their change."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            old = path.read_text() if path.is_file() else None
            return write_text(path, change(old))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
