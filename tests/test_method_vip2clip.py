"""ViP²-CLIP (dapo.methods.vip2clip): contract, Eq. 6 / Eq. 8 / Eq. 11 by hand, training,
checkpoints, and the paper configuration's trainable parameter count (Table 3: 4.15 M)."""

from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from dapo.engine.checkpoint import load_trained, save_checkpoint
from dapo.engine.inference import Predictor
from dapo.engine.train import train
from dapo.methods import get, make_model, preset
from dapo.methods.vip2clip import (
    FineGrainedPerception,
    ViP2CLIPConfig,
    aligned_layers,
    utpa_layer,
)

VOCABULARY = ("hole", "scratch")
#: ViP²-CLIP's trainable parameters at ViT-L-14-336 (text width 768, embedding 768), computed:
#: prompts (7 + 7 + 3) x 768 + Meta-Net input bias 768 + 3 Meta-Nets (768->384->768, biases)
#: + FGP's four 768 x 768 maps with biases. Table 3 of the paper: 4.15 M.
PAPER_COUNT = 17 * 768 + 768 + 3 * (768 * 384 + 384 + 384 * 768 + 768) + 4 * (768 * 768 + 768)


def count(model) -> int:
    return sum(p.numel() for p in model.learnable_parameters().values())


def test_outputs_follow_the_contract_and_the_binary_spreading(tiny_backbone, images):
    model = make_model("vip2clip", tiny_backbone)
    assert model.layers == (1, 2, 3, 4) and model.config.top_k == 1  # 50 of 37x37 -> 1 of 4x4
    out = model(images)
    assert out.global_logits.shape == out.state_logits.shape == (2, 2)
    assert [s.shape for s in out.stage_logits] == [(2, 2, 4, 4)] * 4
    assert out.image_embedding.shape == (2, 32) and out.text_embeddings.shape == (2, 2, 32)
    torch.testing.assert_close(out.text_embeddings.norm(dim=-1), torch.ones(2, 2))
    assert not torch.allclose(out.text_embeddings[0], out.text_embeddings[1])  # image-conditioned prompts
    # the image score is the mean over the layers of S_a^l (Sec. 4.3)
    torch.testing.assert_close(out.global_logits.softmax(-1)[:, 1], out.layer_image_logits.softmax(-1)[..., 1].mean(1))
    pred = Predictor(model, VOCABULARY, precision="fp32")(images)
    assert pred.image_score.shape == (2,) and pred.anomaly_map.shape == (2, 32, 32)
    assert pred.type_probs.shape == (2, 3, 32, 32) and pred.defect_probs.shape == (2, 2)
    torch.testing.assert_close(pred.type_probs[:, 1], pred.type_probs[:, 2])
    other = Predictor(model, ("dent",), precision="fp32")(images)  # class-name free: the vocabulary changes nothing
    torch.testing.assert_close(other.anomaly_map, pred.anomaly_map)
    torch.testing.assert_close(other.image_score, pred.image_score)
    assert not model.uses_product_names and model.encode_text(VOCABULARY).shape == (2, 32)


def test_backbone_stays_frozen_and_the_learned_parts_are_named(tiny_backbone):
    model = make_model("vip2clip", tiny_backbone)
    names = set(model.learnable_parameters())
    assert not any(name.startswith("backbone.") for name in names)
    assert {"ctx_normal", "ctx_abnormal", "generic", "meta_bias", "fgp.q_weight"} <= names
    assert not any(p.requires_grad for p in tiny_backbone.parameters())


def test_layers_are_fractions_of_depth_and_top_k_keeps_the_paper_share():
    assert aligned_layers(24, (0.25, 0.5, 0.75, 1.0)) == (6, 12, 18, 24)
    assert aligned_layers(8, (0.25, 0.5, 0.75, 1.0)) == (2, 4, 6, 8)
    with pytest.raises(ValueError, match="image_pooling"):
        ViP2CLIPConfig(image_pooling="max")
    with pytest.raises(ValueError, match="top_k"):
        ViP2CLIPConfig(top_k=0)


