"""dapo.engine.distributed: sharding, the evaluators' merge (in one process), and two gloo processes on the
CPU giving the one-process evaluation bit for bit, the one-process training within a stated
tolerance, and the sequential sweep table; `torchrun -m dapo evaluate` prints what `dapo evaluate` does."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dapo.engine import distributed
from dapo.engine.distributed import World, my_jobs, shard_pairs, shard_positions, split_batches
from dapo.experiments.profiles import resolve_profile
from dapo.metrics import BinaryEvaluator, MultiLabelEvaluator, MultiTypeEvaluator
from dapo.synthetic.worlds import write_world

REPO = Path(__file__).resolve().parents[1]
TARGET = "synthetic_target"
#: 10 test images each, batches of 4: 4, 4, 2 per product; 9 batches, 5 on rank 0, 4 on rank 1 (fuse cut in two).
EVALUATED = ["cookie", "fuse", "socket"]
#: Largest |weight difference| allowed between 2-process data-parallel and 1-process training after
#: the 8 steps of _train_worker (fp32, Adam lr 1e-3; measured 8.9e-8 on this CPU, docs/DISTRIBUTED.md).
DDP_TOLERANCE = 1e-6


# ----------------------------------------------------------------------------- sharding


def test_shards_are_disjoint_batch_aligned_and_in_one_process_order():
    pairs = [(p, i) for p, n in (("a", 7), ("b", 3), ("c", 10), ("d", 1)) for i in range(n)]
    pairs = pairs[12:] + pairs[:12]  # c2..c9, d0, a0..a6, b0..b2, c0, c1: c's pairs are not adjacent
    grouped = sorted(pairs, key=lambda pair: "cdab".index(pair[0]))  # grouped in first-seen order (stable sort)
    for size in (1, 2, 3, 5, 40):
        for batch_size in (1, 4):
            shares = [shard_pairs(pairs, batch_size, World(rank, size)) for rank in range(size)]
            assert [pair for share in shares for pair in share] == grouped  # disjoint, complete, in order
            for share in shares:  # a product's part of a share starts at one of its batch boundaries
                for product in dict.fromkeys(p for p, _ in share):
                    first = [p for p in share if p[0] == product][0]
                    position = [p for p in grouped if p[0] == product].index(first)
                    assert position % batch_size == 0
            batch_of = {pair: (pair[0], [q for q in grouped if q[0] == pair[0]].index(pair) // batch_size)
                        for pair in grouped}
            n_batches = [len({batch_of[pair] for pair in share}) for share in shares]
            assert max(n_batches) - min(n_batches) <= 1, n_batches  # balanced to one batch
    assert shard_positions(5, 2, World(1, 2)) == [4] and shard_positions(5, 2, World(0, 2)) == [0, 1, 2, 3]
    assert list(my_jobs(7, World(1, 3))) == [1, 4] and shard_pairs(pairs) == grouped  # one process: everything


def test_global_batches_are_cut_into_contiguous_parts_per_rank():
    one = [[7, 2, 9, 0], [4, 8, 1, 6], [3, 5]]
    parts = [split_batches(one, World(rank, 3)) for rank in range(3)]
    for step, batch in enumerate(one):
        assert [i for local, _ in parts for i in local[step]] == batch
        assert sum(shares[step][0] for _, shares in parts) == len(batch) == parts[0][1][step][1]
    assert [local[-1] for local, _ in parts] == [[3], [5], []]  # a rank may get no sample


def test_one_process_is_a_no_op(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not distributed.launched() and distributed.current() == distributed.SINGLE
    evaluator = BinaryEvaluator()
    assert distributed.reduce_evaluator(evaluator) is evaluator and distributed.all_gather(3) == [3]
    with distributed.process_group("cpu") as world:
        assert world.size == 1 and not dist.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="RANK"):
        distributed.env_world()
    assert distributed.backend_for("cpu") == "gloo" and distributed.backend_for("cuda:1") == "nccl"
    assert distributed.rank_device("cuda", World(1, 2, 1)) == torch.device("cuda", 1)


# ----------------------------------------------------------------------------- evaluator merge, one process


def _batches(seed: int = 0, n_batches: int = 6, size: int = 16):
    """Binary batches over three products: maps with ties and continuous scores, blob masks."""
    rng = np.random.default_rng(seed)
    for b in range(n_batches):
        product = ("bolt", "gear", "nut")[b % 3]
        maps = rng.random((3, size, size), dtype=np.float32)
        maps[:, :4] = np.round(maps[:, :4], 1)  # ties across batches
        masks = np.zeros((3, size, size), dtype=bool)
        for i in range(3):
            if (b + i) % 2:
                top, left = rng.integers(0, size - 5, 2)
                masks[i, top:top + rng.integers(2, 6), left:left + rng.integers(2, 6)] = True
                maps[i][masks[i]] += 0.3
        labels = masks.reshape(3, -1).any(axis=1)
        yield product, maps.max(axis=(1, 2)) + labels * 0.1, labels, maps, masks


def _split_merge(make, add, cut: int, batches: list):
    """One evaluator fed every batch, and two fed the batches before and after ``cut``, merged."""
    one, first, second = make(), make(), make()
    for index, batch in enumerate(batches):
        add(one, batch)
        add(first if index < cut else second, batch)
    return one, first.merge(second)


@pytest.mark.parametrize("exact_top", [65536, 0])
def test_binary_merge_equals_one_evaluator(exact_top):
    batches = list(_batches())
    for cut in (1, 2, 4):
        one, merged = _split_merge(lambda: BinaryEvaluator(exact_top=exact_top),
                                   lambda e, b: e.add(b[0], b[1], b[2], b[3], b[4]), cut, batches)
        expected, table = one.compute(), merged.compute()
        assert list(table.index) == list(expected.index)
        integer_metrics = [c for c in table.columns if "aupro" not in c]  # from integer counts: bit for bit
        pd.testing.assert_frame_equal(table[integer_metrics], expected[integer_metrics], check_exact=True)
        if exact_top:  # every score in the exact top, one flush: the region-weight sums too
            pd.testing.assert_frame_equal(table, expected, check_exact=True)
        else:  # bins only: AUPRO's float weight sums are added in another order
            np.testing.assert_allclose(table.to_numpy(), expected.to_numpy(), rtol=0, atol=1e-12)
        for level in ("image", "pixel"):
            pd.testing.assert_frame_equal(merged.roc_curve(level, pooled=True), one.roc_curve(level, pooled=True),
                                          check_exact=True)
            pd.testing.assert_frame_equal(merged.rates_at([0.25, 0.5], level), one.rates_at([0.25, 0.5], level),
                                          check_exact=True)


def test_histogram_merge_with_a_small_exact_top_keeps_the_one_stream_counts():
    from dapo.metrics import ScoreHistogram

    rng = np.random.default_rng(1)
    parts = [(rng.normal(size=5000).astype(np.float32), rng.random(5000) < 0.2) for _ in range(4)]
    one, left, right = (ScoreHistogram(exact_top=300) for _ in range(3))
    for index, (scores, labels) in enumerate(parts):
        one.add(scores, labels)
        (left if index < 2 else right).add(scores, labels)
    left.ranked()  # a flushed side merges too
    expected, ranked = one.ranked(), left.merge(right).ranked()
    for field in ("pos", "neg", "lower", "upper"):
        np.testing.assert_array_equal(getattr(ranked, field), getattr(expected, field))
    with pytest.raises(ValueError, match="exact_top"):
        ScoreHistogram(exact_top=10).merge(ScoreHistogram(exact_top=20))


def test_multitype_and_multilabel_merges_equal_one_evaluator():
    rng = np.random.default_rng(2)
    names = {"bolt": ("normal", "crack", "hole"), "gear": ("normal", "bent")}
    type_batches, label_batches = [], []
    for b in range(5):
        product = ("bolt", "gear")[b % 2]
        classes = names[product]
        probs = rng.random((2, len(classes), 8, 8), dtype=np.float32)
        type_batches.append((product, classes, probs, rng.integers(0, len(classes), (2, 8, 8))))
        label_batches.append((product, classes[1:], rng.random((3, len(classes) - 1)),
                              [tuple(c for c in classes[1:] if rng.random() < 0.5) for _ in range(3)]))
    for cut in (1, 3):
        one, merged = _split_merge(MultiTypeEvaluator, lambda e, b: e.add(*b), cut, type_batches)
        for expected, result in zip(vars(one.compute()).values(), vars(merged.compute()).values()):
            pd.testing.assert_frame_equal(result, expected, check_exact=True)
        one, merged = _split_merge(MultiLabelEvaluator, lambda e, b: e.add(*b), cut, label_batches)
        for field in ("per_product", "per_class", "firing"):
            pd.testing.assert_frame_equal(getattr(merged.compute(0.4), field), getattr(one.compute(0.4), field),
                                          check_exact=True)
        pd.testing.assert_frame_equal(merged.threshold_curve([0.2, 0.7]), one.threshold_curve([0.2, 0.7]),
                                      check_exact=True)
    other = MultiTypeEvaluator()
    other.add("bolt", ("normal", "scratch", "hole"), type_batches[0][2], type_batches[0][3])
    with pytest.raises(ValueError, match="class_names for product 'bolt'"):
        MultiTypeEvaluator().merge(one_multitype(type_batches)).merge(other)


def one_multitype(batches) -> MultiTypeEvaluator:
    evaluator = MultiTypeEvaluator()
    for batch in batches:
        evaluator.add(*batch)
    return evaluator


# ----------------------------------------------------------------------------- two gloo processes


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, tiny_model_name, tiny_image_size):
    """The smoke synthetic worlds (64 px on disk, read at the tiny backbone's 32 px) and the tiny
    model config's file, for the spawned processes."""
    root = tmp_path_factory.mktemp("worlds")
    cfg = resolve_profile("synthetic", smoke=True, data_root=root, image_size=tiny_image_size, epochs=1)
    for name in (cfg.train_dataset, TARGET):
        write_world(name, cfg.dataset_roots[name], smoke=True, image_size=64)
    config = root / f"{tiny_model_name}.json"
    from conftest import TINY_CONFIG

    config.write_text(json.dumps(TINY_CONFIG))
    return cfg, config


def _join(rank: int, rendezvous: str, size: int = 2) -> None:
    torch.set_num_threads(1)  # both processes and the one-process reference alike
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=size)


