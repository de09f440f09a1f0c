"""Device and numeric precision: the one place that decides where and in what dtype a model runs.

``resolve_device("auto")`` picks CUDA when present, else the CPU. ``resolve_precision("auto",
device)`` picks bf16 on CUDA and on CPUs with native bf16 arithmetic (AVX-512-BF16 or AMX,
where a bf16 GEMM runs many times faster than fp32), fp32 elsewhere. :func:`autocast` is the
matching context manager. The environment variable ``DAPO_AUTO_PRECISION`` (``fp32`` or
``bf16``) fixes what ``"auto"`` means on this machine (`make test-notebooks` sets ``fp32`` so that
the nbval references compare alike on every CPU). A run (:func:`dapo.experiments.runs.start_run`, every
notebook) calls :func:`set_run_precision`, so that ``"auto"`` then means the run's precision in every
training and evaluation it makes, the one its tables are stamped with. Losses and learned
parameters stay fp32 whatever the precision.
Training (:mod:`dapo.engine.train`), inference (:mod:`dapo.engine.inference`) and the compact-CLIP
pretraining (:mod:`dapo.synthetic`) all use these functions.
"""

from __future__ import annotations

import contextlib
import os

import torch

PRECISIONS = ("auto", "fp32", "bf16")
_run_precision: str | None = None  # what "auto" means for the rest of this process (set_run_precision)


class DeviceUnavailableError(RuntimeError):
    """The requested device does not exist on this machine."""


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or ``None``) picks CUDA when present, else the CPU; a named device must exist."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise DeviceUnavailableError(f"device={device!r} is not a torch device name (use 'auto', 'cpu' or "
                                     f"'cuda[:N]')") from error
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(f"device={device!r}: no CUDA GPU is available on this machine "
                                         f"(torch.cuda.is_available() is False); use 'auto' or 'cpu'")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise DeviceUnavailableError(f"device={device!r}: this machine has {torch.cuda.device_count()} "
                                         f"CUDA device(s)")
    elif resolved.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise DeviceUnavailableError(f"device={device!r}: MPS is not available on this machine; use 'auto' or 'cpu'")
    return resolved


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512-BF16 or AMX tiles)."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``"fp32"`` or ``"bf16"`` for ``device``: ``"auto"`` is bf16 on CUDA and fast-bf16 CPUs."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {PRECISIONS}")
    if precision != "auto":
        return precision
    if _run_precision is not None:
        return _run_precision
    forced = os.environ.get("DAPO_AUTO_PRECISION")
    if forced:
        if forced not in ("fp32", "bf16"):
            raise ValueError(f"DAPO_AUTO_PRECISION={forced!r}: expected 'fp32' or 'bf16'")
        return forced
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16"
    if device.type == "cpu" and cpu_has_fast_bf16():
        return "bf16"
    return "fp32"


def set_run_precision(precision: str | None) -> None:
    """Make ``"auto"`` resolve to ``precision`` (``"fp32"`` or ``"bf16"``) from now on in this
    process; ``None`` restores the machine's choice. Explicit ``"fp32"``/``"bf16"`` arguments win."""
    global _run_precision
    if precision not in (None, "fp32", "bf16"):
        raise ValueError(f"precision={precision!r}: expected 'fp32', 'bf16' or None")
    _run_precision = precision


def compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The dtype a matmul on ``tensor`` runs in here: the autocast dtype inside an enabled
    autocast region of its device type, else the tensor's own floating dtype."""
    device_type = tensor.device.type
    if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return tensor.dtype


def autocast(device: torch.device | str, precision: str = "auto"):
    """bf16 autocast when the resolved precision is bf16, otherwise a no-op context."""
    device = torch.device(device)
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
