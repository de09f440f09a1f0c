"""Checkpoint folders per setting and seed, the config check, epoch selection and the sweep engine
(smoke-size synthetic world, tiny random backbone)."""

import shutil

import pandas as pd
import pytest
import torch

from dapo.experiments.profiles import resolve_profile
from dapo.experiments.runs import checkpoint_dir, non_default, open_profile_dataset, setting_name, train_or_load
from dapo.experiments.sweep import Evaluation, binary_on, grid_settings, mean_std, sweep
from dapo.synthetic.worlds import write_world
from dapo.util.precision import resolve_precision, set_run_precision

FAST = dict(n_prompts=2)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory, tiny_image_size):
    root = tmp_path_factory.mktemp("worlds")
    cfg = resolve_profile("synthetic", smoke=True, data_root=root, image_size=tiny_image_size, epochs=1)
    for name in (cfg.train_dataset, cfg.target_datasets[0]):
        write_world(name, cfg.dataset_roots[name], smoke=True, image_size=64)
    return cfg


def weights(model):
    return {k: v.detach().clone() for k, v in model.learnable_parameters().items()}


def test_setting_names_and_defaults_share_the_default_folder(tmp_path):
    assert setting_name({}) == "default"
    assert setting_name({"n_ctx": 2, "lam": 8.0}) == "lam=8.0,n_ctx=2"
    assert setting_name({"betas": (0.9, 0.999)}) == "betas=0.9-0.999"
    long_a, long_b = ({"templates": tuple(f"a photo of a {i} {{}}." for i in range(20)) + (end,)} for end in "ab")
    assert len(setting_name(long_a)) <= 96 and setting_name(long_a) != setting_name(long_b)
    assert non_default("dapo", {"lam": 4.0, "n_ctx": 2}) == {"n_ctx": 2}  # lam=4 is DAPO's default
    assert checkpoint_dir(tmp_path, "dapo", 1, {"lam": 8.0}) == tmp_path / "checkpoints/dapo/lam=8.0/seed1"
    with pytest.raises(ValueError, match="no_such_field"):
        non_default("dapo", {"no_such_field": 1})
    with pytest.raises(ValueError, match="'seed' is not a setting"):
        non_default("dapo", {"seed": 1})


def test_grid_settings_product_and_explicit_lists():
    assert grid_settings({"lam": [1, 2], "n_ctx": [3]}) == [{"lam": 1, "n_ctx": 3}, {"lam": 2, "n_ctx": 3}]
    together = [{"text_depth": 2, "vision_depth": 2}, {"text_depth": 4, "vision_depth": 4}]
    assert grid_settings(together) == together
    with pytest.raises(ValueError, match="empty"):
        grid_settings([])


def test_two_lambda_values_give_two_models_and_a_mismatched_folder_is_refused(cfg, tiny_backbone, tmp_path):
    low, _ = train_or_load(cfg, "dapo", tmp_path, backbone=tiny_backbone, device="cpu", progress=False, lam=1.0, **FAST)
    high, _ = train_or_load(cfg, "dapo", tmp_path, backbone=tiny_backbone, device="cpu", progress=False, lam=16.0, **FAST)
    assert low.config.lam == 1.0 and high.config.lam == 16.0
    a, b = weights(low), weights(high)
    assert any(not torch.equal(a[k], b[k]) for k in a), "different settings must train different models"
    # a folder named lam=8 that holds the lam=1 checkpoint (copied by hand) is refused, never relabelled
    wrong = checkpoint_dir(tmp_path, "dapo", 0, {"lam": 8.0, **FAST})
    shutil.copytree(checkpoint_dir(tmp_path, "dapo", 0, {"lam": 1.0, **FAST}), wrong)
    before = {p.name: p.read_bytes() for p in wrong.glob("epoch_*")}
    for _ in range(2):  # asked again, still refused: the folder is never overwritten
        with pytest.raises(ValueError, match=r"lam: saved 1.0, requested 8.0.*never overwritten"):
            train_or_load(cfg, "dapo", tmp_path, backbone=tiny_backbone, device="cpu", progress=False, lam=8.0,
                          **FAST)
    assert {p.name: p.read_bytes() for p in wrong.glob("epoch_*")} == before


