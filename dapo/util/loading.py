"""Files read back as data, never as code: ``torch.load`` only with ``weights_only=True``.

Every file the project reads back is data: checkpoints and the compact weights are safetensors,
caches and metadata CSV/JSON, and the few PyTorch pickles (pretraining and optimiser states,
OpenCLIP ``.pt``/``.bin`` weights passed with ``--clip-weights``/``-p checkpoint``) go through
:func:`load_state`, PyTorch's restricted unpickler that builds tensors and plain containers and
refuses anything else. A file that would need more (a crafted pickle whose loading would run
code, an object saved by other software, a TorchScript archive, whose program would be loaded)
is refused with :class:`UnsafeFileError` naming it, and nothing of it runs.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch


class UnsafeFileError(ValueError):
    """A file would have to run code (or is not a plain tensor file) to be loaded; it was not loaded."""


def is_torchscript(path: str | Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip holding compiled code, e.g. OpenAI's original ``.pt``)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _reason(error: Exception) -> str:
    """The line of PyTorch's refusal that says what was found (an unsupported global or operand)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    found = [line for line in lines if line.startswith(("Unsupported", "Trying to", "Unsupported global"))]
    return (found or lines or [type(error).__name__])[0][:200]


def load_state(path: str | Path, what: str, map_location: Any = "cpu", way_out: str = "") -> Any:
    """``torch.load(path, weights_only=True)``; a file that needs more is :class:`UnsafeFileError`.

    ``what`` names the file's role in the message (``"pretraining state"``), ``way_out`` says
    what to do (default: delete the file or replace it with one written by this code).
    """
    path = Path(path)
    way_out = way_out or "delete it, or replace it with a file written by this code"
    if is_torchscript(path):
        raise UnsafeFileError(f"{what} {path} is a TorchScript archive: loading it would load its program, so it is "
                              f"not read; use a weights file (.safetensors, or a state dict saved with torch.save)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise UnsafeFileError(f"{what} {path} holds more than tensors and plain values (loading it could run "
                              f"code), so it is not read ({_reason(error)}); {way_out}") from None
    except (RuntimeError, EOFError, OSError) as error:
        raise UnsafeFileError(f"cannot read {what} {path}: {type(error).__name__}: {str(error)[:200]} "
                              f"(truncated, or not a PyTorch file?); {way_out}") from None
