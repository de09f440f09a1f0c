"""`python -m dapo.experiments.reproduce compare` (issue 32, item 6): hand-made committed / re-run CSV pairs
for each table layout, the exit status, and the committed results against themselves."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from dapo.experiments import reproduce
from dapo.util.paths import REPO_ROOT

PAIRED = ("method,dataset,auroc / mean,auroc / std,n_seeds,profile,seed,backbone\n"
          "DAPO,target,{a},2,3,synthetic,0,b\n"
          "MultiADS,target,70,{s},3,synthetic,0,b\n")
MEAN_STD_N = ("setting,dataset,metric,mean,std,n,delta,delta_std,profile,seed,backbone\n"
              "default,target,auroc,{m},0.5,3,0,0,synthetic,0,b\n"
              "lam=8,target,auroc,79,,1,-1,,synthetic,0,b\n")
PER_SEED = ("lam,seed,epoch,dataset,auroc,best,profile,run_seed,backbone\n"
            "1,0,2,target,{x},True,synthetic,0,b\n"
            "1,1,2,target,82,False,synthetic,0,b\n"
            "1,2,2,target,84,False,synthetic,0,b\n"
            "4,0,2,target,90,True,synthetic,0,b\n")
PLAIN = "method,steps,final_loss,profile,seed,backbone\nDAPO,84,{loss},synthetic,0,b\n"


def write(folder, **tables):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in tables.items():
        (folder / f"{name}.csv").write_text(text)
    return folder


def committed(tmp_path):
    return write(tmp_path / "committed", table1=PAIRED.format(a=80, s=1), fidelity=MEAN_STD_N.format(m=84),
                 ablation=PER_SEED.format(x=80), summary=PLAIN.format(loss=2.4152))


def run(tmp_path, capsys, tolerance=2.0, **changed):
    old = committed(tmp_path) if not (tmp_path / "committed").exists() else tmp_path / "committed"
    new = tmp_path / "rerun"
    shutil.rmtree(new, ignore_errors=True)
    shutil.copytree(old, new)
    write(new, **changed)
    code = reproduce.main(["compare", str(new), "--committed", str(old), "--tolerance", str(tolerance)])
    return code, capsys.readouterr().out


def verdict(out: str, table: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(f"{table}:"))


def test_identical_runs_are_exact(tmp_path, capsys):
    code, out = run(tmp_path, capsys)
    assert code == 0
    assert verdict(out, "table1") == "table1: 6 numbers, 6 exact -> agrees"  # mean, std, n_seeds per row
    assert "-> AGREES" in out.splitlines()[-1] and "differ" in out.splitlines()[-1]


def test_mean_std_pairs_in_units_of_the_committed_std(tmp_path, capsys):
    code, out = run(tmp_path, capsys, table1=PAIRED.format(a=81, s=1))  # +1 at std 2: 0.5 std
    assert code == 0
    assert "[DAPO] auroc / mean: 80 -> 81 (+1, +0.50 std)" in out
    assert verdict(out, "table1") == "table1: 6 numbers, 5 exact, 1 within 1 std (max 0.5 std) -> agrees"

    code, out = run(tmp_path, capsys, table1=PAIRED.format(a=83, s=1.5))  # +3 at std 2: 1.5 std
    assert code == 0 and verdict(out, "table1") == \
        "table1: 6 numbers, 4 exact, 1 within 2 std, 1 not comparable (max 1.5 std) -> agrees"
    assert "auroc / std: 1 -> 1.5 (+0.5 = +50 %; no std): not comparable" in out  # a std has no std

    code, out = run(tmp_path, capsys, table1=PAIRED.format(a=85, s=1))  # 2.5 std
    assert code == 1
    assert "(+5, +2.50 std)" in out and verdict(out, "table1").endswith("-> differs")
    assert out.splitlines()[-1].endswith("-> DIFFERS")
    code, _ = run(tmp_path, capsys, tolerance=3, table1=PAIRED.format(a=85, s=1))
    assert code == 0  # the tolerance is the caller's


def test_mean_std_n_columns_and_no_std(tmp_path, capsys):
    changed = MEAN_STD_N.format(m=84.25).replace("lam=8,target,auroc,79,", "lam=8,target,auroc,80,")
    code, out = run(tmp_path, capsys, fidelity=changed)
    assert "[default] mean: 84 -> 84.25 (+0.25, +0.50 std)" in out
    assert "[lam=8] mean: 79 -> 80 (+1 = +1.27 %; no std): not comparable" in out  # one seed: empty std
    assert code == 0  # numbers without a std cannot fail the run


def test_per_seed_rows_use_the_std_over_the_committed_seeds(tmp_path, capsys):
    # lam=1's committed seeds 80, 82, 84: std 2 (ddof 1); lam=4 has one seed: no std
    code, out = run(tmp_path, capsys, ablation=PER_SEED.format(x=77).replace("4,0,2,target,90", "4,0,2,target,91"))
    assert "[lam=1, seed=0] auroc: 80 -> 77 (-3, -1.50 std)" in out
    assert "[lam=4, seed=0] auroc: 90 -> 91 (+1 = +1.11 %; no std): not comparable" in out
    assert code == 0
    code, out = run(tmp_path, capsys, ablation=PER_SEED.format(x=80).replace("True,synthetic,0,b\n1,1", "False,synthetic,0,b\n1,1"))
    assert "[lam=1, seed=0] best: True -> False: not comparable" in out  # a flag is a value, not a key


def test_plain_tables_compare_exactly_and_relatively(tmp_path, capsys):
    code, out = run(tmp_path, capsys, summary=PLAIN.format(loss=2.4161))
    assert "[DAPO] final_loss: 2.4152 -> 2.4161 (+0.0009 = +0.0373 %; no std): not comparable" in out
    assert verdict(out, "summary") == "summary: 2 numbers, 1 exact, 1 not comparable -> agrees"


def test_missing_table_row_column_and_value_fail(tmp_path, capsys):
    old = committed(tmp_path)
    new = write(tmp_path / "rerun", table1=PAIRED.format(a=80, s=1).replace("MultiADS,target,70,1,3,synthetic,0,b\n", ""),
                fidelity=MEAN_STD_N.format(m="").replace(",delta_std", "").replace(",0,0,synthetic", ",0,synthetic")
                .replace(",-1,,synthetic", ",-1,synthetic"),
                ablation=PER_SEED.format(x=80), extra="a,b\nx,1\n")
    code = reproduce.main(["compare", str(new), "--committed", str(old)])
    out = capsys.readouterr().out
    assert code == 1
    assert "  row [MultiADS] missing in the re-run" in out
    assert "  column 'delta_std' missing in the re-run" in out
    assert "[default] mean: 84 -> missing in the re-run" in out
    assert verdict(out, "summary") == "summary: missing in the re-run -> differs"
    assert "extra: only in the re-run (not committed, not compared)" in out
    assert "differ (fidelity, summary, table1)" in out.splitlines()[-1]


def test_provenance_columns_are_neither_keys_nor_numbers(tmp_path, capsys):
    changed = PAIRED.format(a=80, s=1).replace("synthetic,0,b", "synthetic,0,other")
    code, out = run(tmp_path, capsys, table1=changed)
    assert code == 0 and "  provenance backbone: b -> other" in out
    assert verdict(out, "table1") == "table1: 6 numbers, 6 exact -> agrees"


def test_missing_rerun_folder_names_it(tmp_path):
    with pytest.raises(SystemExit, match="nowhere: no such folder"):
        reproduce.main(["compare", str(tmp_path / "nowhere"), "--committed", str(committed(tmp_path))])


def test_committed_results_against_themselves_are_all_exact(capsys):
    results = str(REPO_ROOT / "results" / "synthetic")
    code = reproduce.main(["compare", results, "--committed", results])
    summary = capsys.readouterr().out.splitlines()[-1]
    assert code == 0 and "0 differ" in summary and "within" not in summary and "not comparable" not in summary


@pytest.mark.skipif(shutil.which("git") is None or not (REPO_ROOT / ".git").exists(), reason="not a git checkout")
def test_committed_tables_read_from_git():
    tracked = subprocess.run(["git", "ls-files", "results/synthetic"], cwd=REPO_ROOT, capture_output=True,
                             text=True).stdout.split()
    expected = {p[len("results/synthetic/"):-4] for p in tracked if p.endswith(".csv") and "/checkpoints/" not in p}
    tables = reproduce.git_tables("results/synthetic", "HEAD")
    assert set(tables) == expected and "table1_multitype" in tables
    assert tables["table1_multitype"].startswith("source,train,test,method,")


def test_per_seed_tables_stamped_with_the_seeds_column_are_per_seed_too():
    import io

    import pandas as pd

    new = PER_SEED.replace("run_seed", "seeds").replace(",synthetic,0,b", ",synthetic,\"0,1,2\",b")
    layout = reproduce.layout_of(pd.read_csv(io.StringIO(new), dtype=str, keep_default_na=False))
    assert layout.per_seed and "seed" in layout.keys and "seeds" in layout.provenance
    old_plain = reproduce.layout_of(pd.read_csv(io.StringIO(PLAIN.format(loss=1)), dtype=str, keep_default_na=False))
    assert not old_plain.per_seed and "seed" in old_plain.provenance
