"""Checkpoints are written once: longer trainings go to their own folder, any order of requests gives
the same weights, a fresh start never overwrites, a second process waits for the first; the
run's stamps name the seeds and precisions actually used."""

import hashlib
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import torch

from dapo.engine import ledger
from dapo.engine.checkpoint import epoch_path, read_checkpoint
from dapo.engine.checkpoint_store import FolderBusyError, checkpoint_dir, folder_lock
from dapo.engine.train import CheckpointExistsError, state_path, train
from dapo.experiments.profiles import resolve_profile
from dapo.experiments.runs import find_checkpoint, train_or_load
from dapo.synthetic.worlds import write_world

FAST = dict(n_prompts=2)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory, tiny_image_size):
    root = tmp_path_factory.mktemp("worlds")
    cfg = resolve_profile("synthetic", smoke=True, data_root=root, image_size=tiny_image_size, epochs=1)
    write_world(cfg.train_dataset, cfg.dataset_roots[cfg.train_dataset], smoke=True, image_size=64)
    return cfg


def fit(cfg, backbone, run_dir, epochs=None):
    return train_or_load(cfg, "dapo", run_dir, epochs=epochs, backbone=backbone, device="cpu", progress=False, **FAST)


def weights(model):
    return {k: v.detach().clone() for k, v in model.learnable_parameters().items()}


def hashes(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()
            and p.name.startswith("epoch_")}


def assert_same(a, b):
    for name, value in a.items():
        assert torch.equal(b[name], value), name


def test_a_longer_training_never_rewrites_the_profile_folder_and_any_order_gives_the_same_weights(
        cfg, tiny_backbone, tmp_path):
    # the reviewer's case: the profile's 1-epoch checkpoints without their optimiser state (as committed)
    short, _ = fit(cfg, tiny_backbone, tmp_path / "a")
    default = checkpoint_dir(tmp_path / "a", "dapo", 0, FAST)
    state_path(default, 1).unlink()
    before = hashes(default)
    long_a, history_a = fit(cfg, tiny_backbone, tmp_path / "a", epochs=2)
    assert hashes(default) == before, "the profile's checkpoints were rewritten"
    assert (checkpoint_dir(tmp_path / "a", "dapo", 0, FAST, epochs=2) / "epoch_002.safetensors").is_file()
    # the other order, from nothing: the longer training first, then the profile's
    long_b, history_b = fit(cfg, tiny_backbone, tmp_path / "b", epochs=2)
    short_b, _ = fit(cfg, tiny_backbone, tmp_path / "b")
    assert_same(weights(long_a), weights(long_b))
    assert_same(weights(short), weights(short_b))
    pd.testing.assert_frame_equal(history_a, history_b)
    assert not list(checkpoint_dir(tmp_path / "b", "dapo", 0, FAST).glob("epoch_*")), "epoch 1 is read, not retrained"
    assert find_checkpoint(tmp_path / "b", "dapo", 0, FAST, 1).parent.name == "seed0"


def test_a_longer_training_starts_from_a_shorter_one_that_kept_its_optimiser_state(cfg, tiny_backbone, tmp_path):
    fit(cfg, tiny_backbone, tmp_path / "scratch", epochs=2)
    scratch = checkpoint_dir(tmp_path / "scratch", "dapo", 0, FAST, epochs=2)
    fit(cfg, tiny_backbone, tmp_path / "c")
    default = checkpoint_dir(tmp_path / "c", "dapo", 0, FAST)
    before = hashes(default)
    seeded, history = fit(cfg, tiny_backbone, tmp_path / "c", epochs=2)
    longer = checkpoint_dir(tmp_path / "c", "dapo", 0, FAST, epochs=2)
    assert hashes(default) == before and state_path(default, 1).is_file(), "the source folder is only read"
    for epoch in (1, 2):  # the same tensors (the files' metadata differ in the recipe's length)
        assert_same(read_checkpoint(epoch_path(scratch, epoch))[0], read_checkpoint(epoch_path(longer, epoch))[0])
    assert_same(weights(seeded), read_checkpoint(epoch_path(scratch, 2))[0])
    assert list(history["epoch"].unique()) == [1, 2]


def test_a_fresh_start_in_a_folder_with_checkpoints_is_refused_and_changes_nothing(
        cfg, tiny_backbone, tiny_dataset, tmp_path):
    from dapo.methods.dapo.model import DAPO
    from tests.test_train import SMALL

    train(DAPO(tiny_backbone, SMALL), tiny_dataset, tmp_path, epochs=1, progress=False)
    before = hashes(tmp_path)
    with pytest.raises(CheckpointExistsError, match=rf"{tmp_path}.*never overwritten"):
        train(DAPO(tiny_backbone, SMALL.with_overrides(lam=1.0)), tiny_dataset, tmp_path, epochs=1, resume=False,
              progress=False)
    assert hashes(tmp_path) == before


def test_a_second_process_waits_for_the_folder_or_is_told_who_holds_it(tiny_backbone, tiny_dataset, tmp_path):
    from dapo.methods.dapo.model import DAPO
    from tests.test_train import SMALL

    folder = tmp_path / "busy"
    holder = textwrap.dedent(f"""
        import pathlib, sys, time
        from dapo.engine.checkpoint_store import folder_lock
        with folder_lock({str(folder)!r}):
            print("locked", flush=True)
            sys.stdin.readline()
            pathlib.Path({str(tmp_path / "released")!r}).touch()
    """)
    child = subprocess.Popen([sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(FolderBusyError, match=rf"another process is training in {folder}"):
            train(DAPO(tiny_backbone, SMALL), tiny_dataset, folder, epochs=1, progress=False)
        child.stdin.write("\n")
        child.stdin.flush()
        with folder_lock(folder):  # waits for the holder
            assert (tmp_path / "released").exists()
    finally:
        child.kill() if child.poll() is None else None
        child.wait()
    assert not list(folder.glob("epoch_*"))


def test_a_runs_stamps_name_the_seeds_and_the_training_precision(cfg, tiny_backbone, tmp_path):
    from dapo.experiments.runs import start_run

    run = start_run("synthetic", smoke=True, data_root=str(tmp_path / "data"), output_dir=str(tmp_path / "out"),
                    figures_dir=str(tmp_path / "fig"), precision="fp32", prepare=False)
    for seed in (0, 1):
        train_or_load(cfg, "dapo", tmp_path, seed=seed, backbone=tiny_backbone, device="cpu", progress=False, **FAST)
    assert ledger.seeds() == (0, 1) and ledger.training_precisions() == ("fp32",)
    path = run.table(pd.DataFrame({"auroc": [90.0]}), "aggregated")
    assert pd.read_csv(path)["seeds"].tolist() == ["0,1"]
    per_seed = run.table(pd.DataFrame({"seed": [1], "auroc": [90.0]}), "one_seed")
    assert pd.read_csv(per_seed)["seeds"].tolist() == [1]
    header = path.with_suffix(".md").read_text()
    assert "seeds=0,1" in header and "precision=eval fp32, trained fp32" in header and "run=" in header
