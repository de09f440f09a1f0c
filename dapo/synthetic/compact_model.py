"""The compact CLIP: its OpenCLIP config, construction and initialisation, and its vision forward on views.

The model is a plain OpenCLIP ``CLIP`` built from ``dapo/assets/dapo-compact.json`` (ViT image
tower, OpenCLIP text tower and tokenizer); :mod:`dapo.synthetic.pretrain` trains it. Views are
full images or patch-aligned crops carrying their offset on the patch grid
(:mod:`dapo.synthetic.corpus`), so the forward adds the positional embeddings of exactly the
patches a view shows.
"""

from __future__ import annotations

import numpy as np
import open_clip
import torch

from dapo.clip.backbone import ASSETS_DIR, register_asset_configs
from dapo.synthetic.corpus import to_tensor
from dapo.util.precision import autocast

COMPACT_MODEL = "dapo-compact"
COMPACT_CONFIG = ASSETS_DIR / f"{COMPACT_MODEL}.json"
COMPACT_WEIGHTS = ASSETS_DIR / f"{COMPACT_MODEL}.safetensors"


def register_compact_config() -> None:
    """Make ``dapo-compact`` known to OpenCLIP (idempotent; :func:`dapo.clip.backbone.register_asset_configs`)."""
    if COMPACT_MODEL not in register_asset_configs():
        raise FileNotFoundError(f"{COMPACT_CONFIG} is missing or not an OpenCLIP model config")


def sincos_positions(grid: int, width: int) -> torch.Tensor:
    """2-D sine-cosine positional table ``(1 + grid * grid, width)`` (MAE), zero for the class token."""
    quarter = width // 4
    frequencies = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                                indexing="ij")
    parts = [f(axis.reshape(-1, 1) * frequencies) for axis in (rows, cols) for f in (torch.sin, torch.cos)]
    table = torch.zeros(1 + grid * grid, width, dtype=torch.float64)
    table[1:, : 4 * quarter] = torch.cat(parts, dim=1)
    return table.float()


@torch.no_grad()
def mimetic_init(visual: torch.nn.Module, generator: torch.Generator, layers: int,
                 alpha: tuple[float, float] = (0.7, 0.4), beta: tuple[float, float] = (0.7, 0.4)) -> None:
    """Mimetic initialisation (Trockman & Kolter, ICML 2023) of the first ``layers`` vision
    attention layers, with 2-D sine-cosine positions: per head W_q^T W_k ~ alpha0 Z + beta0 I,
    and W_o W_v ~ alpha1 Z - beta1 I (Z Gaussian, variance 1/width), so that attention starts
    local, as in trained ViTs. Deeper layers keep OpenCLIP's initialisation: with
    W_q^T W_k ~ I everywhere the class token attends only to itself and never learns."""
    width = visual.conv1.out_channels
    visual.positional_embedding.copy_(sincos_positions(visual.grid_size[0], width))
    eye = torch.eye(width)
    for block in visual.transformer.resblocks[:layers]:
        attention = block.attn
        heads, head_width = attention.num_heads, width // attention.num_heads
        weight = attention.in_proj_weight
        for h in range(heads):
            target = alpha[0] * torch.randn(width, width, generator=generator) / width**0.5 + beta[0] * eye
            u, singular, vh = torch.linalg.svd(target)
            root = singular[:head_width].sqrt()
            rows = slice(h * head_width, (h + 1) * head_width)
            weight[rows] = (u[:, :head_width] * root).t()
            weight[width:][rows] = root[:, None] * vh[:head_width]
        target = alpha[1] * torch.randn(width, width, generator=generator) / width**0.5 - beta[1] * eye
        u, singular, vh = torch.linalg.svd(target)
        weight[2 * width:] = singular.sqrt()[:, None] * vh
        attention.out_proj.weight.copy_(u * singular.sqrt())


