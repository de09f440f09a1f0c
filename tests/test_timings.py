"""Where a run's time went (dapo.engine.ledger's work records, dapo.experiments.timings): each training
and evaluation is recorded once with its outcome; the per-notebook summary and the list of work done
by more than one notebook, checked on hand-worked records."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from dapo.engine import ledger
from dapo.experiments import timings
from dapo.experiments.runs import (
    evaluate_binary,
    evaluate_methods,
    evaluate_multitype,
    open_profile_dataset,
    train_or_load,
)
from dapo.synthetic.worlds import write_world


@pytest.fixture(autouse=True)
def _fresh_ledger():
    ledger.reset()
    yield
    ledger.reset()


def test_unknown_kinds_and_outcomes_are_refused():
    with pytest.raises(ValueError, match="'evaluation' with outcome 'loaded'"):
        ledger.record_work("evaluation", "x", "loaded", 1.0)
    with pytest.raises(ValueError, match="kind 'sleep'"):
        ledger.record_work("sleep", "x", "trained", 1.0)


def test_an_evaluation_inside_another_counts_once_and_a_failed_one_not_at_all():
    @ledger.timed_evaluation
    def inner(x, *, desc: str = "inner default"):
        return x

    @ledger.timed_evaluation
    def outer(x, *, desc: str = "outer default"):
        return inner(x, desc="nested") + 1

    @ledger.timed_evaluation
    def broken(*, desc: str = "broken"):
        raise RuntimeError("no")

    assert outer(1, desc="A on B") == 2 and inner(5) == 5
    with pytest.raises(RuntimeError):
        broken()
    assert [(w["key"], w["outcome"]) for w in ledger.work()] == [("outer: A on B", "computed"),
                                                                 ("inner: inner default", "computed")]
    assert all(w["seconds"] >= 0 for w in ledger.work())


def test_a_run_records_each_training_and_evaluation_with_its_outcome(smoke_target_world, tiny_backbone, tmp_path):
    cfg, name = smoke_target_world
    write_world(cfg.train_dataset, cfg.dataset_roots[cfg.train_dataset], smoke=True, image_size=64)
    run_dir = tmp_path / "synthetic"
    first = train_or_load(cfg, "dapo", run_dir, backbone=tiny_backbone, device="cpu", progress=False)
    second = train_or_load(cfg, "dapo", run_dir, backbone=tiny_backbone, device="cpu", progress=False)
    target = {name: open_profile_dataset(cfg, name, split="test")}
    for _ in range(2):  # computed, then read from the evaluation cache
        evaluate_methods({("DAPO", 0): second}, target, evaluate_binary, device="cpu", progress=False,
                         cache=tmp_path / "cache")
    evaluate_multitype(first[0], target[name], device="cpu", progress=False, desc="DAPO seed 0 on t")
    checkpoint = "synthetic/checkpoints/dapo/default/seed0/epoch_001.safetensors"
    assert [(w["kind"], w["key"], w["outcome"]) for w in ledger.work()] == [
        ("training", checkpoint, "trained"),
        ("training", checkpoint, "loaded"),
        ("evaluation", f"evaluate_binary_curves: DAPO seed 0 on {name}", "computed"),
        ("evaluation", f"evaluate_binary_curves: DAPO seed 0 on {name}", "cached"),
        ("evaluation", "evaluate_multitype: DAPO seed 0 on t", "computed"),
    ]


def _write(results, notebook, work, duration=None):
    timings.write_work(results, notebook, "run-1", [
        {"kind": kind, "key": key, "outcome": outcome, "seconds": seconds} for kind, key, outcome, seconds in work])
    if duration is not None:
        executed = results / "notebooks" / f"{notebook}.ipynb"
        executed.parent.mkdir(parents=True, exist_ok=True)
        executed.write_text(json.dumps({"metadata": {"papermill": {"duration": duration}}, "cells": []}))


def test_summary_and_repeated_work_on_hand_worked_records(tmp_path):
    ckpt = "synthetic/checkpoints/dapo/default/seed0/epoch_002.safetensors"
    _write(tmp_path, "03_multitype", [("training", ckpt, "trained", 120.0),
                                      ("evaluation", "evaluate_multitype: DAPO seed 0 on t", "computed", 30.0)],
           duration=600.0)
    _write(tmp_path, "07_ablation_init", [("training", ckpt, "trained", 90.0),
                                          ("training", "synthetic/checkpoints/x/seed0/epoch_002.safetensors",
                                           "loaded", 1.5),
                                          ("evaluation", "evaluate_binary_curves: DAPO seed 0 on t", "cached", 4.5)],
           duration=300.0)
    table = timings.summary(tmp_path)
    assert list(table.columns) == list(timings.SUMMARY_COLUMNS)
    row = table.loc["03_multitype"]
    assert (row["wall_min"], row["trained"], row["training_min"], row["computed"], row["evaluation_min"]) == \
        (10.0, 1, 2.0, 1, 0.5)
    assert row["other_min"] == 7.5                      # 10 - 2 - 0.5
    row = table.loc["07_ablation_init"]
    assert (row["trained"], row["loaded"], row["cached"], row["other_min"]) == (1, 1, 1, 3.4)  # 5 - (90 + 1.5 + 4.5) / 60
    assert table.loc["total", "wall_min"] == 15.0 and table.loc["total", "trained"] == 2
    twice = timings.repeated(tmp_path)
    assert twice.to_dict("records") == [{"kind": "training", "key": ckpt, "notebooks": "03_multitype, 07_ablation_init",
                                         "times": 2, "extra_min": 1.5}]


def test_a_notebook_without_its_executed_copy_has_no_wall_time_and_a_bad_file_is_named(tmp_path):
    _write(tmp_path, "00_data", [])
    assert pd.isna(timings.summary(tmp_path).loc["00_data", "wall_min"])
    (tmp_path / "timings" / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json: not a timings file"):
        timings.read_work(tmp_path)


def test_wall_times_and_runs_on_hand_worked_notebooks(tmp_path, monkeypatch):
    """Two notebooks of one run side by side and one of another run, whose timings file is a later
    run's: the split and the machine only where the run ids match; a run spans first start to last end."""
    monkeypatch.setattr(timings, "machine_load", lambda: {"cpu": "AVX2", "cores": 2, "load_15min": 2.5})
    _write(tmp_path, "03_multitype", [("training", "c", "trained", 120.0)])
    _write(tmp_path, "04_binary", [("evaluation", "e", "computed", 60.0), ("evaluation", "e", "cached", 1.0)])
    (tmp_path / "provenance.json").write_text(json.dumps({
        "03_multitype": {"run_id": "run-1", "threads": 1}, "04_binary": {"run_id": "run-1", "threads": 1},
        "05_multilabel": {"run_id": "run-0", "threads": 2}}))
    folder = tmp_path / "notebooks"
    folder.mkdir()
    for notebook, start, end in (("03_multitype", "10:00", "10:10"), ("04_binary", "10:00", "10:30"),
                                 ("05_multilabel", "09:00", "09:04")):
        papermill = {"start_time": f"2026-12-07T{start}:00+00:00", "end_time": f"2026-12-07T{end}:00+00:00",
                     "duration": (int(end[3:]) - int(start[3:])) * 60.0}
        (folder / f"{notebook}.ipynb").write_text(json.dumps({"metadata": {"papermill": papermill}, "cells": []}))
    (tmp_path / "timings" / "05_multilabel.json").write_text(json.dumps({"notebook": "05_multilabel",
                                                                        "run_id": "run-9", "work": []}))
    times = timings.wall_times(tmp_path).set_index("notebook")
    assert times.loc["03_multitype", ["wall_min", "trained", "training_min", "cpu", "load_15min"]].tolist() == \
        [10.0, 1, 2.0, "AVX2", 2.5]
    assert times.loc["04_binary", ["computed", "evaluation_min", "cached"]].tolist() == [1, 1.0, 1]
    assert pd.isna(times.loc["05_multilabel", "trained"]) and pd.isna(times.loc["05_multilabel", "cpu"])
    runs = timings.invocations(times.reset_index()).set_index("run_id")
    assert runs.loc["run-1"].tolist() == ["03, 04", 30.0, 40.0]   # side by side: 30 min of wall, 40 summed
    assert runs.loc["run-0"].tolist() == ["05", 4.0, 4.0]


def test_the_record_names_the_machine(tmp_path):
    record = json.loads(timings.write_work(tmp_path, "00_data", "run-1", []).read_text())
    assert record["machine"]["cores"] >= 1 and record["machine"]["cpu"] in ("DEFAULT", "AVX2", "AVX512", "ZVECTOR", "VSX")
