"""The ablation notebooks' code at full-size parameters, with the sweep faked (random metrics, no
training): every table has one row per (setting, seed[, epoch], dataset) and its swept field as a
column, the depth grids come from the backbone, and every figure is written. The real sweep runs
in the smoke-size notebook runs of ``make test``."""

import json
from types import SimpleNamespace

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")

import dapo.experiments.runs  # noqa: E402
import dapo.experiments.sweep  # noqa: E402
from dapo.experiments.sweep import grid_settings  # noqa: E402
from dapo.util.paths import REPO_ROOT  # noqa: E402

METRICS = ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "pixel_f1_max", "pixel_aupro",
           "pixel_aupro_official")
PRODUCTS = ("bracket", "tubes", "mean")


def fake_sweep(calls):
    rng = np.random.default_rng(0)

    def sweep(cfg, method, run_dir, *, grid, seeds, evaluate, epochs=None, eval_epochs=None, **kwargs):
        settings = grid_settings(grid)
        calls.append(settings)
        fields = list(dict.fromkeys(k for s in settings for k in s))
        per_product = evaluate.name.startswith("binary_products")
        datasets = ["synthetic_mpdd"] if per_product else list(cfg.target_datasets)
        rows = [{**{f: s.get(f) for f in fields}, "seed": seed, "epoch": epoch, "dataset": dataset,
                 **({"product": product} if per_product else {}), "metric": metric, "value": rng.uniform(0.5, 1)}
                for s in settings for seed in seeds for epoch in (eval_epochs or [cfg.epochs])
                for dataset in datasets for product in (PRODUCTS if per_product else [None]) for metric in METRICS]
        return pd.DataFrame(rows)
    return sweep


def run_cells(path, tmp_path):
    namespace = {"In": []}
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"]).replace("%matplotlib inline", "")
        if "parameters" in cell["metadata"].get("tags", []):
            source += f"\noutput_dir = {str(tmp_path / 'results')!r}\nfigures_dir = {str(tmp_path / 'figures')!r}\n"
        exec(compile(source, f"{path.name} cell", "exec"), namespace)
    return namespace


@pytest.fixture
def faked(monkeypatch):
    calls = []
    monkeypatch.setattr(dapo.experiments.sweep, "sweep", fake_sweep(calls))
    monkeypatch.setattr(dapo.experiments.runs, "prepare_data", lambda cfg, seed=0: {})
    monkeypatch.setattr(dapo.experiments.runs, "load_profile_backbone",
                        lambda cfg, device="auto": SimpleNamespace(vision_blocks=[None] * 8, text_blocks=[None] * 4))
    monkeypatch.setattr(dapo.experiments.runs, "open_profile_dataset", lambda cfg, name, **kwargs: None)
    return calls


def table(tmp_path, name):
    return pd.read_csv(tmp_path / "results" / f"{name}.csv")


@pytest.mark.parametrize("stem, tables", [
    ("06_ablation_lambda_length", {"ablation_lambda": ["lam"], "ablation_length": ["n_ctx"]}),
    ("07_ablation_init", {"ablation_init": ["init", "epoch"]}),
    ("08_ablation_aggregation", {"ablation_aggregation": ["aggregation"]}),
    ("09_ablation_depth", {"ablation_depth": ["vision_depth", "text_depth", "tuning"],
                           "ablation_depth_per_product": ["vision_depth", "text_depth", "tuning", "product"],
                           "ablation_text_depth": ["text_depth"]}),
])
def test_ablation_notebook_tables_have_one_row_per_setting_seed_and_dataset(stem, tables, faked, tmp_path):
    from dapo.experiments.parameters import defaults

    run_cells(REPO_ROOT / "notebooks" / f"{stem}.ipynb", tmp_path)
    params = defaults(stem)
    for name, keys in tables.items():
        frame = table(tmp_path, name)
        assert not frame.duplicated([*keys, "seed", "dataset"]).any(), name
        seeds = ",".join(str(s) for s in sorted(params["seeds"]))
        assert set(frame["seed"]) == set(params["seeds"]) and (frame["seeds"].astype(str) == seeds).all()
        assert (tmp_path / "results" / f"{name}.md").is_file()
    figures = {p.stem for p in (tmp_path / "figures").glob("*.png")}
    expected = {name for name in tables if name != "ablation_depth_per_product"}
    assert expected <= figures


def test_grids_reach_the_sweep_as_parameterised_and_depths_scale_with_the_backbone(faked, tmp_path):
    run_cells(REPO_ROOT / "notebooks" / "06_ablation_lambda_length.ipynb", tmp_path)
    assert faked == [[{"lam": 1.0}, {"lam": 4.0}, {"lam": 16.0}], [{"n_ctx": 1}, {"n_ctx": 5}, {"n_ctx": 16}]]
    faked.clear()
    run_cells(REPO_ROOT / "notebooks" / "09_ablation_depth.ipynb", tmp_path)
    depth, text = faked
    assert {"vision_depth": 4, "text_depth": 2, "tuning": "naive"} in depth  # half of 8 vision / 4 text layers
    assert {"vision_depth": None, "text_depth": None, "tuning": "progressive"} in depth  # full depth = the default
    assert text == [{"text_depth": 1}, {"text_depth": 2}, {"text_depth": 3}, {"text_depth": None}]  # quarters of 4
    resolved = table(tmp_path, "ablation_depth")
    assert set(zip(resolved["vision_depth"], resolved["text_depth"])) == {(2, 1), (4, 2), (6, 3), (8, 4)}
    per_product = table(tmp_path, "ablation_depth_per_product")
    assert set(per_product["product"]) == set(PRODUCTS) and per_product["vision_depth"].nunique() == 1
