"""The frozen OpenCLIP ViT backbone: loading, feature taps and the pieces DAPO runs through.

:func:`load_backbone` builds any OpenCLIP ViT by name with weights from a pretrained tag
(``"openai"``), a local file, the project's compact synthetic model (``"synthetic"``) or none
(random initialisation, for tests and benchmarks). Its positional embeddings are
interpolated to the requested input size (518 px in the paper). The returned
:class:`Backbone` is frozen and stays in evaluation mode; DAPO reaches its encoders through
small methods (``embed_image``, ``embed_text``, ``pool_image``, ``pool_text``) so that
learnable tokens can be inserted between the frozen blocks.

Offline behaviour: weights for a tag are looked up in the local caches first; when they are
absent and the hub cannot be reached, loading fails at once with a message that says how
to pass a local file (no minute of download retries).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import pickle
import socket
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import LayerScale, QuickGELU, ResidualAttentionBlock, VisionTransformer, text_global_pool
from torch import nn

ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"
SYNTHETIC_TAG = "synthetic"
N_TAPS = 4


def proportional_taps(n_layers: int, n_taps: int = N_TAPS) -> tuple[int, ...]:
    """Tapped layers (1-based) at depths i/n_taps of the encoder: 6, 12, 18, 24 for 24 layers.

    Depths are rounded half up; encoders shallower than ``n_taps`` give fewer, distinct taps.
    """
    if n_layers < 1:
        raise ValueError(f"an encoder needs at least one layer, got {n_layers}")
    return tuple(sorted({max(1, math.floor(n_layers * i / n_taps + 0.5)) for i in range(1, n_taps + 1)}))


def register_asset_configs(directory: str | Path | None = None) -> list[str]:
    """Register every OpenCLIP model config (``*.json`` with vision and text parts) in ``directory``.

    ``None`` means the package's ``dapo/assets``; returns the names of the configs found.
    """
    directory = Path(directory) if directory is not None else ASSETS_DIR
    names = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        content = json.loads(path.read_text())
        if isinstance(content, dict) and "vision_cfg" in content and "text_cfg" in content:
            if path.stem not in open_clip.list_models():
                open_clip.add_model_config(path)
            names.append(path.stem)
    return names


# ----------------------------------------------------------------------------- weights


@dataclass(frozen=True)
class WeightsSource:
    """Where the weights of a backbone come from: a local file, a download, or none."""

    path: str | None
    tag_cfg: dict
    download: bool = False

    def describe(self) -> str:
        if self.path is None and not self.download:
            return "random initialisation"
        return f"download from the hub ({_hub_reference(self.tag_cfg)})" if self.download else self.path


def _hub_reference(tag_cfg: dict) -> str:
    return tag_cfg.get("hf_hub") or tag_cfg.get("url") or "?"


def _cached_tag_file(tag_cfg: dict) -> str | None:
    """The local copy of a tag's weights (Hugging Face cache or OpenCLIP's URL cache), if any."""
    if tag_cfg.get("file") and os.path.isfile(tag_cfg["file"]):
        return tag_cfg["file"]
    hub = tag_cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import hf_hub_download

        repo_id, filename = os.path.split(hub)
        candidates = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if filename.endswith((".bin", ".pth")):
            candidates.insert(0, filename[:-4] + ".safetensors")
        for name in candidates:
            try:
                return hf_hub_download(repo_id=repo_id, filename=name, local_files_only=True)
            except (OSError, ValueError):  # not in the cache (LocalEntryNotFoundError is an OSError)
                continue
    url = tag_cfg.get("url", "")
    if url:
        target = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        if target.is_file():
            return str(target)
    return None


def _hub_reachable(tag_cfg: dict, timeout: float = 3.0) -> bool:
    """Quick TCP probe of the download host (or of the configured HTTPS proxy)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    if proxy:
        parsed = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        host, port = parsed.hostname, parsed.port or 80
    else:
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co") if tag_cfg.get("hf_hub") \
            else tag_cfg.get("url", "")
        parsed = urlparse(endpoint)
        host, port = parsed.hostname, parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except (OSError, TypeError):
        return False


