"""The fused frozen-block path (FrozenBlock, in-place deep-token writes) against OpenCLIP's own modules."""

from __future__ import annotations

import pytest
import torch
from open_clip.transformer import CustomResidualAttentionBlock, QuickGELU, ResidualAttentionBlock
from torch import nn

from dapo.clip.backbone import FrozenBlock, attention, is_causal_mask, load_backbone, prepared_blocks
from dapo.methods.dapo.config import DAPOConfig
from dapo.methods.dapo.losses import loss_terms
from dapo.methods.dapo.model import DAPO
from dapo.methods.dapo.progressive import DeepPrompts, _SlotWrite, reference_blocks, run_blocks

VOCABULARY = ("hole", "scratch")


def old_run_blocks(blocks, x, *, attn_mask=None, deep=None, slot=None, taps=()):
    """The implementation before the fused path, written out here: each block module, then
    slicing and concatenation to rewrite the deep-token slot."""
    tapped = {}
    for layer, block in enumerate(blocks, start=1):
        if deep is not None and layer <= deep.depth:
            new = deep.layer_input(layer, x[:, slot])
            x = torch.cat([x[:, :slot.start], new, x[:, slot.stop:]], dim=1)
        x = block(x, attn_mask=attn_mask)
        if layer in taps:
            tapped[layer] = x
    return x, tapped


def frozen(blocks: nn.ModuleList) -> nn.ModuleList:
    for parameter in blocks.parameters():
        parameter.requires_grad_(False)
    return blocks.eval()


@pytest.fixture(scope="module")
def backbone(tiny_model_name, tiny_image_size):
    """Tiny backbone whose layers 1 and 3 are not tapped (so the in-place slot write runs)."""
    torch.manual_seed(0)
    return load_backbone(tiny_model_name, None, image_size=tiny_image_size, tap_layers=(2, 4))


