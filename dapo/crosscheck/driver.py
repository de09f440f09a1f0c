"""Run one cross-check: inputs to a file, the release side in a subprocess, the comparison.

The release side runs as ``python dapo/crosscheck/release_<release>.py INPUT OUTPUT`` with
``PYTHONPATH=<release checkout>:<stub dir>`` (the release's bundled ``open_clip`` shadows the
installed one, so it cannot share a process with ``dapo``); tensors travel through
``torch.save`` files in a temporary folder. The stub folder, written here at run time, holds
empty ``cv2``, ``skimage.measure`` and ``thop`` modules: the releases import them at module level
but never call them on the checked path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import torch

from dapo.crosscheck.compare import Row

HERE = Path(__file__).resolve().parent
STUBS = {
    "cv2.py": '"""Stub: the release imports cv2 but the cross-checked path never calls it."""\n',
    "skimage/__init__.py": '"""Stub: the release imports skimage but the cross-checked path never calls it."""\n',
    "skimage/measure.py": '"""Stub (see skimage/__init__.py)."""\n',
    "thop.py": '"""Stub: AnomalyCLIP imports thop.profile (AnomalyCLIP.py:393) but never calls it."""\nprofile = None\n',
}

#: Files each release checkout must have (a wrong path fails before any work).
RELEASE_FILES = {
    "dapo": ("train.py", "test.py", "learnable_prompt.py", "visual_prompt_tuning.py", "adapter.py",
             "open_clip/transformer.py"),
    "multiads": ("train.py", "test.py", "model.py", "loss.py", "prompts/prompt_ensemble_mvtec_20cls.py",
                 "open_clip/transformer.py"),
    "anomalyclip": ("train.py", "test.py", "prompt_ensemble.py", "loss.py", "AnomalyCLIP_lib/AnomalyCLIP.py",
                    "AnomalyCLIP_lib/model_load.py", "AnomalyCLIP_lib/build_model.py"),
    "adaclip": ("train.py", "test.py", "loss.py", "method/adaclip.py", "method/trainer.py", "method/clip_model.py",
                "method/transformer.py"),
}


class ReleaseError(RuntimeError):
    """The release checkout is missing, incomplete, or its side of the check failed."""


@dataclass
class CheckResult:
    """A finished check: the table rows, the release commit, facts recorded on the release side."""

    release: str
    preset: str
    commit: str
    rows: list[Row]
    facts: dict = field(default_factory=dict)
    day: str = field(default_factory=lambda: date.today().isoformat())


def release_commit(path: str | Path) -> str:
    """The checkout's commit: ``git rev-parse HEAD``, else a ``.release_commit`` file, else ``"unknown"``."""
    path = Path(path)
    try:
        result = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=30)
        if result.returncode == 0 and result.stdout.strip():
            return result.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    marker = path / ".release_commit"
    return marker.read_text().strip() if marker.is_file() else "unknown"


def check_release_path(release: str, path: str | Path) -> Path:
    """The checkout folder, after checking that it holds the release's files."""
    path = Path(path).expanduser().resolve()
    missing = [name for name in RELEASE_FILES.get(release, ()) if not (path / name).is_file()]
    if not path.is_dir() or missing:
        raise ReleaseError(f"{path} is not a checkout of the {release} release (missing: {missing or 'the folder'}); "
                           f"clone it and pass its folder with --release")
    return path


def write_stubs(folder: Path) -> Path:
    """Write the stub modules into ``folder`` (created) and return it."""
    for name, text in STUBS.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return folder


def run_release_side(release: str, path: Path, spec: dict, timeout: float = 1800) -> dict:
    """Run ``release_<release>.py`` on ``spec`` in its own process; return what it saved."""
    script = HERE / f"release_{release}.py"
    with tempfile.TemporaryDirectory(prefix=f"crosscheck-{release}-") as tmp:
        tmp = Path(tmp)
        stubs = write_stubs(tmp / "stubs")
        torch.save(spec, tmp / "input.pt")
        env = dict(os.environ, PYTHONPATH=f"{path}{os.pathsep}{stubs}", MPLBACKEND="Agg")
        result = subprocess.run([sys.executable, str(script), str(tmp / "input.pt"), str(tmp / "output.pt")],
                                cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0 or not (tmp / "output.pt").is_file():
            raise ReleaseError(f"the {release} release side failed (exit {result.returncode}):\n"
                               f"{result.stderr[-4000:]}")
        return torch.load(tmp / "output.pt", weights_only=False)


def release_quantities(raw: dict, renamer) -> tuple[dict, dict]:
    """Split the release side's output into comparable tensors (gradients and weights renamed to
    ours with ``renamer``) and facts (``fact/``, ``meta/``, ``words/``)."""
    tensors, facts = {}, {}
    for key, value in raw.items():
        if key == "grad_release":
            tensors.update({f"grad/{k}": v for k, v in renamer(value).items()})
        elif key == "weights_release":
            tensors.update({f"weights/{k}": v for k, v in renamer(value).items()})
        elif key.split("/")[0] in ("fact", "meta", "words"):
            facts[key] = value
        else:
            tensors[key] = value
    return tensors, facts

