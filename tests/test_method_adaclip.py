"""AdaCLIP (dapo.methods.adaclip): the contract, hybrid prompts, HSF by hand, training,
checkpoints and the paper configuration's size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dapo.engine.checkpoint import load_trained, save_checkpoint
from dapo.engine.inference import Predictor
from dapo.engine.train import train
from dapo.methods import get, make_model, training_for
from dapo.methods.adaclip import AdaCLIP, EnsembleIds, hsf_centre, hsf_paper_centre, kmeans_labels

VOCABULARY = ("hole", "scratch")


@pytest.fixture
def model(tiny_backbone):
    return make_model("adaclip", tiny_backbone)


def test_registered_with_the_release_recipe(model, tiny_backbone):
    method = get("adaclip")
    assert method.table3 == "AdaCLIP" and not method.training_free
    recipe = training_for("adaclip")
    assert (recipe.lr, recipe.betas, recipe.batch_size, recipe.epochs) == (0.01, (0.5, 0.999), 1, 5)
    assert model.trainable and model.binary and model.uses_product_names
    assert all(not p.requires_grad for p in tiny_backbone.parameters())
    shapes = {name: tuple(p.shape) for name, p in model.learnable_parameters().items()}
    assert shapes["text_static"] == (4, 5, 32) and shapes["vision_static"] == (4, 5, 32)
    assert shapes["text_dynamic.weight"] == (5 * 32, 32) and shapes["vision_dynamic.weight"] == (5 * 32, 32)
    assert len(model.patch_projections) == len(tiny_backbone.tap_layers)


def test_output_shapes_and_contract(model, images, tiny_backbone):
    out = model(images, VOCABULARY, products=["widget", "widget"])
    h, w = tiny_backbone.grid_size(tuple(images.shape[-2:]))
    assert out.global_logits.shape == (2, 2) and out.state_logits.shape == (2, 2)
    assert [tuple(s.shape) for s in out.stage_logits] == [(2, 2, h, w)] * len(tiny_backbone.tap_layers)
    assert out.text_embeddings.shape == (2, 2, tiny_backbone.embed_dim)
    assert torch.allclose(out.image_embedding.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(out.text_embeddings[0], out.text_embeddings[1])  # dynamic text prompts

    predictor = Predictor(model, VOCABULARY, product="widget", precision="fp32")
    assert isinstance(predictor.text_embeddings, EnsembleIds) and predictor.text_embeddings.n_normal == 28
    pred = predictor(images)
    assert pred.image_score.shape == (2,) and pred.anomaly_map.shape == (2, 32, 32)
    assert pred.type_probs.shape == (2, 3, 32, 32) and torch.allclose(pred.type_probs[:, 1], pred.type_probs[:, 2])
    with torch.no_grad():
        direct = model(images, VOCABULARY, products=["widget", "widget"])
    assert torch.allclose(pred.image_score, direct.global_logits.softmax(-1)[:, 1], atol=1e-5)
    # the test path: the layers' logits averaged, upsampled, then softmax (adaclip.py:536-541)
    mean = torch.stack(direct.stage_logits).mean(0)
    expected = F.interpolate(mean, size=(32, 32), mode="bilinear", align_corners=True).softmax(1)[:, 1]
    unsmoothed = make_model("adaclip", tiny_backbone, smoothing_sigma=0.0)
    unsmoothed.load_state_dict(model.state_dict())
    assert torch.allclose(unsmoothed.predict(direct, (32, 32), 2).anomaly_map, expected, atol=1e-5)


def test_hsf_centre_by_hand_in_float64():
    """Cluster centre = mean of its patches over all layers; HSF centre = mean of the non-empty centres."""
    layer1 = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 0.0]]], dtype=torch.float64)
    layer2 = torch.tensor([[[1.0, 2.0], [1.0, 2.0], [0.0, 4.0], [4.0, 4.0]]], dtype=torch.float64)
    labels = torch.tensor([[0, 0, 2, 3]])  # cluster 1 empty
    # cluster 0: rows (1,0),(3,0),(1,2),(1,2) -> (1.5, 1); cluster 2: (0,2),(0,4) -> (0, 3); cluster 3: (2, 2)
    centre = torch.tensor([(1.5 + 0 + 2) / 3, (1 + 3 + 2) / 3], dtype=torch.float64)
    assert torch.allclose(hsf_centre([layer1, layer2], labels, 4), (centre / centre.norm())[None])


def test_paper_hsf_centre_by_hand_in_float64(tiny_backbone, images):
    """The paper's HSF: the mean token of the cluster with the highest mean anomaly probability."""
    tokens = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0]]], dtype=torch.float64)
    abnormal = torch.tensor([[0.9, 0.1, 0.6, 0.6]], dtype=torch.float64)
    labels = torch.tensor([[0, 0, 1, 1]])  # cluster means 0.5 and 0.6: cluster 1 wins, centre (0, 3)
    assert torch.allclose(hsf_paper_centre(tokens, abnormal, labels, 3), torch.tensor([[0.0, 1.0]], dtype=torch.float64))
    paper = make_model("adaclip", tiny_backbone, hsf_variant="paper")
    out = paper(images, VOCABULARY)
    assert out.global_logits.shape == (2, 2) and torch.isfinite(out.global_logits).all()
    with pytest.raises(ValueError, match="hsf_variant='reported'"):
        make_model("adaclip", tiny_backbone, hsf_variant="reported")


