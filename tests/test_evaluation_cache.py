"""The evaluation cache shared by the notebooks (dapo.experiments.evaluation_cache, issue 32): a hit is the
fresh evaluation byte for byte; anything that changes the result (a parameter, an inference setting,
the dataset, the precision) misses; a damaged entry is recomputed with a note; notebooks 04
(evaluate_binary_curves) and 13 (evaluate_binary) share one entry; two processes compute it once."""

from __future__ import annotations

import copy
import multiprocessing
import pickle
from dataclasses import replace

import pandas as pd
import pytest
import torch

from dapo.experiments import evaluation_cache, runs
from dapo.experiments.runs import (
    evaluate_binary,
    evaluate_binary_curves,
    evaluate_methods,
    inference_variant,
    open_profile_dataset,
)
from dapo.methods import make_model
from dapo.synthetic.worlds import write_world
from dapo.util.paths import shown_path


@pytest.fixture(autouse=True)
def _cache_on(monkeypatch):
    monkeypatch.delenv(evaluation_cache.ENVIRONMENT, raising=False)


@pytest.fixture(scope="module")
def filled(tiny_dapo, smoke_target):
    """One real filled evaluator, handed out by :func:`counting` (the misses need no new predictions)."""
    return runs.binary_evaluator(tiny_dapo, smoke_target, device="cpu", progress=False)


@pytest.fixture
def counting(monkeypatch, filled):
    """Count the evaluations actually computed (``runs.binary_evaluator`` calls) and their precisions."""
    calls = []

    def evaluator(model, dataset, **kwargs):
        calls.append((model.config.name, kwargs.get("precision", "auto")))
        return filled
    monkeypatch.setattr(runs, "binary_evaluator", evaluator)
    return calls


def through(folder, model, dataset, evaluate=evaluate_binary_curves, **kwargs):
    result = evaluate_methods({("M", 0): (model, pd.DataFrame())}, {"d": dataset}, evaluate, device="cpu",
                              progress=False, cache=folder, **kwargs)
    return result["d"]["M"][0]


def entries(folder):
    return sorted(folder.glob(f"*/{evaluation_cache.RESULT}"))