def _missing_weights_message(model_name: str, pretrained: str, tag_cfg: dict) -> str:
    return (
        f"No local weights for OpenCLIP {model_name!r} pretrained={pretrained!r}, and the hub cannot be "
        f"reached (offline). Either fill the cache once on a machine with internet "
        f"(python -c \"import open_clip; open_clip.create_model('{model_name}', pretrained='{pretrained}')\"; "
        f"source: {_hub_reference(tag_cfg)}), or pass a local file: "
        f"load_backbone('{model_name}', '{pretrained}', checkpoint='/path/to/open_clip_model.safetensors') "
        f"(OpenCLIP weights: .safetensors, .bin or .pt)."
    )


def resolve_weights(model_name: str, pretrained: str | None,
                    checkpoint: str | os.PathLike | None = None) -> WeightsSource:
    """Decide where the weights come from without loading them.

    Raises ``FileNotFoundError`` for a missing local file (or missing synthetic weights),
    ``ValueError`` for an unknown tag, ``RuntimeError`` when a tag is neither cached nor
    downloadable (offline).
    """
    tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained) if pretrained else {}
    if checkpoint is not None:
        if not os.path.isfile(checkpoint):
            raise FileNotFoundError(f"backbone checkpoint file not found: {checkpoint}")
        return WeightsSource(str(checkpoint), tag_cfg)
    if pretrained is None:
        return WeightsSource(None, {})
    if pretrained == SYNTHETIC_TAG:
        path = ASSETS_DIR / f"{model_name}.safetensors"
        if not path.is_file():
            raise FileNotFoundError(
                f"synthetic weights for {model_name!r} not found at {path}; produce them with "
                f"`python scripts/pretrain_compact_clip.py` (or pass pretrained=None for random weights)")
        return WeightsSource(str(path), {})
    if os.path.isfile(pretrained):
        return WeightsSource(str(pretrained), {})
    if not tag_cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise ValueError(f"pretrained={pretrained!r} is neither a file nor a known tag of {model_name!r} "
                         f"(known tags: {tags}, or 'synthetic', or None for random weights)")
    cached = _cached_tag_file(tag_cfg)
    if cached:
        return WeightsSource(cached, tag_cfg)
    if _hub_reachable(tag_cfg):
        return WeightsSource(None, tag_cfg, download=True)
    raise RuntimeError(_missing_weights_message(model_name, pretrained, tag_cfg))


def checkpoint_available(model_name: str, pretrained: str | None) -> tuple[bool, str]:
    """Whether :func:`load_backbone` can obtain these weights now, and from where (or how to fix it)."""
    register_asset_configs()
    try:
        return True, resolve_weights(model_name, pretrained).describe()
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        return False, str(error)


# ----------------------------------------------------------------------------- backbone


