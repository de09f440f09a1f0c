"""The notebook pipeline on a smoke-size synthetic world with a tiny random backbone:
train_or_load trains once and then loads; evaluation follows the per-product protocol."""

import pandas as pd
import pytest
import torch

from dapo.experiments.profiles import resolve_profile
from dapo.experiments.runs import evaluate_binary, evaluate_multitype, open_profile_dataset, train_or_load
from dapo.synthetic.worlds import write_world


@pytest.fixture(scope="module")
def smoke_cfg(tmp_path_factory, tiny_image_size):
    root = tmp_path_factory.mktemp("worlds")
    cfg = resolve_profile("synthetic", smoke=True, data_root=root, image_size=tiny_image_size, epochs=1)
    for name in (cfg.train_dataset, cfg.target_datasets[0]):
        write_world(name, cfg.dataset_roots[name], smoke=True, image_size=64)
    return cfg


@pytest.fixture(scope="module")
def trained(smoke_cfg, tiny_backbone, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    model, history = train_or_load(smoke_cfg, "dapo", run_dir, backbone=tiny_backbone, device="cpu")
    return run_dir, model, history


def test_train_or_load_trains_once_then_loads_identical_parameters(smoke_cfg, tiny_backbone, trained):
    tmp_path, model, history = trained
    assert isinstance(history, pd.DataFrame) and len(history) > 0 and history["epoch"].max() == 1
    files = list((tmp_path / "checkpoints" / "dapo" / "default" / "seed0").glob("epoch_*.safetensors"))
    assert len(files) == 1
    loaded, loaded_history = train_or_load(smoke_cfg, "dapo", tmp_path, backbone=tiny_backbone, device="cpu")
    for (name, a), (_, b) in zip(model.learnable_parameters().items(), loaded.learnable_parameters().items()):
        assert torch.equal(a.detach().cpu(), b.detach().cpu()), name
    pd.testing.assert_frame_equal(history.reset_index(drop=True), loaded_history.reset_index(drop=True))


def test_training_free_baseline_is_returned_untrained(smoke_cfg, tiny_backbone, tmp_path):
    model, history = train_or_load(smoke_cfg, "clip_ac", tmp_path, backbone=tiny_backbone, device="cpu")
    assert history is None and not (tmp_path / "checkpoints" / "clip_ac").exists()


def test_evaluations_cover_every_product_with_its_own_classes(smoke_cfg, trained):
    model = trained[1]
    target = open_profile_dataset(smoke_cfg, smoke_cfg.target_datasets[0], split="test")
    result = evaluate_multitype(model, target, device="cpu")
    assert list(result.per_product.index) == list(target.products)
    for product in target.products:
        classes = set(result.per_class.loc[result.per_class["product"] == product, "class"])
        assert classes == {"normal", *target.vocabulary(product)}
    binary = evaluate_binary(model, target, device="cpu")
    assert list(binary.index) == [*target.products, "mean"]
    assert binary[["image_auroc", "pixel_auroc"]].apply(lambda c: c.between(0, 1)).all().all()


def test_a_real_dataset_named_in_a_synthetic_run_is_read_not_generated(tmp_path, monkeypatch):
    import dapo.synthetic.worlds as worlds
    from dapo.experiments.runs import prepare_data

    made = []
    monkeypatch.setattr(worlds, "write_world", lambda name, root, **kw: made.append(name))
    cfg = resolve_profile("synthetic", smoke=True, data_root=tmp_path, target_datasets=["visa"],
                          dataset_roots={"visa": str(tmp_path / "visa")})
    roots = prepare_data(cfg)
    assert "visa" not in made and cfg.train_dataset in made and roots["visa"] == tmp_path / "visa"
