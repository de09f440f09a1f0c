"""Notebooks give the same tables in any order: a notebook that trains longer than the profile
(07's pattern, here `-p epochs 2` at smoke size) run before or after one that reads the headline
checkpoints (03) changes neither the headline checkpoint files (also when they were saved without
their optimiser state, as committed) nor either notebook's CSVs."""

from __future__ import annotations

import hashlib

import pytest

from dapo.util.paths import REPO_ROOT

ONE_SEED = {"seeds": [0]}
LONGER = {"epochs": 2}  # the smoke profile trains 1 epoch: 07 trains its default setting for 2


def execute(stem: str, data, out, params=None) -> None:
    import papermill as pm

    out.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(str(REPO_ROOT / "notebooks" / f"{stem}.ipynb"), str(out / f"{stem}.ipynb"),
                        parameters={"smoke": True, "precision": "fp32", "data_root": str(data),
                                    "output_dir": str(out / "results"), "figures_dir": str(out / "figures"),
                                    **ONE_SEED, **(params or {})},
                        cwd=str(out), kernel_name="python3", progress_bar=False)


def tables(out, names) -> dict[str, bytes]:
    return {name: (out / "results" / f"{name}.csv").read_bytes() for name in names}


def checkpoint_files(out) -> dict[str, str]:
    root = out / "results" / "checkpoints"
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.glob("*/default/seed*/epoch_*.safetensors"))}


@pytest.mark.slow
def test_a_longer_training_before_or_after_the_headline_tables_changes_nothing(tmp_path):
    data = tmp_path / "data"
    table1 = ["table1_multitype", "per_product_synthetic_target", "per_defect_synthetic_target"]
    table_init = ["ablation_init"]

    normal = tmp_path / "normal"  # 03, then the headline folders as committed (no optimiser state), then 07
    execute("03_multitype", data, normal)
    first = tables(normal, table1)
    for state in (normal / "results" / "checkpoints").glob("*/default/seed*/optimizer_state_*.pt"):
        state.unlink()
    headline = checkpoint_files(normal)
    execute("07_ablation_init", data, normal, LONGER)
    assert checkpoint_files(normal) == headline, "07 rewrote the headline checkpoints (03 would read them next)"

    reversed_ = tmp_path / "reversed"  # 07 first, on nothing, then 03
    execute("07_ablation_init", data, reversed_, LONGER)
    execute("03_multitype", data, reversed_)
    assert tables(reversed_, table1) == first
    assert tables(reversed_, table_init) == tables(normal, table_init)