def interpolate_positional_embedding(pos: torch.Tensor, old_grid: tuple[int, int],
                                     new_grid: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of a ViT positional table ``(1 + gh*gw, D)`` (class token kept)."""
    if tuple(old_grid) == tuple(new_grid):
        return pos
    cls_pos, grid_pos = pos[:1], pos[1:]
    grid_pos = grid_pos.reshape(1, old_grid[0], old_grid[1], -1).permute(0, 3, 1, 2)
    grid_pos = F.interpolate(grid_pos.float(), size=new_grid, mode="bicubic", align_corners=False)
    grid_pos = grid_pos.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], -1).to(pos.dtype)
    return torch.cat([cls_pos, grid_pos], dim=0)


def file_sha256(path: str | Path, chunk: int = 1 << 24) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class Backbone(nn.Module):
    """A frozen OpenCLIP ViT with feature taps; always in evaluation mode.

    Attributes
    ----------
    clip: the OpenCLIP model (parameters frozen).
    model_name, pretrained, image_size: how it was built.
    tap_layers: 1-based vision layers whose patch tokens feed the adapters.
    mean, std: the image normalisation the weights expect.
    weights: where the weights came from (a file path, or "random initialisation").
    """

    def __init__(self, clip: nn.Module, *, model_name: str, pretrained: str | None, image_size: int,
                 tap_layers: tuple[int, ...] | None = None, mean=None, std=None, weights: str = "") -> None:
        super().__init__()
        if not isinstance(clip.visual, VisionTransformer):
            raise ValueError(f"{model_name!r} has a {type(clip.visual).__name__} image tower; "
                             f"DAPO needs an OpenCLIP VisionTransformer")
        if clip.visual.attn_pool is not None or clip.visual.pool_type not in ("tok", "avg"):
            raise ValueError(f"{model_name!r}: attentional or token-free pooling is not supported")
        text = getattr(clip, "text", clip)
        if not hasattr(text, "token_embedding") or getattr(text, "cls_emb", None) is not None:
            raise ValueError(f"{model_name!r}: DAPO needs OpenCLIP's own text transformer (no HF/CoCa text tower)")
        self.clip = clip
        self.model_name = model_name
        self.pretrained = pretrained
        self.image_size = int(image_size)
        self.weights = weights
        n_layers = len(clip.visual.transformer.resblocks)
        self.tap_layers = tuple(tap_layers) if tap_layers else proportional_taps(n_layers)
        if not all(1 <= t <= n_layers for t in self.tap_layers) or list(self.tap_layers) != sorted(set(self.tap_layers)):
            raise ValueError(f"tap_layers={self.tap_layers} must be increasing layers in 1..{n_layers}")
        self.mean = tuple(mean or open_clip.OPENAI_DATASET_MEAN)
        self.std = tuple(std or open_clip.OPENAI_DATASET_STD)
        self.tokenizer = open_clip.get_tokenizer(model_name)
        for parameter in self.clip.parameters():
            parameter.requires_grad_(False)
        self.train(False)
        self._text_memo: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._vision_memo: OrderedDict[tuple, tuple] = OrderedDict()

    def train(self, mode: bool = True) -> Backbone:
        """The encoders are frozen: they never leave evaluation mode (no dropout)."""
        return super().train(False)

    def frozen_vision(self, key: tuple, images: torch.Tensor, compute: Callable[[], tuple]) -> tuple:
        """``compute()``, a frozen vision path's outputs (tensors, or dicts and tuples of them) for the
        batch ``images``, kept per backbone for evaluation: a method whose image tower has nothing
        learnable (MultiADS, CLIP-AC, AnomalyCLIP, ...) sees the same test batches for every seed and
        target pass, and gets the very tensors computed the first time. ``key`` names the path (its
        DPAM layers, taps); the batch's bytes, shape, device, the autocast dtype and the weights'
        identity complete it. Under
        autograd (training) it only computes. Holds at most :func:`feature_memo_bytes` (least recently
        used dropped first; ``DAPO_FEATURE_MEMO_MB=0`` turns it off)."""
        budget = feature_memo_bytes()
        if budget <= 0 or torch.is_grad_enabled():
            return compute()
        device_type = images.device.type
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
        digest = hashlib.blake2b(images.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes(),
                                 digest_size=16).hexdigest()
        full = (_weights_key(self.clip), key, tuple(images.shape), str(images.dtype), str(images.device), dtype, digest)
        if full in self._vision_memo:
            self._vision_memo.move_to_end(full)
            return self._vision_memo[full][0]
        value = compute()
        self._vision_memo[full] = (value, _tensor_bytes(value))
        while sum(size for _, size in self._vision_memo.values()) > budget and self._vision_memo:
            self._vision_memo.popitem(last=False)
        return value

    # --- shapes
    @property
    def visual(self) -> VisionTransformer:
        return self.clip.visual

    @property
    def text(self) -> nn.Module:
        return getattr(self.clip, "text", self.clip)

    @property
    def vision_blocks(self) -> nn.ModuleList:
        return self.visual.transformer.resblocks

    @property
    def text_blocks(self) -> nn.ModuleList:
        return self.text.transformer.resblocks

    @property
    def embed_dim(self) -> int:
        return int(self.visual.output_dim)

    @property
    def vision_width(self) -> int:
        return int(self.visual.conv1.out_channels)

    @property
    def text_width(self) -> int:
        return int(self.text.token_embedding.embedding_dim)

    @property
    def patch_size(self) -> tuple[int, int]:
        return tuple(self.visual.patch_size)

    @property
    def logit_scale(self) -> float:
        return float(self.clip.logit_scale.exp())

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    def grid_size(self, image_size: tuple[int, int] | int | None = None) -> tuple[int, int]:
        """Patch grid for an input size (default: the configured ``image_size``)."""
        size = image_size or self.image_size
        h, w = (size, size) if isinstance(size, int) else size
        return h // self.patch_size[0], w // self.patch_size[1]

    def describe(self) -> dict:
        """JSON-ready identity of the backbone (stored with every checkpoint)."""
        return {"model_name": self.model_name, "pretrained": self.pretrained, "image_size": self.image_size,
                "tap_layers": list(self.tap_layers), "embed_dim": self.embed_dim,
                "vision_width": self.vision_width, "text_width": self.text_width,
                "vision_layers": len(self.vision_blocks), "text_layers": len(self.text_blocks),
                "patch_size": list(self.patch_size), "weights_sha256": self.weights_fingerprint}

    @property
    def weights_fingerprint(self) -> str | None:
        """First 16 hex digits of the SHA-256 of the weights file (``None`` without a file):
        tells checkpoints trained on other weights of the same architecture apart."""
        if not hasattr(self, "_fingerprint"):
            self._fingerprint = file_sha256(self.weights)[:16] if self.weights and os.path.isfile(self.weights) else None
        return self._fingerprint

    # --- text
    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts)

    #: Entries :meth:`frozen_text` keeps (least recently used dropped first).
    TEXT_MEMO_SIZE = 64

    def frozen_text(self, key: tuple, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``compute()``, the frozen text tower's output for ``key`` (the prompt texts and whatever
        else decides the computation: device, autocast dtype), computed once per backbone and then
        returned as computed (detached), so every model built on this backbone shares it: the
        handcrafted prompts of MultiADS or CLIP-AC are encoded once per run and product, not once
        per seed, epoch and evaluation. Other weights loaded into the backbone (in place or not) miss."""
        if not _MEMOS_ON[-1]:
            return compute()
        key = (_weights_key(self.clip), *key)
        if key in self._text_memo:
            self._text_memo.move_to_end(key)
            return self._text_memo[key]
        value = compute().detach()
        self._text_memo[key] = value
        while len(self._text_memo) > self.TEXT_MEMO_SIZE:
            self._text_memo.popitem(last=False)
        return value

    @property
    def text_attn_mask(self) -> torch.Tensor | None:
        return self.text.attn_mask

    @property
    def text_pool_type(self) -> str:
        """How the text tower pools its sequence (``argmax`` = at the EOT token for CLIP)."""
        return getattr(self.text, "pool_type", None) or getattr(self.clip, "text_pool_type", "argmax")

    @property
    def text_eos_id(self) -> int | None:
        return getattr(self.text, "eos_id", None) or getattr(self.clip, "text_eos_id", None)

    def embed_text(self, ids: torch.Tensor, prefix: torch.Tensor | None = None, start: int = 1) -> torch.Tensor:
        """Token + positional embeddings of ``ids``; ``prefix`` (P, n, D) replaces positions start..start+n."""
        x = self.text.token_embedding(ids)
        if prefix is not None:
            x = torch.cat([x[:, :start], prefix.to(x.dtype), x[:, start + prefix.shape[1]:]], dim=1)
        return x + self.text.positional_embedding[: x.shape[1]].to(x.dtype)

    def pool_text(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Final norm, end-of-text pooling and projection: (P, L, D) -> (P, C)."""
        pooled = text_global_pool(self.text.ln_final(x), ids, self.text_pool_type, eos_token_id=self.text_eos_id)
        projection = self.text.text_projection
        if projection is None:
            return pooled
        return projection(pooled) if isinstance(projection, nn.Linear) else pooled @ projection.to(pooled.dtype)

    def text_length(self, ids: torch.Tensor) -> int:
        """Sequence length needed for the pooled embeddings of ``ids``.

        With causal attention and end-of-text pooling, tokens after the last EOT cannot change
        any embedding, so the padding can be cut (identical result, far less work).
        """
        if self.text_attn_mask is None or self.text_pool_type not in ("argmax", "eos"):
            return ids.shape[1]
        if self.text_pool_type == "argmax":
            positions = ids.argmax(dim=-1)
        else:
            positions = (ids == self.text_eos_id).int().argmax(dim=-1)
        return int(positions.max()) + 1

    # --- image
    def positional_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        visual = self.visual
        return interpolate_positional_embedding(visual.positional_embedding, visual.grid_size, grid)

    def embed_image(self, images: torch.Tensor) -> torch.Tensor:
        """Patch embedding, class token, positional embedding and ``ln_pre``: (B, 1+N, D)."""
        visual = self.visual
        x = visual.conv1(images.to(self.dtype))
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding(grid).to(x.dtype)
        return visual.ln_pre(x)

    def patch_tokens(self, x: torch.Tensor, n_extra: int = 0, *, ln_post: bool = True) -> torch.Tensor:
        """Patch tokens of a layer output (class token and ``n_extra`` inserted tokens dropped)."""
        patches = x[:, 1 + n_extra:]
        return self.visual.ln_post(patches) if ln_post else patches

    def pool_image(self, x: torch.Tensor, n_extra: int = 0) -> torch.Tensor:
        """Global image embedding from the last layer output (inserted tokens excluded): (B, C)."""
        visual = self.visual
        x = torch.cat([x[:, :1], x[:, 1 + n_extra:]], dim=1)
        if not visual.final_ln_after_pool:
            x = visual.ln_post(x)
        pooled = x[:, 0] if visual.pool_type == "tok" else x[:, 1:].mean(dim=1)
        if visual.final_ln_after_pool:
            pooled = visual.ln_post(pooled)
        return pooled @ visual.proj.to(pooled.dtype) if visual.proj is not None else pooled


#: Environment variable: megabytes :meth:`Backbone.frozen_vision` may hold per backbone (0: off).
FEATURE_MEMO_ENV = "DAPO_FEATURE_MEMO_MB"
DEFAULT_FEATURE_MEMO_MB = 1024


_MEMOS_ON = [True]


@contextlib.contextmanager
def frozen_memos_off():
    """Inside: :meth:`Backbone.frozen_text` and :meth:`Backbone.frozen_vision` compute every time
    (timings of a model: :mod:`dapo.experiments.efficiency` and the benchmarks repeat one batch)."""
    _MEMOS_ON.append(False)
    try:
        yield
    finally:
        _MEMOS_ON.pop()


def feature_memo_bytes() -> int:
    """The vision memo's budget in bytes, from ``DAPO_FEATURE_MEMO_MB`` (default 1024; 0 inside
    :func:`frozen_memos_off`)."""
    if not _MEMOS_ON[-1]:
        return 0
    text = os.environ.get(FEATURE_MEMO_ENV, "").strip()
    try:
        megabytes = float(text) if text else DEFAULT_FEATURE_MEMO_MB
    except ValueError:
        raise ValueError(f"{FEATURE_MEMO_ENV}={text!r}: expected a number of megabytes (0 turns the memo off)") from None
    return int(megabytes * 2**20)


def _tensor_bytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, (tuple, list)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


# ----------------------------------------------------------------------------- frozen blocks


class FrozenBlock:
    """One frozen OpenCLIP ``ResidualAttentionBlock`` with its weights held in one dtype.

    Computes what the block computes (pre-norm attention and MLP, ``x + ls_1(attn(ln_1(x)))``,
    ``x + ls_2(mlp(ln_2(x)))``) without ``nn.MultiheadAttention``, whose batch-first path
    transposes the sequence and runs the input projection as one small matmul per token
    (``bmm`` of (L, B, D) x (L, D, 3D)): here each projection is a single GEMM over all
    B*L tokens and attention is one call of :func:`attention`. The weights are cast once,
    when the block is prepared (:func:`prepared_blocks`), so a bf16 step never casts frozen
    weights.
    """

    def __init__(self, block: ResidualAttentionBlock, dtype: torch.dtype) -> None:
        def held(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.detach().to(dtype).contiguous()

        attn = block.attn
        self.heads = attn.num_heads
        self.ln_1 = (held(block.ln_1.weight), held(block.ln_1.bias), block.ln_1.eps)
        self.ln_2 = (held(block.ln_2.weight), held(block.ln_2.bias), block.ln_2.eps)
        self.qkv = (held(attn.in_proj_weight), held(attn.in_proj_bias))
        self.out = (held(attn.out_proj.weight), held(attn.out_proj.bias))
        self.fc = (held(block.mlp.c_fc.weight), held(block.mlp.c_fc.bias))
        self.proj = (held(block.mlp.c_proj.weight), held(block.mlp.c_proj.bias))
        self.ls_1 = held(block.ls_1.gamma) if isinstance(block.ls_1, LayerScale) else None
        self.ls_2 = held(block.ls_2.gamma) if isinstance(block.ls_2, LayerScale) else None
        self.quick_gelu = isinstance(block.mlp.gelu, QuickGELU)

    @staticmethod
    def supports(block: nn.Module) -> bool:
        """Whether ``block`` is a plain batch-first OpenCLIP block this class reproduces."""
        if type(block) is not ResidualAttentionBlock or hasattr(block, "ln_1_kv"):
            return False
        attn = block.attn
        act = getattr(block.mlp, "gelu", None)
        gelu_ok = isinstance(act, QuickGELU) or (type(act) is nn.GELU and act.approximate == "none")
        norms_ok = all(isinstance(n, nn.LayerNorm) and n.elementwise_affine for n in (block.ln_1, block.ln_2))
        scales_ok = all(isinstance(s, (nn.Identity, LayerScale)) for s in (block.ls_1, block.ls_2))
        return (attn.batch_first and attn._qkv_same_embed_dim and attn.bias_k is None and not attn.add_zero_attn
                and gelu_ok and norms_ok and scales_ok and list(block.mlp._modules) == ["c_fc", "gelu", "c_proj"])

    def __call__(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
                 ) -> torch.Tensor:
        batch, length, width = x.shape
        h = F.layer_norm(x, (width,), *self.ln_1)
        q, k, v = F.linear(h, *self.qkv).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attended = attention(q, k, v, attn_mask, is_causal)
        attended = F.linear(attended.transpose(1, 2).reshape(batch, length, width), *self.out)
        x = x + (attended if self.ls_1 is None else attended * self.ls_1)
        h = F.linear(F.layer_norm(x, (width,), *self.ln_2), *self.fc)
        h = h * torch.sigmoid(1.702 * h) if self.quick_gelu else F.gelu(h)
        h = F.linear(h, *self.proj)
        return x + (h if self.ls_2 is None else h * self.ls_2)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
              is_causal: bool = False) -> torch.Tensor:
    """Softmax attention of (B, H, L, d) heads; ``attn_mask`` additive (L, L) in the inputs' dtype.

    ``F.scaled_dot_product_attention`` except for reduced precision on the CPU, where its
    flash kernel is several times slower than three plain bf16 ops (scores GEMM, softmax,
    GEMM), above all in the backward pass, and the (B, H, L, L) scores of the models run
    on a CPU are small.
    """
    if q.device.type != "cpu" or q.dtype == torch.float32 or q.dtype == torch.float64:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
    if attn_mask is not None:
        scores = scores + attn_mask
    if is_causal:
        length = scores.shape[-1]
        scores = scores.masked_fill(torch.ones(length, length, dtype=torch.bool, device=q.device).triu(1),
                                    float("-inf"))
    return scores.softmax(dim=-1) @ v


_PREPARED: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()


def _weights_key(blocks: nn.Module) -> tuple:
    """Identity of a module's current weights (storage and in-place version of every tensor)."""
    return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in blocks.parameters())


