"""DPAM (AnomalyCLIP's v-v attention path) against a hand computation on the tiny backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dapo.methods import config_for, make_model
from dapo.methods.dapo.config import DAPOConfig
from dapo.methods.dapo.dpam import run_vision_blocks, scaled_dpam_layers, vv_attention
from dapo.methods.dapo.model import DAPO
from dapo.methods.dapo.progressive import run_blocks


def hand_vv(block, hidden: torch.Tensor) -> np.ndarray:
    """softmax(v v^T / sqrt(d)) v per head with the block's value and output projections, float64 numpy."""
    attn = block.attn
    width, heads = attn.embed_dim, attn.num_heads
    d = width // heads
    w_v = attn.in_proj_weight.detach().double().numpy()[2 * width:]
    b_v = attn.in_proj_bias.detach().double().numpy()[2 * width:]
    w_o = attn.out_proj.weight.detach().double().numpy()
    b_o = attn.out_proj.bias.detach().double().numpy()
    h = hidden.detach().double().numpy()
    out = np.empty_like(h)
    for b in range(h.shape[0]):
        v = h[b] @ w_v.T + b_v
        heads_out = []
        for k in range(heads):
            vk = v[:, k * d:(k + 1) * d]
            logits = vk @ vk.T / np.sqrt(d)
            weights = np.exp(logits - logits.max(axis=1, keepdims=True))
            weights /= weights.sum(axis=1, keepdims=True)
            heads_out.append(weights @ vk)
        out[b] = np.concatenate(heads_out, axis=1) @ w_o.T + b_o
    return out


def test_vv_attention_is_value_value_attention_of_the_blocks_own_weights(tiny_backbone):
    block = tiny_backbone.vision_blocks[1]
    hidden = torch.randn(2, 7, tiny_backbone.vision_width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = vv_attention(block, hidden)
    np.testing.assert_allclose(got.double().numpy(), hand_vv(block, hidden), atol=2e-5, rtol=1e-4)
    with torch.no_grad():  # not the block's own q-k attention
        qk = block.attn(hidden, hidden, hidden, need_weights=False)[0]
    assert not torch.allclose(got, qk, atol=1e-3)


def test_anomalyclip_patch_maps_come_from_the_dpam_path(tiny_backbone, images):
    model = make_model("anomalyclip", tiny_backbone)
    assert model.config.dpam_layers == 3  # 19 of 24 -> 3 of 4 layers: layers 2-4
    blocks, visual = tiny_backbone.vision_blocks, tiny_backbone.visual
    with torch.no_grad():
        x = tiny_backbone.embed_image(images)
        taps = {}
        x = blocks[0](x)
        taps[1] = x                                   # before DPAM: the original path
        dpam = x.double().numpy()
        for layer in (2, 3, 4):                       # DPAM: x_d += attn_vv(ln_1(x_o)), no MLP
            block = blocks[layer - 1]
            dpam = dpam + hand_vv(block, block.ln_1(x))
            x = block(x)
            taps[layer] = torch.from_numpy(dpam).float()
        expected = [F.normalize(visual.ln_post(taps[layer][:, 1:]) @ visual.proj, dim=-1)
                    for layer in tiny_backbone.tap_layers]
        image_embedding, patches, _ = model.encode_image(images)
        plain = DAPO(tiny_backbone, model.config.with_overrides(dpam_layers=0))
        plain_embedding, plain_patches, _ = plain.encode_image(images)
    assert tiny_backbone.tap_layers == (1, 2, 3, 4)
    for got, want in zip(patches, expected):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(image_embedding, plain_embedding)  # global: the original path, unchanged
    torch.testing.assert_close(patches[0], plain_patches[0])      # layer 1 precedes the DPAM layers
    assert not torch.allclose(patches[-1], plain_patches[-1], atol=1e-3)


def test_no_dpam_is_run_blocks_and_deep_tokens_enter_the_original_path(tiny_backbone, images):
    model = DAPO(tiny_backbone, DAPOConfig(n_prompts=2))
    with torch.no_grad():
        x = tiny_backbone.embed_image(images)
        x = torch.cat([x[:, :1], x.new_zeros(x.shape[0], 4, x.shape[2]), x[:, 1:]], dim=1)
        kwargs = dict(deep=model.vision_deep, slot=slice(1, 5), taps=(2, 4))
        out, taps = run_blocks(tiny_backbone.vision_blocks, x, **kwargs)
        out0, taps0 = run_vision_blocks(tiny_backbone.vision_blocks, x, dpam_layers=0, **kwargs)
        out2, taps2 = run_vision_blocks(tiny_backbone.vision_blocks, x, dpam_layers=2, **kwargs)
    torch.testing.assert_close(out0, out)
    torch.testing.assert_close(out2, out)  # the original path (global embedding) ignores DPAM
    torch.testing.assert_close(taps0[4], taps[4])
    torch.testing.assert_close(taps2[2], taps[2])  # layer 2 precedes layers 3-4
    assert not torch.allclose(taps2[4], taps[4], atol=1e-3)
    with pytest.raises(ValueError, match="dpam_layers=5 must lie in 0..4"):
        run_vision_blocks(tiny_backbone.vision_blocks, x, dpam_layers=5)


def test_dapo_with_dpam_trains_through_the_vv_path(tiny_backbone, images):
    model = DAPO(tiny_backbone, DAPOConfig(n_prompts=2, dpam_layers=2))
    out = model(images, ("hole", "scratch"))
    out.stage_logits[-1].sum().backward()
    assert model.vision_deep.tokens.grad is not None and model.vision_deep.tokens.grad.abs().sum() > 0
    assert model.adapters[-1].weight.grad.abs().sum() > 0


def test_scaled_layer_counts_and_overrides(tiny_backbone):
    assert [scaled_dpam_layers(n) for n in (24, 12, 8, 4, 1)] == [19, 10, 6, 3, 1]
    with pytest.raises(ValueError, match="at least one layer"):
        scaled_dpam_layers(0)
    assert config_for("anomalyclip").dpam_layers == 19 and config_for("dapo").dpam_layers == 0
    assert make_model("anomalyclip", tiny_backbone, dpam_layers=4).config.dpam_layers == 4  # as given
    with pytest.raises(ValueError, match="dpam_layers=5 exceeds the vision tower's 4 layers"):
        make_model("anomalyclip", tiny_backbone, dpam_layers=5)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="dpam_layers must be an integer >= 0"):
            DAPOConfig(dpam_layers=bad)
