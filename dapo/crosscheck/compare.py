"""Side-by-side comparison of two sides' named tensors: max absolute / relative differences.

A quantity is a named tensor (``"text/state_embeddings"``); both sides return a dict of them.
:func:`compare` gives one :class:`Row` per name found on either side, :func:`format_table` the
printed table, :func:`failures` the rows past their tolerance.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

#: The relative difference of a quantity is max|ours - release| / max|release| (the scale of the
#: whole tensor, so entries near zero do not blow it up); REL_FLOOR guards all-zero tensors.
#: The tolerance judges the absolute difference.
REL_FLOOR = 1e-12


@dataclass(frozen=True)
class Row:
    """One quantity: shapes, max |ours - release|, max relative difference, and the verdict."""

    name: str
    shape: str
    max_abs: float | None
    max_rel: float | None
    tolerance: float
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.max_abs is not None and self.max_abs <= self.tolerance


def sorted_rows(ids: torch.Tensor) -> torch.Tensor:
    """Rows of an integer matrix in lexicographic order: token ids compared as a set of sentences
    (prompt lists whose order differs but whose sentences are the same compare equal)."""
    order = torch.arange(ids.shape[0])
    for column in range(ids.shape[1] - 1, -1, -1):
        order = order[torch.argsort(ids[order, column], stable=True)]
    return ids[order]


def _shape(t: torch.Tensor) -> str:
    return "x".join(str(s) for s in t.shape) or "scalar"


def compare_one(name: str, ours: torch.Tensor | None, theirs: torch.Tensor | None, tolerance: float) -> Row:
    """Row for one quantity; a missing side, a shape mismatch or a non-finite value fails.
    Integer tensors (token ids) must agree exactly whatever the tolerance."""
    if ours is None or theirs is None:
        missing = "ours" if ours is None else "release"
        shape = _shape(theirs if ours is None else ours)
        return Row(name, shape, None, None, tolerance, f"missing on {missing} side")
    ours, theirs = torch.as_tensor(ours), torch.as_tensor(theirs)
    if ours.shape != theirs.shape:
        return Row(name, f"{_shape(ours)} vs {_shape(theirs)}", None, None, tolerance, "shapes differ")
    if not ours.is_floating_point():  # token ids and the like: exact
        ours, theirs = ours.long(), theirs.long()
        diff = (ours - theirs).abs()
        mismatched = int((diff != 0).sum())
        value = float(diff.max()) if diff.numel() else 0.0
        note = f"{mismatched} entries differ" if mismatched else "exact"
        return Row(name, _shape(ours), value, value, 0.0, note)
    ours, theirs = ours.double(), theirs.double()
    if not (torch.isfinite(ours).all() and torch.isfinite(theirs).all()):
        return Row(name, _shape(ours), None, None, tolerance, "non-finite values")
    diff = (ours - theirs).abs()
    if diff.numel() == 0:
        return Row(name, _shape(ours), 0.0, 0.0, tolerance, "empty")
    scale = max(float(theirs.abs().max()), REL_FLOOR)
    return Row(name, _shape(ours), float(diff.max()), float(diff.max()) / scale, tolerance)


def compare(ours: Mapping[str, torch.Tensor], theirs: Mapping[str, torch.Tensor], tolerance: float,
            tolerances: Mapping[str, float] | None = None) -> list[Row]:
    """Rows for every name on either side, in the release side's order then ours.

    ``tolerances`` maps a name prefix (``"weights/"``) to its own tolerance; the longest
    matching prefix wins, else ``tolerance``.
    """
    tolerances = dict(tolerances or {})
    names = list(theirs) + [name for name in ours if name not in theirs]

    def tol(name: str) -> float:
        prefixes = [p for p in tolerances if name.startswith(p)]
        return tolerances[max(prefixes, key=len)] if prefixes else tolerance

    return [compare_one(name, ours.get(name), theirs.get(name), tol(name)) for name in names]


def failures(rows: list[Row]) -> list[Row]:
    """Rows past their tolerance (or missing, mismatched, non-finite)."""
    return [row for row in rows if not row.ok]


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def format_table(rows: list[Row]) -> str:
    """A Markdown table: quantity, shape, max abs, max rel, tolerance, verdict."""
    lines = ["| quantity | shape | max abs | max rel | tolerance | ok |", "|---|---|---|---|---|---|"]
    for row in rows:
        verdict = "yes" if row.ok else "**NO**"
        note = f" ({row.note})" if row.note else ""
        lines.append(f"| {row.name} | {row.shape} | {_number(row.max_abs)} | {_number(row.max_rel)} | "
                     f"{row.tolerance:.0e} | {verdict}{note} |")
    return "\n".join(lines)


def group_of(name: str) -> str:
    """The quantity family of a row name: ``"stage2/logits"`` -> ``"stage logits"``, etc."""
    head, _, tail = name.partition("/")
    if head.startswith("as_released") and tail:  # a release variant's rows, grouped within it
        return f"{head}/{group_of(tail)}"
    if head.startswith("stage") and tail:
        return f"stage {tail}"
    if head in ("grad", "weights", "patch", "hsf") or head.startswith("loss"):
        return head
    return name


def summary(rows: list[Row]) -> list[tuple[str, float | None, float | None]]:
    """Largest abs / rel difference per quantity family (for docs/FIDELITY.md)."""
    out: dict[str, tuple[float | None, float | None]] = {}
    for row in rows:
        key = group_of(row.name)
        abs_, rel = out.get(key, (0.0, 0.0))
        if row.max_abs is None or abs_ is None:
            out[key] = (None, None)
        else:
            out[key] = (max(abs_, row.max_abs), max(rel or 0.0, row.max_rel or 0.0))
    return [(key, a, r) for key, (a, r) in out.items()]


def fidelity_row(preset: str, commit: str, day: str, rows: list[Row]) -> str:
    """The docs/FIDELITY.md "checked against the release" row: preset, commit, date, the largest
    absolute difference per quantity family, and the verdict (printed by the CLI, pasted as is)."""
    parts = []
    for key, max_abs, _ in summary(rows):
        parts.append(f"{key} {'missing/mismatched' if max_abs is None else f'{max_abs:.1e}'}")
    bad = failures(rows)
    verdict = f"{len(bad)} of {len(rows)} past tolerance" if bad else f"all {len(rows)} within tolerance"
    return f"| `{preset}` | `{commit[:7]}` | {day} | {'; '.join(parts)} | {verdict} |"
