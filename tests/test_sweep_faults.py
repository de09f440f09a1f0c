"""Faults a long sweep must survive (issue 31): an interruption resumes without retraining finished
settings, a partial or foreign evaluation-cache entry is recomputed (with a note), never trusted."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from dapo.experiments.profiles import resolve_profile
from dapo.experiments.runs import checkpoint_dir
from dapo.experiments.sweep import Evaluation, sweep
from dapo.synthetic.worlds import write_world
from dapo.util.paths import shown_path

FAST = dict(n_prompts=2)


class _Killed(Exception):
    """Stands for a process killed in the middle of a sweep."""


@pytest.fixture(scope="module")
def cfg(tmp_path_factory, tiny_image_size):
    root = tmp_path_factory.mktemp("worlds")
    cfg = resolve_profile("synthetic", smoke=True, data_root=root, image_size=tiny_image_size, epochs=1)
    write_world(cfg.train_dataset, cfg.dataset_roots[cfg.train_dataset], smoke=True, image_size=64)
    return cfg


def counting(calls: list, fail_on: float | None = None, key=None) -> Evaluation:
    def fn(model):
        calls.append(model.config.lam)
        if model.config.lam == fail_on:
            raise _Killed
        return pd.DataFrame({"dataset": ["w"], "metric": ["m"], "value": [model.config.lam]})
    return Evaluation("count/1", fn, key)


def run(cfg, tiny_backbone, tmp_path, evaluation):
    return sweep(cfg, "dapo", tmp_path, grid=[{"lam": 1.0, **FAST}, {"lam": 16.0, **FAST}], seeds=[0],
                 evaluate=evaluation, backbone=tiny_backbone, device="cpu", progress=False)


def checkpoints(tmp_path):
    return {lam: checkpoint_dir(tmp_path, "dapo", 0, {"lam": lam, **FAST}) / "epoch_001.safetensors"
            for lam in (1.0, 16.0)}


def caches(tmp_path, lam):
    folder = checkpoints(tmp_path)[lam].parent / "evaluations"
    return sorted(folder.glob("count_1-*.csv"))


def test_an_interrupted_sweep_resumes_without_retraining_or_reevaluating(cfg, tiny_backbone, tmp_path):
    calls = []
    with pytest.raises(_Killed):
        run(cfg, tiny_backbone, tmp_path, counting(calls, fail_on=16.0))
    assert calls == [1.0, 16.0]
    stamps = {lam: (path.stat().st_mtime_ns, path.read_bytes()) for lam, path in checkpoints(tmp_path).items()}
    table = run(cfg, tiny_backbone, tmp_path, counting(calls))
    assert calls == [1.0, 16.0, 16.0], "the finished setting's evaluation must come from its cache"
    for lam, path in checkpoints(tmp_path).items():
        assert (path.stat().st_mtime_ns, path.read_bytes()) == stamps[lam], f"lam={lam} was trained again"
    assert table["value"].tolist() == [1.0, 16.0]


def test_a_cache_entry_without_its_key_file_or_with_changed_bytes_is_recomputed(cfg, tiny_backbone, tmp_path,
                                                                               capsys):
    calls = []
    run(cfg, tiny_backbone, tmp_path, counting(calls))
    (entry,) = caches(tmp_path, 1.0)
    marker = entry.with_name(entry.name + ".key.json")
    assert json.loads(marker.read_text())["key"]["evaluation"] == "count/1"
    marker.unlink()  # killed between the table and its key file
    capsys.readouterr()
    run(cfg, tiny_backbone, tmp_path, counting(calls))
    assert calls == [1.0, 16.0, 1.0]
    assert f"note: evaluation cache {shown_path(entry)} has no key file" in capsys.readouterr().err
    entry.write_text("dataset,metric,value\nw,m,")  # a partly written table under a complete key file
    run(cfg, tiny_backbone, tmp_path, counting(calls))
    assert calls == [1.0, 16.0, 1.0, 1.0]
    assert "does not match the hash in its key file" in capsys.readouterr().err
    table = run(cfg, tiny_backbone, tmp_path, counting(calls))
    assert calls == [1.0, 16.0, 1.0, 1.0] and table["value"].tolist() == [1.0, 16.0]
    assert capsys.readouterr().err == ""


def test_a_cache_made_by_other_code_or_another_evaluation_is_ignored(cfg, tiny_backbone, tmp_path, capsys,
                                                                    monkeypatch):
    import dapo
    import dapo.experiments.sweep as sweep_module

    calls = []
    run(cfg, tiny_backbone, tmp_path, counting(calls, key={"w": "root A"}))
    capsys.readouterr()
    run(cfg, tiny_backbone, tmp_path, counting(calls, key={"w": "root B"}))
    assert calls == [1.0, 16.0] * 2 and "was produced by another evaluation_key" in capsys.readouterr().err
    monkeypatch.setattr(sweep_module, "code_fingerprint", lambda: "0" * 16)
    run(cfg, tiny_backbone, tmp_path, counting(calls, key={"w": "root B"}))
    assert calls == [1.0, 16.0] * 3 and "was produced by another code" in capsys.readouterr().err
    monkeypatch.setattr(dapo, "__version__", "99.0")
    run(cfg, tiny_backbone, tmp_path, counting(calls, key={"w": "root B"}))
    assert calls == [1.0, 16.0] * 4 and "was produced by another dapo" in capsys.readouterr().err


def test_the_code_fingerprint_follows_the_source(monkeypatch, tmp_path):
    import dapo
    from dapo.experiments.sweep import code_fingerprint

    first = code_fingerprint()
    assert first == code_fingerprint() and len(first) == 16
    copy = tmp_path / "dapo"
    copy.mkdir()
    (copy / "__init__.py").write_text("x = 1\n")
    (copy / "experiments").mkdir()
    (copy / "experiments" / "plots.py").write_text("y = 1\n")
    monkeypatch.setattr(dapo, "__file__", str(copy / "__init__.py"))
    before = code_fingerprint()
    (copy / "experiments" / "plots.py").write_text("y = 2\n")  # presentation only: the numbers cannot change
    assert code_fingerprint() == before
    (copy / "__init__.py").write_text("x = 2\n")
    assert code_fingerprint() != before


def test_a_pickle_in_place_of_a_cache_is_never_unpickled(cfg, tiny_backbone, tmp_path, capsys):
    import builtins

    import torch

    class RunsCode:
        def __reduce__(self):
            return builtins.open, (str(tmp_path / "CODE_RAN"), "w")

    calls = []
    run(cfg, tiny_backbone, tmp_path, counting(calls))
    (entry,) = caches(tmp_path, 1.0)
    torch.save({"x": RunsCode()}, entry)
    capsys.readouterr()
    table = run(cfg, tiny_backbone, tmp_path, counting(calls))
    assert f"note: evaluation cache {shown_path(entry)} does not match the hash" in capsys.readouterr().err
    assert calls == [1.0, 16.0, 1.0] and table["value"].tolist() == [1.0, 16.0]
    assert not (tmp_path / "CODE_RAN").exists()


def test_a_disk_that_fills_while_the_key_file_is_written_leaves_an_entry_that_is_recomputed(
        cfg, tiny_backbone, tmp_path, capsys, monkeypatch):
    import errno

    import dapo.util.atomic

    real = dapo.util.atomic.write_text

    def full(path, text):
        if str(path).endswith(".key.json"):  # the disk fills just as the cache's key file is written
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, text)

    calls = []
    monkeypatch.setattr(dapo.util.atomic, "write_text", full)
    with pytest.raises(OSError, match="No space left on device"):
        run(cfg, tiny_backbone, tmp_path, counting(calls))
    (entry,) = caches(tmp_path, 1.0)  # the table was written, its key file was not
    assert not entry.with_name(entry.name + ".key.json").exists()
    monkeypatch.setattr(dapo.util.atomic, "write_text", real)
    capsys.readouterr()
    table = run(cfg, tiny_backbone, tmp_path, counting(calls))
    assert calls == [1.0, 1.0, 16.0] and table["value"].tolist() == [1.0, 16.0]
    assert f"note: evaluation cache {shown_path(entry)} has no key file" in capsys.readouterr().err