def create_compact_model(seed: int, device: str | torch.device = "cpu", init: str = "mimetic",
                         mimetic_layers: int = 4) -> torch.nn.Module:
    """A randomly initialised compact CLIP (fixed by ``seed``): OpenCLIP's initialisation, and
    with ``init="mimetic"`` the first ``mimetic_layers`` attention layers and the positions
    set by :func:`mimetic_init`."""
    register_compact_config()
    torch.manual_seed(seed)
    model = open_clip.create_model(COMPACT_MODEL)
    if init == "mimetic":
        mimetic_init(model.visual, torch.Generator().manual_seed(seed), mimetic_layers)
    elif init != "openclip":
        raise ValueError(f"init must be 'mimetic' or 'openclip', got {init!r}")
    return model.to(device)


def view_tokens(visual: torch.nn.Module, images: torch.Tensor, offsets: torch.Tensor,
                depth: int | None = None) -> torch.Tensor:
    """Tokens ``(B, 1 + patches, width)`` of views (full images or patch-aligned crops) after
    the first ``depth`` vision blocks (all by default; ``ln_post`` not applied): OpenCLIP's ViT
    forward with the positional embeddings of the patches each view shows (offsets in patches)."""
    x = visual.conv1(images)
    batch, width, rows, cols = x.shape
    x = x.flatten(2).transpose(1, 2)
    grid = visual.grid_size[1]
    row_index = offsets[:, :1, None] + torch.arange(rows, device=x.device)[None, :, None]
    col_index = offsets[:, 1:, None] + torch.arange(cols, device=x.device)[None, None, :]
    positions = visual.positional_embedding[1 + (row_index * grid + col_index).flatten(1)]
    cls = (visual.class_embedding + visual.positional_embedding[0]).expand(batch, 1, width)
    x = visual.ln_pre(torch.cat([cls.to(x.dtype), x + positions.to(x.dtype)], dim=1))
    for block in visual.transformer.resblocks[:depth]:
        x = block(x)
    return x


def encode_views(visual: torch.nn.Module, images: torch.Tensor, offsets: torch.Tensor,
                 project: bool = True) -> torch.Tensor:
    """Image embeddings of views (:func:`view_tokens`, class token after ``ln_post``);
    ``project=False`` stops before the final projection ``visual.proj``."""
    x = visual.ln_post(view_tokens(visual, images, offsets))[:, 0]
    return x @ visual.proj if project else x


def last_block_class_token(visual: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Class-token features (after ``ln_post``, before ``visual.proj``) from the tokens that
    enter the last vision block: that block evaluated for the class-token query alone (its
    other outputs feed nothing), which equals the full forward's class token."""
    block = visual.transformer.resblocks[-1]
    hidden = block.ln_1(tokens)
    x = tokens[:, :1] + block.ls_1(block.attn(hidden[:, :1], hidden, hidden, need_weights=False)[0])
    x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return visual.ln_post(x[:, 0])


@torch.no_grad()
def locked_features(model, images: list[np.ndarray], batch_size: int = 64, device: str | torch.device = "cpu",
                    precision: str = "fp32", before_last_block: bool = False) -> torch.Tensor:
    """Class-token features after ``ln_post``, before the projection ``visual.proj``,
    ``(N, width)`` float32 (``features @ visual.proj`` is the image embedding): what the text
    stage's trained projection reads. ``before_last_block``: instead the tokens
    ``(N, 1 + patches, width)`` entering the last vision block (:func:`last_block_class_token`
    turns them into the former). ``precision`` as in :class:`PretrainConfig`."""
    device, chunks = torch.device(device), []
    for start in range(0, len(images), batch_size):
        pixels = torch.stack([to_tensor(image) for image in images[start:start + batch_size]]).to(device)
        offsets = torch.zeros(len(pixels), 2, dtype=torch.long, device=device)
        with autocast(device, precision):
            if before_last_block:
                chunks.append(view_tokens(model.visual, pixels, offsets, depth=-1).float())
            else:
                chunks.append(encode_views(model.visual, pixels, offsets, project=False).float())
    return torch.cat(chunks)