def test_the_requested_epoch_is_loaded_never_a_later_one(cfg, tiny_backbone, tmp_path):
    two, history2 = train_or_load(cfg, "dapo", tmp_path / "a", epochs=2, backbone=tiny_backbone, device="cpu",
                                  progress=False, **FAST)
    one, history1 = train_or_load(cfg, "dapo", tmp_path / "a", epochs=1, backbone=tiny_backbone, device="cpu",
                                  progress=False, **FAST)
    fresh, _ = train_or_load(cfg, "dapo", tmp_path / "b", epochs=1, backbone=tiny_backbone, device="cpu",
                             progress=False, **FAST)
    assert history2["epoch"].max() == 2 and history1["epoch"].max() == 1
    pd.testing.assert_frame_equal(history1, history2[history2["epoch"] == 1].reset_index(drop=True))
    for name, value in weights(fresh).items():
        assert torch.equal(weights(one)[name], value), f"epoch-1 weights differ from a 1-epoch run: {name}"
    assert any(not torch.equal(weights(one)[k], v) for k, v in weights(two).items())


def test_sweep_returns_a_tidy_table_and_caches_evaluations(cfg, tiny_backbone, tmp_path):
    target = {cfg.target_datasets[0]: open_profile_dataset(cfg, cfg.target_datasets[0], split="test")}
    calls = []
    inner = binary_on(target, device="cpu")

    def counted(model):
        calls.append(model.config.lam)
        return inner.fn(model)

    evaluation = Evaluation("binary-test/1", counted)
    kwargs = dict(grid={"lam": [1.0, 4.0]}, seeds=[0], evaluate=evaluation, backbone=tiny_backbone, device="cpu",
                  progress=False)
    table = sweep(cfg, "dapo", tmp_path, **kwargs)
    assert list(table.columns) == ["lam", "seed", "epoch", "dataset", "metric", "value"]
    assert set(table["lam"]) == {1.0, 4.0} and set(table["dataset"]) == set(target)
    assert {"image_auroc", "pixel_auroc", "pixel_aupro"} <= set(table["metric"])
    assert (checkpoint_dir(tmp_path, "dapo", 0) / "epoch_001.safetensors").is_file()  # lam=4 is the default
    assert calls == [1.0, 4.0]
    again = sweep(cfg, "dapo", tmp_path, **kwargs)
    assert calls == [1.0, 4.0], "a second sweep must read the cached evaluations"
    pd.testing.assert_frame_equal(table, again)
    set_run_precision("bf16" if resolve_precision("auto", "cpu") == "fp32" else "fp32")
    sweep(cfg, "dapo", tmp_path, **kwargs)
    assert calls == [1.0, 4.0] * 2, "another precision must not read the cached evaluations"
    summary = mean_std(table, ["lam", "dataset", "metric"])
    assert set(summary.columns) == {"lam", "dataset", "metric", "mean", "std", "n"} and (summary["n"] == 1).all()


def test_training_free_methods_cannot_be_swept(cfg, tiny_backbone, tmp_path, test_prompts):
    with pytest.raises(ValueError, match="training-free"):
        sweep(cfg, "clip_ac", tmp_path, grid={"temperature": [0.07]}, seeds=[0], backbone=tiny_backbone,
              evaluate=Evaluation("none", lambda m: pd.DataFrame(columns=["dataset", "metric", "value"])),
              device="cpu", progress=False)


def test_per_product_evaluations_keep_a_product_column(monkeypatch):
    import dapo.experiments.sweep as sweep_module

    table = pd.DataFrame({"image_auroc": [0.5, 0.7, 0.6], "image_ap": [0.4, 0.8, 0.6]}, index=["bolt", "gear", "mean"])
    monkeypatch.setattr(sweep_module, "evaluate_binary", lambda model, dataset, **kwargs: table)
    per_product = binary_on({"world": None}, per_product=True)
    frame = per_product(object())
    assert per_product.name == "binary_products/1" and binary_on({"world": None}).name == "binary/1"
    assert list(frame.columns) == ["dataset", "product", "metric", "value"]
    assert frame.set_index(["product", "metric"]).loc[("gear", "image_ap"), "value"] == 0.8
    means = binary_on({"world": None})(object())
    assert list(means.columns) == ["dataset", "metric", "value"] and means["value"].tolist() == [0.6, 0.6]
