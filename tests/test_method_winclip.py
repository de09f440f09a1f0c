"""WinCLIP (zero-shot): the contract, the window maths by hand, training-free determinism, and
the paper configurations (its own ViT-B/16+ at 240 px; ViT-L-14-336 at 518 px, slow)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from dapo.engine.inference import Predictor
from dapo.methods import METHODS, make_model
from dapo.methods.dapo.progressive import run_blocks
from dapo.methods.winclip import (
    ABNORMAL_STATES,
    NORMAL_STATES,
    TEMPLATES,
    WinCLIP,
    WinCLIPConfig,
    harmonic_aggregation,
    harmonic_mean,
    window_indices,
    window_membership,
)

VOCABULARY = ("hole", "scratch")


@pytest.fixture
def model(tiny_backbone):
    return make_model("winclip", tiny_backbone)


def test_registered_training_free_with_nothing_to_learn(model):
    spec = METHODS["winclip"]
    assert spec.training_free and spec.table3 == "WinCLIP" and spec.model is WinCLIP
    assert model.learnable_parameters() == {} and not model.trainable
    with pytest.raises(NotImplementedError, match="training-free"):
        model.loss_terms(None, torch.zeros(1), torch.zeros(1, 4, 4))


def test_output_contract_and_binary_spreading(model, images):
    text = model.encode_text(VOCABULARY, "widget")
    assert text.shape == (2, model.backbone.embed_dim)
    assert torch.allclose(text.norm(dim=-1), torch.ones(2))
    out = model(images, VOCABULARY, products=["widget", "widget"])
    h, w = model.backbone.grid_size(tuple(images.shape[-2:]))
    assert out.global_logits.shape == (2, 2) and out.state_logits.shape == (2, 2)
    assert len(out.stage_logits) == 1 and out.stage_logits[0].shape == (2, 2, h, w)
    assert out.image_embedding.shape == (2, model.backbone.embed_dim) and out.text_embeddings.shape == (2, 2, 32)
    pred = Predictor(model, VOCABULARY, product="widget", precision="fp32")(images)
    assert pred.type_probs.shape == (2, 3, 32, 32) and pred.defect_probs.shape == (2, 2)
    assert torch.equal(pred.type_probs[:, 1], pred.type_probs[:, 2])  # binary: spread evenly
    assert torch.allclose(pred.type_probs.sum(1), torch.ones(2, 32, 32), atol=1e-5)
    assert torch.allclose(pred.image_score, out.global_logits.softmax(-1)[:, 1], atol=1e-6)
    # one stage whose softmax is [1 - M, M] of the zero-shot map M
    score_map = out.stage_logits[0].softmax(1)[:, 1]
    assert ((score_map > 0) & (score_map < 1)).all()


def test_prompt_ensemble_is_every_state_with_every_template(model):
    normal, anomalous = model.state_prompts("metal_plate")
    assert len(normal) == len(NORMAL_STATES) * len(TEMPLATES) == 7 * 22
    assert len(anomalous) == len(ABNORMAL_STATES) * len(TEMPLATES) == 4 * 22
    assert "a photo of a flawless metal plate for anomaly detection." in normal
    assert "a cropped photo of the metal plate with damage." in anomalous
    assert len(set(TEMPLATES)) == len(TEMPLATES)
    assert not torch.equal(model.encode_text((), "bottle"), model.encode_text((), "cable"))


def test_window_indices_on_a_3x3_grid():
    assert window_indices((3, 3), 2).tolist() == [[0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8]]
    assert window_indices((3, 3), 3).tolist() == [list(range(9))]
    assert window_indices((4, 5), 2, stride=2).shape == (2 * 2, 4)
    with pytest.raises(ValueError, match="does not fit"):
        window_indices((3, 3), 4)


def test_harmonic_aggregation_by_hand_on_a_3x3_grid():
    # four 2x2 windows with scores a, b, c, d (top-left, top-right, bottom-left, bottom-right)
    a, b, c, d = 0.8, 0.4, 0.5, 0.2
    scores = torch.tensor([[a, b, c, d]], dtype=torch.float64)
    got = harmonic_aggregation(scores, window_membership(window_indices((3, 3), 2), 9))
    expected = torch.tensor([
        [a, 2 / (1 / a + 1 / b), b],
        [2 / (1 / a + 1 / c), 4 / (1 / a + 1 / b + 1 / c + 1 / d), 2 / (1 / b + 1 / d)],
        [c, 2 / (1 / c + 1 / d), d],
    ], dtype=torch.float64)
    assert got.dtype == torch.float64
    assert torch.allclose(got.reshape(3, 3), expected, rtol=0, atol=1e-12)
    assert abs(float(got[0, 4]) - 4 / 10.75) < 1e-12  # the centre: 4 / (1.25 + 2.5 + 2 + 5)


def test_map_is_the_harmonic_mean_over_window_scales_and_the_image(model):
    """On a 3x3 grid with 2x2 and 3x3 windows: M = 3 / (1/M_small + 1/M_mid + 1/s_image)."""
    small = torch.tensor([[0.8, 0.4, 0.5, 0.2]], dtype=torch.float64)
    mid = torch.tensor([[0.6]], dtype=torch.float64)
    image = torch.tensor([0.3], dtype=torch.float64)
    got = model.anomaly_map(image, [small, mid], (3, 3))
    centre_small = 4 / (1 / 0.8 + 1 / 0.4 + 1 / 0.5 + 1 / 0.2)
    corner_small = 0.8
    assert got.shape == (1, 3, 3)
    assert abs(float(got[0, 1, 1]) - 3 / (1 / centre_small + 1 / 0.6 + 1 / 0.3)) < 1e-12
    assert abs(float(got[0, 0, 0]) - 3 / (1 / corner_small + 1 / 0.6 + 1 / 0.3)) < 1e-12
    assert torch.allclose(harmonic_mean([torch.tensor([2.0]), torch.tensor([6.0])]), torch.tensor([3.0]))


def test_uncovered_patches_are_refused():
    membership = window_membership(window_indices((3, 3), 2, stride=2), 9)  # one window: patches 0, 1, 3, 4
    with pytest.raises(ValueError, match="window_stride"):
        harmonic_aggregation(torch.full((1, 1), 0.5), membership)


def test_a_window_embedding_equals_the_full_image_with_the_other_patches_masked(model):
    """The paper masks the patches outside a window; leaving them out of the sequence is the same."""
    backbone = model.backbone
    image = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    tokens = backbone.embed_image(image)
    indices = window_indices(backbone.grid_size((32, 32)), 3)
    with torch.no_grad():
        windows = model.window_embeddings(tokens, indices)
        for w in (0, 3):
            keep = torch.cat([torch.zeros(1, dtype=torch.long), indices[w] + 1])
            mask = torch.full((tokens.shape[1], tokens.shape[1]), float("-inf"))
            mask[:, keep] = 0.0
            x, _ = run_blocks(backbone.vision_blocks, tokens, attn_mask=mask)
            masked = F.normalize(backbone.pool_image(x).float(), dim=-1)
            assert torch.allclose(windows[0, w], masked[0], atol=1e-5)


def test_training_free_predictions_are_deterministic(tiny_backbone, images):
    first = Predictor(make_model("winclip", tiny_backbone), VOCABULARY, product="widget", precision="fp32")(images)
    second = Predictor(make_model("winclip", tiny_backbone), VOCABULARY, product="widget", precision="fp32")(images)
    for key in first.keys():
        assert torch.equal(first[key], second[key]), key


def test_config_round_trip_and_bad_values():
    config = WinCLIPConfig(window_sizes=(2, 3, 4), templates=("a photo of a {}.",))
    assert WinCLIPConfig.from_dict(config.to_dict()) == config
    import json

    assert WinCLIPConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    for bad, field in ((dict(window_sizes=(0,)), "window_sizes"), (dict(window_stride=0), "window_stride"),
                       (dict(temperature=0.0), "temperature"), (dict(normal_states=("flawless",)), "normal_states")):
        with pytest.raises(ValueError, match=field):
            WinCLIPConfig(**bad)


def _paper_forward(model_name, image_size):
    from dapo.clip.backbone import load_backbone

    torch.manual_seed(0)
    backbone = load_backbone(model_name, None, image_size=image_size)
    model = make_model("winclip", backbone)
    with torch.no_grad():
        out = model(torch.randn(1, 3, image_size, image_size), products=["bottle"])
    return backbone, model, out


@pytest.mark.slow
def test_its_own_paper_configuration_vit_b16_plus_240():
    """WinCLIP's paper: OpenCLIP ViT-B/16+ at 240 px, 15 x 15 patches; 196 small and 169 mid windows."""
    backbone, model, out = _paper_forward("ViT-B-16-plus-240", 240)
    assert [w.shape[0] for w in model.windows((15, 15))] == [14 * 14, 13 * 13]
    assert out.stage_logits[0].shape == (1, 2, 15, 15) and out.global_logits.shape == (1, 2)
    assert sum(p.numel() for p in model.learnable_parameters().values()) == 0  # FAPrompt Table 3: 0
    assert torch.isfinite(out.stage_logits[0]).all()


