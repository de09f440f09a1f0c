"""Provenance stamps, tables (CSV + Markdown) and figures for the notebooks.

Every table and figure names the profile it came from, the seeds it aggregates, the backbone,
the precisions it was trained and evaluated in, the thread count, the run id and the git commit.
CSVs carry profile, seeds and backbone as columns but not the commit, run id or threads, so that
the same seeds regenerate byte-identical CSVs after an unrelated commit; the rest goes into the
Markdown header, the figure footer and ``provenance.json`` (one entry per notebook, rewritten at
each output it saves, so a run that fails its checks touches nothing). Every file is written atomically (:mod:`dapo.util.atomic`).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from dapo import __version__
from dapo.util.atomic import atomic_path, update_text, write_text

SYNTHETIC_LABEL = "SYNTHETIC profile (generated world + compact backbone; not a reproduction of the paper)"


def git_commit(repo: str | Path | None = None) -> str:
    """Short commit of the working tree, with ``-dirty`` when tracked files other than the
    generated ``results/`` and ``figures/`` have changes (a reproduction run rewrites those
    itself); ``unknown`` outside git."""
    cwd = Path(repo) if repo else Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True,
                                text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)",
                                ":(top,exclude)results", ":(top,exclude)figures"], cwd=cwd,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


@dataclass(frozen=True)
class Provenance:
    """Where a number came from.

    ``precision`` is the precision the run evaluates in; ``train_precision`` the precision(s) its
    trained models were trained in (``""`` when it used none), which differ when a bf16 run
    loads fp32 checkpoints. ``seeds`` are the training seeds of the models a table aggregates
    (:mod:`dapo.engine.ledger`; empty: the run's ``seed``). ``run_id`` names one execution (``make
    reproduce`` sets one for all notebooks through ``DAPO_RUN_ID``); ``threads`` is torch's
    thread count (bit-for-bit repeats need the same).
    """

    profile: str
    seed: int
    backbone: str
    pretrained: str
    smoke: bool = False
    precision: str = "fp32"
    commit: str = ""
    dapo_version: str = __version__
    run_id: str = ""
    threads: int = 0
    seeds: tuple[int, ...] = ()
    train_precision: str = ""

    @classmethod
    def create(cls, profile: str, seed: int, backbone: str, pretrained: str, smoke: bool = False,
               precision: str = "fp32"):
        import torch

        commit = git_commit()
        run_id = os.environ.get("DAPO_RUN_ID") or f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{commit}"
        return cls(profile, int(seed), backbone, str(pretrained), bool(smoke), precision, commit,
                   run_id=run_id, threads=torch.get_num_threads())

    @property
    def seed_list(self) -> str:
        """The seeds a table aggregates, comma-separated (``"0,1,2"``)."""
        return ",".join(str(s) for s in (self.seeds or (self.seed,)))

    @property
    def label(self) -> str:
        """Caption naming the profile and the backbone the run actually used."""
        size = " [smoke size]" if self.smoke else ""
        if self.profile == "synthetic":
            return f"{SYNTHETIC_LABEL}{size}"
        if self.profile == "paper":
            return f"paper profile (OpenCLIP {self.backbone} / {self.pretrained}, real datasets){size}"
        return f"{self.profile} profile{size}"

    @property
    def footer(self) -> str:
        trained = f", trained {self.train_precision}" if self.train_precision else ""
        return (f"profile={self.profile}{' (smoke)' if self.smoke else ''} | seeds={self.seed_list} | "
                f"backbone={self.backbone}/{self.pretrained} | precision=eval {self.precision}{trained} | "
                f"threads={self.threads} | run={self.run_id} | commit={self.commit}")

    def columns(self) -> dict:
        """The provenance columns written into every CSV (no commit, run id or threads: see module docstring)."""
        return {"profile": self.profile, "seeds": self.seed_list, "backbone": f"{self.backbone}/{self.pretrained}"}


def save_table(df: pd.DataFrame, name: str, out_dir: str | Path, prov: Provenance, caption: str = "",
               decimals: int = 1, index: bool = True, markdown: pd.DataFrame | None = None) -> Path:
    """Write ``name.csv`` (full precision + provenance columns; one the table already has is
    written as ``run_<name>``) and ``name.md`` (rounded, with a header;
    ``markdown`` replaces the rounded table, e.g. a "mean ± std" view)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamped = df.copy()
    if isinstance(stamped.columns, pd.MultiIndex):
        stamped.columns = _joined(stamped.columns)
    for key, value in prov.columns().items():  # a table's own column (a sweep's training seed) is kept
        stamped[f"run_{key}" if key in stamped.columns else key] = value
    csv_path = out_dir / f"{name}.csv"
    with atomic_path(csv_path) as temporary:
        stamped.to_csv(temporary, index=index, float_format="%.6g", lineterminator="\n")
    header = f"**{caption or name}** — {prov.label}\n\n_{prov.footer}_\n\n"
    shown = markdown if markdown is not None else df.round(decimals)
    write_text(out_dir / f"{name}.md", header + _markdown(shown, index) + "\n")
    return csv_path


