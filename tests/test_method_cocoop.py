"""CoCoOp (dapo.methods.cocoop): the contract, the meta-network's conditioning, batched text
encoding, training, checkpoints and the paper configuration's size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dapo.engine.checkpoint import load_trained, save_checkpoint
from dapo.engine.inference import Predictor
from dapo.engine.train import train
from dapo.methods import get, make_model, training_for
from dapo.methods.cocoop import CoCoOp, CoCoOpConfig, PromptIds

VOCABULARY = ("hole", "scratch")


@pytest.fixture
def model(tiny_backbone):
    return make_model("cocoop", tiny_backbone)


def test_registered_as_a_trainable_table3_method(tiny_backbone, model):
    method = get("cocoop")
    assert method.table3 == "CoCoOp" and not method.training_free
    assert model.trainable and model.binary and model.uses_product_names
    assert training_for("cocoop").epochs == 10 and training_for("cocoop").batch_size == 8
    assert all(not p.requires_grad for p in tiny_backbone.parameters())
    assert set(model.learnable_parameters()) == {"ctx", "meta_net.0.weight", "meta_net.0.bias", "meta_net.2.weight",
                                                 "meta_net.2.bias"}


def test_output_shapes_and_contract(model, images, tiny_backbone):
    out = model(images, VOCABULARY, products=["widget", "widget"])
    h, w = tiny_backbone.grid_size(tuple(images.shape[-2:]))
    assert out.global_logits.shape == (2, 2) and out.state_logits.shape == (2, 2)
    assert [tuple(s.shape) for s in out.stage_logits] == [(2, 2, h, w)] * len(tiny_backbone.tap_layers)
    assert out.text_embeddings.shape == (2, 2, tiny_backbone.embed_dim)
    assert torch.allclose(out.image_embedding.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(out.text_embeddings.norm(dim=-1), torch.ones(2, 2), atol=1e-5)
    # the text side depends on the image: two images give two different pairs of state embeddings
    assert not torch.allclose(out.text_embeddings[0], out.text_embeddings[1])

    predictor = Predictor(model, VOCABULARY, product="widget", precision="fp32")
    assert isinstance(predictor.text_embeddings, PromptIds)
    pred = predictor(images)
    assert pred.image_score.shape == (2,) and pred.anomaly_map.shape == (2, 32, 32)
    assert pred.type_probs.shape == (2, 3, 32, 32) and pred.defect_probs.shape == (2, 2)
    assert torch.allclose(pred.type_probs[:, 1], pred.type_probs[:, 2])  # binary: spread evenly
    assert torch.allclose(pred.type_probs.sum(1), torch.ones(2, 32, 32), atol=1e-5)
    # the cached text side (Predictor) scores as the per-image product names do
    with torch.no_grad():
        direct = model(images, VOCABULARY, products=["widget", "widget"])
    assert torch.allclose(pred.image_score, direct.global_logits.softmax(-1)[:, 1], atol=1e-5)


def test_conditioned_context_and_logits_by_hand_in_float64(model, images):
    """V_m(x) = V_m + W2 relu(W1 z + b1) + b2 and logits = scale * cos(z, t_s(x))."""
    z = F.normalize(torch.randn(3, model.backbone.embed_dim, generator=torch.Generator().manual_seed(2)), dim=-1)
    (w1, b1), (w2, b2) = [(layer.weight.double(), layer.bias.double()) for layer in (model.meta_net[0], model.meta_net[2])]
    expected = model.ctx.double()[None] + (torch.relu(z.double() @ w1.T + b1) @ w2.T + b2)[:, None]
    assert torch.allclose(model.conditioned_context(z).double(), expected, atol=1e-5)

    out = model(images, VOCABULARY)
    cosine = torch.einsum("bc,bkc->bk", out.image_embedding.double(), out.text_embeddings.double())
    assert torch.allclose(out.global_logits.double(), model.backbone.logit_scale * cosine, atol=1e-4)


def test_one_text_encoder_call_equals_the_per_image_loop(model, images):
    """The batched text side (all B x 2 prompts at once) is the release's per-image loop."""
    with torch.no_grad():
        z, _, _ = model.encode_image(images)
        context = model.conditioned_context(z)
        ids = torch.stack([model.prompt_ids("widget"), model.prompt_ids("metal nut")])
        batched = model.encode_prompts(ids, context)
        looped = torch.cat([model.encode_prompts(ids[i:i + 1], context[i:i + 1]) for i in range(2)])
    assert torch.allclose(batched, looped, atol=1e-5)


