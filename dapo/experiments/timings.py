"""Where a run's time went: per notebook, the trainings and evaluations it did or reused.

Each notebook's run writes ``<results>/timings/<notebook>.json`` (the :mod:`dapo.engine.ledger` work
records, rewritten at every saved table or figure, so work after the last one is not counted; one file
per notebook, so two notebooks running at once never write the same file). :func:`summary` reads
them with each executed notebook's papermill duration; :func:`wall_times` and :func:`invocations` add
each notebook's run, CPU and load, and each run's span; :func:`repeated` lists the trainings and
evaluations done by more than one notebook (what a shared store or cache would save)::

    python -m dapo.experiments.timings                    # results/synthetic
    python -m dapo.experiments.timings results/smoke
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pandas as pd

from dapo.util.atomic import write_text

FOLDER = "timings"
SUMMARY_COLUMNS = ("wall_min", "trained", "training_min", "loaded", "computed", "evaluation_min", "cached",
                   "other_min")


def machine_load() -> dict:
    """What the times are measured on: torch's CPU capability (``AVX2``, ``AVX512``), the cores, and the
    15-minute load average at the last record (above the cores: other jobs shared the CPU)."""
    import torch

    return {"cpu": torch.backends.cpu.get_cpu_capability(), "cores": os.cpu_count(),
            "load_15min": round(os.getloadavg()[2], 2)}


def write_work(out_dir: str | Path, notebook: str, run_id: str, work: list[dict]) -> Path:
    """Record a notebook's work so far (``run_id``: the run it belongs to) and :func:`machine_load`."""
    path = Path(out_dir) / FOLDER / f"{notebook}.json"
    record = {"notebook": notebook, "run_id": run_id, "machine": machine_load(), "work": work}
    return write_text(path, json.dumps(record, indent=1) + "\n")


def read_work(results: str | Path) -> dict[str, dict]:
    """``{notebook: record}`` of every timings file under ``results`` (``ValueError`` naming a bad file)."""
    records = {}
    for path in sorted((Path(results) / FOLDER).glob("*.json")):
        try:
            record = json.loads(path.read_text())
            records[record["notebook"]] = record
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: not a timings file ({error})") from None
    return records