def prepared_blocks(blocks: nn.ModuleList, dtype: torch.dtype) -> list[FrozenBlock] | None:
    """The frozen blocks with weights held in ``dtype``, built once and cached; ``None`` when a
    block is not a plain OpenCLIP block (the caller then runs the modules themselves).

    The cache follows the modules: moving them to another device, loading other weights into
    them (in place or not) or changing their dtype builds the prepared copy again.
    """
    if not all(FrozenBlock.supports(block) for block in blocks):
        return None
    if any(p.requires_grad for p in blocks.parameters()):
        return None  # trainable blocks must run as modules so that their weights get gradients
    cache = _PREPARED.setdefault(blocks, {})
    key = _weights_key(blocks)
    entry = cache.get(dtype)
    if entry is None or entry[0] != key:
        with torch.inference_mode(False), torch.no_grad():  # plain tensors, usable by autograd later
            entry = cache[dtype] = (key, [FrozenBlock(block, dtype) for block in blocks])
    return entry[1]


def is_causal_mask(mask: torch.Tensor | None) -> bool:
    """Whether an additive (L, L) mask is exactly the causal mask (-inf above the diagonal, 0 elsewhere)."""
    if mask is None or mask.dim() != 2 or mask.shape[0] != mask.shape[1] or not mask.is_floating_point():
        return False
    upper = torch.ones_like(mask, dtype=torch.bool).triu(1)
    return bool(torch.all(mask[upper] == float("-inf"))) and bool(torch.all(mask[~upper] == 0))