def batch(n: int = 4, size: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    images = torch.randn(n, 3, size, size, generator=generator)
    masks = torch.zeros(n, size, size, dtype=torch.int64)
    masks[1, 4:12, 8:20] = 1
    masks[3, 16:30, 2:9] = 2
    return images, torch.tensor([0, 1, 0, 1]), masks


def loss_and_grads(model: DAPO, precision: str = "fp32"):
    images, labels, masks = batch()
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        out = model(images, VOCABULARY)
    terms = loss_terms(out, labels, masks)
    terms["total"].backward()
    grads = {name: p.grad.detach().clone() for name, p in model.learnable_parameters().items()}
    return out, terms, grads


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("quick_gelu,layer_scale", [(False, None), (True, 0.5)])
@pytest.mark.parametrize("causal", [False, True])
def test_frozen_block_computes_what_the_openclip_block_computes(quick_gelu, layer_scale, causal):
    torch.manual_seed(1)
    block = frozen(nn.ModuleList([ResidualAttentionBlock(
        48, 3, ls_init_value=layer_scale, act_layer=QuickGELU if quick_gelu else nn.GELU)]))[0]
    x = torch.randn(5, 11, 48)
    mask = torch.empty(11, 11).fill_(float("-inf")).triu_(1) if causal else None
    with torch.no_grad():
        expected = block(x, attn_mask=mask)
        got = FrozenBlock(block, torch.float32)(x, None, causal)
        got_mask = FrozenBlock(block, torch.float32)(x, mask)
    assert FrozenBlock.supports(block)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(got_mask, expected, rtol=0, atol=1e-5)


def test_run_blocks_matches_the_old_implementation_in_value_and_gradient(backbone):
    """Vision tower, progressive deep tokens on 3 of 4 layers, taps at 2 and 4: fp32 within 1e-6."""
    deep = DeepPrompts(2, backbone.vision_width, 3, init="random", generator=torch.Generator().manual_seed(0))
    base = torch.randn(3, 1 + 2 + 16, backbone.vision_width, generator=torch.Generator().manual_seed(2))
    results = []
    for runner in (old_run_blocks, run_blocks):
        deep.zero_grad(set_to_none=True)
        x = base.clone().requires_grad_(True)
        out, tapped = runner(backbone.vision_blocks, x, deep=deep, slot=slice(1, 3), taps=(2, 4))
        (out.square().mean() + tapped[2].sin().mean()).backward()
        results.append((out.detach(), tapped[2].detach(), x.grad.clone(), deep.tokens.grad.clone()))
    for old, new in zip(*results):
        assert relative_error(new, old) < 1e-6


@pytest.mark.parametrize("tuning", ["progressive", "naive"])
def test_dapo_fp32_loss_and_gradients_are_unchanged_by_the_fused_path(backbone, tuning):
    model = DAPO(backbone, DAPOConfig(n_prompts=2, tuning=tuning, vision_depth=3))
    with reference_blocks():
        out_old, terms_old, grads_old = loss_and_grads(model)
    out_new, terms_new, grads_new = loss_and_grads(model)
    assert abs(terms_new["total"].item() - terms_old["total"].item()) <= 1e-6 * abs(terms_old["total"].item())
    for new, old in zip(out_new.stage_logits, out_old.stage_logits):
        assert relative_error(new, old) < 1e-6
    assert relative_error(out_new.global_logits, out_old.global_logits) < 1e-6
    for name in grads_old:
        assert relative_error(grads_new[name], grads_old[name]) < 1e-5, name


def test_slot_write_gradients_pass_gradcheck():
    tokens = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(4, 6, 3, dtype=torch.float64, requires_grad=True)
    for a in (0.0, 0.3):
        for inplace in (False, True):
            def fn(x, tokens, a=a, inplace=inplace):
                return _SlotWrite.apply(x * 1.0 if inplace else x, tokens, a, 1, 3, inplace)

            assert torch.autograd.gradcheck(fn, (x, tokens))


def test_slot_write_in_place_keeps_earlier_taps_intact(backbone):
    """Layers 1 and 3 are written in place after; the tapped outputs of 2 and 4 must not change."""
    deep = DeepPrompts(2, backbone.vision_width, 4, init="random", generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, 19, backbone.vision_width, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        _, old_taps = old_run_blocks(backbone.vision_blocks, x, deep=deep, slot=slice(1, 3), taps=(2, 4))
        _, new_taps = run_blocks(backbone.vision_blocks, x.clone(), deep=deep, slot=slice(1, 3), taps=(2, 4))
    for layer in (2, 4):
        assert relative_error(new_taps[layer], old_taps[layer]) < 1e-6


def test_prepared_weights_are_held_once_and_follow_weight_changes(tiny_model_name, tiny_image_size):
    torch.manual_seed(0)
    backbone = load_backbone(tiny_model_name, None, image_size=tiny_image_size)
    blocks = backbone.vision_blocks
    first = prepared_blocks(blocks, torch.bfloat16)
    assert first is prepared_blocks(blocks, torch.bfloat16)  # no cast per call
    assert first[0].fc[0].dtype == torch.bfloat16 and blocks[0].mlp.c_fc.weight.dtype == torch.float32
    with torch.no_grad():
        blocks[0].mlp.c_fc.weight.mul_(2.0)  # new weights loaded in place
    again = prepared_blocks(blocks, torch.bfloat16)
    assert again is not first
    torch.testing.assert_close(again[0].fc[0], blocks[0].mlp.c_fc.weight.bfloat16())


def test_unsupported_or_trainable_blocks_run_as_modules():
    torch.manual_seed(0)
    custom = frozen(nn.ModuleList([CustomResidualAttentionBlock(32, 2)]))
    assert prepared_blocks(custom, torch.float32) is None
    trainable = nn.ModuleList([ResidualAttentionBlock(32, 2)])
    assert prepared_blocks(trainable, torch.float32) is None
    x = torch.randn(2, 5, 32)
    out, _ = run_blocks(custom, x)
    torch.testing.assert_close(out, custom[0](x))


def test_causal_mask_detection(backbone):
    assert is_causal_mask(backbone.text_attn_mask)
    assert is_causal_mask(backbone.text_attn_mask[:7, :7])
    assert not is_causal_mask(torch.zeros(4, 4))
    assert not is_causal_mask(None)
    assert not is_causal_mask(torch.ones(4, 4, dtype=torch.bool).triu(1))


@pytest.mark.parametrize("causal", [False, True])
def test_bf16_attention_agrees_with_float32_sdpa(causal):
    generator = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(3, 2, 20, 16, generator=generator) for _ in range(3))
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
    got = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), is_causal=causal).float()
    torch.testing.assert_close(got, expected, rtol=0, atol=3e-2)
    torch.testing.assert_close(attention(q, k, v, is_causal=causal), expected)
