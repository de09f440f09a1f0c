"""The AdaCLIP cross-check's own code: the parameter mapping to the release's per-layer and
per-token pieces, and the recording of our k-means. No release is needed (the release run is in
tests/test_crosscheck_releases.py)."""

from __future__ import annotations

import pytest
import torch

from dapo.crosscheck.mapping import adaclip_to_release, release_to_adaclip
from dapo.methods import make_model


@pytest.fixture
def model(tiny_backbone):
    return make_model("adaclip", tiny_backbone)


def test_adaclip_mapping_names_shapes_and_round_trip(model, tiny_backbone):
    ours = {name: p.detach().clone() for name, p in model.learnable_parameters().items()}
    length, depth = model.config.prompt_length, model.depth["V"]
    release = adaclip_to_release(ours, length)
    taps = len(tiny_backbone.tap_layers)
    expected = {*(f"{kind}_prompter.static_prompts.{i}" for kind in ("text", "visual") for i in range(depth)),
                *(f"dynamic_{kind}_prompt_generator.head.{j}.{p}" for kind in ("text", "visual")
                  for j in range(length) for p in ("weight", "bias")),
                *(f"patch_token_layer.head.{i}.{p}" for i in range(taps) for p in ("weight", "bias")),
                "cls_token_layer.head.0.weight", "cls_token_layer.head.0.bias"}
    assert set(release) == expected
    # the release's PromptLayer holds (length, width) per layer; ProjectLayer one Linear per token
    assert release["visual_prompter.static_prompts.1"].shape == (length, tiny_backbone.vision_width)
    assert torch.equal(release["text_prompter.static_prompts.2"], ours["text_static"][2])
    width = tiny_backbone.vision_width
    assert release["dynamic_visual_prompt_generator.head.3.weight"].shape == (width, tiny_backbone.embed_dim)
    back = release_to_adaclip(release)
    assert set(back) == set(ours) and all(torch.equal(back[k], ours[k]) for k in ours)


def test_adaclip_dynamic_heads_give_our_prompt_tokens(model, tiny_backbone):
    """Token j of our dynamic prompts (the generator's output viewed as (length, width),
    ``AdaCLIP.forward``) is what the release's head j computes (``ProjectLayer`` with
    ``stack=True``, method/adaclip.py:20-31)."""
    release = adaclip_to_release({n: p.detach() for n, p in model.learnable_parameters().items()},
                                 model.config.prompt_length)
    embedding = torch.randn(3, tiny_backbone.embed_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.vision_dynamic(embedding).view(3, -1, tiny_backbone.vision_width)
    for j in range(model.config.prompt_length):
        head = embedding @ release[f"dynamic_visual_prompt_generator.head.{j}.weight"].T \
            + release[f"dynamic_visual_prompt_generator.head.{j}.bias"]
        assert torch.allclose(ours[:, j], head, atol=1e-6)


def test_adaclip_mapping_refuses_what_has_no_counterpart():
    with pytest.raises(KeyError, match="context.normal"):
        adaclip_to_release({"context.normal": torch.zeros(1)}, 5)
    with pytest.raises(KeyError, match="multiple of prompt_length"):
        adaclip_to_release({"text_dynamic.weight": torch.zeros(7, 4)}, 5)
    with pytest.raises(KeyError, match="HSF"):
        release_to_adaclip({"HSF.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="single head"):
        release_to_adaclip({"cls_token_layer.head.1.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="indices"):
        release_to_adaclip({"text_prompter.static_prompts.0": torch.zeros(2), "text_prompter.static_prompts.2":
                            torch.zeros(2)})
