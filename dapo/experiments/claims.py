"""Result numbers in README.md and docs/*.md, generated from the committed tables.

Prose quotes a result only inside a marked block that this module writes from
``results/synthetic/`` (``python -m dapo.experiments.claims``, ``make claims``)::

    <!-- generated: table1 (python -m dapo.experiments.claims) -->
    ...
    <!-- end generated: table1 -->

``python -m dapo.experiments.claims --check`` exits 1 when a block differs from what the tables give, and
:func:`typed_results` finds result numbers typed outside blocks (``tests/test_claims.py`` runs
both). The rule for what counts as a typed result is :data:`RULE`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
TABLES = Path("results/synthetic")
#: Pages whose prose is checked: README.md and every docs/*.md but these (page: why).
NOT_CHECKED = {
    "docs/FIDELITY.md": "the fidelity study's own page, kept by notebook 11's owner (its numbers are the "
                        "paper's, the released code's and notebook 11's; issue 26 item 1 derives them)",
}
RULE = ("A typed result is a decimal number (12.5, 0.93) or a percentage (85 %, 12.5%) in prose. Not results: "
        "code (fenced blocks, `inline`), HTML comments, link targets, generated blocks, version strings (2.14.1, Python 3.11), "
        "section and equation numbers (Sec. 5.2), numerical tolerances in scientific notation (1.4e-8), and "
        "numbers (or ranges a-b) directly followed by a unit of time, size, speed or count (s, ms, min, h, MB, "
        "MiB, GB, GiB, KB, GFLOP, TFLOP/s, px, x, ×, steps, images).")
UNITS = r"(?:ms|s|min|h|MB|MiB|GB|GiB|KB|KiB|GFLOP|TFLOP/s|px|x|×|steps?|images?)(?![\w/])"
NUMBER = re.compile(r"(?<![\w.\-/])[+\-−]?\d+(?:\.\d+)+(?:\s?%)?|(?<![\w.\-/])[+\-−]?\d+\s?%")
BLOCK = re.compile(r"<!-- generated: (?P<name>[\w-]+)[^>]*-->\n(?P<body>.*?)<!-- end generated: (?P=name) -->",
                   re.S)


# ----------------------------------------------------------------------------- the blocks


def _table(name: str) -> pd.DataFrame:
    return pd.read_csv(ROOT / TABLES / f"{name}.csv")


def _pm(row: pd.Series, metric: str) -> str:
    """``mean ± std``; the mean alone where there is no spread (a training-free method: one run)."""
    mean, std = row[f"{metric} / mean"], row[f"{metric} / std"]
    return f"{mean:.1f}" if pd.isna(std) else f"{mean:.1f} ± {std:.1f}"


def _markdown(frame: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + " --- |" * len(frame.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _source(*names: str) -> str:
    return "Source: " + ", ".join(f"`{TABLES}/{n}.csv`" for n in names) + " (SYNTHETIC profile)."


def table1() -> str:
    """Table 1 (pixel-level multi-type segmentation): every method and target, and who leads where."""
    t = _table("table1_multitype")
    metrics = {"pixel_auroc": "AUROC", "pixel_ap": "AP", "pixel_f1": "F1"}
    rows = pd.DataFrame({"target": t["test"], "method": t["method"],
                         **{f"pixel {label} (%)": t.apply(_pm, axis=1, metric=m) for m, label in metrics.items()},
                         "seeds": t["n_seeds"]})
    lines = [_markdown(rows), "", _source("table1_multitype") + " Mean ± std over seeds."]
    for target, group in t.groupby("test", sort=False):
        words = []
        for metric, label in metrics.items():
            best = group.loc[group[f"{metric} / mean"].idxmax()]
            others = ", ".join(f"{r['method']} {r[f'{metric} / mean']:.1f}" for _, r in group.iterrows()
                               if r["method"] != best["method"])
            words.append(f"{label}: {best['method']} {best[f'{metric} / mean']:.1f} (vs {others})")
        lines.append(f"- highest mean on `{target}`: " + "; ".join(words) + ".")
    lo, hi = t["pixel_auroc / mean"].min(), t["pixel_auroc / mean"].max()
    lines.append(f"- pixel AUROC of the trained methods: {lo:.1f} to {hi:.1f} %.")
    return "\n".join(lines)


def table3() -> str:
    """Table 3 (binary detection and segmentation): every method on each direction."""
    t = _table("table3_binary")
    metrics = {"image_auroc": "image AUROC", "image_ap": "image AP", "pixel_auroc": "pixel AUROC",
               "pixel_aupro": "pixel AUPRO"}
    rows = pd.DataFrame({"train → test": t["train"] + " → " + t["test"], "method": t["method"],
                         **{f"{label} (%)": t.apply(_pm, axis=1, metric=m) for m, label in metrics.items()}})
    return "\n".join([_markdown(rows), "", _source("table3_binary") + " Mean ± std over seeds (a mean alone: "
                      "a training-free method, one run). AUPRO: the exact definition (`pixel_aupro`, docs/METRICS.md)."])


def compact_clip() -> str:
    """The compact backbone's zero-shot quality (``scripts/evaluate_compact_clip.py``)."""
    s = json.loads((ROOT / TABLES / "compact_clip" / "summary.json").read_text())

    def bar(value: float, target: float) -> str:
        return f">= {100 * target:.0f} %: {'met' if value >= target else 'not met'}"

    rows = pd.DataFrame([
        ("zero-shot defect type (normal + the product's types)",
         f"{100 * s['defect_type_top1']:.1f} % (± {100 * s['defect_type_top1_standard_error']:.1f}, binomial s.e.)",
         bar(s["defect_type_top1"], s["defect_type_bar"])),
        ("zero-shot product", f"{100 * s['product_top1']:.1f} %", bar(s["product_top1"], s["product_bar"])),
        ("CLIP-AC-style zero-shot, defective vs normal patches (AUROC)", f"{s['clip_ac_patch_auroc']:.3f}", ""),
        ("same prompts, defective vs normal images (AUROC)", f"{s['clip_ac_image_auroc']:.3f}", ""),
        ("linear probe on frozen layer-4 patch tokens (AUROC)", f"{s['probe_patch_auroc']:.3f}", ""),
    ], columns=["measurement", "top-1 / AUROC", "bar"])
    recall = pd.read_csv(ROOT / TABLES / "compact_clip" / "defect_type_per_class.csv").sort_values("top1")
    recall = recall[recall["state"] != "normal"]
    per_type = ", ".join(f"{r.state} {100 * r.top1:.1f} %" for r in recall.itertuples())
    return "\n".join([
        _markdown(rows), "",
        f"Measured on {s['heldout_images']} held-out images (stream seed {s['seed']}); source: "
        f"`{TABLES}/compact_clip/summary.json` (SYNTHETIC). Zero-shot recall per defect type, lowest first "
        f"(`defect_type_per_class.csv`): {per_type}."])


