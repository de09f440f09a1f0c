"""Set a re-run's tables beside the committed ones (issue 32, item 6: a reviewer's verification).

``python -m dapo.experiments.reproduce compare RERUN_DIR [--committed results/synthetic] [--git HEAD]``
(``make verify RERUN=dir``) reads every CSV of both runs (``checkpoints/`` and ``notebooks/``
left out), matches rows on their key columns and prints each number that is not exact with its
difference and that difference in units of the committed seed std, a one-line verdict per table
and a summary. The exit status is 1 when a number lies beyond the tolerance (default 2 committed
stds, issue 32's "within a stated tolerance") or a table, row, column or value is missing from
the re-run; 0 otherwise. Numbers without a std are "not comparable" when they differ (shown with
their relative difference) and do not fail the run.

The committed std of a number comes from the table's layout:

* ``X / mean`` and ``X / std`` column pairs (table1_multitype, table3_binary, ...): ``X / std``;
* ``mean``, ``std``, ``n`` columns (fidelity_switches, ...): ``std`` (and ``delta_std`` for ``delta``);
* tidy per-seed tables (ablation_*: a ``seed`` column of its own beside the stamp's ``seeds``, or
  ``run_seed`` in tables stamped before it):
  the std (ddof 1, as the tables use) over the committed seeds of the row's group;
* anything else (plain tables): no std.

Key columns are the non-numeric ones, ``seed`` and ``epoch``, and in a per-seed table the
settings left of ``seed``. Provenance columns (profile, seed, backbone, run id, precision, ...:
the fields of :class:`dapo.experiments.reporting.Provenance`, as ``run_<name>`` when the table has a column
of that name) are neither keys nor numbers: their differences are printed once per table.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import math
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from dapo.util.paths import REPO_ROOT

SKIPPED_FOLDERS = {"checkpoints", "notebooks"}
PROVENANCE = {"profile", "seed", "seeds", "backbone", "pretrained", "smoke", "precision", "commit", "run_id",
              "dapo_version", "threads", "train_precision", "eval_precision"}
FLAGS = {"True", "False"}


def provenance_names() -> set[str]:
    """Provenance column names: the fields of the stamp the tables are written with, plus the known ones."""
    try:
        from dapo.experiments.reporting import Provenance

        return PROVENANCE | {f.name for f in dataclasses.fields(Provenance)}
    except (ImportError, TypeError):
        return set(PROVENANCE)


# ---------------------------------------------------------------------------------------- reading
def folder_tables(folder: str | Path) -> dict[str, str]:
    """``{name: csv text}`` for every CSV under ``folder`` (name: relative path without ``.csv``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SystemExit(f"{folder}: no such folder (give the results folder of the run, e.g. results/synthetic)")
    return {p.relative_to(folder).with_suffix("").as_posix(): p.read_text() for p in sorted(folder.rglob("*.csv"))
            if not SKIPPED_FOLDERS & set(p.relative_to(folder).parts[:-1])}


def git_tables(folder: str | Path, rev: str) -> dict[str, str]:
    """The same as committed at ``rev`` (``folder`` relative to the repository root)."""
    prefix = Path(folder).resolve().relative_to(REPO_ROOT).as_posix() if Path(folder).is_absolute() \
        else Path(folder).as_posix()

    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True)
        if result.returncode:
            raise SystemExit(f"git {' '.join(args)}: {result.stderr.strip()} (to compare with the folder as it is, pass --git '' or make verify GIT_REV=)")
        return result.stdout

    names = [n for n in git("ls-tree", "-r", "--name-only", rev, "--", prefix + "/").splitlines()
             if n.endswith(".csv") and not SKIPPED_FOLDERS & set(Path(n).relative_to(prefix).parts[:-1])]
    return {Path(n).relative_to(prefix).with_suffix("").as_posix(): git("show", f"{rev}:{n}") for n in names}


def read_csv(text: str) -> pd.DataFrame:
    """The table as written: every cell as text, empty cells as ``""``."""
    return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)


def number(text: str) -> float | None:
    try:
        return float(text) if text != "" else None
    except ValueError:
        return None


# ----------------------------------------------------------------------------------------- layout
@dataclass
class Layout:
    """Which columns identify a row, which are compared, and where each number's std is."""

    name: str
    keys: list[str]
    numbers: list[str]
    flags: list[str]
    provenance: list[str]
    spread: dict[str, str] = field(default_factory=dict)  # number column -> its std column
    per_seed: bool = False


