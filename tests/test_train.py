"""Training: what changes in a step, checkpoints, resume, loss CSV, determinism."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from safetensors import safe_open
from torch.utils.data import DataLoader, default_collate

from dapo.baselines import config_for
from dapo.checkpoint import load_trained, save_checkpoint
from dapo.config import DAPOConfig
from dapo.inference import Predictor
from dapo.model import DAPO
from dapo.train import LOSS_COLUMNS, load_history, train, training_step

SMALL = DAPOConfig(n_prompts=2)


def fit(model, dataset, out_dir, **kwargs):
    return train(model, dataset, out_dir, batch_size=4, progress=False, collate_fn=default_collate, **kwargs)


def test_one_step_changes_only_learnable_parameters(tiny_backbone, tiny_dataset):
    model = DAPO(tiny_backbone, SMALL)
    frozen = {k: v.clone() for k, v in tiny_backbone.state_dict().items()}
    learned = {k: v.detach().clone() for k, v in model.learnable_parameters().items()}
    optimizer = torch.optim.Adam(model.learnable_parameters().values(), lr=1e-3)
    batch = next(iter(DataLoader(tiny_dataset, batch_size=4, collate_fn=default_collate)))
    terms = training_step(model, optimizer, batch, tiny_dataset.dataset_vocabulary)
    assert set(terms) == {"global", "local", "total"} and all(torch.isfinite(torch.tensor(list(terms.values()))))
    for key, value in tiny_backbone.state_dict().items():
        assert torch.equal(value, frozen[key]), f"frozen {key} changed"
    for name, value in model.learnable_parameters().items():
        assert not torch.equal(value, learned[name]), f"learnable {name} did not change"


def test_train_writes_checkpoints_history_and_resumes_exactly(tiny_backbone, tiny_dataset, tmp_path):
    straight = DAPO(tiny_backbone, SMALL)
    result = fit(straight, tiny_dataset, tmp_path / "straight", epochs=2)
    assert [p.name for p in result.checkpoints] == ["epoch_001.safetensors", "epoch_002.safetensors"]
    assert list(result.history.columns) == list(LOSS_COLUMNS) and len(result.history) == 2 * 2  # 6 samples / 4
    pd.testing.assert_frame_equal(load_history(tmp_path / "straight"), result.history)
    with safe_open(str(result.final), framework="pt") as handle:
        assert set(handle.keys()) == set(straight.learnable_parameters())

    interrupted = DAPO(tiny_backbone, SMALL)
    fit(interrupted, tiny_dataset, tmp_path / "resumed", epochs=1)
    resumed = DAPO(tiny_backbone, SMALL)
    again = fit(resumed, tiny_dataset, tmp_path / "resumed", epochs=2)
    for name, value in straight.learnable_parameters().items():
        torch.testing.assert_close(resumed.learnable_parameters()[name], value, rtol=0, atol=0)
    pd.testing.assert_frame_equal(again.history, result.history)


def test_resume_refuses_another_configuration_and_fresh_start_clears(tiny_backbone, tiny_dataset, tmp_path):
    fit(DAPO(tiny_backbone, SMALL), tiny_dataset, tmp_path, epochs=2)
    other = DAPO(tiny_backbone, SMALL.with_overrides(lam=1.0))
    with pytest.raises(ValueError, match="another configuration"):
        fit(other, tiny_dataset, tmp_path, epochs=2)
    result = fit(other, tiny_dataset, tmp_path, epochs=1, resume=False)
    assert [p.name for p in result.checkpoints] == ["epoch_001.safetensors"]
    assert not (tmp_path / "epoch_002.safetensors").exists()


def test_checkpoint_save_load_gives_identical_outputs(tiny_backbone, tiny_dataset, images, tmp_path):
    model = DAPO(tiny_backbone, SMALL.with_overrides(seed=5))
    fit(model, tiny_dataset, tmp_path / "run", epochs=1)
    path = save_checkpoint(model, tmp_path / "model.safetensors")
    restored = load_trained(path, tiny_backbone)
    assert restored.config == model.config
    vocabulary = ("scratch", "unseen_dent")
    expected, actual = Predictor(model, vocabulary)(images), Predictor(restored, vocabulary)(images)
    for key in expected.keys():
        assert torch.equal(expected[key], actual[key]), key


def test_checkpoints_are_small(tiny_backbone, tmp_path):
    model = DAPO(tiny_backbone, SMALL)
    path = save_checkpoint(model, tmp_path / "model.safetensors")
    n_learned = sum(p.numel() for p in model.learnable_parameters().values())
    n_backbone = sum(p.numel() for p in tiny_backbone.parameters())
    assert path.stat().st_size < 4 * n_learned + 16_384 < 4 * n_backbone


def test_load_refuses_a_different_backbone(tiny_backbone, tiny_model_name, tmp_path):
    from dapo.backbone import load_backbone

    path = save_checkpoint(DAPO(tiny_backbone, SMALL), tmp_path / "model.safetensors")
    other = load_backbone(tiny_model_name, None, image_size=32, tap_layers=(2, 4))
    with pytest.raises(ValueError, match="tap_layers"):
        load_trained(path, other)


def test_training_needs_the_dataset_wide_vocabulary(tiny_backbone, make_tiny_dataset, tmp_path):
    dataset = make_tiny_dataset()
    dataset.vocab_scope = "product"
    with pytest.raises(ValueError, match="vocab_scope='dataset'"):
        fit(DAPO(tiny_backbone, SMALL), dataset, tmp_path, epochs=1)


def test_training_free_baseline_is_refused(tiny_backbone, tiny_dataset, tmp_path, test_prompts):
    model = DAPO(tiny_backbone, config_for("clip_ac", templates=test_prompts["templates"]))
    with pytest.raises(ValueError, match="no learnable parameters"):
        fit(model, tiny_dataset, tmp_path, epochs=1)


def test_checkpoints_know_the_backbone_weights_they_were_trained_on(tiny_backbone, tiny_model_name, tmp_path):
    import hashlib

    from safetensors.torch import save_file

    from dapo.backbone import load_backbone
    from dapo.checkpoint import same_backbone_weights

    state = {k: v.contiguous() for k, v in tiny_backbone.clip.state_dict().items()}
    save_file(state, str(tmp_path / "a.safetensors"))
    state["logit_scale"] = state["logit_scale"] + 1.0
    save_file(state, str(tmp_path / "b.safetensors"))
    trained_on = load_backbone(tiny_model_name, str(tmp_path / "a.safetensors"), image_size=32)
    other = load_backbone(tiny_model_name, str(tmp_path / "b.safetensors"), image_size=32)
    expected = hashlib.sha256((tmp_path / "a.safetensors").read_bytes()).hexdigest()[:16]
    assert trained_on.describe()["weights_sha256"] == expected != other.weights_fingerprint
    assert tiny_backbone.weights_fingerprint is None  # random weights: no file
    path = save_checkpoint(DAPO(trained_on, SMALL), tmp_path / "model.safetensors")
    assert same_backbone_weights(path, trained_on) and same_backbone_weights(path, tiny_backbone)
    assert not same_backbone_weights(path, other)
