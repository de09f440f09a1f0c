"""Where the companion reads and writes: repository root, data, results and figures.

Paths resolve against the repository root (found from the installed package), so notebooks
executed from any working directory write to the same ``results/`` and ``figures/``.
"""

from __future__ import annotations

import os
from pathlib import Path


def _find_repo_root() -> Path:
    here = Path(__file__).resolve().parents[2]
    if (here / "pyproject.toml").exists() and (here / "notebooks").is_dir():
        return here
    return Path(os.environ.get("DAPO_HOME", Path.cwd())).resolve()


REPO_ROOT = _find_repo_root()


def _run_name(profile: str, smoke: bool) -> str:
    return "smoke" if smoke else profile


def results_dir(profile: str, smoke: bool = False) -> Path:
    """``results/<profile>`` (``results/smoke`` at smoke size)."""
    return REPO_ROOT / "results" / _run_name(profile, smoke)


def figures_dir(profile: str, smoke: bool = False) -> Path:
    """``figures/<profile>`` (``figures/smoke`` at smoke size)."""
    return REPO_ROOT / "figures" / _run_name(profile, smoke)


def data_dir() -> Path:
    """Default data root: ``$DAPO_DATA`` or ``data/`` in the repository."""
    return Path(os.environ.get("DAPO_DATA", REPO_ROOT / "data")).resolve()


def shown_path(path: str | Path) -> str:
    """``path`` relative to the repository when inside it, else ``.../<name>``: no machine paths in
    executed notebooks, messages or help texts."""
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return f".../{Path(path).name}"
