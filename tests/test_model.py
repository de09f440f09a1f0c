"""The DAPO module: output shapes, learnable parameters, agreement with plain CLIP, new defects."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dapo.methods.dapo.config import DAPOConfig
from dapo.methods.dapo.model import DAPO

VOCABULARY = ("scratch", "hole", "faulty imprint")


@pytest.fixture
def model(tiny_backbone):
    return DAPO(tiny_backbone, DAPOConfig(n_prompts=3))


def test_output_shapes(model, images):
    out = model(images, VOCABULARY)
    assert out.global_logits.shape == (2, 2)
    assert out.state_logits.shape == (2, 4)
    assert len(out.stage_logits) == 4 and all(s.shape == (2, 4, 4, 4) for s in out.stage_logits)
    assert out.image_embedding.shape == (2, 32) and out.text_embeddings.shape == (4, 32)
    torch.testing.assert_close(out.image_embedding.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(out.text_embeddings.norm(dim=-1), torch.ones(4))


def test_only_prompt_tokens_deep_tokens_and_adapters_learn(model):
    learned = model.learnable_parameters()
    assert set(learned) == {"context.normal", "context.abnormal", "text_deep.tokens", "vision_deep.tokens",
                            *(f"adapters.{i}.{p}" for i in range(4) for p in ("weight", "bias"))}
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert model.context.normal.shape == (3, 5, 32) and model.vision_deep.tokens.shape == (4, 4, 32)


def test_same_seed_same_initialisation(tiny_backbone):
    a, b = DAPO(tiny_backbone, DAPOConfig(seed=3)), DAPO(tiny_backbone, DAPOConfig(seed=3))
    c = DAPO(tiny_backbone, DAPOConfig(seed=4))
    for name, value in a.learnable_parameters().items():
        assert torch.equal(value, b.learnable_parameters()[name])
    assert not torch.equal(a.context.abnormal, c.context.abnormal)


def test_without_learned_parts_the_model_is_plain_clip(tiny_backbone, images, test_prompts):
    config = DAPOConfig(text_prompts="handcrafted_defects", text_depth=0, vision_depth=0, train_adapters=False,
                        state_mean="normalized", patch_ln_post=True, adapter_init="projection", **test_prompts)
    model = DAPO(tiny_backbone, config)
    clip = tiny_backbone.clip
    with torch.no_grad():
        out = model(images, ("scratch", "hole"))
        torch.testing.assert_close(out.image_embedding, F.normalize(clip.encode_image(images), dim=-1))
        prompts = [["a photo of a flawless object.", "a close-up photo of the flawless object.",
                    "a photo of a object.", "a close-up photo of the object."],
                   ["a photo of a object with a scratch.", "a close-up photo of the object with a scratch."],
                   ["a photo of a object with a hole.", "a close-up photo of the object with a hole.",
                    "a photo of a punctured object.", "a close-up photo of the punctured object."]]
        expected = torch.stack([F.normalize(F.normalize(clip.encode_text(tiny_backbone.tokenize(p)), dim=-1)
                                            .mean(0), dim=0) for p in prompts])
        torch.testing.assert_close(out.text_embeddings, expected)
        # last stage with the frozen projection = CLIP's dense patch embeddings
        dense = clip.visual.forward_intermediates(images, indices=[3], normalize_intermediates=True,
                                                  intermediates_only=True)["image_intermediates"][0]
        patches = F.normalize(dense.flatten(2).transpose(1, 2) @ clip.visual.proj, dim=-1)
        expected_map = torch.einsum("bnc,kc->bkn", patches, expected).reshape(2, 3, 4, 4) / 0.07
        torch.testing.assert_close(out.stage_logits[-1], expected_map)


def test_global_logits_follow_eq_7(model, images):
    with torch.no_grad():
        out = model(images, VOCABULARY)
    text, z = out.text_embeddings, out.image_embedding
    prototype = F.normalize(text[1:].mean(0), dim=0)
    expected = torch.stack([z @ text[0], z @ prototype], dim=-1) / 0.07
    torch.testing.assert_close(out.global_logits, expected)
    torch.testing.assert_close(out.state_logits, z @ text.t() / 0.07)


def test_attention_aggregation_weights_defects_by_relevance(tiny_backbone, images):
    model = DAPO(tiny_backbone, DAPOConfig(n_prompts=2, aggregation="attention", temperature=0.5))
    with torch.no_grad():
        out = model(images, VOCABULARY)
    text, z = out.text_embeddings, out.image_embedding
    weights = (z @ text[1:].t() / 0.5).softmax(dim=-1)
    prototype = F.normalize(weights @ text[1:], dim=-1)
    torch.testing.assert_close(out.global_logits[:, 1], (z * prototype).sum(-1) / 0.5)


def test_temperature_none_uses_the_clip_logit_scale(tiny_backbone):
    model = DAPO(tiny_backbone, DAPOConfig(n_prompts=1, temperature=None))
    assert model.temperature == pytest.approx(1.0 / float(tiny_backbone.clip.logit_scale.exp()))


def test_state_embeddings_do_not_depend_on_the_other_names(model):
    with torch.no_grad():
        ab = model.encode_text(("scratch", "never_seen_defect"))
        ba = model.encode_text(("never_seen_defect", "scratch", "hole"))
    torch.testing.assert_close(ab[0], ba[0])
    torch.testing.assert_close(ab[1], ba[2])
    torch.testing.assert_close(ab[2], ba[1])
    assert not torch.allclose(ab[1], ab[2])


def test_a_defect_never_seen_in_training_works_at_inference(model, images):
    with torch.no_grad():
        out = model(images, ("scratch", "wobbly edge", "oxidised_rim"))
    assert out.state_logits.shape == (2, 4) and out.stage_logits[0].shape == (2, 4, 4, 4)
    assert torch.isfinite(out.state_logits).all()


def test_other_input_sizes_give_other_map_sizes(model):
    with torch.no_grad():
        out = model(torch.randn(1, 3, 40, 48), ("scratch",))
    assert out.stage_logits[0].shape == (1, 2, 5, 6)


@pytest.mark.parametrize("vocabulary, error", [((), ValueError), (("hole", "hole"), ValueError),
                                               ("scratch", TypeError)])
def test_bad_vocabularies_are_rejected(model, images, vocabulary, error):
    with pytest.raises(error):
        model(images, vocabulary)


def test_binary_models_have_one_abnormal_state(tiny_backbone, images):
    model = DAPO(tiny_backbone, DAPOConfig(text_prompts="object_agnostic", n_prompts=1, vision_depth=0))
    with torch.no_grad():
        out = model(images, VOCABULARY)
    assert model.binary and out.text_embeddings.shape == (2, 32) and out.stage_logits[0].shape[1] == 2
    assert model.state_names(VOCABULARY) == ("normal", "anomaly")


def test_handcrafted_prompts_name_each_images_product(tiny_backbone, images, test_prompts):
    model = DAPO(tiny_backbone, DAPOConfig(text_prompts="handcrafted_defects", text_depth=0, vision_depth=0,
                                           **test_prompts))
    with torch.no_grad():
        out = model(images, ("scratch", "hole"), products=["metal_nut", "screw"])
    assert out.text_embeddings.shape == (2, 3, 32)
    assert not torch.allclose(out.text_embeddings[0], out.text_embeddings[1])
    torch.testing.assert_close(out.text_embeddings[1], model.encode_text(("scratch", "hole"), "screw"))


def test_prompt_embeddings_average_to_the_state_embeddings(tiny_backbone):
    """Eq. 5-6: each state embedding is the normalised mean of its E raw prompt embeddings
    (``state_mean="normalized"``: each prompt normalised first, as MultiADS)."""
    model = DAPO(tiny_backbone, DAPOConfig(n_prompts=3))
    with torch.no_grad():
        per_prompt, counts = model.prompt_embeddings(("scratch", "hole"))
        states = model.encode_text(("scratch", "hole"))
    assert counts == [3, 3, 3] and per_prompt.shape[0] == 9
    torch.testing.assert_close(states, F.normalize(torch.stack([c.mean(0) for c in per_prompt.split(3)]), dim=-1))
    normalised_first = DAPO(tiny_backbone, DAPOConfig(n_prompts=3, state_mean="normalized"))
    with torch.no_grad():
        other = normalised_first.encode_text(("scratch", "hole"))
    expected = F.normalize(torch.stack([F.normalize(c, dim=-1).mean(0) for c in per_prompt.split(3)]), dim=-1)
    torch.testing.assert_close(other, expected)
    assert not torch.allclose(other, states)
