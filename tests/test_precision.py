"""Precision: choosing fp32/bf16, bf16 against fp32 on the tiny model, fp32 state, determinism."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, default_collate

from dapo.engine.inference import Predictor
from dapo.engine.train import training_step
from dapo.methods.dapo.config import DAPOConfig
from dapo.methods.dapo.model import DAPO
from dapo.util import precision as precision_module
from dapo.util.precision import compute_dtype, resolve_precision

SMALL = DAPOConfig(n_prompts=2)
# bf16 keeps 8 significant bits (relative rounding 2^-9); through the tiny model's 4 + 4 layers
# the errors measured were at most 1.4 % of the largest map logit, 0.004 in cosine for the
# global logits, 0.3 % of the loss and 0.009 in the anomaly map (seeds 0-2): the bounds below
# leave about a factor 2.
MAP_TOLERANCE = 0.03  # of the largest |stage logit|
COSINE_TOLERANCE = 0.01  # global logits times the temperature
LOSS_TOLERANCE = 0.01  # relative
SCORE_TOLERANCE = 0.02  # anomaly map and image score, absolute (probabilities)


def first_batch(dataset, n: int = 4) -> dict:
    return next(iter(DataLoader(dataset, batch_size=n, collate_fn=default_collate)))


def test_auto_is_bf16_on_cuda_and_fast_bf16_cpus(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_has_fast_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(precision_module, "cpu_has_fast_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert resolve_precision("bf16", "cpu") == "bf16" and resolve_precision("fp32", "cuda") == "fp32"
    with pytest.raises(ValueError, match="precision='fp16'"):
        resolve_precision("fp16", "cpu")


def test_compute_dtype_follows_autocast():
    x = torch.zeros(2)
    assert compute_dtype(x) == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert compute_dtype(x) == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
        assert compute_dtype(x) == torch.float32


def test_bf16_forward_and_training_step_agree_with_fp32(tiny_backbone, tiny_dataset):
    batch = first_batch(tiny_dataset)
    vocabulary = tiny_dataset.dataset_vocabulary
    outputs, losses = {}, {}
    for precision in ("fp32", "bf16"):
        model = DAPO(tiny_backbone, SMALL)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            outputs[precision] = model(batch["image"], vocabulary)
        optimizer = torch.optim.Adam(model.learnable_parameters().values(), lr=1e-3)
        losses[precision] = training_step(model, optimizer, batch, vocabulary, precision)["total"]
    full, half = outputs["fp32"], outputs["bf16"]
    for a, b in zip(half.stage_logits, full.stage_logits):
        assert float((a.float() - b).abs().max()) <= MAP_TOLERANCE * float(b.abs().max())
    tau = SMALL.temperature
    assert float((half.global_logits.float() - full.global_logits).abs().max()) * tau <= COSINE_TOLERANCE
    assert abs(losses["bf16"] - losses["fp32"]) <= LOSS_TOLERANCE * abs(losses["fp32"])
    assert half.image_embedding.dtype == torch.float32


def test_bf16_step_keeps_learned_state_float32_and_backbone_untouched(tiny_backbone, tiny_dataset):
    model = DAPO(tiny_backbone, SMALL)
    frozen = {k: v.clone() for k, v in tiny_backbone.state_dict().items()}
    optimizer = torch.optim.Adam(model.learnable_parameters().values(), lr=1e-3)
    before = {k: v.detach().clone() for k, v in model.learnable_parameters().items()}
    training_step(model, optimizer, first_batch(tiny_dataset), tiny_dataset.dataset_vocabulary, "bf16")
    for name, parameter in model.learnable_parameters().items():
        assert parameter.dtype == torch.float32 and parameter.grad.dtype == torch.float32, name
        assert not torch.equal(parameter, before[name]), f"{name} did not change"
    for state in optimizer.state.values():
        assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.float32
    for key, value in tiny_backbone.state_dict().items():
        assert value.dtype == frozen[key].dtype and torch.equal(value, frozen[key]), key


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_steps_are_deterministic(tiny_backbone, tiny_dataset, precision):
    batch = first_batch(tiny_dataset)
    runs = []
    for _ in range(2):
        model = DAPO(tiny_backbone, SMALL)
        optimizer = torch.optim.Adam(model.learnable_parameters().values(), lr=1e-3)
        losses = [training_step(model, optimizer, batch, tiny_dataset.dataset_vocabulary, precision)["total"]
                  for _ in range(2)]
        runs.append((losses, {k: v.detach().clone() for k, v in model.learnable_parameters().items()}))
    assert runs[0][0] == runs[1][0]
    for name, value in runs[0][1].items():
        assert torch.equal(value, runs[1][1][name]), name


def test_predictor_precision_resolves_and_bf16_agrees_with_fp32(tiny_backbone, images):
    model = DAPO(tiny_backbone, DAPOConfig(n_prompts=2, smoothing_sigma=1.0))
    vocabulary = ("hole", "scratch")
    assert Predictor(model, vocabulary).precision == resolve_precision("auto", "cpu")
    full = Predictor(model, vocabulary, precision="fp32")(images)
    half = Predictor(model, vocabulary, precision="bf16")(images)
    for key in ("anomaly_map", "image_score", "type_probs"):
        assert half[key].dtype == torch.float32
        assert float((half[key] - full[key]).abs().max()) <= SCORE_TOLERANCE, key
    with pytest.raises(ValueError, match="precision="):
        Predictor(model, vocabulary, precision="half")


def test_the_environment_fixes_what_auto_means(monkeypatch):
    from dapo.util.precision import resolve_precision

    monkeypatch.setenv("DAPO_AUTO_PRECISION", "fp32")
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"          # an explicit choice still wins
    monkeypatch.setenv("DAPO_AUTO_PRECISION", "bf16")
    assert resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setenv("DAPO_AUTO_PRECISION", "fp16")
    with pytest.raises(ValueError, match="DAPO_AUTO_PRECISION='fp16'"):
        resolve_precision("auto", "cpu")


def test_a_run_makes_auto_mean_its_own_precision_in_every_later_call(monkeypatch):
    """A notebook started with -p precision fp32 on a bf16 CPU evaluates in fp32 too, even where a
    call leaves precision at "auto" (the bug: evaluations ran in bf16 under an fp32 stamp)."""
    import dapo.util.precision as precision
    from dapo.experiments.runs import start_run

    monkeypatch.delenv("DAPO_AUTO_PRECISION", raising=False)
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    assert precision.resolve_precision("auto", "cpu") == "bf16"
    run = start_run("synthetic", smoke=True, device="cpu", precision="fp32", prepare=False)
    assert run.precision == "fp32" and run.prov.precision == "fp32"
    assert precision.resolve_precision("auto", "cpu") == "fp32"
    assert precision.resolve_precision("bf16", "cpu") == "bf16"  # an explicit argument still wins
    with torch.no_grad(), precision.autocast("cpu"):
        assert not torch.is_autocast_enabled("cpu")
    assert start_run("synthetic", smoke=True, device="cpu", prepare=False).precision == "bf16"  # not the last run's
    precision.set_run_precision(None)
    assert precision.resolve_precision("auto", "cpu") == "bf16"
    with pytest.raises(ValueError, match="precision='half'"):
        precision.set_run_precision("half")