def layout_of(df: pd.DataFrame) -> Layout:
    columns = list(df.columns)
    names = provenance_names() - {"seed"}
    if "seeds" not in columns and "run_seed" not in columns:
        names.add("seed")  # tables stamped before the ``seeds`` column: ``seed`` was the run's
    provenance = [c for c in columns if (c.startswith("run_") and c[4:] in names | {"seed"})
                  or (c in names and f"run_{c}" not in columns)]
    per_seed = "seed" in columns and "seed" not in provenance
    seed_at = columns.index("seed") if per_seed else -1
    flags, numeric, keys = [], [], []
    for i, c in enumerate(columns):
        values = set(df[c]) - {""}
        if c in provenance:
            continue
        if values and values <= FLAGS:
            flags.append(c)
        elif values and all(number(v) is not None for v in values) \
                and not (c in ("seed", "epoch") or i < seed_at or c.startswith("Unnamed:")):
            numeric.append(c)
        else:
            keys.append(c)
    spread = {}
    for c in numeric:
        partner = c[:-len(" / mean")] + " / std" if c.endswith(" / mean") else "std" if c == "mean" else f"{c}_std"
        if partner in numeric:
            spread[c] = partner
    name = ("per seed" if per_seed else "X / mean, X / std pairs" if any(c.endswith(" / mean") for c in spread)
            else "mean, std, n" if "mean" in spread else "plain")
    return Layout(name, keys, numeric, flags, provenance, spread, per_seed)


def seed_std(df: pd.DataFrame, layout: Layout) -> pd.DataFrame:
    """Per row of a per-seed table: the std (ddof 1) of each number over the seeds of its group."""
    group = [k for k in layout.keys if k != "seed"]
    values = df[layout.numbers].apply(pd.to_numeric, errors="coerce")
    if not group:
        return values.apply(lambda col: pd.Series(col.std(ddof=1), index=col.index))
    return values.groupby([df[k] for k in group], sort=False).transform(lambda col: col.std(ddof=1))


def keyed(df: pd.DataFrame, keys: list[str]) -> dict[tuple, int]:
    """Row position by key values (and the occurrence among rows with the same keys)."""
    seen: dict[tuple, int] = {}
    rows = {}
    for position, values in enumerate(df[keys].itertuples(index=False, name=None) if keys else [()] * len(df)):
        seen[values] = seen.get(values, -1) + 1
        rows[values + ((seen[values],) if seen[values] else ())] = position
    return rows


# ------------------------------------------------------------------------------------- comparison
def _rank(category: str) -> int:
    """Order of the categories in the summary: exact, within 1 std, within the tolerance, beyond, not comparable."""
    return next(i for i, start in enumerate(("exact", "within 1 ", "within", "beyond", "not")) if category.startswith(start))


@dataclass
class Verdict:
    """The comparison of one table."""

    name: str
    lines: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    max_std: float = 0.0
    missing: int = 0
    note: str = ""

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def failed(self, tolerance: float) -> bool:
        return self.missing > 0 or self.counts.get(f"beyond {tolerance:g} std", 0) > 0

    def summary(self, tolerance: float) -> str:
        if self.note:
            return f"{self.name}: {self.note}"
        numbers = sum(self.counts.values())
        parts = [f"{n} {what}" for what, n in sorted(self.counts.items(), key=lambda kv: _rank(kv[0]))]
        if self.missing:
            parts.append(f"{self.missing} missing in the re-run")
        spread = f" (max {self.max_std:.2g} std)" if self.max_std else ""
        verdict = "differs" if self.failed(tolerance) else "agrees"
        return f"{self.name}: {numbers} numbers, {', '.join(parts) or 'rows match'}{spread} -> {verdict}"


def compare_number(committed: str, rerun: str, std: float | None, tolerance: float) -> tuple[str, str, float]:
    """(category, description, distance in stds) of one number."""
    a, b = number(committed), number(rerun)
    if a == b:
        return "exact", "exact", 0.0
    if b is None:
        return "missing", f"{committed} -> missing in the re-run", 0.0
    if a is None:
        return "not comparable", f"(empty) -> {rerun}: not comparable", 0.0
    diff = b - a
    relative = f" = {diff / abs(a) * 100:+.3g} %" if a else ""
    if std is None or math.isnan(std) or std == 0:
        why = "committed std 0" if std == 0 else "no std"
        return "not comparable", f"{committed} -> {rerun} ({diff:+.4g}{relative}; {why}): not comparable", 0.0
    units = abs(diff) / std
    category = ("within 1 std" if units <= 1 else f"within {tolerance:g} std" if units <= tolerance
                else f"beyond {tolerance:g} std")
    return category, f"{committed} -> {rerun} ({diff:+.4g}, {diff / std:+.2f} std)", units


