"""Predictor: shapes, scores by hand, smoothing against scipy, text encoded once, new defects."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from dapo.engine.inference import Predictor, inference_vocabulary
from dapo.methods.dapo.config import DAPOConfig
from dapo.methods.dapo.model import DAPO
from dapo.methods.scoring import gaussian_smooth, type_probabilities

VOCABULARY = ("hole", "scratch", "never_seen_dent")


@pytest.fixture
def model(tiny_backbone):
    return DAPO(tiny_backbone, DAPOConfig(n_prompts=2, smoothing_sigma=0.0))


def test_prediction_shapes_and_ranges(model, images):
    pred = Predictor(model, VOCABULARY)(images)
    assert pred.image_score.shape == (2,)
    assert pred.anomaly_map.shape == (2, 32, 32) and pred["anomaly_map"] is pred.anomaly_map
    assert pred.type_probs.shape == (2, 4, 32, 32) and pred.type_mask.shape == (2, 32, 32)
    assert pred.defect_probs.shape == (2, 3)
    torch.testing.assert_close(pred.type_probs.sum(1), torch.ones(2, 32, 32))
    assert torch.equal(pred.type_mask, pred.type_probs.argmax(1)) and pred.type_mask.dtype == torch.int64
    assert ((pred.defect_probs > 0) & (pred.defect_probs < 1)).all()
    assert sorted(pred.keys()) == ["anomaly_map", "defect_probs", "image_score", "type_mask", "type_probs"]


def test_scores_follow_their_definitions(model, images):
    pred = Predictor(model, VOCABULARY, precision="fp32")(images)
    with torch.no_grad():
        out = model(images, VOCABULARY)
    probs = type_probabilities(out.stage_logits, (32, 32), model.config)
    torch.testing.assert_close(pred.anomaly_map, 1 - probs[:, 0])
    global_score = out.global_logits.softmax(-1)[:, 1]
    torch.testing.assert_close(pred.image_score, global_score)  # DAPO (official): the global score alone
    torch.testing.assert_close(pred.defect_probs, torch.sigmoid(out.state_logits[:, 1:] - out.state_logits[:, :1]))


def test_image_score_mixes_the_global_score_with_a_map_statistic(tiny_backbone, images):
    for statistic in ("max", "top3_mean"):
        model = DAPO(tiny_backbone, DAPOConfig(n_prompts=1, image_score_global_weight=0.5, map_score=statistic))
        pred = Predictor(model, VOCABULARY, precision="fp32")(images)
        with torch.no_grad():
            out = model(images, VOCABULARY)
        flat = pred.anomaly_map.flatten(1)
        stat = flat.amax(1) if statistic == "max" else flat.sort(1, descending=True).values[:, :3].mean(1)
        torch.testing.assert_close(pred.image_score, 0.5 * out.global_logits.softmax(-1)[:, 1] + 0.5 * stat)


def test_states_global_score_is_one_minus_normal_over_all_states(tiny_backbone, images):
    model = DAPO(tiny_backbone, DAPOConfig(n_prompts=1, global_score="states", image_score_global_weight=1.0))
    pred = Predictor(model, VOCABULARY, precision="fp32")(images)
    with torch.no_grad():
        out = model(images, VOCABULARY)
    torch.testing.assert_close(pred.image_score, 1 - out.state_logits.softmax(-1)[:, 0])


def test_gaussian_smoothing_matches_scipy():
    maps = torch.rand(2, 20, 24, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = np.stack([gaussian_filter(m, sigma=2.0, mode="reflect", truncate=4.0) for m in maps.numpy()])
    np.testing.assert_allclose(gaussian_smooth(maps, 2.0).numpy(), expected, rtol=1e-10, atol=1e-12)
    assert gaussian_smooth(maps, 0.0) is maps


def test_text_is_encoded_once_per_vocabulary(model, images, monkeypatch):
    calls = []
    original = model.encode_text
    monkeypatch.setattr(model, "encode_text", lambda *a, **k: calls.append(a) or original(*a, **k))
    predictor = Predictor(model, VOCABULARY)
    predictor(images)
    predictor(images[:1])
    assert len(calls) == 1


def test_unseen_defect_after_training_step(tiny_backbone, tiny_dataset, images):
    from torch.utils.data import DataLoader, default_collate

    from dapo.engine.train import training_step

    model = DAPO(tiny_backbone, DAPOConfig(n_prompts=2))
    optimizer = torch.optim.Adam(model.learnable_parameters().values(), lr=1e-3)
    batch = next(iter(DataLoader(tiny_dataset, batch_size=6, collate_fn=default_collate)))
    training_step(model, optimizer, batch, tiny_dataset.dataset_vocabulary)
    predictor = Predictor(model, ("scratch", "crack", "wobbly edge"))
    pred = predictor(images)
    assert predictor.class_names == ("normal", "scratch", "crack", "wobbly edge")
    assert pred.type_probs.shape == (2, 4, 32, 32) and torch.isfinite(pred.type_probs).all()


def test_binary_models_spread_the_abnormal_probability(tiny_backbone, images):
    model = DAPO(tiny_backbone, DAPOConfig(text_prompts="object_agnostic", n_prompts=1, vision_depth=0,
                                           smoothing_sigma=0.0))
    pred = Predictor(model, VOCABULARY, precision="fp32")(images)
    with torch.no_grad():
        out = model(images, VOCABULARY)
    two_way = type_probabilities(out.stage_logits, (32, 32))
    torch.testing.assert_close(pred.anomaly_map, two_way[:, 1])
    for k in range(1, 4):
        torch.testing.assert_close(pred.type_probs[:, k], two_way[:, 1] / 3)
    assert pred.defect_probs.shape == (2, 3) and torch.equal(pred.defect_probs[:, 0], pred.defect_probs[:, 2])


def test_inference_vocabulary_filtering():
    dataset = SimpleNamespace(vocabulary=lambda product: ("scratch",), dataset_vocabulary=("hole", "scratch"))
    filtered = SimpleNamespace(config=DAPOConfig(inference_vocabulary="product"))
    unfiltered = SimpleNamespace(config=DAPOConfig(inference_vocabulary="dataset"))
    assert inference_vocabulary(filtered, dataset, "widget") == ("scratch",)
    assert inference_vocabulary(unfiltered, dataset, "widget") == ("hole", "scratch")


def test_empty_vocabulary_is_rejected(model):
    with pytest.raises(ValueError):
        Predictor(model, ())
