"""AA-CLIP (dapo.methods.aaclip): contract, the residual adapter and the disentanglement loss by
hand, the two stages' separation, training, checkpoints, and the paper configuration's trainable
parameter count (ViP²-CLIP's Table 3: 12.58 M)."""

from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch
from torch.utils.data import default_collate

from dapo.engine.checkpoint import load_trained, save_checkpoint
from dapo.engine.inference import Predictor
from dapo.engine.train import train
from dapo.engine.two_stage import train_two_stage
from dapo.methods import get, make_model
from dapo.methods.aaclip import AACLIPConfig, adapted_count, residual_adapt

VOCABULARY = ("hole", "scratch")
#: AA-CLIP's trainable parameters at ViT-L-14-336 (text width 768, vision width 1024, embedding
#: 768), computed: 3 text adapters 768 x 768, the text projection 768 x 768, 6 vision adapters
#: 1024 x 1024, 4 level projections and the detection projection 1024 -> 768, no biases.
PAPER_COUNT = 3 * 768 * 768 + 768 * 768 + 6 * 1024 * 1024 + 5 * 1024 * 768


def count(model) -> int:
    return sum(p.numel() for p in model.learnable_parameters().values())


def batch_of(dataset, n=4):
    batch = default_collate([dataset[i] for i in range(n)])
    return batch["image"], torch.as_tensor(batch["label"]), batch["type_mask"], list(batch["product"])


def test_outputs_follow_the_contract(tiny_backbone, images):
    model = make_model("aaclip", tiny_backbone)
    assert model.levels == (1, 2, 3, 4) and model.config.dpam_layers == 3 and model.config.smoothing_sigma == 8.0
    assert len(model.text_adapters) == 1 and len(model.image_adapters) == 1  # a quarter of 4 layers
    with torch.no_grad():
        out = model(images, products=["widget", "widget"])
    assert out.global_logits.shape == out.state_logits.shape == (2, 2) and out.text_stage_logits is None
    assert [s.shape for s in out.stage_logits] == [(2, 2, 4, 4)] * 4
    assert out.image_embedding.shape == (2, 32) and out.text_embeddings.shape == (2, 2, 32)
    anchors = model.encode_text(VOCABULARY, "widget")
    assert anchors.shape == (2, 32) and model.uses_product_names
    torch.testing.assert_close(anchors.norm(dim=-1), torch.ones(2))
    assert not torch.allclose(anchors, model.encode_text(VOCABULARY, "bottle"))  # the prompts name the product
    pred = Predictor(model, VOCABULARY, product="widget", precision="fp32")(images)
    assert pred.image_score.shape == (2,) and pred.anomaly_map.shape == (2, 32, 32)
    assert pred.type_probs.shape == (2, 3, 32, 32)
    torch.testing.assert_close(pred.type_probs[:, 1], pred.type_probs[:, 2])
    # the image score: half the detection probability, half the map maximum (forward_utils.py:250-252)
    expected = 0.5 * out.global_logits.softmax(-1)[:, 1] + 0.5 * pred.anomaly_map.flatten(1).amax(1)
    torch.testing.assert_close(pred.image_score, expected)


def test_residual_adapter_by_hand_in_float64():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, generator=generator, dtype=torch.float64)
    weight = torch.randn(4, 4, generator=generator, dtype=torch.float64)
    got = residual_adapt(x, weight, 0.1, 0.01).numpy()
    for b in range(2):
        for t in range(3):
            v = x[b, t].numpy()
            a = weight.numpy() @ v
            a = np.where(a > 0, a, 0.01 * a)
            a = a * np.linalg.norm(v) / np.linalg.norm(a)
            np.testing.assert_allclose(got[b, t], 0.1 * a + 0.9 * v, rtol=1e-12)
    assert adapted_count(12, 0.25) == 3 and adapted_count(24, 0.25) == 6


def test_disentanglement_term_is_the_squared_mean_cosine(tiny_backbone, tiny_dataset):
    model = make_model("aaclip", tiny_backbone, stage="text", disentangle_weight=0.0)
    weighted = make_model("aaclip", tiny_backbone, stage="text")
    images, labels, masks, products = batch_of(tiny_dataset)
    out = model(images, products=products)
    plain, with_term = model.loss_terms(out, labels, masks), weighted.loss_terms(out, labels, masks)
    anchors = out.text_embeddings.detach().double()
    cosine = float(sum(anchors[b, 0] @ anchors[b, 1] for b in range(4)) / 4)
    assert float((with_term["text"] - plain["text"]).detach()) == pytest.approx(0.1 * cosine ** 2, rel=1e-5)


@pytest.mark.parametrize("stage, moved", [
    ("text", {"text_adapters", "text_proj"}),
    ("image", {"image_adapters", "seg_proj", "det_proj"}),
    ("joint", {"text_adapters", "text_proj", "image_adapters", "seg_proj", "det_proj"}),
])
def test_each_stage_trains_its_own_adapters_and_lowers_its_loss(tiny_backbone, tiny_dataset, stage, moved):
    model = make_model("aaclip", tiny_backbone, stage=stage)
    before = {k: v.detach().clone() for k, v in model.learnable_parameters().items()}
    images, labels, masks, products = batch_of(tiny_dataset)
    optimizer = torch.optim.Adam(model.learnable_parameters().values(), lr=1e-2)
    losses = []
    for _ in range(6):
        terms = model.loss_terms(model(images, products=products), labels, masks)
        optimizer.zero_grad()
        terms["total"].backward()
        optimizer.step()
        losses.append(float(terms["total"].detach()))
    assert losses[-1] < losses[0]
    changed = {k.split(".")[0] for k, v in model.learnable_parameters().items() if not torch.equal(v, before[k])}
    assert changed == moved
    assert not any(p.requires_grad for p in tiny_backbone.parameters())