def test_kmeans_separates_clear_clusters_and_is_seeded():
    generator = torch.Generator().manual_seed(0)
    points = torch.cat([torch.randn(1, 6, 3, generator=generator) * 0.01,
                        torch.randn(1, 6, 3, generator=generator) * 0.01 + 5.0], dim=1)
    labels = kmeans_labels(points, 2, 300, torch.Generator().manual_seed(1))
    assert len(set(labels[0, :6].tolist())) == 1 and len(set(labels[0, 6:].tolist())) == 1
    assert labels[0, 0] != labels[0, 6]
    assert torch.equal(labels, kmeans_labels(points, 2, 300, torch.Generator().manual_seed(1)))


def test_without_prompts_the_image_side_is_plain_clip(tiny_backbone, images):
    plain = make_model("adaclip", tiny_backbone, prompt_branch="")
    assert not any(name.endswith(("static", "dynamic.weight")) for name in plain.learnable_parameters())
    with torch.no_grad():
        pooled, tapped = plain.encode_image(images, None)
        assert torch.allclose(pooled, plain.plain_embedding(images), atol=1e-6)
        prompted, tapped_prompted = AdaCLIP.encode_image(make_model("adaclip", tiny_backbone), images,
                                                          torch.zeros(2, 5, tiny_backbone.vision_width))
    assert [tuple(t.shape) for t in tapped] == [tuple(t.shape) for t in tapped_prompted] == [(2, 16, 32)] * 4
    assert not torch.allclose(pooled, prompted)


def test_layer_one_text_prompts_are_unused_as_in_the_release(model, images):
    terms = model.loss_terms(model(images, VOCABULARY), torch.tensor([0, 1]), torch.zeros(2, 32, 32, dtype=torch.long))
    terms["total"].backward()
    grad = model.text_static.grad
    assert float(grad[0].abs().sum()) == 0.0 and all(float(g.abs().sum()) > 0 for g in grad[1:])
    assert all(float(g.abs().sum()) > 0 for g in model.vision_static.grad)


def test_mixed_products_score_as_single_images(model, images):
    with torch.no_grad():
        both = model(images, VOCABULARY, products=["widget", "metal_nut"])
        first = model(images[:1], VOCABULARY, products=["widget"])
        second = model(images[1:], VOCABULARY, products=["metal_nut"])
    assert torch.allclose(both.text_embeddings, torch.cat([first.text_embeddings, second.text_embeddings]), atol=1e-5)
    for layer in range(len(both.stage_logits)):
        joined = torch.cat([first.stage_logits[layer], second.stage_logits[layer]])
        assert torch.allclose(both.stage_logits[layer], joined, atol=1e-4)