def _create_at_size(model_name: str, weights: str | None, image_size: int, quick_gelu: bool) -> nn.Module:
    """The OpenCLIP model with ``weights`` at ``image_size``, positional embeddings resized in fp32.

    OpenCLIP resizes the positional table of the weights file in the file's own dtype, which
    fails on the CPU for fp16 files (the compact synthetic weights, OpenAI's): the model is
    built at its native size with the weights, cast to fp32, then resized into the sized model.
    """
    native = open_clip.get_model_config(model_name)["vision_cfg"]["image_size"]
    if weights is None or image_size == native:
        return open_clip.create_model(model_name, pretrained=weights, force_image_size=image_size,
                                      force_quick_gelu=quick_gelu, device="cpu")
    from open_clip.model import resize_pos_embed

    loaded = open_clip.create_model(model_name, pretrained=weights, force_quick_gelu=quick_gelu, device="cpu")
    state = {k: v.float() if v.is_floating_point() else v for k, v in loaded.state_dict().items()}
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # its "initialized randomly" warning: the weights are loaded below
    try:
        sized = open_clip.create_model(model_name, pretrained=None, force_image_size=image_size,
                                       force_quick_gelu=quick_gelu, device="cpu")
    finally:
        logging.disable(previous)
    resize_pos_embed(state, sized)
    sized.load_state_dict(state)
    return sized


