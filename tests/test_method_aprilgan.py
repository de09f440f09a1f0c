"""APRIL-GAN (a DAPO-family preset): its release's choices, its loss by hand, training, the
checkpoint round trip, and the paper configuration's parameter count (FAPrompt appendix Table 3)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, default_collate

from dapo.engine.checkpoint import load_trained, save_checkpoint
from dapo.engine.inference import Predictor
from dapo.engine.train import training_step
from dapo.methods import METHODS, config_for, make_model, training_for
from dapo.methods.aprilgan import ABNORMAL_STATES, NORMAL_STATES, TEMPLATES
from dapo.methods.contract import DAPOOutput
from dapo.methods.dapo.model import DAPO

VOCABULARY = ("hole", "scratch")
PAPER_PARAMETERS = 3_148_800  # FAPrompt appendix Table 3 (APRIL-GAN, ViT-L-14-336 at 518 px)


@pytest.fixture
def model(tiny_backbone):
    return make_model("aprilgan", tiny_backbone)


def test_registered_as_a_dapo_family_preset_with_the_release_recipe():
    spec = METHODS["aprilgan"]
    assert spec.model is DAPO and spec.table3 == "AprilGAN" and not spec.training_free
    config = config_for("aprilgan")
    assert config.binary and config.handcrafted and config.templates == TEMPLATES and len(TEMPLATES) == 35
    assert (len(NORMAL_STATES), len(ABNORMAL_STATES)) == (7, 5) and "broken {}" in ABNORMAL_STATES
    assert (config.temperature, config.patch_ln_post, config.softmax_before_upsample) == (0.01, False, False)
    assert (config.lam, config.local_reduction, config.dice_terms, config.global_loss_weight) == (1.0, "sum", "abnormal", 0.0)
    recipe = training_for("aprilgan")
    assert (recipe.batch_size, recipe.epochs, recipe.mosaic_prob, recipe.lr, recipe.betas) == (8, 3, 0.2, 1e-3, (0.5, 0.999))


def test_only_the_four_linear_layers_learn(model):
    n_taps = len(model.backbone.tap_layers)
    assert set(model.learnable_parameters()) == {f"adapters.{i}.{p}" for i in range(n_taps) for p in ("weight", "bias")}
    width, dim = model.backbone.vision_width, model.backbone.embed_dim
    assert sum(p.numel() for p in model.learnable_parameters().values()) == n_taps * (width * dim + dim)


def test_output_contract_text_ensemble_and_image_score(model, images):
    out = model(images, VOCABULARY, products=["widget", "widget"])
    assert out.global_logits.shape == (2, 2) and len(out.stage_logits) == len(model.backbone.tap_layers)
    assert all(s.shape == (2, 2, 4, 4) for s in out.stage_logits)
    # text: each of the state x template prompts normalised, averaged per state, normalised again
    embeddings, counts = model.prompt_embeddings(VOCABULARY, "widget")
    assert counts == [7 * 35, 5 * 35]
    by_hand = torch.stack([F.normalize(g.float(), dim=-1).mean(0) for g in embeddings.split(counts)])
    assert torch.allclose(out.text_embeddings[0], F.normalize(by_hand, dim=-1), atol=1e-5)
    # image score: softmax of 100 x cos(class-token embedding, [normal, abnormal])
    pred = Predictor(model, VOCABULARY, product="widget", precision="fp32")(images)
    cos = out.image_embedding @ out.text_embeddings[0].t()
    assert torch.allclose(pred.image_score, (100.0 * cos).softmax(-1)[:, 1], atol=1e-5)
    assert pred.type_probs.shape == (2, 3, 32, 32) and torch.equal(pred.type_probs[:, 1], pred.type_probs[:, 2])


def test_loss_is_focal_plus_dice_summed_over_stages_by_hand(model):
    """Two stages, one image of 2x2 pixels (no upsampling): per stage the release's focal loss
    (gamma 2, one-hot clamped to [1e-5, 1 - 1e-5], p_t + 1e-5) + Dice of the abnormal channel."""
    logits = [torch.tensor([[[[0.2, -1.0], [0.5, 2.0]], [[1.0, 0.3], [-0.4, 0.1]]]]),
              torch.tensor([[[[1.5, 0.0], [0.0, -2.0]], [[-0.5, 0.0], [1.0, 1.0]]]])]
    mask = torch.tensor([[[0, 1], [0, 1]]])
    output = DAPOOutput(torch.zeros(1, 2), torch.zeros(1, 2), logits, torch.zeros(1, 4), torch.zeros(2, 4))
    total = 0.0
    for stage in logits:
        focal, inter, p_sum = 0.0, 0.0, 0.0
        for i in range(2):
            for j in range(2):
                normal, abnormal = float(stage[0, 0, i, j]), float(stage[0, 1, i, j])
                p1 = math.exp(abnormal) / (math.exp(normal) + math.exp(abnormal))
                y = int(mask[0, i, j])
                one_hot = (1 - 1e-5, 1e-5) if y == 0 else (1e-5, 1 - 1e-5)
                pt = one_hot[0] * (1 - p1) + one_hot[1] * p1 + 1e-5
                focal += -(1 - pt) ** 2 * math.log(pt) / 4
                inter += p1 * y
                p_sum += p1
        total += focal + 1 - (2 * inter + 1) / (p_sum + int(mask.sum()) + 1)
    terms = model.loss_terms(output, torch.tensor([1]), mask)
    assert abs(float(terms["total"]) - total) < 1e-5


def test_loss_decreases_and_the_checkpoint_round_trips(tiny_backbone, tiny_dataset, images, tmp_path):
    model = make_model("aprilgan", tiny_backbone)
    optimizer = torch.optim.Adam(model.learnable_parameters().values(), lr=1e-2, betas=(0.5, 0.999))
    batch = next(iter(DataLoader(tiny_dataset, batch_size=6, collate_fn=default_collate)))
    losses = [training_step(model, optimizer, batch, VOCABULARY, precision="fp32")["total"] for _ in range(8)]
    assert losses[-1] < losses[0]
    path = save_checkpoint(model, tmp_path / "aprilgan.safetensors", epoch=1, vocabulary=VOCABULARY,
                           training=training_for("aprilgan"))
    loaded = load_trained(path, tiny_backbone)
    assert loaded.config == model.config
    before = Predictor(model, VOCABULARY, product="widget", precision="fp32")(images)
    after = Predictor(loaded, VOCABULARY, product="widget", precision="fp32")(images)
    for key in before.keys():
        assert torch.equal(before[key], after[key]), key


@pytest.fixture(scope="module")
def paper_backbone():
    from dapo.clip.backbone import load_backbone

    torch.manual_seed(0)
    return load_backbone("ViT-L-14-336", None, image_size=518)


def test_paper_configuration_has_the_reported_parameter_count(paper_backbone):
    """ViT-L-14-336 at 518 px, taps 6/12/18/24: four nn.Linear(1024, 768) = 3,148,800 parameters."""
    model = make_model("aprilgan", paper_backbone)
    assert paper_backbone.tap_layers == (6, 12, 18, 24)
    assert sum(p.numel() for p in model.learnable_parameters().values()) == PAPER_PARAMETERS


@pytest.mark.slow
def test_paper_configuration_forward_of_one_image(paper_backbone):
    model = make_model("aprilgan", paper_backbone)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 518, 518), products=["bottle"])
    assert out.global_logits.shape == (1, 2) and out.image_embedding.shape == (1, 768)
    assert [tuple(s.shape) for s in out.stage_logits] == [(1, 2, 37, 37)] * 4