def wall_times() -> str:
    """docs/REPRODUCING.md: every committed notebook's wall time, its run, where its time went and
    what it was measured on (:func:`dapo.experiments.timings.wall_times`), and each run's span."""
    from dapo.experiments.timings import invocations
    from dapo.experiments.timings import wall_times as measured

    times = measured(ROOT / TABLES)

    def work(row: pd.Series, done: str, minutes: str, reused: str) -> str:
        return "" if pd.isna(row[done]) else f"{int(row[done])} ({row[minutes]:.1f} min) / {int(row[reused])}"

    def machine(row: pd.Series) -> str:
        threads = "" if pd.isna(row["threads"]) else f"{int(row['threads'])} thread" + ("s" if row["threads"] > 1 else "")
        if pd.isna(row["load_15min"]):
            return threads
        return f"{row['cpu']}, {threads}, load {row['load_15min']:.1f} on {int(row['cores'])} cores"

    rows = pd.DataFrame({"notebook": times["notebook"], "wall time": times["wall_min"].map(lambda m: f"{m:.1f} min"),
                         "run": times["run_id"].replace("", "(not recorded)"),
                         "trainings done / loaded": times.apply(work, axis=1, args=("trained", "training_min", "loaded")),
                         "evaluations computed / cached": times.apply(work, axis=1,
                                                                      args=("computed", "evaluation_min", "cached")),
                         "measured on": times.apply(machine, axis=1)})
    lines = [_markdown(rows), "", f"Source: the executed notebooks' papermill times under `{TABLES}/notebooks/`, "
             f"`{TABLES}/provenance.json` and `timings/` (a cell is empty where the run "
             "did not record it). Each run, first start to last end (notebooks side by side under `-j 2`):"]
    runs = invocations(times)
    lines += [f"- run {r.run_id or '(not recorded)'} ({r.notebooks}): {r.wall_min:.1f} min; the notebooks' times summed "
              f"{r.notebook_min:.1f} min" for r in runs.itertuples()]
    lines.append(f"- all {len(runs)} run(s) together: {runs['wall_min'].sum():.1f} min of wall time")
    return "\n".join(lines)