def test_context_starts_from_the_init_words_or_random(tiny_backbone):
    model = make_model("cocoop", tiny_backbone)
    ids = tiny_backbone.tokenize(["a photo of a"])
    words = tiny_backbone.text.token_embedding(ids)[0, 1:5]
    assert torch.equal(model.ctx.detach(), words)
    assert model.prompt_texts("metal_nut") == ["a photo of a normal metal nut.", "a photo of a anomalous metal nut."]
    random = make_model("cocoop", tiny_backbone, n_ctx=12, ctx_init="", seed=3)
    assert random.ctx.shape == (12, tiny_backbone.text_width) and 0.01 < float(random.ctx.detach().std()) < 0.03
    assert random.prompt_texts(None)[1] == " ".join(["X"] * 12) + " anomalous object."
    with pytest.raises(ValueError, match="ctx_init='a photo' has 2 words but n_ctx=4"):
        CoCoOpConfig(ctx_init="a photo")
    with pytest.raises(ValueError, match="class_name='thing'"):
        CoCoOpConfig(class_name="thing")


def test_dpam_layers_follow_the_depth_of_the_tower(tiny_backbone):
    assert make_model("cocoop", tiny_backbone).config.dpam_layers == 3  # 19 of 24 -> 3 of 4
    assert make_model("cocoop", tiny_backbone, dpam_layers=0).config.dpam_layers == 0


def test_loss_decreases_on_a_tiny_batch(model, tiny_dataset):
    batch = [tiny_dataset[i] for i in range(6)]
    images = torch.stack([s["image"] for s in batch])
    labels = torch.tensor([s["label"] for s in batch])
    masks = torch.stack([(s["type_mask"] > 0).long() for s in batch])
    optimizer = torch.optim.Adam(model.learnable_parameters().values(), lr=1e-2)
    losses = []
    for _ in range(6):
        terms = model.loss_terms(model(images, VOCABULARY, products=["widget"] * 6), labels, masks)
        assert set(terms) == {"total", "global", "local"} and float(terms["local"]) == 0.0
        optimizer.zero_grad()
        terms["total"].backward()
        optimizer.step()
        losses.append(float(terms["total"].detach()))
    assert losses[-1] < losses[0]
    with_local = make_model("cocoop", model.backbone, lam=4.0)
    terms = with_local.loss_terms(with_local(images, VOCABULARY), labels, masks)
    assert float(terms["local"].detach()) > 0 and torch.isclose(terms["total"], terms["global"] + 4.0 * terms["local"])


def test_trains_and_checkpoint_round_trip(tiny_backbone, tiny_dataset, images, tmp_path):
    model = make_model("cocoop", tiny_backbone, seed=1)
    result = train(model, tiny_dataset, tmp_path / "run", training_for("cocoop", epochs=1, batch_size=3,
                                                                         precision="fp32"), progress=False)
    assert len(result.history) == 2 and result.final is not None
    restored = load_trained(result.final, tiny_backbone)
    assert isinstance(restored, CoCoOp) and restored.config == model.config
    path = save_checkpoint(model, tmp_path / "model.safetensors")
    again = load_trained(path, tiny_backbone)
    first = Predictor(model, VOCABULARY, product="widget", precision="fp32")(images)
    second = Predictor(again, VOCABULARY, product="widget", precision="fp32")(images)
    for key in first.keys():
        assert torch.equal(first[key], second[key]), key


# ----------------------------------------------------------------------------- paper configuration

#: ViT-L-14-336 at 518 px: 4 x 768 context + meta-network 768 -> 48 -> 768.
PAPER_PARAMETERS = 4 * 768 + (768 * 48 + 48) + (48 * 768 + 768)
#: FAPrompt appendix Table 3 (CoCoOp, ViT-L/14@336px): matched by 12 context tokens.
FAPROMPT_PARAMETERS = 83_760


@pytest.mark.slow
def test_paper_configuration_size_and_forward(paper_backbone):
    model = make_model("cocoop", paper_backbone)
    count = sum(p.numel() for p in model.learnable_parameters().values())
    assert count == PAPER_PARAMETERS == 77_616
    assert model.config.dpam_layers == 19 and paper_backbone.tap_layers == (6, 12, 18, 24)
    twelve = make_model("cocoop", paper_backbone, n_ctx=12, ctx_init="")
    assert sum(p.numel() for p in twelve.learnable_parameters().values()) == FAPROMPT_PARAMETERS
    image = torch.randn(1, 3, 518, 518, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(image, ("hole",), products=["bottle"])
    assert out.global_logits.shape == (1, 2) and out.text_embeddings.shape == (1, 2, 768)
    assert [tuple(s.shape) for s in out.stage_logits] == [(1, 2, 37, 37)] * 4
    assert torch.isfinite(out.global_logits).all()


def test_parameter_count_at_the_paper_widths(shallow_vit_l):
    count = sum(p.numel() for p in make_model("cocoop", shallow_vit_l).learnable_parameters().values())
    assert count == PAPER_PARAMETERS == 77_616
    twelve = make_model("cocoop", shallow_vit_l, n_ctx=12, ctx_init="")
    assert sum(p.numel() for p in twelve.learnable_parameters().values()) == FAPROMPT_PARAMETERS