def _joined(columns: pd.MultiIndex) -> list[str]:
    return [" / ".join(str(part) for part in col if str(part) != "") for col in columns]


def _markdown(df: pd.DataFrame, index: bool) -> str:
    """Markdown with multi-level rows as columns and multi-level columns joined by ' / '."""
    shown = df.copy()
    if isinstance(shown.columns, pd.MultiIndex):
        shown.columns = _joined(shown.columns)
    if index and isinstance(shown.index, pd.MultiIndex):
        return shown.reset_index().to_markdown(index=False)
    return shown.to_markdown(index=index)


SYNTHETIC_BANNER = "SYNTHETIC DATA: generated world and compact backbone, not the paper's datasets or numbers"


def save_figure(fig, name: str, fig_dir: str | Path, prov: Provenance, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG with the provenance footer printed on it and, for the synthetic
    profile, :data:`SYNTHETIC_BANNER` across its top (also in the PNG's ``Title`` text field)."""
    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    renderer = fig.canvas.get_renderer()
    below = min(0.0, fig.get_tightbbox(renderer).y0 / fig.get_figheight())  # under the lowest tick label
    fig.text(0.5, below - 0.05 / fig.get_figheight(), prov.footer, ha="center", va="top", fontsize=7, color="0.35")
    metadata = {"Software": None, "Description": prov.footer}
    if prov.profile == "synthetic":
        above = max([1.0] + [t.get_window_extent(renderer).y1 / fig.bbox.height
                             for t in [*fig.texts, fig._suptitle] if t is not None and t.get_text()])  # clear of a suptitle
        fig.text(0.5, above + 0.1 / fig.get_figheight(), SYNTHETIC_BANNER, ha="center", va="bottom", fontsize=8,
                 fontweight="bold",
                 color="white", bbox=dict(boxstyle="square,pad=0.3", facecolor="#b2182b", edgecolor="none"))
        metadata["Title"] = SYNTHETIC_BANNER
    path = fig_dir / f"{name}.png"
    with atomic_path(path) as temporary:
        fig.savefig(temporary, format="png", dpi=dpi, bbox_inches="tight", metadata=metadata)
    return path


def write_provenance(out_dir: str | Path, prov: Provenance, notebook: str = "api", **extra) -> Path:
    """Record ``prov`` as the entry of ``notebook`` in ``provenance.json`` next to the tables of a run
    (under a lock: notebooks running at once each keep their entry)."""
    def change(old: str | None) -> str:
        try:
            entries = json.loads(old) if old else {}
        except json.JSONDecodeError:
            entries = {}
        if "profile" in entries:  # the older single-entry format
            entries = {}
        entries[notebook] = {**asdict(prov), **extra}
        return json.dumps(entries, indent=2, sort_keys=True) + "\n"
    return update_text(Path(out_dir) / "provenance.json", change)