def verify_example() -> str:
    """docs/REPRODUCING.md: what ``make verify`` prints, on a copy of the committed Table 1 with three
    numbers edited (DAPO's first pixel AUROC +0.1, MultiADS's first pixel AP + 2.5 of its std, that
    std x 1.1), so the example stays the committed table's."""
    import io

    from dapo.experiments.reproduce import compare_table

    committed = (ROOT / TABLES / "table1_multitype.csv").read_text()
    edited = pd.read_csv(io.StringIO(committed))
    dapo, multiads = (edited.index[edited["method"] == m][0] for m in ("DAPO", "MultiADS"))
    edited.loc[dapo, "pixel_auroc / mean"] += 0.1
    edited.loc[multiads, "pixel_ap / mean"] += 2.5 * edited.loc[multiads, "pixel_ap / std"]
    edited.loc[multiads, "pixel_ap / std"] *= 1.1
    verdict = compare_table("table1_multitype", committed, edited.to_csv(index=False, float_format="%.6g"))
    return "\n".join(["```", verdict.summary(2.0), *verdict.lines, "```"])


def methods() -> str:
    """Every registered method (:mod:`dapo.methods`): its family, whether it trains, its Table 3 row and page."""
    from dapo.methods import METHODS

    rows = []
    for name, spec in sorted(METHODS.items()):
        family = spec.model.family
        page = next((p for p in (name, family) if (ROOT / "docs" / "methods" / f"{p}.md").is_file()), None)
        where = f"[docs/methods/{page}.md](methods/{page}.md)" if page else "[FIDELITY](FIDELITY.md)"
        rows.append((f"`{name}`", spec.config().name, f"`{family}`", "no" if spec.training_free else "yes",
                     spec.table3 or "", where))
    frame = pd.DataFrame(rows, columns=["registry name", "shown as", "model family", "trained", "DAPO Table 3 row",
                                        "page"])
    return _markdown(frame) + "\n\nSource: `dapo.methods.METHODS` (the registry)."


BLOCKS: dict[str, Callable[[], str]] = {"table1": table1, "table3": table3, "compact_clip": compact_clip,
                                        "methods": methods, "wall_times": wall_times,
                                        "verify_example": verify_example}


# ----------------------------------------------------------------------------- rewriting and checking


def pages(root: Path = ROOT) -> list[Path]:
    """README.md and docs/*.md whose prose is checked (:data:`NOT_CHECKED` left out)."""
    found = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    return [p for p in found if p.relative_to(root).as_posix() not in NOT_CHECKED]


def render(text: str, where: str = "text") -> str:
    """``text`` with every generated block rewritten from the tables (an unknown block name raises)."""
    def fill(match: re.Match) -> str:
        name = match["name"]
        if name not in BLOCKS:
            raise ValueError(f"{where}: unknown generated block {name!r}; known: {', '.join(BLOCKS)}")
        return f"<!-- generated: {name} (python -m dapo.experiments.claims) -->\n{BLOCKS[name]()}\n<!-- end generated: {name} -->"
    return BLOCK.sub(fill, text)


def prose(text: str) -> str:
    """``text`` without what :data:`RULE` leaves unchecked (code, comments, link targets, blocks)."""
    text = BLOCK.sub("", text)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.sub(r"\]\([^)]*\)", "]", text)


def typed_results(text: str) -> list[str]:
    """The result numbers typed in ``text``'s prose (by :data:`RULE`), each with its line."""
    found = []
    for line in prose(text).splitlines():
        for match in NUMBER.finditer(line):
            after, before = line[match.end():], line[:match.start()]
            if match.group().count(".") > 1:
                continue  # a version string
            unit = re.sub(r"^[-–]\d+(?:\.\d+)?", "", after)  # a range a-b takes b's unit
            if re.match(r"\d*\.\d|e[-+]?\d", after) or re.match(rf"\s?{UNITS}", unit):
                continue  # a version string's tail, a tolerance, or a measure of time, size or speed
            if re.search(r"(?:Python|Sec\.|Section|Eq\.|Table|Tables|Figure|Fig\.|appendix)\s*$", before):
                continue
            found.append(f"{match.group().strip()} in: {line.strip()[:160]}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dapo.experiments.claims", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="rewrite nothing; exit 1 if a block is stale "
                                                             "or a result is typed outside a block")
    args = parser.parse_args(argv)
    problems = []
    for page in pages():
        name = page.relative_to(ROOT).as_posix()
        text = page.read_text()
        new = render(text, name)
        if new != text:
            if args.check:
                problems.append(f"{name}: a generated block is stale (run `make claims`)")
            else:
                page.write_text(new)
                print(f"rewrote {name}")
        problems += [f"{name}: typed result {hit}" for hit in typed_results(new)]
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s). {RULE}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