def test_image_loss_saturates_at_the_release_scale(model):
    """The image loss is the release's focal loss on softmax(100 cos) (trainer.py:126, loss.py:72-82):
    a confidently wrong image costs -log(2e-5) = 10.82 (p_t = 1e-5 x p_other + smoothing 1e-5) and
    its gradient through the saturated softmax vanishes, so it cannot pull the image back; near a
    tie the gradient is of order one (docs/FIDELITY.md, AdaCLIP). Column 1 is the abnormal one."""
    from dapo.methods.contract import DAPOOutput

    def image_loss(gap: float, label: int):
        logits = torch.tensor([[0.0, gap]], requires_grad=True)  # [normal, abnormal], 100 x cosines
        output = DAPOOutput(logits, logits, [torch.zeros(1, 2, 4, 4)], torch.zeros(1, 8), torch.zeros(1, 2, 8))
        loss = model.loss_terms(output, torch.tensor([label]), torch.zeros(1, 4, 4))["global"]
        loss.backward()
        return float(loss.detach()), float(logits.grad[0, 1])

    wrong, wrong_grad = image_loss(-60.0, 1)  # an abnormal image scored normal at a cosine gap of 0.6
    assert wrong == pytest.approx(-torch.log(torch.tensor(2e-5)).item(), abs=1e-3)
    assert abs(wrong_grad) < 1e-15
    right, right_grad = image_loss(60.0, 1)
    assert right < 1e-9 and abs(right_grad) < 1e-15
    tie, tie_grad = image_loss(0.0, 1)
    assert tie == pytest.approx(0.25 * torch.log(torch.tensor(2.0)).item(), rel=1e-3) and tie_grad < -0.1
    assert image_loss(-60.0, 0)[0] < 1e-9  # a normal image scored normal costs nothing: column 0 is normal


def test_loss_decreases_on_a_tiny_batch(model, tiny_dataset):
    batch = [tiny_dataset[i] for i in range(3)]
    images = torch.stack([s["image"] for s in batch])
    labels = torch.tensor([s["label"] for s in batch])
    masks = torch.stack([(s["type_mask"] > 0).long() for s in batch])
    optimizer = torch.optim.Adam(model.learnable_parameters().values(), lr=1e-2, betas=(0.5, 0.999))
    losses = []
    for _ in range(6):
        terms = model.loss_terms(model(images, VOCABULARY, products=["widget"] * 3), labels, masks)
        assert set(terms) == {"total", "global", "local"}
        assert torch.isclose(terms["total"], terms["global"] + terms["local"])
        optimizer.zero_grad()
        terms["total"].backward()
        optimizer.step()
        losses.append(float(terms["total"].detach()))
    assert losses[-1] < losses[0]


def test_trains_and_checkpoint_round_trip(tiny_backbone, make_tiny_dataset, images, tmp_path):
    model = make_model("adaclip", tiny_backbone, seed=1)
    result = train(model, make_tiny_dataset(n=2), tmp_path / "run", training_for("adaclip", epochs=1,
                                                                                   precision="fp32"), progress=False)
    assert len(result.history) == 2 and result.final is not None
    path = save_checkpoint(model, tmp_path / "model.safetensors")
    again = load_trained(path, tiny_backbone)
    assert isinstance(again, AdaCLIP) and again.config == model.config
    first = Predictor(model, VOCABULARY, product="widget", precision="fp32")(images)
    second = Predictor(again, VOCABULARY, product="widget", precision="fp32")(images)
    for key in first.keys():
        assert torch.equal(first[key], second[key]), key


# ----------------------------------------------------------------------------- paper configuration

#: ViT-L-14-336 (vision width 1024, text width = joint width 768), release defaults (5 tokens, depth 4).
PAPER_PARAMETERS = (4 * 5 * 768 + 4 * 5 * 1024  # static prompts, text and vision
                    + (768 * 5 * 768 + 5 * 768) + (768 * 5 * 1024 + 5 * 1024)  # dynamic prompt generators
                    + 4 * (1024 * 768 + 768) + (768 * 768 + 768))  # patch and class-token projections
#: ViP2-CLIP Table 3: "10.67" M trainable parameters.
VIP2_MILLIONS = 10.67


@pytest.mark.slow
def test_paper_configuration_size_and_forward(paper_backbone):
    model = make_model("adaclip", paper_backbone)
    count = sum(p.numel() for p in model.learnable_parameters().values())
    assert count == PAPER_PARAMETERS == 10_665_472 and round(count / 1e6, 2) == VIP2_MILLIONS
    assert paper_backbone.tap_layers == (6, 12, 18, 24)
    image = torch.randn(1, 3, 518, 518, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(image, ("hole",), products=["bottle"])
    assert out.global_logits.shape == (1, 2) and out.text_embeddings.shape == (1, 2, 768)
    assert [tuple(s.shape) for s in out.stage_logits] == [(1, 2, 37, 37)] * 4
    assert torch.isfinite(out.global_logits).all()


def test_parameter_count_at_the_paper_widths(shallow_vit_l):
    count = sum(p.numel() for p in make_model("adaclip", shallow_vit_l).learnable_parameters().values())
    assert count == PAPER_PARAMETERS == 10_665_472 and round(count / 1e6, 2) == VIP2_MILLIONS
