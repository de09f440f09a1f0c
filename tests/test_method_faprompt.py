"""FAPrompt (dapo.methods.faprompt): the contract, its formulas by hand, training, checkpoints and
the paper configuration's trainable parameter count (appendix Table 3)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, default_collate

from dapo.engine.checkpoint import load_trained, save_checkpoint
from dapo.engine.inference import Predictor
from dapo.engine.train import training_step
from dapo.methods import config_for, make_model, training_for
from dapo.methods.faprompt import (
    FAPromptConfig,
    image_scores,
    orthogonality_loss,
    prior_loss,
    release_unused_projection_parameters,
    select_prior_patches,
)

VOCABULARY = ("hole", "scratch")
#: FAPrompt appendix Table 3 ("Number of Para.", FAPrompt row); ViP2-CLIP's Table 3 rounds it to 9.61 M.
TABLE3_FAPROMPT = 9_612_256


@pytest.fixture
def model(tiny_backbone):
    return make_model("faprompt", tiny_backbone)


def test_outputs_follow_the_contract_and_binary_scores_spread_over_the_vocabulary(model, images):
    assert (model.config.text_depth, model.config.dpam_layers) == (3, 3)  # 9 of 12 and 19 of 24 layers, of 4
    assert model.text_deep.first_layer == 2 and model.text_deep.last_layer == 3  # layer 1 sees the prompt
    assert set(model.learnable_parameters()) == {"normal_ctx", "abnormal_ctx", "text_deep.tokens", "prior_net.0.weight",
                                                 "prior_net.0.bias", "prior_net.2.weight", "prior_net.2.bias"}
    assert not any(p.requires_grad for p in model.backbone.parameters())
    out = model(images, VOCABULARY)
    assert out.global_logits.shape == out.state_logits.shape == (2, 2)
    assert [tuple(s.shape) for s in out.stage_logits] == [(2, 2, 4, 4), (2, 2, 4, 4)]
    assert out.image_embedding.shape == (2, 32) and out.text_embeddings.shape == (2, 2, 32)
    assert out.abnormal_prompt_embeddings.shape == (10, 32) and out.prior.shape == (2, 32)
    # the prior refines the abnormal prompt per image; the normal prompt is shared
    assert torch.allclose(out.text_embeddings[0, 0], out.text_embeddings[1, 0])
    assert not torch.allclose(out.text_embeddings[0, 1], out.text_embeddings[1, 1])
    # the cached text side gives the same outputs as the one computed in forward
    cached = model(images, text_embeddings=model.encode_text(VOCABULARY))
    assert torch.allclose(cached.global_logits, out.global_logits, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(cached.stage_logits, out.stage_logits))
    pred = Predictor(model, VOCABULARY)(images)
    assert pred.type_probs.shape == (2, 3, 32, 32) and pred.defect_probs.shape == (2, 2)
    assert torch.allclose(pred.type_probs[:, 1], pred.type_probs[:, 2])
    assert torch.allclose(pred.image_score, image_scores(cached, model.config), atol=1e-5)
    assert pred.anomaly_map.shape == (2, 32, 32) and torch.isfinite(pred.image_score).all()


def test_hand_computed_orthogonality_loss_float64():
    features = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 4.0]], dtype=torch.float64)
    # |cos(f1, f2)| + |cos(f1, f3)| + |cos(f2, f3)| = 0 + 3/5 + 8/10
    assert orthogonality_loss(features).item() == pytest.approx(1.4, abs=1e-12)
    assert orthogonality_loss(features[:1]).item() == 0.0


def test_hand_computed_top_m_selection_prior_loss_and_image_score_float64():
    patches = torch.arange(8, dtype=torch.float64).view(1, 4, 2)
    probs = torch.tensor([[0.1, 0.9, 0.3, 0.7]], dtype=torch.float64)
    assert torch.equal(select_prior_patches(patches, probs, 2), patches[:, [1, 3]])  # most abnormal first
    assert torch.equal(select_prior_patches(patches, probs, 2, "first"), patches[:, [0, 1]])  # the release's loop
    with pytest.raises(ValueError, match="n_prior_patches=5"):
        select_prior_patches(patches, probs, 5)
    prior = torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.0, 2.0]], dtype=torch.float64)
    assert prior_loss(prior, torch.tensor([0, 1, 0])).item() == pytest.approx((1 + 4) / 2 + (0 + 4) / 2)

    def logit(p):
        return math.log(p / (1 - p))

    class Out:  # p_refined 0.75, static map max 0.8, refined map max 0.5
        global_logits = torch.tensor([[0.0, logit(0.75)]], dtype=torch.float64)
        stage_logits = [torch.tensor([[[[0.0, 0.0]], [[logit(0.8), logit(0.2)]]]], dtype=torch.float64),
                        torch.tensor([[[[0.0, 0.0]], [[logit(0.5), logit(0.1)]]]], dtype=torch.float64)]

    score = 0.5 * 0.75 + 0.5 * (2 / 3 * 0.8 + 1 / 3 * 0.5)
    assert image_scores(Out, FAPromptConfig()).item() == pytest.approx(score, abs=1e-12)


def test_loss_decreases_and_a_checkpoint_round_trip_predicts_the_same(model, make_tiny_dataset, images, tmp_path,
                                                                      tiny_backbone):
    batch = next(iter(DataLoader(make_tiny_dataset(n=4, seed=3), batch_size=4, collate_fn=default_collate)))
    optimizer = torch.optim.Adam(model.learnable_parameters().values(), lr=1e-3, betas=(0.5, 0.999))
    totals = [training_step(model, optimizer, batch, VOCABULARY, "fp32")["total"] for _ in range(6)]
    assert totals[-1] < totals[0], totals
    terms = model.loss_terms(model(batch["image"]), batch["label"], batch["type_mask"])
    assert set(terms) == {"total", "global", "local", "score", "orthogonal", "prior"}
    path = save_checkpoint(model, tmp_path / "epoch_001.safetensors", epoch=1, vocabulary=VOCABULARY,
                           training=training_for("faprompt"))
    loaded = load_trained(path, tiny_backbone)
    assert type(loaded) is type(model) and loaded.config == model.config
    a, b = Predictor(model, VOCABULARY)(images), Predictor(loaded, VOCABULARY)(images)
    assert all(torch.equal(a[key], b[key]) for key in a.keys())


def test_config_round_trips_and_fitting_keeps_explicit_depths(tiny_backbone):
    config = config_for("faprompt", seed=2, prior_selection="first")
    assert FAPromptConfig.from_dict(config.to_dict()) == config
    assert make_model("faprompt", tiny_backbone, text_depth=2).text_deep.depth == 1
    with pytest.raises(ValueError, match="text_depth=9 exceeds"):
        make_model("faprompt", tiny_backbone, text_depth=9)
    with pytest.raises(ValueError, match="prior_selection"):
        config_for("faprompt", prior_selection="random")
    recipe = training_for("faprompt")
    assert (recipe.lr, recipe.batch_size, recipe.epochs, recipe.betas) == (1e-3, 8, 7, (0.5, 0.999))  # B.1


@pytest.fixture(scope="module")
def paper_model():
    """FAPrompt on a randomly initialised ViT-L-14-336 at 518 px (the paper configuration)."""
    from dapo.clip.backbone import load_backbone

    torch.manual_seed(0)
    return make_model("faprompt", load_backbone("ViT-L-14-336", None, image_size=518))


def test_paper_configuration_counts_the_papers_parameters_less_the_release_unused_projections(paper_model):
    config = paper_model.config
    assert (config.text_depth, config.dpam_layers) == (9, 19)  # no scaling at ViT-L/14's depths
    counts = {name: p.numel() for name, p in paper_model.learnable_parameters().items()}
    assert counts == {"normal_ctx": 5 * 768, "abnormal_ctx": 10 * 2 * 768, "text_deep.tokens": 8 * 4 * 768,
                      "prior_net.0.weight": 7680 * 480, "prior_net.0.bias": 480,
                      "prior_net.2.weight": 480 * 768, "prior_net.2.bias": 768}
    ours = sum(counts.values())
    assert ours == 4_100_064
    # Table 3 counts the release's 8 x Linear(768, 896) compound_prompt_projections, never called
    unused = release_unused_projection_parameters(paper_model.backbone.text_width, config.text_depth)
    assert unused == 5_512_192 and ours + unused == TABLE3_FAPROMPT


@pytest.mark.slow
def test_paper_configuration_forward_of_one_image(paper_model):
    with torch.no_grad():
        out = paper_model(torch.randn(1, 3, 518, 518, generator=torch.Generator().manual_seed(0)))
        pred = paper_model.predict(out, (518, 518), 1)
    assert [tuple(s.shape) for s in out.stage_logits] == [(1, 2, 37, 37)] * 2
    assert out.global_logits.shape == (1, 2) and out.text_embeddings.shape == (1, 2, 768)
    assert pred.anomaly_map.shape == (1, 518, 518) and torch.isfinite(pred.image_score).all()