def test_fgp_is_equation_6_in_float64():
    generator = torch.Generator().manual_seed(3)
    fgp = FineGrainedPerception(4, heads=1, scaled=True, lr_scale=0.01, generator=generator).double()
    prompts = torch.randn(1, 2, 4, generator=generator, dtype=torch.float64)
    patches = torch.randn(1, 5, 4, generator=generator, dtype=torch.float64)
    w = {n: (getattr(fgp, f"{n}_weight").detach().numpy() * 0.01, getattr(fgp, f"{n}_bias").detach().numpy() * 0.01)
         for n in "qkvo"}
    g, f = prompts[0].numpy(), patches[0].numpy()
    q, k, v = g @ w["q"][0].T + w["q"][1], f @ w["k"][0].T + w["k"][1], f @ w["v"][0].T + w["v"][1]
    scores = q @ k.T / np.sqrt(4)
    attn = np.exp(scores - scores.max(1, keepdims=True))
    attn /= attn.sum(1, keepdims=True)
    out = (attn @ v) @ w["o"][0].T + w["o"][1]
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    np.testing.assert_allclose(fgp(prompts, patches)[0].detach().numpy(), out, rtol=1e-12, atol=1e-12)


def test_top_k_pooling_is_equation_8_in_float64():
    generator = torch.Generator().manual_seed(4)
    patches = F.normalize(torch.randn(2, 6, 3, generator=generator, dtype=torch.float64), dim=-1)
    prompts = F.normalize(torch.randn(2, 2, 3, generator=generator, dtype=torch.float64), dim=-1)
    tau, k = 0.07, 2
    logits, image = utpa_layer(patches, prompts, k, tau, "feature")
    for b in range(2):
        p, g = patches[b].numpy(), prompts[b].numpy()
        cos = p @ g.T
        abnormal = [np.exp(c[1] / tau) / (np.exp(c[0] / tau) + np.exp(c[1] / tau)) for c in cos]
        top = sorted(range(6), key=lambda j: -abnormal[j])[:k]
        f_a = p[top].mean(0)
        f_a /= np.linalg.norm(f_a)
        np.testing.assert_allclose(image[b].numpy(), g @ f_a / tau, rtol=1e-12)
        np.testing.assert_allclose(logits[b].numpy(), cos / tau, rtol=1e-12)
    _, cosines = utpa_layer(patches, prompts, k, tau, "similarity")  # the release: the Top-K cosines themselves
    assert cosines.shape == (2, k, 2)


def test_anomaly_map_is_equation_11(tiny_backbone, images):
    model = make_model("vip2clip", tiny_backbone, smoothing_sigma=0.0)
    with torch.no_grad():
        out = model(images)
    pred = model.predict(out, (32, 32), 1)
    maps = []
    for logits in out.stage_logits:
        up = F.interpolate(logits.softmax(1), size=(32, 32), mode="bilinear", align_corners=False)
        maps.append(0.5 * (1 - up[:, 0]) + 0.5 * up[:, 1])
    torch.testing.assert_close(pred.anomaly_map, torch.stack(maps).mean(0))


def test_the_fgp_learns_at_one_hundredth_of_the_rate(tiny_backbone, tiny_dataset):
    model = make_model("vip2clip", tiny_backbone)
    names = [f"{n}_{kind}" for n in "qkvo" for kind in ("weight", "bias")]
    before = {n: getattr(model.fgp, n).detach().clone() for n in names}
    prompt_before = model.ctx_abnormal.detach().clone()
    optimizer = torch.optim.Adam(model.learnable_parameters().values(), lr=1e-3)
    batch = default_collate([tiny_dataset[i] for i in range(4)])
    terms = model.loss_terms(model(batch["image"]), torch.as_tensor(batch["label"]), batch["type_mask"])
    terms["total"].backward()
    optimizer.step()
    # the effective weights are the stored ones x 0.01; Adam's first step moves a stored one by lr
    step = max(float((getattr(model.fgp, n).detach() - before[n]).abs().max()) * model.fgp.lr_scale for n in names)
    assert 0.9e-5 < step < 1.1e-5
    assert 0.9e-3 < float((model.ctx_abnormal.detach() - prompt_before).abs().max()) < 1.1e-3