def test_text_adapters_learn_at_the_text_rate(tiny_backbone, tiny_dataset):
    model = make_model("aaclip", tiny_backbone, stage="text")
    before = model.text_proj.weight(0).detach().clone()
    optimizer = torch.optim.Adam(model.learnable_parameters().values(), lr=5e-4)
    images, labels, masks, products = batch_of(tiny_dataset)
    model.loss_terms(model(images, products=products), labels, masks)["total"].backward()
    optimizer.step()
    step = float((model.text_proj.weight(0).detach() - before).abs().max())
    assert step == pytest.approx(1e-5, rel=0.02)  # 5e-4 x 0.02: the release's stage-1 rate


def test_training_and_a_checkpoint_round_trip_give_identical_predictions(tiny_backbone, tiny_dataset, images, tmp_path):
    model = make_model("aaclip", tiny_backbone, seed=3)
    train(model, tiny_dataset, tmp_path / "run", get("aaclip").training(), epochs=1, batch_size=4, progress=False,
          collate_fn=default_collate, precision="fp32")
    restored = load_trained(save_checkpoint(model, tmp_path / "model.safetensors"), tiny_backbone)
    assert restored.config == model.config
    expected = Predictor(model, VOCABULARY, product="widget", precision="fp32")(images)
    actual = Predictor(restored, VOCABULARY, product="widget", precision="fp32")(images)
    for key in expected.keys():
        assert torch.equal(expected[key], actual[key]), key
    assert AACLIPConfig.from_dict(json.loads(json.dumps(model.config.to_dict()))) == model.config


def test_two_stages_in_the_release_order(tiny_backbone, tiny_dataset, tmp_path):
    model, result = train_two_stage(tiny_backbone, tiny_dataset, tmp_path, seed=1, progress=False,
                                    collate_fn=default_collate, epochs=1, batch_size=4, precision="fp32")
    first = load_trained(tmp_path / "text" / "epoch_001.safetensors", tiny_backbone)
    final = load_trained(result.final, tiny_backbone)
    assert first.config.stage == "text" and final.config.stage == "image"
    for name, value in final.learnable_parameters().items():  # stage 2 keeps stage 1's text side
        same = torch.equal(value, first.learnable_parameters()[name])
        assert same == name.startswith(("text_adapters", "text_proj")), name


def test_bad_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="stage"):
        AACLIPConfig(stage="both")
    with pytest.raises(ValueError, match="templates"):
        AACLIPConfig(templates=("no slot",))


@pytest.fixture(scope="module")
def shallow_paper_backbone(tmp_path_factory):
    """ViT-L-14-336's widths at 518 px with 8 vision and 4 text layers (fast to build)."""
    from dapo.clip.backbone import load_backbone

    config = open_clip.get_model_config("ViT-L-14-336")
    config["vision_cfg"]["layers"], config["text_cfg"]["layers"] = 8, 4
    path = tmp_path_factory.mktemp("configs") / "aaclip-test-shallow-L14-336.json"
    path.write_text(json.dumps(config))
    open_clip.add_model_config(path)
    return load_backbone("aaclip-test-shallow-L14-336", None, image_size=518)


def test_paper_widths_with_the_paper_adapter_counts_give_12_58_m(shallow_paper_backbone):
    # 6 of 8 vision and 3 of 4 text layers adapted: the paper's 6 and 3, on a tower fast to build
    model = make_model("aaclip", shallow_paper_backbone, image_adapt_fraction=0.75, text_adapt_fraction=0.75)
    assert len(model.text_adapters) == 3 and len(model.image_adapters) == 6 and len(model.levels) == 4
    assert count(model) == PAPER_COUNT == 12_582_912  # ViP²-CLIP Table 3: 12.58 M
    assert round(count(model) / 1e6, 2) == 12.58


@pytest.mark.slow
def test_paper_configuration_forward_and_parameter_count():
    from dapo.clip.backbone import load_backbone

    backbone = load_backbone("ViT-L-14-336", None, image_size=518)
    model = make_model("aaclip", backbone)
    assert len(model.text_adapters) == 3 and len(model.image_adapters) == 6 and model.levels == (6, 12, 18, 24)
    assert model.config.dpam_layers == 19 and model.config.smoothing_sigma == 14.0
    assert count(model) == PAPER_COUNT
    with torch.no_grad():
        out = model(torch.randn(1, 3, 518, 518), products=["bottle"])
    assert [s.shape for s in out.stage_logits] == [(1, 2, 37, 37)] * 4
    assert out.global_logits.shape == (1, 2) and out.text_embeddings.shape == (1, 2, 768)
    assert out.image_embedding.shape == (1, 768)
