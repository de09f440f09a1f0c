"""Conclusions computed from a run's own tables: one rule for "clear vs noise", and sentences.

Every closing cell of the notebooks states its numbers and its comparative words ("leads",
"within noise", "reproduced", "not reproduced") through this module, never typed by hand.

**The rule.** A difference ``d`` with standard deviation ``s`` over the seeds is *clear* when
``|d| >= MIN_EFFECT`` (0.5 points) **and** ``|d| > NOISE_FACTOR * s`` (2 std); otherwise it is
*within noise*. With a single seed (``s`` is NaN) nothing can be told apart: *one seed*.
The std of a difference is the paired one when the table has it (the same seed's runs, e.g.
:func:`dapo.experiments.fidelity.effects`, :func:`dapo.experiments.ablations.paired_difference`); for two methods
trained independently it is ``sqrt(s_a**2 + s_b**2)`` (:func:`difference`).

**Against the paper.** A reported direction (the paper's ``a - b`` of the same metric) is
*reproduced* when our difference is clear with the same sign, *not reproduced (opposite)* when
clear with the other sign, *not reproduced (within noise)* otherwise, and *not judged* with one seed.

Tables come in as the tidy frame of :func:`tidy` (columns: keys..., ``metric``, ``mean``,
``std``, ``n``), read from a :func:`dapo.experiments.tables.summarise` frame or its committed CSV.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

#: Smallest difference (in the table's unit, points of a percentage) that can be called clear.
MIN_EFFECT = 0.5
#: A clear difference exceeds this many standard deviations (over seeds).
NOISE_FACTOR = 2.0
RULE = f"|difference| >= {MIN_EFFECT:g} and > {NOISE_FACTOR:g} std over the seeds"

CLEAR, NOISE, ONE_SEED = "clear", "within noise", "one seed"
REPRODUCED, OPPOSITE, NOT_TOLD = "reproduced", "not reproduced (opposite)", "not reproduced (within noise)"
UNJUDGED = "not judged (one seed)"


def classify(diff: float, std: float, *, min_effect: float = MIN_EFFECT) -> str:
    """``"clear"``, ``"within noise"`` or ``"one seed"`` (std NaN) by the module's rule."""
    if diff is None or not np.isfinite(diff):
        raise ValueError(f"cannot classify a difference of {diff!r}")
    if std is None or not np.isfinite(std):
        return ONE_SEED
    return CLEAR if abs(diff) >= min_effect and abs(diff) > NOISE_FACTOR * std else NOISE


def is_clear(diff: float, std: float, *, min_effect: float = MIN_EFFECT) -> bool:
    return classify(diff, std, min_effect=min_effect) == CLEAR


@dataclass(frozen=True)
class Estimate:
    """A mean with its std over ``n`` seeds (std NaN for one seed)."""

    mean: float
    std: float = float("nan")
    n: int = 1

    def text(self, decimals: int = 1, signed: bool = False) -> str:
        sign = "+" if signed else ""
        if not np.isfinite(self.std) or self.n <= 1:
            return f"{self.mean:{sign}.{decimals}f}"
        return f"{self.mean:{sign}.{decimals}f} ± {self.std:.{decimals}f}"

    def __str__(self) -> str:
        return self.text()


def difference(a: Estimate, b: Estimate, paired_std: float | None = None) -> Estimate:
    """``a - b`` with the paired std when given, else ``sqrt(std_a**2 + std_b**2)`` (independent runs)."""
    std = paired_std if paired_std is not None else math.sqrt(_sq(a.std) + _sq(b.std))
    if paired_std is None and not (np.isfinite(a.std) or np.isfinite(b.std)):
        std = float("nan")
    return Estimate(a.mean - b.mean, std, max(a.n, b.n))


def _sq(x: float) -> float:
    return x * x if np.isfinite(x) else 0.0


