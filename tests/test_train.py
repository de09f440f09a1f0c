"""Training: what changes in a step, checkpoints, resume, loss CSV, determinism."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from safetensors import safe_open
from torch.utils.data import DataLoader, default_collate

from dapo.engine.checkpoint import load_trained, save_checkpoint
from dapo.engine.inference import Predictor
from dapo.engine.train import LOSS_COLUMNS, load_history, train, training_step
from dapo.methods import config_for
from dapo.methods.dapo.config import DAPOConfig
from dapo.methods.dapo.model import DAPO

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


def test_resume_refuses_another_configuration_and_a_fresh_start_elsewhere_works(tiny_backbone, tiny_dataset,
                                                                                 tmp_path):
    fit(DAPO(tiny_backbone, SMALL), tiny_dataset, tmp_path / "a", epochs=2)
    other = DAPO(tiny_backbone, SMALL.with_overrides(lam=1.0))
    with pytest.raises(ValueError, match="another configuration.*never overwritten"):
        fit(other, tiny_dataset, tmp_path / "a", epochs=2)
    result = fit(other, tiny_dataset, tmp_path / "b", epochs=1, resume=False)
    assert [p.name for p in result.checkpoints] == ["epoch_001.safetensors"]
    assert (tmp_path / "a" / "epoch_002.safetensors").exists()


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
    from dapo.clip.backbone import load_backbone

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

    from dapo.clip.backbone import load_backbone
    from dapo.engine.checkpoint import same_backbone_weights

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


# ----------------------------------------------------------------------------- recipes, atomic writes, resume


def test_the_recipe_reaches_the_optimiser_and_every_checkpoint(tiny_backbone, tiny_dataset, tmp_path, monkeypatch):
    import dapo.engine.train as train_module
    from dapo.engine.checkpoint import read_metadata
    from dapo.methods.recipe import TrainConfig
    from dapo.util.precision import resolve_precision

    seen = {}
    original = train_module.make_optimizer

    def spy(params, training):
        optimizer = original(params, training)
        seen.update(optimizer.param_groups[0])
        return optimizer

    monkeypatch.setattr(train_module, "make_optimizer", spy)
    recipe = TrainConfig(lr=5e-4, betas=(0.5, 0.999), batch_size=4, epochs=1)
    result = train(DAPO(tiny_backbone, SMALL), tiny_dataset, tmp_path, recipe, progress=False,
                   collate_fn=default_collate)
    assert seen["lr"] == 5e-4 and seen["betas"] == (0.5, 0.999)
    resolved = resolve_precision("auto", torch.device("cpu"))  # checkpoints record the precision actually used
    assert read_metadata(result.final)["training"] == recipe.with_overrides(precision=resolved)


def test_a_kill_before_the_checkpoint_resumes_from_the_previous_epoch_exactly(tiny_backbone, tiny_dataset, tmp_path,
                                                                             monkeypatch):
    import dapo.engine.train as train_module

    straight = DAPO(tiny_backbone, SMALL)
    reference = fit(straight, tiny_dataset, tmp_path / "straight", epochs=2)

    original = train_module.save_checkpoint

    def killed_at_epoch_two(model, path, **kwargs):
        if kwargs["epoch"] == 2:
            raise KeyboardInterrupt  # loss CSV and optimiser state of epoch 2 are written, its weights are not
        return original(model, path, **kwargs)

    monkeypatch.setattr(train_module, "save_checkpoint", killed_at_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        fit(DAPO(tiny_backbone, SMALL), tiny_dataset, tmp_path / "killed", epochs=2)
    monkeypatch.setattr(train_module, "save_checkpoint", original)
    assert [p.name for p in (tmp_path / "killed").glob("epoch_*")] == ["epoch_001.safetensors"]
    resumed = DAPO(tiny_backbone, SMALL)
    again = fit(resumed, tiny_dataset, tmp_path / "killed", epochs=2)
    for name, value in straight.learnable_parameters().items():
        assert torch.equal(resumed.learnable_parameters()[name], value), name
    pd.testing.assert_frame_equal(again.history, reference.history)  # epoch 2 rows and step numbers intact
    assert sorted(p.name for p in (tmp_path / "killed").glob("optimizer_state_*")) == ["optimizer_state_epoch_002.pt"]


def test_a_kill_mid_write_leaves_no_truncated_checkpoint(tiny_backbone, tiny_dataset, tmp_path, monkeypatch):
    import dapo.engine.checkpoint as checkpoint_module

    def half_written(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"\x00" * 10)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module, "save_file", half_written)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(DAPO(tiny_backbone, SMALL), tmp_path / "model.safetensors")
    assert list(tmp_path.iterdir()) == []  # neither the target nor the temporary file


def test_resume_without_the_optimiser_state_says_what_is_missing(tiny_backbone, tiny_dataset, tmp_path):
    from dapo.engine.train import ResumeError

    fit(DAPO(tiny_backbone, SMALL), tiny_dataset, tmp_path, epochs=1)
    (tmp_path / "optimizer_state_epoch_001.pt").unlink()
    with pytest.raises(ResumeError, match="epoch_001.safetensors but not its optimiser state "
                                          "optimizer_state_epoch_001.pt"):
        fit(DAPO(tiny_backbone, SMALL), tiny_dataset, tmp_path, epochs=2)
    (tmp_path / "loss_history.csv").write_text("epoch,step,global_step,loss_total,loss_global,loss_local\n")
    with pytest.raises(ResumeError, match=r"lacks the loss rows of epoch\(s\) \[1\]"):
        fit(DAPO(tiny_backbone, SMALL), tiny_dataset, tmp_path, epochs=1)


def test_a_truncated_checkpoint_is_an_error_naming_its_path(tiny_backbone, tmp_path):
    from dapo.engine.checkpoint import CheckpointError, read_checkpoint

    path = save_checkpoint(DAPO(tiny_backbone, SMALL), tmp_path / "model.safetensors")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=f"cannot read checkpoint {path}"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="not a DAPO checkpoint"):
        from safetensors.torch import save_file

        save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
        read_checkpoint(tmp_path / "other.safetensors")


def test_a_checkpoint_of_the_older_format_is_refused_not_reinterpreted(tiny_backbone, tmp_path):
    import json

    from safetensors.torch import save_file

    from dapo.engine.checkpoint import CheckpointError, read_checkpoint

    old = {"format": "dapo-checkpoint/1", "config": json.dumps({"alpha0": 0.1}), "backbone": "{}", "epoch": "2",
           "vocabulary": "[]"}
    save_file({"x": torch.zeros(1)}, str(tmp_path / "old.safetensors"), metadata=old)
    with pytest.raises(CheckpointError, match="older dapo .*dapo-checkpoint/1.*train again"):
        read_checkpoint(tmp_path / "old.safetensors")