@pytest.mark.parametrize("method", ["vip2clip", "vip2clip_release"])
def test_loss_decreases_on_a_tiny_batch(tiny_backbone, tiny_dataset, method):
    model = make_model(method, tiny_backbone)
    batch = default_collate([tiny_dataset[i] for i in range(4)])
    labels, masks = torch.as_tensor(batch["label"]), batch["type_mask"]
    optimizer = torch.optim.Adam(model.learnable_parameters().values(), lr=1e-2)
    losses = []
    for _ in range(8):
        terms = model.loss_terms(model(batch["image"]), labels, masks)
        assert set(terms) == {"global", "local", "total"}
        optimizer.zero_grad()
        terms["total"].backward()
        optimizer.step()
        losses.append(float(terms["total"].detach()))
    assert losses[-1] < losses[0]


def test_training_and_a_checkpoint_round_trip_give_identical_predictions(tiny_backbone, tiny_dataset, images, tmp_path):
    settings = preset("vip2clip", seed=2)
    model = make_model("vip2clip", tiny_backbone, seed=2)
    train(model, tiny_dataset, tmp_path / "run", settings.training, epochs=1, batch_size=4, progress=False,
          collate_fn=default_collate, precision="fp32")
    path = save_checkpoint(model, tmp_path / "model.safetensors")
    restored = load_trained(path, tiny_backbone)
    assert restored.config == model.config and type(restored) is type(model)
    expected = Predictor(model, VOCABULARY, precision="fp32")(images)
    actual = Predictor(restored, VOCABULARY, precision="fp32")(images)
    for key in expected.keys():
        assert torch.equal(expected[key], actual[key]), key
    assert ViP2CLIPConfig.from_dict(json.loads(json.dumps(model.config.to_dict()))) == model.config


def test_recipe_and_registration():
    spec = get("vip2clip")
    assert not spec.training_free and spec.table3 is None
    recipe = spec.training()
    assert (recipe.lr, recipe.batch_size, recipe.epochs, recipe.betas) == (1e-3, 8, 10, (0.9, 0.999))


@pytest.fixture(scope="module")
def shallow_paper_backbone(tmp_path_factory):
    """ViT-L-14-336's widths at 518 px with fewer layers (the count depends on the widths only)."""
    from dapo.clip.backbone import load_backbone

    config = open_clip.get_model_config("ViT-L-14-336")
    config["vision_cfg"]["layers"], config["text_cfg"]["layers"] = 4, 1
    path = tmp_path_factory.mktemp("configs") / "vip2-test-shallow-L14-336.json"
    path.write_text(json.dumps(config))
    open_clip.add_model_config(path)
    return load_backbone("vip2-test-shallow-L14-336", None, image_size=518)


def test_paper_widths_give_the_computed_count_and_top_k_50(shallow_paper_backbone):
    model = make_model("vip2clip", shallow_paper_backbone)
    assert model.config.top_k == 50
    assert count(model) == PAPER_COUNT == 4_149_120  # Table 3: 4.15 M
    assert round(count(model) / 1e6, 2) == 4.15


@pytest.mark.slow
def test_paper_configuration_forward_and_parameter_count():
    from dapo.clip.backbone import load_backbone

    backbone = load_backbone("ViT-L-14-336", None, image_size=518)
    model = make_model("vip2clip", backbone)
    assert model.layers == (6, 12, 18, 24) and model.config.top_k == 50
    assert count(model) == PAPER_COUNT
    with torch.no_grad():
        out = model(torch.randn(1, 3, 518, 518))
    assert [s.shape for s in out.stage_logits] == [(1, 2, 37, 37)] * 4
    assert out.global_logits.shape == (1, 2) and out.text_embeddings.shape == (1, 2, 768)
