"""DPAM: AnomalyCLIP's diagonally prominent attention maps in the vision tower's last layers.

AnomalyCLIP (github zqhang/AnomalyCLIP, ``AnomalyCLIP_lib/AnomalyCLIP.py``: ``Attention``,
``ResidualAttentionBlock.forward``, ``DAPM_replace``) runs a second path beside the frozen
vision transformer from the first DPAM layer on:

* the *original* path is the unchanged block: ``x_o <- x_o + attn_qk(ln_1(x_o)); x_o <- x_o + mlp(ln_2(x_o))``;
* the *DPAM* path starts from the input of the first DPAM layer and, at every DPAM layer,
  adds the layer's v-v attention of the **original** path's ``ln_1``:
  ``x_d <- x_d + attn_vv(ln_1(x_o))`` with ``attn_vv(h) = out_proj(softmax(v v^T / sqrt(d_head)) v)``
  per head (``k = v; q = k`` in ``Attention.forward``), the block's own ``in_proj``/``out_proj``
  weights, and **no MLP** on this path (``ffn=False``);
* patch tokens tapped at or after the first DPAM layer come from the DPAM path; taps before
  it, and the global embedding, from the original path (``AnomalyCLIP_forward``, ``:284-296``).

``DAPM_replace(DPAM_layer=20)`` swaps ``resblocks[-i]`` for ``i = 1..19``: the last 19 of
ViT-L/14's 24 layers (layers 6-24). :func:`scaled_dpam_layers` keeps that proportion on other
depths. The original path is computed by each block's own ``forward``, so it is the model
without DPAM bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from dapo.methods.dapo.progressive import DeepPrompts, fused_blocks, run_blocks

#: AnomalyCLIP's DPAM covers the last 19 of ViT-L/14's 24 vision layers (``DPAM_layer=20``).
OFFICIAL_DPAM_LAYERS = 19
OFFICIAL_VISION_LAYERS = 24


def scaled_dpam_layers(n_layers: int, count: int = OFFICIAL_DPAM_LAYERS,
                       reference: int = OFFICIAL_VISION_LAYERS) -> int:
    """``count`` DPAM layers of a ``reference``-layer tower scaled to ``n_layers`` (round half up, >= 1).

    19 of 24 gives 10 of 12 (ViT-B: layers 3-12), 6 of 8 (the compact backbone: 3-8), 3 of 4.
    """
    if n_layers < 1:
        raise ValueError(f"a vision tower needs at least one layer, got {n_layers}")
    return min(n_layers, max(1, math.floor(count * n_layers / reference + 0.5)))


def vv_attention(block: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The v-v self-attention of an OpenCLIP ``ResidualAttentionBlock`` on normalised tokens ``hidden``
    (B, L, D): values from the block's ``in_proj``, ``softmax(v_h v_h^T / sqrt(d_head)) v_h`` per head,
    the block's ``out_proj`` and layer scale ``ls_1`` (identity for CLIP)."""
    attn = block.attn
    if not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim:
        raise TypeError(f"DPAM needs a block with a packed nn.MultiheadAttention, got {type(attn).__name__}")
    width, heads = attn.embed_dim, attn.num_heads
    weight = attn.in_proj_weight[2 * width:]
    bias = attn.in_proj_bias[2 * width:] if attn.in_proj_bias is not None else None
    batch, length, _ = hidden.shape
    v = F.linear(hidden, weight.to(hidden.dtype), None if bias is None else bias.to(hidden.dtype))
    v = v.view(batch, length, heads, width // heads).transpose(1, 2)  # (B, heads, L, d_head)
    mixed = F.scaled_dot_product_attention(v, v, v)  # scale 1 / sqrt(d_head), as q k^T in CLIP
    mixed = mixed.transpose(1, 2).reshape(batch, length, width)
    out = attn.out_proj(mixed)
    return block.ls_1(out) if hasattr(block, "ls_1") else out


def run_vision_blocks(blocks: nn.ModuleList, x: torch.Tensor, *, dpam_layers: int, deep: DeepPrompts | None = None,
                      slot: slice | None = None, taps: Iterable[int] = ()
                      ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """:func:`dapo.methods.dapo.progressive.run_blocks` with a DPAM path over the last ``dpam_layers`` blocks.

    Returns the original path's output (for the global embedding) and the tapped layers (the
    DPAM path's tokens from its first layer on). Deep tokens, when present, enter the original
    path only; the DPAM path carries their positions along (they are dropped from the taps).
    """
    n_layers = len(blocks)
    if not 0 <= dpam_layers <= n_layers:
        raise ValueError(f"dpam_layers={dpam_layers} must lie in 0..{n_layers} (the vision tower's layers)")
    taps = set(taps)
    first = n_layers - dpam_layers + 1
    x, tapped = run_blocks(blocks[:first - 1], x, deep=deep, slot=slot, taps=taps)
    if dpam_layers == 0:
        return x, tapped
    dpam = x
    for layer in range(first, n_layers + 1):
        if deep is not None and deep.covers(layer):
            new = deep.layer_input(layer, x[:, slot])
            x = torch.cat([x[:, :slot.start], new, x[:, slot.stop:]], dim=1)
        block = blocks[layer - 1]
        dpam = dpam + vv_attention(block, block.ln_1(x))
        x = block(x)
        if layer in taps:
            tapped[layer] = dpam
    return x, tapped


def frozen_vision_blocks(backbone, images: torch.Tensor, *, dpam_layers: int, taps: Iterable[int]
                         ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """:func:`run_vision_blocks` on ``backbone.embed_image(images)`` without deep tokens: the frozen
    image tower of MultiADS, CLIP-AC, AnomalyCLIP, CoCoOp, FAPrompt, ViP²-CLIP, memoised per backbone
    for evaluation (:meth:`dapo.clip.backbone.Backbone.frozen_vision`; the key holds the DPAM layers,
    the taps and whether the fused blocks run)."""
    taps = tuple(taps)
    return backbone.frozen_vision(
        ("run_vision_blocks", dpam_layers, taps, fused_blocks()), images,
        lambda: run_vision_blocks(backbone.vision_blocks, backbone.embed_image(images), dpam_layers=dpam_layers,
                                  taps=taps))
