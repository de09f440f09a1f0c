"""Provenance stamping of tables and figures."""

import json
import subprocess

import matplotlib
import numpy as np
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dapo.experiments.reporting import Provenance, git_commit, save_figure, save_table, write_provenance  # noqa: E402


def _prov(**kw):
    base = dict(profile="synthetic", seed=3, backbone="dapo-compact", pretrained="synthetic",
                smoke=False, commit="abc1234")
    return Provenance(**{**base, **kw})


def test_table_csv_has_full_precision_and_provenance_columns(tmp_path):
    df = pd.DataFrame({"auroc": [0.123456789, 0.5]}, index=pd.Index(["a", "b"], name="product"))
    path = save_table(df, "t1", tmp_path, _prov(), caption="Table 1")
    back = pd.read_csv(path, index_col="product")
    assert back.loc["a", "auroc"] == 0.123457  # 6 significant digits, not the display rounding
    assert (back["profile"] == "synthetic").all() and (back["seeds"] == 3).all()
    assert (back["backbone"] == "dapo-compact/synthetic").all()
    assert "commit" not in back.columns  # so the same seed regenerates identical CSVs after a commit
    md = (tmp_path / "t1.md").read_text()
    assert "SYNTHETIC profile" in md and "commit=abc1234" in md and "0.1" in md


def test_a_per_seed_table_keeps_its_own_seed_column_and_names_the_seeds_aggregated(tmp_path):
    df = pd.DataFrame({"lam": [1.0, 1.0], "seed": [0, 1], "image_auroc": [80.0, 82.0]})
    back = pd.read_csv(save_table(df, "sweep", tmp_path, _prov(seeds=(0, 1)), index=False))
    assert back["seed"].tolist() == [0, 1] and (back["seeds"] == "0,1").all()
    assert "seeds=0,1" in (tmp_path / "sweep.md").read_text()


def test_table_csv_is_byte_identical_across_commits(tmp_path):
    df = pd.DataFrame({"ap": np.linspace(0, 1, 5)})
    a = save_table(df, "a", tmp_path, _prov(commit="1111111")).read_bytes()
    b = save_table(df, "b", tmp_path, _prov(commit="2222222")).read_bytes()
    assert a == b


def test_smoke_and_paper_labels_name_the_backbone_actually_used():
    assert "smoke" in _prov(smoke=True).label
    assert "ViT-L-14-336 / openai" in _prov(profile="paper", backbone="ViT-L-14-336", pretrained="openai").label
    small = _prov(profile="paper", backbone="ViT-B-32", pretrained="openai").label
    assert "ViT-B-32 / openai" in small and "ViT-L-14" not in small
    assert "not a reproduction" in _prov().label
    assert "precision=eval bf16 |" in _prov(precision="bf16").footer
    assert "precision=eval bf16, trained fp32" in _prov(precision="bf16", train_precision="fp32").footer


def test_figure_and_provenance_json(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    path = save_figure(fig, "f", tmp_path, _prov())
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any("seeds=3" in t.get_text() for t in fig.texts)
    write_provenance(tmp_path, _prov(), "03_multitype", note="x")
    meta = json.loads(write_provenance(tmp_path, _prov(seed=4), "04_binary").read_text())
    assert meta["03_multitype"]["commit"] == "abc1234" and meta["03_multitype"]["note"] == "x"
    assert meta["04_binary"]["seed"] == 4  # one entry per notebook, the others kept


def _write_entries(folder, prefix, count, barrier):
    barrier.wait()
    for i in range(count):
        write_provenance(folder, _prov(seed=i), f"{prefix}{i:02d}")


def test_two_processes_writing_provenance_at_once_keep_every_entry(tmp_path):
    """`make reproduce -j 2`: two notebooks save tables at the same moments."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    workers = [context.Process(target=_write_entries, args=(tmp_path, prefix, 60, barrier)) for prefix in "ab"]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    entries = json.loads((tmp_path / "provenance.json").read_text())
    assert sorted(entries) == sorted(f"{p}{i:02d}" for p in "ab" for i in range(60))


def test_markdown_flattens_multi_level_rows_and_columns(tmp_path):
    rows = pd.MultiIndex.from_tuples([("visa", "DAPO"), ("visa", "MultiADS")], names=["test", "method"])
    cols = pd.MultiIndex.from_tuples([("DAPO", "auroc"), ("DAPO", "f1")], names=["method", "metric"])
    save_table(pd.DataFrame([[1.0, 2.0], [3.0, 4.0]], index=rows, columns=cols), "m", tmp_path, _prov())
    md = (tmp_path / "m.md").read_text()
    assert "| test   | method   |   DAPO / auroc |" in md
    assert "('visa'" not in md


def test_git_commit_is_dirty_for_changed_code_but_not_for_regenerated_results(tmp_path):
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    git("init", "-q")
    for name in ("code.py", "results/table.md", "figures/plot.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("v1")
    git("add", "-A")
    git("commit", "-qm", "first")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tmp_path, capture_output=True,
                          text=True).stdout.strip()
    assert git_commit(tmp_path) == head
    (tmp_path / "results" / "table.md").write_text("v2")
    (tmp_path / "figures" / "plot.png").write_text("v2")
    assert git_commit(tmp_path / "results") == head
    (tmp_path / "code.py").write_text("v2")
    assert git_commit(tmp_path / "results") == head + "-dirty"
    assert git_commit(tmp_path / "no-such-dir") == "unknown"