@pytest.mark.slow
def test_dapo_paper_configuration_vit_l14_336_at_518():
    """ViT-L-14-336 at 518 px: 37 x 37 patches, 36^2 small and 35^2 mid windows. The whole image and
    a few windows of each scale run here (every window: ~14 image forwards, minutes on a CPU; the
    full forward is ``test_full_forward_vit_l14_336_at_518``)."""
    from dapo.clip.backbone import load_backbone

    torch.manual_seed(0)
    backbone = load_backbone("ViT-L-14-336", None, image_size=518)
    model = make_model("winclip", backbone)
    assert backbone.grid_size() == (37, 37) and model.learnable_parameters() == {}
    windows = model.windows((37, 37))
    assert [w.shape for w in windows] == [(36 * 36, 4), (35 * 35, 9)]
    with torch.no_grad():
        tokens = backbone.embed_image(torch.randn(1, 3, 518, 518))
        image = backbone.pool_image(run_blocks(backbone.vision_blocks, tokens)[0])
        embeddings = [model.window_embeddings(tokens, w[[0, len(w) // 2, -1]]) for w in windows]
    assert tokens.shape == (1, 1 + 37 * 37, 1024) and image.shape == (1, 768)
    assert all(e.shape == (1, 3, 768) and torch.allclose(e.norm(dim=-1), torch.ones(1, 3)) for e in embeddings)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("DAPO_WINCLIP_FULL_518"), reason="every window of ViT-L-14-336 at 518 px: "
                    "about 6 minutes on a 2-core CPU; set DAPO_WINCLIP_FULL_518=1 to run it")
def test_full_forward_vit_l14_336_at_518():
    backbone, model, out = _paper_forward("ViT-L-14-336", 518)
    assert out.stage_logits[0].shape == (1, 2, 37, 37) and out.image_embedding.shape == (1, 768)
    assert torch.isfinite(out.stage_logits[0]).all()