def compare_table(name: str, committed: str, rerun: str, tolerance: float = 2.0, show_all: bool = False) -> Verdict:
    """Compare one table's committed and re-run CSV texts."""
    verdict = Verdict(name)
    old, new = read_csv(committed), read_csv(rerun)
    layout = layout_of(old)
    for c in layout.provenance:
        if c in new.columns and set(old[c]) != set(new[c]):
            verdict.lines.append(f"  provenance {c}: {', '.join(sorted(set(old[c])))} -> "
                                 f"{', '.join(sorted(set(new[c])))}")
    for c in [c for c in layout.keys if c not in new.columns]:
        verdict.lines.append(f"  key column '{c}' missing in the re-run: rows cannot be matched")
        verdict.missing += 1
        return verdict
    compared = layout.numbers + layout.flags
    for c in compared:
        if c not in new.columns:
            verdict.lines.append(f"  column '{c}' missing in the re-run")
            verdict.missing += 1
    for c in new.columns:
        if c not in old.columns and c not in layout_of(new).provenance:
            verdict.lines.append(f"  column '{c}' only in the re-run (not compared)")
    stds = seed_std(old, layout) if layout.per_seed else None
    varying = [k for k in layout.keys if old[k].nunique() > 1] or layout.keys[:1]
    old_rows, new_rows = keyed(old, layout.keys), keyed(new, layout.keys)
    for key, i in old_rows.items():
        label = "[" + ", ".join(f"{k}={old.at[i, k]}" if number(old.at[i, k]) is not None else old.at[i, k]
                                for k in varying) + "]" if varying else f"[row {i + 1}]"
        if key not in new_rows:
            verdict.lines.append(f"  row {label} missing in the re-run")
            verdict.missing += 1
            continue
        j = new_rows[key]
        for c in [c for c in compared if c in new.columns]:
            if c in layout.flags:
                same = old.at[i, c] == new.at[j, c]
                category, text, units = ("exact", "exact", 0.0) if same else \
                    ("not comparable", f"{old.at[i, c]} -> {new.at[j, c]}: not comparable", 0.0)
            else:
                std = stds.at[i, c] if stds is not None else number(old.at[i, layout.spread[c]]) \
                    if c in layout.spread else None
                category, text, units = compare_number(old.at[i, c], new.at[j, c], std, tolerance)
            if category == "missing":
                verdict.missing += 1
            else:
                verdict.count(category)
            verdict.max_std = max(verdict.max_std, units)
            if category != "exact" or show_all:
                verdict.lines.append(f"  {label} {c}: {text}")
    for key in new_rows:
        if key not in old_rows:
            verdict.lines.append(f"  row [{', '.join(map(str, key))}] only in the re-run (not compared)")
    return verdict


def compare(committed: dict[str, str], rerun: dict[str, str], tolerance: float = 2.0,
            show_all: bool = False, out=None) -> bool:
    """Print the comparison of every committed table; True when the re-run agrees."""
    out = out or sys.stdout
    verdicts = []
    for name in sorted(committed):
        if name not in rerun:
            verdict = Verdict(name, missing=1, note="missing in the re-run -> differs")
        else:
            verdict = compare_table(name, committed[name], rerun[name], tolerance, show_all)
        verdicts.append(verdict)
        print("\n".join([verdict.summary(tolerance), *verdict.lines]), file=out)
    for name in sorted(set(rerun) - set(committed)):
        print(f"{name}: only in the re-run (not committed, not compared)", file=out)
    failed = [v for v in verdicts if v.failed(tolerance)]
    totals: dict[str, int] = {}
    for v in verdicts:
        for what, n in v.counts.items():
            totals[what] = totals.get(what, 0) + n
    missing = sum(v.missing for v in verdicts)
    print(f"summary: {len(verdicts)} tables, {len(verdicts) - len(failed)} agree, {len(failed)} differ"
          + (f" ({', '.join(v.name for v in failed)})" if failed else "") + f"; {sum(totals.values())} numbers: "
          + ", ".join(f"{n} {what}" for what, n in sorted(totals.items(), key=lambda kv: _rank(kv[0])))
          + (f"; {missing} tables/rows/columns/values missing" if missing else "")
          + f"; tolerance {tolerance:g} committed seed std -> {'DIFFERS' if failed else 'AGREES'}", file=out)
    return not failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dapo.experiments.reproduce", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    cmp = commands.add_parser("compare", help="compare a re-run's tables with the committed ones")
    cmp.add_argument("rerun", metavar="RERUN_DIR", help="the re-run's results folder (e.g. results/synthetic)")
    cmp.add_argument("--committed", default="results/synthetic", metavar="DIR",
                     help="the committed results folder (default results/synthetic)")
    cmp.add_argument("--git", default="", metavar="REV",
                     help="read --committed as committed at git revision REV (e.g. HEAD: after `make reproduce` "
                          "rewrote results/synthetic in place)")
    cmp.add_argument("--tolerance", type=float, default=2.0, help="allowed distance in committed seed stds (2)")
    cmp.add_argument("--all", action="store_true", help="also list the numbers that are exact")
    args = parser.parse_args(argv)
    if args.tolerance <= 0:
        parser.error(f"--tolerance must be positive, got {args.tolerance}")
    committed = git_tables(args.committed, args.git) if args.git else folder_tables(args.committed)
    if not committed:
        raise SystemExit(f"no committed tables in {args.committed}{' at ' + args.git if args.git else ''}")
    return 0 if compare(committed, folder_tables(args.rerun), args.tolerance, args.all) else 1


if __name__ == "__main__":
    sys.exit(main())