def _backbone(config: Path):
    """The conftest's tiny random backbone (same seed, same weights in every process)."""
    import open_clip

    from dapo.clip.backbone import load_backbone

    open_clip.add_model_config(config)
    torch.manual_seed(0)
    return load_backbone(config.stem, None, image_size=32)


def _spawn(worker, tmp_path: Path, *args) -> list:
    """Run ``worker(rank, rendezvous, out, *args)`` in two processes; each rank's pickled result."""
    rendezvous = tmp_path / "rendezvous"
    mp.spawn(worker, args=(str(rendezvous), tmp_path, *args), nprocs=2, join=True)
    return [pickle.loads((tmp_path / f"rank{rank}.pkl").read_bytes()) for rank in range(2)]


def _evaluations(model, dataset) -> dict:
    from dapo.experiments.runs import binary_evaluator, evaluate_multitype, multilabel_evaluator

    kwargs = dict(device="cpu", batch_size=4, progress=False)
    binary = binary_evaluator(model, dataset, **kwargs)
    return {"binary": binary.compute(), "roc": binary.roc_curve("image", pooled=True),
            "pixel_rates": binary.rates_at([0.5], "pixel", pooled=True),
            "multitype": vars(evaluate_multitype(model, dataset, **kwargs)),
            "multilabel": vars(multilabel_evaluator(model, dataset, **kwargs).compute())}