def papermill_record(path: str | Path) -> dict:
    """An executed notebook's papermill metadata (start and end time, duration); ``{}`` when absent."""
    try:
        return dict(json.loads(Path(path).read_text())["metadata"]["papermill"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def papermill_minutes(results: str | Path, notebook: str) -> float:
    """The executed notebook's papermill duration in minutes (NaN when absent)."""
    duration = papermill_record(Path(results) / "notebooks" / f"{notebook}.ipynb").get("duration")
    return float(duration) / 60 if duration is not None else float("nan")


def summary(results: str | Path) -> pd.DataFrame:
    """Per notebook: papermill wall time; trainings done (count, minutes) and loaded; evaluations
    computed (count, minutes) and read from the cache; the rest of the wall time (data, figures,
    tables, kernel start). Minutes rounded to 0.1; a ``total`` row."""
    rows = {}
    for notebook, record in read_work(results).items():
        work = pd.DataFrame(record["work"], columns=["kind", "key", "outcome", "seconds"])
        count = work.groupby("outcome").size()
        minutes = work.groupby("outcome")["seconds"].sum() / 60
        wall = papermill_minutes(results, notebook)
        rows[notebook] = {
            "wall_min": wall, "trained": count.get("trained", 0), "training_min": minutes.get("trained", 0.0),
            "loaded": count.get("loaded", 0), "computed": count.get("computed", 0),
            "evaluation_min": minutes.get("computed", 0.0), "cached": count.get("cached", 0),
            "other_min": wall - minutes.sum()}
    table = pd.DataFrame.from_dict(rows, orient="index", columns=list(SUMMARY_COLUMNS))
    table.index.name = "notebook"
    if len(table):
        table.loc["total"] = table.sum(numeric_only=True, min_count=1)
    counts = ["trained", "loaded", "computed", "cached"]
    return table.astype({c: int for c in counts}).round(1)


def wall_times(results: str | Path) -> pd.DataFrame:
    """Per executed notebook under ``results/notebooks``: its run (``provenance.json``), papermill start,
    end and wall minutes, torch threads, and, where that same run recorded them, the trainings done
    (count, minutes) and loaded, the evaluations computed (count, minutes) and read from the cache,
    the CPU and the 15-minute load average at its last record (``timings/``)."""
    from datetime import datetime

    results = Path(results)
    provenance_path = results / "provenance.json"
    provenance = json.loads(provenance_path.read_text()) if provenance_path.is_file() else {}
    work, split = read_work(results), summary(results)
    rows = []
    for path in sorted((results / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        timing = papermill_record(path)
        try:
            start, end = (datetime.fromisoformat(timing[k]) for k in ("start_time", "end_time"))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: no papermill start and end time ({error})") from None
        run = provenance.get(path.stem, {})
        row = {"notebook": path.stem, "run_id": run.get("run_id", ""), "start": start, "end": end,
               "wall_min": float(timing["duration"]) / 60, "threads": run.get("threads")}
        record = work.get(path.stem, {})
        if record.get("run_id") == row["run_id"]:
            row.update(split.loc[path.stem, ["trained", "training_min", "loaded", "computed", "evaluation_min",
                                              "cached"]].to_dict())
            row.update(record.get("machine", {}))
        rows.append(row)
    return pd.DataFrame(rows, columns=["notebook", "run_id", "start", "end", "wall_min", "threads", "trained",
                                       "training_min", "loaded", "computed", "evaluation_min", "cached", "cpu",
                                       "cores", "load_15min"])


def invocations(times: pd.DataFrame) -> pd.DataFrame:
    """Per run id of :func:`wall_times`: its notebooks, the wall minutes from the first start to the last
    end (notebooks run side by side under ``-j 2``), and the notebooks' minutes summed."""
    groups = times.groupby("run_id", sort=False)
    out = pd.DataFrame({"notebooks": groups["notebook"].agg(lambda s: ", ".join(n[:2] for n in s)),
                        "wall_min": groups.apply(lambda g: (g["end"].max() - g["start"].min()).total_seconds() / 60,
                                                 include_groups=False),
                        "notebook_min": groups["wall_min"].sum()})
    return out.sort_values("wall_min", ascending=False).reset_index()


def repeated(results: str | Path) -> pd.DataFrame:
    """The trainings and evaluations that more than one notebook did (not loaded, not read from the
    cache): key, kind, the notebooks, and the minutes beyond the first."""
    done = [(notebook, entry) for notebook, record in read_work(results).items() for entry in record["work"]
            if entry["outcome"] in ("trained", "computed")]
    frame = pd.DataFrame([{"notebook": n, **e} for n, e in done], columns=["notebook", "kind", "key", "outcome", "seconds"])
    groups = frame.groupby(["kind", "key"], sort=True)
    out = pd.DataFrame({"notebooks": groups["notebook"].agg(lambda s: ", ".join(sorted(set(s)))),
                        "times": groups.size(),
                        "extra_min": groups["seconds"].agg(lambda s: (s.sum() - s.iloc[0]) / 60).round(2)})
    return out[out["times"] > 1].reset_index()


def main(argv: list[str] | None = None) -> None:
    from dapo.util.paths import results_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="?", default=None, help="a results folder (default: results/synthetic)")
    args = parser.parse_args(argv)
    results = Path(args.results) if args.results else results_dir("synthetic", False)
    if not (results / FOLDER).is_dir():
        parser.error(f"{results / FOLDER}: no timings (run the notebooks first: make reproduce)")
    with pd.option_context("display.width", 160, "display.max_rows", 200):
        print(f"Where the time went ({results}; minutes)\n")
        print(summary(results).to_string())
        print("\nRuns, first start to last end (minutes):\n" + invocations(wall_times(results)).round(1).to_string(index=False))
        twice = repeated(results)
        print(f"\nDone by more than one notebook: {len(twice)}" + ("" if twice.empty else "\n" + twice.to_string()))


if __name__ == "__main__":
    main()