def _create_as_data(model_name: str, weights: str | None, image_size: int, quick_gelu: bool) -> nn.Module:
    """:func:`_create_at_size`, reading ``weights`` as data only (OpenCLIP's ``torch.load(weights_only=True)``,
    or safetensors); a TorchScript archive or a pickle that needs more is refused naming the file."""
    from dapo.util.loading import UnsafeFileError, is_torchscript

    way_out = ("use the OpenCLIP weights of the tag (open_clip_model.safetensors or open_clip_pytorch_model.bin "
               "from the hub) or a state dict saved with torch.save")
    if weights is not None and not str(weights).endswith(".safetensors") and is_torchscript(weights):
        raise UnsafeFileError(f"backbone weights {weights} are a TorchScript archive (e.g. OpenAI's original "
                              f"release): loading one loads its program, so it is not read; {way_out}")
    try:
        return _create_at_size(model_name, weights, image_size, quick_gelu)
    except pickle.UnpicklingError as error:
        from dapo.util.loading import _reason

        raise UnsafeFileError(f"backbone weights {weights} hold more than tensors and plain values (loading them "
                              f"could run code), so they are not read ({_reason(error)}); {way_out}") from None


def load_backbone(model_name: str = "ViT-L-14-336", pretrained: str | None = "openai", *, image_size: int = 518,
                  tap_layers: tuple[int, ...] | list[int] | None = None, device: str | torch.device = "cpu",
                  checkpoint: str | os.PathLike | None = None, quick_gelu: bool | None = None) -> Backbone:
    """Build a frozen OpenCLIP ViT backbone.

    Parameters
    ----------
    model_name:
        Any OpenCLIP ViT config name, or a config found in ``dapo/assets`` (``"dapo-compact"``).
    pretrained:
        An OpenCLIP tag (``"openai"``), a local weights file, ``"synthetic"`` (the project's
        compact model in ``dapo/assets/<model_name>.safetensors``) or ``None`` (random weights).
    image_size:
        Input size; positional embeddings are interpolated (bicubic) from the native grid.
    tap_layers:
        1-based layers whose patch tokens are used; default: proportional depths (6, 12, 18, 24
        of 24 layers).
    checkpoint:
        A local weights file used instead of downloading ``pretrained``; a known tag still
        sets its QuickGELU flag and normalisation. Weights are read as data only
        (safetensors, or ``torch.load(weights_only=True)``): a TorchScript archive or a pickle
        that would run code is refused (:class:`dapo.util.loading.UnsafeFileError`).
    quick_gelu:
        Force QuickGELU; ``None`` takes it from the tag (OpenAI weights need it).
    """
    register_asset_configs()
    if model_name not in open_clip.list_models():
        raise ValueError(f"unknown OpenCLIP model {model_name!r} (see open_clip.list_models(), "
                         f"or put <name>.json in {ASSETS_DIR})")
    source = resolve_weights(model_name, pretrained, checkpoint)
    if source.download:
        source = WeightsSource(open_clip.download_pretrained(source.tag_cfg), source.tag_cfg)
    use_quick_gelu = bool(source.tag_cfg.get("quick_gelu", False)) if quick_gelu is None else quick_gelu
    clip = _create_as_data(model_name, source.path, image_size, use_quick_gelu).to(device)
    return Backbone(clip, model_name=model_name, pretrained=pretrained, image_size=image_size,
                    tap_layers=tuple(tap_layers) if tap_layers else None, mean=source.tag_cfg.get("mean"),
                    std=source.tag_cfg.get("std"), weights=source.describe()).to(device)