def _evaluate_worker(rank, rendezvous, out, cfg, config):
    from dapo.experiments.runs import open_profile_dataset, predict_products
    from dapo.methods import make_model

    _join(rank, rendezvous)
    model = make_model("dapo", _backbone(config), seed=0)
    dataset = open_profile_dataset(cfg, TARGET, split="test", products=EVALUATED)
    images = sum(len(batch["path"]) for _, _, batch, _ in predict_products(model, dataset, device="cpu",
                                                                           batch_size=4, progress=False))
    result = {"sharded": _evaluations(model, dataset), "images": distributed.all_gather(images)}
    if rank == 0:
        with distributed.alone():
            result["single"] = _evaluations(model, dataset)
    (out / f"rank{rank}.pkl").write_bytes(pickle.dumps(result))
    dist.destroy_process_group()


def _assert_same(result, expected, where=""):
    if isinstance(result, pd.DataFrame):
        pd.testing.assert_frame_equal(result, expected, check_exact=True, obj=where)
    elif isinstance(result, dict):
        assert result.keys() == expected.keys(), where
        for key in result:
            _assert_same(result[key], expected[key], f"{where}.{key}")
    else:
        assert result == expected, where


@pytest.mark.slow
def test_two_processes_evaluate_exactly_as_one(smoke, tmp_path):
    cfg, config = smoke
    ranks = _spawn(_evaluate_worker, tmp_path, cfg, config)
    images = ranks[0]["images"]
    assert min(images) > 0 and sum(images) == 30, images  # the work was shared (30 images)
    _assert_same(ranks[0]["sharded"], ranks[0]["single"], "rank 0")
    _assert_same(ranks[1]["sharded"], ranks[0]["single"], "rank 1")  # every rank holds the result
    assert ranks[0]["single"]["binary"].notna().all().all()  # a real comparison: every metric defined


