"""Progressive (Eq. 10) versus naive deep prefix tuning."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dapo.methods.dapo.config import DAPOConfig
from dapo.methods.dapo.model import DAPO
from dapo.methods.dapo.progressive import DeepPrompts, run_blocks


class AddOne(nn.Module):
    """A stand-in transformer block: y = x + 1."""

    def forward(self, x, attn_mask=None):
        return x + 1.0


def deep_prompts(mode: str, depth: int = 2, alpha0: float = 0.1, alpha_decay: float = 0.5) -> DeepPrompts:
    prompts = DeepPrompts(1, 2, depth, mode=mode, alpha0=alpha0, alpha_decay=alpha_decay, init="random")
    with torch.no_grad():
        prompts.tokens.copy_(torch.tensor([[[10.0, 20.0]], [[30.0, 40.0]], [[50.0, 60.0]]])[:depth])
    return prompts


def test_alpha_schedule_is_small_and_decaying():
    prompts = deep_prompts("progressive", depth=3, alpha0=0.1, alpha_decay=0.5)
    assert [prompts.alpha(j) for j in (1, 2, 3, 4)] == [0.0, 0.1, 0.05, 0.025]
    assert deep_prompts("naive", depth=3).alpha(3) == 0.0


def test_progressive_connection_matches_eq_10_by_hand():
    x = torch.zeros(1, 3, 2)  # [token, deep slot, token]
    out, tapped = run_blocks([AddOne(), AddOne(), AddOne()], x, deep=deep_prompts("progressive"),
                             slot=slice(1, 2), taps=(1, 3))
    layer1 = torch.tensor([10.0, 20.0]) + 1                      # U_1 through block 1
    layer2 = 0.9 * torch.tensor([30.0, 40.0]) + 0.1 * layer1 + 1  # (1 - a) U_2 + a O_1
    layer3 = layer2 + 1                                          # beyond N_d: carried over
    torch.testing.assert_close(out[0, 1], layer3)
    torch.testing.assert_close(out[0, 0], torch.tensor([3.0, 3.0]))  # other tokens untouched
    torch.testing.assert_close(tapped[1][0, 1], layer1)
    assert sorted(tapped) == [1, 3]


def test_naive_prefix_replaces_previous_output():
    out, _ = run_blocks([AddOne(), AddOne(), AddOne()], torch.zeros(1, 3, 2), deep=deep_prompts("naive"),
                        slot=slice(1, 2))
    torch.testing.assert_close(out[0, 1], torch.tensor([32.0, 42.0]))


def test_slot_must_match_token_count():
    with pytest.raises(ValueError, match="slot"):
        run_blocks([AddOne()], torch.zeros(1, 3, 2), deep=deep_prompts("naive"), slot=slice(0, 2))


def test_progressive_and_naive_give_different_activations(tiny_backbone, images):
    outputs = {}
    for tuning, alpha0 in (("progressive", 0.1), ("naive", 0.1), ("progressive", 0.0)):
        model = DAPO(tiny_backbone, DAPOConfig(n_prompts=2, tuning=tuning, alpha0=alpha0))
        with torch.no_grad():
            outputs[tuning, alpha0] = model(images, ("scratch", "hole"))
    progressive, naive, no_carry = outputs["progressive", 0.1], outputs["naive", 0.1], outputs["progressive", 0.0]
    assert not torch.allclose(progressive.stage_logits[-1], naive.stage_logits[-1])
    assert not torch.allclose(progressive.text_embeddings, naive.text_embeddings)
    assert not torch.allclose(progressive.image_embedding, naive.image_embedding)
    # alpha = 0 is exactly naive tuning
    torch.testing.assert_close(no_carry.stage_logits[-1], naive.stage_logits[-1])
    torch.testing.assert_close(no_carry.text_embeddings, naive.text_embeddings)


def test_depth_limits_the_layers_with_tokens(tiny_backbone):
    model = DAPO(tiny_backbone, DAPOConfig(n_prompts=1, text_depth=2, vision_depth=3))
    assert model.text_deep.depth == 2 and model.vision_deep.depth == 3
    with pytest.raises(ValueError, match="exceeds"):
        DAPO(tiny_backbone, DAPOConfig(vision_depth=9))
    plain = DAPO(tiny_backbone, DAPOConfig(text_depth=0, vision_depth=0))
    assert plain.text_deep is None and plain.vision_deep is None