def assert_identical(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert list(a.dtypes) == list(b.dtypes) and a.index.equals(b.index)
    assert a.to_csv() == b.to_csv()  # what the notebooks' tables are built from, byte for byte


def test_a_hit_is_the_fresh_evaluation_byte_for_byte(tiny_dapo, smoke_target, tmp_path, capsys):
    fresh = evaluate_binary_curves(tiny_dapo, smoke_target, device="cpu", progress=False)
    computed = through(tmp_path, tiny_dapo, smoke_target)
    (entry,) = entries(tmp_path)
    assert evaluation_cache.key_file(entry).is_file()
    capsys.readouterr()
    evaluate_methods({("M", 0): (tiny_dapo, pd.DataFrame())}, {"d": smoke_target}, evaluate_binary_curves, device="cpu",
                     cache=tmp_path)
    assert capsys.readouterr().err == "M seed 0 on d: read from the evaluation cache\n"
    read = through(tmp_path, tiny_dapo, smoke_target)
    assert read is not computed and entries(tmp_path) == [entry]
    for part in ("table", "roc", "rates"):
        assert_identical(getattr(read, part), getattr(fresh, part))
        assert_identical(getattr(computed, part), getattr(fresh, part))
    table = through(tmp_path, tiny_dapo, smoke_target, evaluate_binary)  # notebook 13's evaluator reads 04's entry
    assert_identical(table, evaluate_binary(tiny_dapo, smoke_target, device="cpu", progress=False))
    assert entries(tmp_path) == [entry]


def test_two_identical_requests_compute_once_and_04_and_13_share_the_entry(tiny_dapo, smoke_target, tmp_path, counting):
    through(tmp_path, tiny_dapo, smoke_target, evaluate_binary)
    through(tmp_path, tiny_dapo, smoke_target, evaluate_binary)
    through(tmp_path, tiny_dapo, smoke_target, evaluate_binary_curves)
    assert len(counting) == 1 and len(entries(tmp_path)) == 1


def test_a_changed_parameter_tensor_misses(tiny_dapo, smoke_target, tmp_path, counting):
    through(tmp_path, tiny_dapo, smoke_target)
    changed = copy.deepcopy(tiny_dapo)
    with torch.no_grad():
        next(iter(changed.learnable_parameters().values())).view(-1)[0] += 1e-3
    through(tmp_path, changed, smoke_target)
    through(tmp_path, changed, smoke_target)
    assert len(counting) == 2 and len(entries(tmp_path)) == 2


def test_an_inference_variant_sharing_the_parameters_misses(tiny_backbone, smoke_target, tmp_path, counting):
    multiads = make_model("multiads", tiny_backbone, seed=0)
    variant = inference_variant(multiads, "multiads_f")  # MultiADS-F: same tensors, other scoring config
    assert evaluation_cache.model_fingerprint(variant)["tensors_sha256"] == \
        evaluation_cache.model_fingerprint(multiads)["tensors_sha256"]
    through(tmp_path, multiads, smoke_target)
    through(tmp_path, variant, smoke_target)
    through(tmp_path, multiads, smoke_target)
    assert [name for name, _ in counting] == ["MultiADS", "MultiADS-F"] and len(entries(tmp_path)) == 2


def test_another_dataset_or_a_regenerated_world_misses(tiny_dapo, smoke_target, smoke_target_world, tmp_path, counting):
    cfg, name = smoke_target_world
    through(tmp_path, tiny_dapo, smoke_target)
    through(tmp_path, tiny_dapo, _opened(replace(cfg, image_size=48), name))  # another input size
    assert len(counting) == 2
    root = tmp_path / "world"
    write_world(name, root, smoke=True, image_size=64, seed=0)
    through(tmp_path, tiny_dapo, _opened(cfg, name, root))
    write_world(name, root, smoke=True, image_size=64, seed=1)  # same paths, other images
    through(tmp_path, tiny_dapo, _opened(cfg, name, root))
    assert len(counting) == 4 and len(entries(tmp_path)) == 4


def _opened(cfg, name, root=None):
    roots = {**cfg.dataset_roots, name: str(root)} if root else cfg.dataset_roots
    return open_profile_dataset(replace(cfg, dataset_roots=roots), name, split="test")


def test_another_precision_misses_and_auto_is_resolved(tiny_dapo, smoke_target, tmp_path, counting):
    through(tmp_path, tiny_dapo, smoke_target, precision="fp32")
    through(tmp_path, tiny_dapo, smoke_target, precision="bf16")
    through(tmp_path, tiny_dapo, smoke_target, precision="bf16")
    auto = runs.resolve_precision("auto", "cpu")
    through(tmp_path, tiny_dapo, smoke_target)  # "auto" is the machine's choice: the entry of that precision
    assert counting == [("DAPO", "fp32"), ("DAPO", "bf16")] and len(entries(tmp_path)) == 2
    assert auto in ("fp32", "bf16")


def test_a_damaged_entry_is_recomputed_with_a_note(tiny_dapo, smoke_target, tmp_path, counting, capsys):
    through(tmp_path, tiny_dapo, smoke_target)
    (entry,) = entries(tmp_path)
    entry.write_bytes(entry.read_bytes()[:-10])  # partly written under a complete key file
    capsys.readouterr()
    read = through(tmp_path, tiny_dapo, smoke_target)
    assert len(counting) == 2 and read.table is not None
    err = capsys.readouterr().err
    assert f"note: evaluation cache {shown_path(entry)} does not match the hash in its key file" in err
    assert str(tmp_path) not in err, "a machine path in a note that executed notebooks print"
    evaluation_cache.key_file(entry).unlink()  # killed between the entry and its key file
    through(tmp_path, tiny_dapo, smoke_target)
    assert len(counting) == 3 and "has no key file" in capsys.readouterr().err
    through(tmp_path, tiny_dapo, smoke_target)
    assert len(counting) == 3 and capsys.readouterr().err == ""


def test_a_pickle_in_place_of_an_entry_is_never_unpickled(tiny_dapo, smoke_target, tmp_path, counting):
    import builtins

    class RunsCode:
        def __reduce__(self):
            return builtins.open, (str(tmp_path / "CODE_RAN"), "w")

    through(tmp_path, tiny_dapo, smoke_target)
    (entry,) = entries(tmp_path)
    entry.write_bytes(pickle.dumps({"table": RunsCode()}))
    through(tmp_path, tiny_dapo, smoke_target)
    assert len(counting) == 2 and not (tmp_path / "CODE_RAN").exists()


def test_the_switch_turns_it_off(tiny_dapo, smoke_target, tmp_path, counting, monkeypatch):
    evaluate_methods({("M", 0): (tiny_dapo, pd.DataFrame())}, {"d": smoke_target}, evaluate_binary, device="cpu",
                     progress=False, cache=None)
    monkeypatch.setenv(evaluation_cache.ENVIRONMENT, "0")
    through(tmp_path, tiny_dapo, smoke_target)
    through(tmp_path, tiny_dapo, smoke_target)
    assert len(counting) == 3 and not entries(tmp_path)


def test_other_evaluators_are_not_cached(tiny_dapo, smoke_target, tmp_path):
    calls = []

    def evaluate(model, dataset, **kwargs):
        calls.append(kwargs["desc"])
        return len(calls)
    through(tmp_path, tiny_dapo, smoke_target, evaluate)
    through(tmp_path, tiny_dapo, smoke_target, evaluate)
    assert calls == ["M seed 0 on d"] * 2 and not any(tmp_path.iterdir())


def test_every_comparison_system_gets_a_fingerprint_of_its_own(tiny_backbone):
    from dapo.experiments.seed_systems import seed_systems
    from dapo.methods import table3_methods

    names = sorted({*table3_methods().values(), *seed_systems().values()})
    keys = {name: evaluation_cache.model_fingerprint(make_model(name, tiny_backbone)) for name in names}
    assert len({repr(sorted(key.items())) for key in keys.values()}) == len(names)
    assert all(key["backbone_tensors_sha256"] for key in keys.values())  # the tiny backbone has no weights file


@pytest.mark.parametrize("method", ["dapo", "vip2clip", "faprompt"])
def test_a_trained_model_and_its_checkpoint_loaded_again_share_the_key(method, smoke_target_world, tiny_backbone, tmp_path):
    from dapo.experiments.runs import train_or_load

    cfg, _ = smoke_target_world
    write_world(cfg.train_dataset, cfg.dataset_roots[cfg.train_dataset], smoke=True, image_size=64)
    trained, history = train_or_load(cfg, method, tmp_path, epochs=1, backbone=tiny_backbone, device="cpu",
                                     progress=False)
    loaded, _ = train_or_load(cfg, method, tmp_path, epochs=1, backbone=tiny_backbone, device="cpu", progress=False)
    assert history is not None and loaded is not trained  # notebook 04 trains it, notebook 13 loads it
    assert evaluation_cache.model_fingerprint(loaded) == evaluation_cache.model_fingerprint(trained)


def _request(folder, model, dataset, barrier, log):
    barrier.wait()
    through(folder, model, dataset, evaluate_binary)


def test_two_processes_asking_for_one_entry_compute_it_once(tiny_dapo, smoke_target, filled, tmp_path, monkeypatch):
    import time

    log = tmp_path / "computed.log"

    def evaluator(model, dataset, **kwargs):
        with open(log, "a") as handle:
            handle.write("computed\n")
        time.sleep(0.5)  # the other process asks meanwhile: it must wait for this entry, not compute it
        return filled
    monkeypatch.setattr(runs, "binary_evaluator", evaluator)
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    folder = tmp_path / "cache"
    workers = [context.Process(target=_request, args=(folder, tiny_dapo, smoke_target, barrier, log)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [worker.exitcode for worker in workers] == [0, 0]
    assert log.read_text() == "computed\n" and len(entries(folder)) == 1