def _train_worker(rank, rendezvous, out, cfg, config):
    from dapo.engine.train import train
    from dapo.experiments.runs import open_profile_dataset
    from dapo.methods import make_model, preset

    _join(rank, rendezvous)
    backbone = _backbone(config)
    # 22 images (canvas 13, marble 9), batches of 7: 7, 7, 7, 1 -> the last step has no sample on rank 1
    dataset = open_profile_dataset(cfg, cfg.train_dataset, split="test", vocab_scope="dataset",
                                   products=["canvas", "marble"])
    training = preset("dapo").training.with_overrides(epochs=2, batch_size=7, precision="fp32")

    def run(folder):
        model = make_model("dapo", backbone, seed=0, n_prompts=2)
        result = train(model, dataset, out / folder, training, device="cpu", progress=False)
        return {k: v.detach().clone() for k, v in model.learnable_parameters().items()}, result.history

    weights, history = run("ddp")
    result = {"weights": weights, "history": history, "files": sorted(p.name for p in (out / "ddp").iterdir())}
    if rank == 0:
        with distributed.alone():
            result["single"] = run("single")
    (out / f"rank{rank}.pkl").write_bytes(pickle.dumps(result))
    dist.destroy_process_group()


@pytest.mark.slow
def test_data_parallel_training_matches_one_process(smoke, tmp_path):
    cfg, config = smoke
    ranks = _spawn(_train_worker, tmp_path, cfg, config)
    weights, history = ranks[0]["weights"], ranks[0]["history"]
    for name, value in ranks[1]["weights"].items():
        assert torch.equal(value, weights[name]), f"ranks disagree on {name}"
    single_weights, single_history = ranks[0]["single"]
    assert len(history) == len(single_history) == 8  # 4 steps x 2 epochs
    difference = max(float((weights[k] - single_weights[k]).abs().max()) for k in weights)
    moved = max(float((single_weights[k] - w0).abs().max()) for k, w0 in _initial(config).items())
    print(f"max |weight difference| 2 processes vs 1 after 8 steps: {difference:.3g} (weights moved {moved:.3g})")
    assert difference <= DDP_TOLERANCE < moved
    np.testing.assert_allclose(history["loss_total"], single_history["loss_total"], rtol=1e-5)
    assert ranks[0]["files"] == ranks[1]["files"]
    assert "epoch_002.safetensors" in ranks[0]["files"] and "loss_history.csv" in ranks[0]["files"]
    assert not [name for name in ranks[0]["files"] if name.endswith(".partial")]


def _initial(config: Path) -> dict:
    from dapo.methods import make_model

    model = make_model("dapo", _backbone(config), seed=0, n_prompts=2)
    return {k: v.detach().clone() for k, v in model.learnable_parameters().items()}