def against_paper(ours: Estimate, paper_diff: float) -> str:
    """Our difference ``a - b`` read against the paper's ``a - b`` (see the module docstring)."""
    verdict = classify(ours.mean, ours.std)
    if verdict == ONE_SEED:
        return UNJUDGED
    if verdict != CLEAR or paper_diff == 0:
        return NOT_TOLD
    return REPRODUCED if np.sign(ours.mean) == np.sign(paper_diff) else OPPOSITE


# ----------------------------------------------------------------------------- tables


def tidy(table: pd.DataFrame | str | Path) -> pd.DataFrame:
    """A summary table as tidy rows: keys..., ``metric``, ``mean``, ``std``, ``n``.

    Takes a :func:`dapo.experiments.tables.summarise` frame (columns ``(metric, "mean"|"std")``, ``n_seeds``),
    its committed CSV (columns ``"metric / mean"``), or a path to that CSV. Provenance columns
    (profile, seed, backbone) are dropped."""
    if isinstance(table, (str, Path)):
        path = Path(table)
        if not path.is_file():
            raise FileNotFoundError(f"no table {path}: run the notebook that writes it")
        table = pd.read_csv(path)
    frame = table.copy()
    if isinstance(frame.columns, pd.MultiIndex):
        frame = frame.reset_index()
        frame.columns = [" / ".join(str(p) for p in col if str(p) != "") for col in frame.columns]
    frame = frame.drop(columns=[c for c in ("profile", "seed", "backbone", "index") if c in frame.columns])
    stats = [c for c in frame.columns if c.endswith(" / mean") or c.endswith(" / std")]
    if not stats:
        raise ValueError(f"no 'metric / mean' columns in the table: {list(frame.columns)}")
    keys = [c for c in frame.columns if c not in stats and c != "n_seeds"]
    n = frame["n_seeds"] if "n_seeds" in frame.columns else pd.Series(1, index=frame.index)
    rows = []
    for metric in dict.fromkeys(c.rsplit(" / ", 1)[0] for c in stats):
        part = frame[keys].copy()
        part["metric"] = metric
        part["mean"] = frame[f"{metric} / mean"]
        part["std"] = frame.get(f"{metric} / std", np.nan)
        part["n"] = n
        rows.append(part)
    return pd.concat(rows, ignore_index=True)


def estimate(table: pd.DataFrame, **where) -> Estimate:
    """The one row of a :func:`tidy` table matching ``where`` (e.g. ``method="DAPO", metric="pixel_ap"``)."""
    rows = _where(table, where)
    if len(rows) != 1:
        raise ValueError(f"{len(rows)} rows match {where}; expected one")
    row = rows.iloc[0]
    return Estimate(float(row["mean"]), float(row["std"]), int(row["n"]))


def _where(table: pd.DataFrame, where: Mapping) -> pd.DataFrame:
    mask = pd.Series(True, index=table.index)
    for key, value in where.items():
        if key not in table.columns:
            raise ValueError(f"the table has no column {key!r}; it has {list(table.columns)}")
        mask &= table[key] == value
    return table[mask]


def ranking(table: pd.DataFrame, by: str = "method", **where) -> list[tuple[str, Estimate]]:
    """``(name, estimate)`` of every ``by`` value matching ``where``, best (highest mean) first."""
    rows = _where(table, where).dropna(subset=["mean"]).sort_values("mean", ascending=False, kind="stable")
    return [(str(r[by]), Estimate(float(r["mean"]), float(r["std"]), int(r["n"]))) for _, r in rows.iterrows()]


def leader_sentence(table: pd.DataFrame, metric: str, by: str = "method", decimals: int = 1, label: str | None = None,
                    **where) -> str:
    """Who leads ``metric`` among the ``by`` values, by how much over the runner-up, and whether that is clear.

    E.g. ``"pixel_auroc: DAPO leads with 84.2 ± 0.2, ahead of MultiADS (79.2 ± 4.8) by +5.0 ± 4.8: within noise"``."""
    ranked = ranking(table, by, metric=metric, **where)
    if not ranked:
        raise ValueError(f"no rows for metric {metric!r} and {where}")
    name = label or metric
    (first, a), rest = ranked[0], ranked[1:]
    if not rest:
        return f"{name}: {first} {a.text(decimals)} (nothing to compare with)"
    second, b = rest[0]
    diff = difference(a, b)
    return (f"{name}: {first} leads with {a.text(decimals)}, ahead of {second} ({b.text(decimals)}) by "
            f"{diff.text(decimals, signed=True)}: {classify(diff.mean, diff.std)}")