def _sweep_worker(rank, rendezvous, out, cfg, config):
    from dapo.experiments.runs import open_profile_dataset
    from dapo.experiments.sweep import binary_on, sweep

    _join(rank, rendezvous)
    backbone = _backbone(config)
    target = {TARGET: open_profile_dataset(cfg, TARGET, split="test", products=["cookie", "fuse"])}
    grid = [{"lam": lam, "n_prompts": 2} for lam in (1.0, 4.0, 16.0)]
    kwargs = dict(grid=grid, seeds=[0], evaluate=binary_on(target, device="cpu"), backbone=backbone, device="cpu",
                  progress=False)
    result = {"sharded": sweep(cfg, "dapo", out / "sharded", **kwargs),
              "trained": sorted(p.parent.parent.name for p in (out / "sharded").glob("checkpoints/dapo/*/seed0/"
                                                                                     "loss_history.csv"))}
    if rank == 0:
        with distributed.alone():
            result["single"] = sweep(cfg, "dapo", out / "single", **kwargs)
    (out / f"rank{rank}.pkl").write_bytes(pickle.dumps(result))
    dist.destroy_process_group()


@pytest.mark.slow
def test_sharded_sweep_gives_the_sequential_table(smoke, tmp_path):
    cfg, config = smoke
    ranks = _spawn(_sweep_worker, tmp_path, cfg, config)
    pd.testing.assert_frame_equal(ranks[0]["sharded"], ranks[0]["single"], check_exact=True)
    pd.testing.assert_frame_equal(ranks[1]["sharded"], ranks[0]["single"], check_exact=True)
    assert ranks[0]["trained"] == ["lam=1.0,n_prompts=2", "lam=16.0,n_prompts=2", "n_prompts=2"]  # 3 jobs, 2 ranks


# ----------------------------------------------------------------------------- the command line


def _mean_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("dapo evaluate: mean")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.slow
def test_torchrun_dapo_evaluate_prints_and_writes_the_one_process_metrics(smoke, tmp_path):
    from dapo.cli.common import DEFAULT_CHECKPOINT

    if not DEFAULT_CHECKPOINT.is_file():
        pytest.skip(f"{DEFAULT_CHECKPOINT} is not in this checkout")
    cfg, _ = smoke
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "DAPO_RUN_ID": "one-run"}  # one stamp for both
    arguments = ["-m", "dapo", "evaluate", "--dataset", TARGET, "--root", str(cfg.dataset_roots[TARGET]),
                 "--no-progress", "--batch-size", "4"]
    one = subprocess.run([sys.executable, *arguments, "--out", str(tmp_path / "one")], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          *arguments, "--out", str(tmp_path / "two")], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    assert two.returncode == 0, two.stderr
    assert _mean_line(two.stderr) == _mean_line(one.stderr)
    assert "2 processes" in two.stderr and len(re.findall(r"dapo evaluate: wrote", two.stderr)) == 1
    for name in ("binary", "multitype", "per_defect"):
        for suffix in (".csv", ".md"):
            written = (tmp_path / "two" / f"{name}_{TARGET}{suffix}").read_text()
            assert written == (tmp_path / "one" / f"{name}_{TARGET}{suffix}").read_text(), name + suffix


@pytest.mark.slow
def test_torchrun_dapo_train_writes_one_checkpoint_equal_to_one_process(smoke, tmp_path):
    from dapo.cli.common import DEFAULT_CHECKPOINT
    from dapo.engine.checkpoint import read_checkpoint

    if not DEFAULT_CHECKPOINT.is_file():
        pytest.skip(f"{DEFAULT_CHECKPOINT} is not in this checkout")
    cfg, _ = smoke
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "DAPO_RUN_ID": "one-run"}  # one stamp for both
    arguments = ["-m", "dapo", "train", "--dataset", cfg.train_dataset, "--root", str(cfg.dataset_roots[cfg.train_dataset]),
                 "--epochs", "1", "--precision", "fp32", "--no-progress", "--set", "n_prompts=2"]
    one = subprocess.run([sys.executable, *arguments, "--out", str(tmp_path / "one")], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=900)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          *arguments, "--out", str(tmp_path / "two")], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=900)
    assert two.returncode == 0, two.stderr
    assert "2 processes" in two.stderr and len(re.findall(r"final checkpoint", two.stderr)) == 1
    single, parallel = (read_checkpoint(tmp_path / run / "epoch_001.safetensors")[0] for run in ("one", "two"))
    for name, value in single.items():
        assert (parallel[name] - value).abs().max() <= DDP_TOLERANCE, name