def ranking_text(table: pd.DataFrame, metric: str, by: str = "method", decimals: int = 1, **where) -> str:
    """``"DAPO 84.0 ± 1.9 > AnomalyCLIP 78.9 ± 2.1 > ..."`` for one metric."""
    return " > ".join(f"{name} {e.text(decimals)}" for name, e in ranking(table, by, metric=metric, **where))


def compare(table: pd.DataFrame, metric: str, a: str, b: str, by: str = "method", decimals: int = 1,
            paper: tuple[float, float] | None = None, **where) -> dict:
    """``a`` against ``b`` on ``metric``: a dict with both estimates, the difference, its verdict, and
    (with ``paper = (paper_a, paper_b)``) the reading against the paper, plus ``sentence``."""
    ea, eb = estimate(table, **{by: a}, metric=metric, **where), estimate(table, **{by: b}, metric=metric, **where)
    diff = difference(ea, eb)
    verdict = classify(diff.mean, diff.std)
    lead = a if diff.mean > 0 else b
    word = f"{lead} ahead" if verdict == CLEAR else "within noise" if verdict == NOISE else f"{lead} ahead on one seed"
    sentence = (f"{metric}: {a} {ea.text(decimals)} vs {b} {eb.text(decimals)}, "
                f"difference {diff.text(decimals, signed=True)} ({word})")
    result = {"a": ea, "b": eb, "diff": diff, "verdict": verdict, "sentence": sentence}
    if paper is not None:
        paper_diff = paper[0] - paper[1]
        reading = against_paper(diff, paper_diff)
        paper_lead = a if paper_diff > 0 else b
        result["paper"] = reading
        result["sentence"] = (f"{sentence}; paper {a} {paper[0]:.1f} vs {b} {paper[1]:.1f} ({paper_lead} ahead): "
                              f"**{reading}**")
    return result


def clear_effects(effects: pd.DataFrame, *, delta: str = "delta", delta_std: str = "delta_std",
                  exclude: Sequence[str] = ()) -> pd.DataFrame:
    """The rows of a paired-difference table (:func:`dapo.experiments.fidelity.effects` layout) whose difference is clear,
    with a ``verdict`` column on every row (``exclude``: settings to skip, e.g. the baseline)."""
    frame = effects[~effects["setting"].isin(exclude)] if "setting" in effects.columns else effects
    frame = frame.dropna(subset=[delta]).copy()
    frame["verdict"] = [classify(d, s) for d, s in zip(frame[delta], frame[delta_std])]
    return frame


def verdict_column(diffs: pd.DataFrame, *, mean: str = "mean", std: str = "std", a: str = "a", b: str = "b") -> list[str]:
    """Per row of a paired-difference table: ``"<a> ahead"``, ``"<b> ahead"``, ``"within noise"`` or
    ``"one seed: no spread to judge"`` (:func:`classify`)."""
    out = []
    for m, s in zip(diffs[mean], diffs[std]):
        verdict = classify(m, s)
        out.append("one seed: no spread to judge" if verdict == ONE_SEED else verdict if verdict == NOISE
                   else f"{a} ahead" if m > 0 else f"{b} ahead")
    return out


def bullets(lines: Sequence[str]) -> str:
    """Markdown bullet list."""
    return "\n".join(f"- {line}" for line in lines)


__all__ = ["MIN_EFFECT", "NOISE_FACTOR", "RULE", "Estimate", "against_paper", "bullets", "classify", "clear_effects",
           "compare", "difference", "estimate", "is_clear", "leader_sentence", "ranking", "ranking_text", "tidy",
           "verdict_column"]
